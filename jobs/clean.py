"""``dagn clean``: the scheduled data-cleaning job (scan, estimate QF, restore the badly compressed, report)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs.errors import require_folder
from jobs.options import ConfigFile, RayAddress, S3Endpoint, build_config, config_argument, config_option
from pipeline.clean import CleanConfig
from pipeline.codec import OutputFormat
from pipeline.ray_session import start_ray
from pipeline.restore import RestoreConfig

__all__ = ["clean"]


def _flag(path: str, *decls: str, **kwargs):
    return config_option(CleanConfig, path, *decls, **kwargs)


def _restore_flag(path: str, *decls: str):
    return config_option(RestoreConfig, path, *decls, sets=f"restore.{path}")


def clean(
    ctx: typer.Context,
    src: Annotated[str, config_argument(CleanConfig, "src")],
    dst: Annotated[str | None, config_argument(CleanConfig, "dst")] = None,
    threshold: Annotated[int | None, _flag("threshold")] = None,
    reports: Annotated[str | None, _flag("reports")] = None,
    dry_run: Annotated[bool | None, _flag("dry_run", "--dry-run/--no-dry-run")] = None,
    incremental: Annotated[bool | None, _flag("incremental", "--incremental/--full")] = None,
    follow_symlinks: Annotated[bool | None, _flag("follow_symlinks", "--follow-symlinks/--no-follow-symlinks")] = None,
    weights: Annotated[str | None, _restore_flag("weights")] = None,
    workers: Annotated[int | None, _restore_flag("workers")] = None,
    gpus_per_worker: Annotated[float | None, _restore_flag("gpus_per_worker")] = None,
    batch_size: Annotated[int | None, _restore_flag("batch_size")] = None,
    format: Annotated[OutputFormat | None, _restore_flag("format")] = None,
    quality: Annotated[int | None, _restore_flag("quality")] = None,
    s3_endpoint: S3Endpoint = None,
    config: ConfigFile = None,
    address: RayAddress = None,
) -> None:
    """Scan SRC, estimate every JPEG's quality from its header, restore those below --threshold into DST, report.

    Report in REPORTS/clean-RUN/: scan/ (a Parquet file of rows per shard), summary.json and summary.md (QF histogram).

    Re-runs restore only what is new: finished outputs are skipped, unchanged files are not read again.

    Restore options go to the restore step (a YAML file sets them under `restore:`).

    Exit status 1 when any restore failed.
    """
    from pipeline.clean import run_clean
    from pipeline.restore import check_weights

    cfg = build_config(clean, ctx, CleanConfig, config, **{"s3.endpoint_url": s3_endpoint})
    require_folder(cfg.src, "SRC")
    if cfg.dst is not None and not cfg.dry_run:
        check_weights(cfg.restore_config("weights-check-only"))
    console = Console(stderr=True)
    start_ray(address, quiet=True)

    result = run_clean(cfg, on_stage=lambda stage: console.print(f"[bold]clean[/bold] {stage} ..."))

    s = result.summary
    c = s["counts"]
    table = Table("files", "JPEG", f"QF < {cfg.threshold}", "not JPEG", "unreadable", "restored", "failed")
    r = s["restore"] or {}
    table.add_row(
        str(c["files"]),
        str(c["jpeg"]),
        str(c["below_threshold"]),
        str(c["not_jpeg"]),
        str(c["unreadable"] + c["empty"]),
        str(r.get("ok", "-")),
        str(r.get("failed", "-")),
    )
    out = Console()
    out.print(table)
    if result.report is None:
        out.print("dry run: scanned and counted, nothing written")
    else:
        out.print(f"report: {result.summary['page']} (summary.json and summary.md beside it)")
    if result.failed:
        raise typer.Exit(1)
