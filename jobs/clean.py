"""``dagn clean``: the scheduled data-cleaning job (scan, estimate QF, restore the badly compressed, report)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs.settings import load_settings
from pipeline.codec import OutputFormat

__all__ = ["clean", "clean_settings"]


def clean_settings(src: str, dst: str | None = None, config: Path | None = None, restore_options=None, **flags):
    """The :class:`pipeline.clean.CleanConfig` from a YAML file and flags; restore flags merge into its ``restore``."""
    from pipeline.clean import CleanConfig

    flags.update({f"restore.{name}": value for name, value in (restore_options or {}).items()})
    flags["s3.endpoint_url"] = flags.pop("s3_endpoint", None)
    return load_settings(CleanConfig, config, src=src, dst=dst, **flags)


def clean(
    src: Annotated[str, typer.Argument(help="Archive to scan: folder or s3://bucket/prefix (recursive).")],
    dst: Annotated[
        str | None, typer.Argument(help="Where restored images go (mirrored names). Omit to scan and report only.")
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(help="Restore JPEGs whose estimated quality is below this (default 50).")
    ] = None,
    reports: Annotated[
        str | None, typer.Option(help="Folder or s3:// prefix for the reports (default DST/_reports).")
    ] = None,
    dry_run: Annotated[
        bool | None, typer.Option("--dry-run/--no-dry-run", help="Report what would be restored; restore nothing.")
    ] = None,
    incremental: Annotated[
        bool | None,
        typer.Option("--incremental/--full", help="Skip re-reading files unchanged since the last report (default)."),
    ] = None,
    weights: Annotated[str | None, typer.Option(help="DAGN model file for the restore (default: shipped).")] = None,
    workers: Annotated[int | None, typer.Option(help="Model actors of the restore step.")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per model actor (0: CPU).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images (or tiles) per model call.")] = None,
    format: Annotated[OutputFormat | None, typer.Option(help="Output format of restored images.")] = None,
    quality: Annotated[int | None, typer.Option(help="JPEG/WebP quality of restored images.")] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint URL. Keys come from the usual AWS_* variables.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file with any CleanConfig option (restore options under `restore:`); flags win."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (or RAY_ADDRESS); default: start a local Ray.")
    ] = None,
) -> None:
    """Scan SRC, estimate every JPEG's quality from its header, restore those below --threshold into DST, report.

    Report in REPORTS/clean-RUN/: scan.parquet (a row per file), summary.json and summary.md (QF histogram).

    Re-runs restore only what is new: finished outputs are skipped, unchanged files are not read again.

    Exit status 1 when any restore failed.
    """
    cfg = clean_settings(
        src,
        dst,
        config,
        restore_options={
            "weights": weights,
            "workers": workers,
            "gpus_per_worker": gpus_per_worker,
            "batch_size": batch_size,
            "format": format,
            "quality": quality,
        },
        threshold=threshold,
        reports=reports,
        dry_run=dry_run,
        incremental=incremental,
        s3_endpoint=s3_endpoint,
    )
    console = Console(stderr=True)
    from pipeline.clean import run_clean
    from pipeline.restore import check_weights

    if cfg.dst is not None and not cfg.dry_run:
        try:
            check_weights(cfg.restore_config("weights-check-only"))
        except (FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}", soft_wrap=True)
            raise typer.Exit(2) from None
    _start_ray(address)

    try:
        result = run_clean(cfg, on_stage=lambda stage: console.print(f"[bold]clean[/bold] {stage} ..."))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None

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
    out.print(f"report: {result.report}")
    if result.failed:
        raise typer.Exit(1)


def _start_ray(address: str | None) -> None:
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        # Inside a Ray job RAY_ADDRESS names the cluster; otherwise a new local Ray ("local": with None, Ray would
        # join whatever cluster `ray start` last left running on this machine).
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
