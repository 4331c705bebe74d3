"""``dagn restore``: restore every image under a folder or S3 prefix into a mirrored destination, on Ray."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from jobs.settings import load_settings
from pipeline.codec import OutputFormat

__all__ = ["restore"]

log = logging.getLogger(__name__)


def restore(
    src: Annotated[str, typer.Argument(help="Input folder or s3://bucket/prefix (searched recursively).")],
    dst: Annotated[str, typer.Argument(help="Output folder or s3://bucket/prefix; outputs mirror the input names.")],
    weights: Annotated[
        str | None, typer.Option(help="DAGN model file (.safetensors). Default: the shipped weights.")
    ] = None,
    format: Annotated[
        OutputFormat | None,
        typer.Option(help="Output format; 'same' keeps JPEG/PNG/WebP as they are and writes others as PNG."),
    ] = None,
    quality: Annotated[int | None, typer.Option(help="JPEG/WebP quality of the outputs (default 95).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Model actors (one model copy each). Default: one per GPU, or one per CPU.")
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option(help="GPUs per model actor; 0 (default) runs on CPU.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images (or tiles) per model call (default: 1 on CPU, 8 on GPU).")
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Tile side for larger images (default 1024); 0 runs every image whole.")
    ] = None,
    min_qf: Annotated[int | None, typer.Option(help="Restore only JPEGs with an estimated quality >= this.")] = None,
    max_qf: Annotated[int | None, typer.Option(help="Restore only JPEGs with an estimated quality <= this.")] = None,
    overwrite: Annotated[
        bool | None, typer.Option("--overwrite/--no-overwrite", help="Redo inputs whose output already exists.")
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint URL. Keys come from the usual AWS_* variables.")
    ] = None,
    list_file: Annotated[
        str | None, typer.Option(help="Text file naming the inputs (paths relative to SRC), one per line.")
    ] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Refuse larger images (bomb guard; default 100 MP).")] = None,
    follow_symlinks: Annotated[
        bool | None,
        typer.Option(
            "--follow-symlinks/--no-follow-symlinks",
            help="Follow symbolic links in a local SRC (loops detected). Default: each link is a failed row.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file with any of these options (RestoreConfig); flags override it.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (or RAY_ADDRESS); default: start a local Ray.")
    ] = None,
) -> None:
    """Remove JPEG artifacts from every image under SRC, writing to the same names under DST.

    Resumable: inputs whose output exists are skipped without being read.

    A Parquet manifest (a row per input and run: status, error, estimated QF, size, time) is kept in DST/_manifest/.

    Bad inputs never stop the run; the exit status is 1 when any input failed.
    """
    cfg = _config(**locals())
    console = Console(stderr=True)

    from pipeline.restore import check_weights, run_restore

    try:
        check_weights(cfg)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    _start_ray(address)

    columns = (
        TextColumn("[bold]restore"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("restore", total=None, counts="")

        def on_rows(rows) -> None:
            for status in rows.column("status").to_pylist():
                counts[status] = counts.get(status, 0) + 1
            text = f"ok {counts['ok']}  skipped {counts['skipped']}  failed {counts['failed']}"
            progress.update(task, advance=len(rows), counts=text)

        try:
            summary = run_restore(cfg, on_start=lambda n: progress.update(task, total=n), on_rows=on_rows)
        except (ValueError, FileNotFoundError) as e:
            progress.stop()
            console.print(f"[red]error:[/red] {e}", soft_wrap=True)
            raise typer.Exit(2) from None

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
    out.print(f"manifest: {summary.manifest}")
    for path, error in summary.failures:
        out.print(f"[red]failed[/red] {path}: {error}", markup=True, highlight=False)
    if summary.failed > len(summary.failures):
        out.print(f"... and {summary.failed - len(summary.failures)} more failures: see the manifest")
    if summary.failed:
        raise typer.Exit(1)


def _config(**options):
    from pipeline.restore import RestoreConfig

    options.pop("address")
    config_file = options.pop("config")
    options["s3.endpoint_url"] = options.pop("s3_endpoint")
    whole_images = options.get("tile") == 0
    cfg = load_settings(RestoreConfig, config_file, **{**options, "tile": None if whole_images else options["tile"]})
    # --tile 0 must beat a tile size from the YAML file, and None from a flag means "not given", hence the update.
    return cfg.model_copy(update={"tile": None}) if whole_images else cfg


def _start_ray(address: str | None) -> None:
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        # No --address and no RAY_ADDRESS: a new local Ray that ends with this process. "local" matters: with None,
        # Ray would join whatever cluster `ray start` last left running on this machine.
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    context = DataContext.get_current()
    context.enable_progress_bars = False  # ours is the rich bar above
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know
