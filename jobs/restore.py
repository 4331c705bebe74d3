"""``dagn restore``: restore every image under a folder or S3 prefix into a mirrored destination, on Ray."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from jobs.errors import UserError, require_folder
from jobs.options import ConfigFile, RayAddress, S3Endpoint, build_config, config_argument, config_option
from pipeline.codec import OutputFormat
from pipeline.ray_session import start_ray
from pipeline.report import RunRecord, write_report
from pipeline.restore import RestoreConfig
from pipeline.storage import resolve

__all__ = ["restore"]


def _flag(path: str, *decls: str, **kwargs):
    return config_option(RestoreConfig, path, *decls, **kwargs)


def restore(
    ctx: typer.Context,
    src: Annotated[str, config_argument(RestoreConfig, "src")],
    dst: Annotated[str, config_argument(RestoreConfig, "dst")],
    weights: Annotated[str | None, _flag("weights")] = None,
    format: Annotated[OutputFormat | None, _flag("format")] = None,
    quality: Annotated[int | None, _flag("quality")] = None,
    workers: Annotated[int | None, _flag("workers")] = None,
    gpus_per_worker: Annotated[float | None, _flag("gpus_per_worker")] = None,
    batch_size: Annotated[int | None, _flag("batch_size")] = None,
    tile: Annotated[int | None, _flag("tile")] = None,
    context: Annotated[int | None, _flag("context")] = None,
    min_qf: Annotated[int | None, _flag("min_qf")] = None,
    max_qf: Annotated[int | None, _flag("max_qf")] = None,
    overwrite: Annotated[bool | None, _flag("overwrite", "--overwrite/--no-overwrite")] = None,
    dry_run: Annotated[bool | None, _flag("dry_run", "--dry-run/--no-dry-run")] = None,
    max_workers: Annotated[int | None, _flag("max_workers")] = None,
    shard_depth: Annotated[int | None, _flag("shard_depth")] = None,
    list_file: Annotated[str | None, _flag("list_file")] = None,
    max_pixels: Annotated[int | None, _flag("max_pixels")] = None,
    follow_symlinks: Annotated[bool | None, _flag("follow_symlinks", "--follow-symlinks/--no-follow-symlinks")] = None,
    s3_endpoint: S3Endpoint = None,
    config: ConfigFile = None,
    address: RayAddress = None,
) -> None:
    """Remove JPEG artifacts from every image under SRC, writing to the same names under DST.

    Resumable: inputs done before and unchanged since are skipped without being read; changed ones are redone.

    The state (a Parquet row per input: status, error, QF, size, mtime) is kept per shard in DST/_manifest/.

    Bad inputs never stop the run; the exit status is 1 when any input failed.
    """
    from pipeline.restore import check_weights

    cfg = build_config(restore, ctx, RestoreConfig, config, **{"s3.endpoint_url": s3_endpoint})
    require_folder(cfg.src, "SRC")
    check_weights(cfg)
    start_ray(address, quiet=True)
    record = RunRecord(run_id="", src=cfg.src, dst=cfg.dst)
    summary = _run_with_progress(cfg, record)
    _print_summary(summary)
    if summary.total and cfg.dry_run:
        return
    if summary.total:
        record.run_id = summary.run_id
        Console().print(f"report: {write_report(record, resolve(cfg.src, cfg.s3), resolve(cfg.dst, cfg.s3))}")
    else:
        raise UserError(f"no images under SRC {cfg.src} (extensions {' '.join(cfg.extensions)}): check SRC")
    if summary.failed:
        raise typer.Exit(1)


def _run_with_progress(cfg: RestoreConfig, record: RunRecord):
    from pipeline.restore import run_restore

    columns = (
        TextColumn("[bold]restore"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("restore", total=None, counts="")

        def on_rows(rows) -> None:
            weights = rows.column("count").to_pylist()  # planning's tally rows stand for many inputs
            for status, n in zip(rows.column("status").to_pylist(), weights, strict=True):
                counts[status] = counts.get(status, 0) + n
            text = f"ok {counts['ok']}  skipped {counts['skipped']}  failed {counts['failed']}"
            progress.update(task, advance=sum(weights), counts=text)
            record.add(rows)

        return run_restore(cfg, on_rows=on_rows)


def _print_summary(summary) -> None:
    table = Table(
        "inputs", "restored", "skipped", "failed", "time (s)", "images/s", "MP/s", title=f"run {summary.run_id}"
    )
    table.add_row(
        str(summary.total),
        str(summary.ok),
        str(summary.skipped),
        str(summary.failed),
        f"{summary.seconds:.1f}",
        f"{summary.images_per_second:.2f}",
        f"{summary.megapixels_per_second:.2f}",
    )
    out = Console()
    out.print(table)
    decisions = Table("decision", "inputs", title="dry run: what a run would do" if summary.dry_run else "planned")
    for decision, n in sorted(summary.decisions.items()):
        decisions.add_row(decision, str(n))
    out.print(decisions)
    out.print(f"manifest: {summary.manifest}")
    for path, error in summary.failures:
        out.print(f"[red]failed[/red] {path}: {error}", markup=True, highlight=False)
    if summary.failed > len(summary.failures):
        out.print(f"... and {summary.failed - len(summary.failures)} more failures: see the manifest")
