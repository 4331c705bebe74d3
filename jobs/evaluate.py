"""``dagn evaluate``: the standard JPEG-artifact benchmark on a folder of ground-truth images, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from jobs.errors import UserError
from jobs.options import ConfigFile, build_config, config_argument, config_option
from pipeline.extensions import IMAGE_EXTENSIONS

# Folder names of the usual benchmark sets -> labels with published anchors (dagn.evaluation.PUBLISHED).
_KNOWN_SETS = {"live1_color": "live1", "live1": "live1", "bsds500_test": "bsd500", "bsd500": "bsd500"}


class EvaluateConfig(BaseModel):
    """Options of ``dagn evaluate``."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="Folder of ground-truth images (PNG/JPEG/BMP/TIFF); gray files are scored as gray.")
    out: Path = Field(Path("out/eval"), description="Report folder (a sub-folder per dataset is created).")
    weights: Path | None = Field(None, description="Model file (default: the shipped weights).")
    qualities: list[int] = Field([10, 20, 30, 40, 50, 60, 70, 80, 90], description="JPEG quality factors to test.")
    name: str | None = Field(None, description="Dataset label (default: from the folder name).")
    limit: int | None = Field(None, ge=1, description="Only the first N images (sorted by name).")
    tile: int | None = Field(None, ge=64, description="Restore in tiles of this size (saves memory on big images).")
    context: int | None = Field(
        None,
        ge=0,
        description="Largest region (pixels) the model sees at once; default: the model's own (whole images for "
        "models trained on patches of 128 px or more, else their patch size); 0: whole images (see dagn.inference).",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on GPUs and CPUs with native bf16, else fp32 (dagn.precision)."
    )
    device: str | None = Field(None, description="torch device (default: cuda if available, else cpu).")

    @field_validator("qualities", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        return [int(q) for q in v.split(",") if q.strip()] if isinstance(v, str) else v

    @field_validator("qualities")
    @classmethod
    def _check_qualities(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= q <= 100 for q in v):
            raise ValueError("qualities must be a non-empty list of integers in 1..100")
        return sorted(set(v))


def load_ground_truth(folder: Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """Ground-truth images by file name: single-channel files as H x W, everything else as RGB."""
    if not folder.is_dir():
        raise UserError(f"DATA {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"no images in DATA {folder} ({' '.join(IMAGE_EXTENSIONS)})")
    out = {}
    for path in files[:limit]:
        with Image.open(path) as im:
            out[path.name] = np.asarray(im.convert("L" if im.mode in ("L", "I;16", "1") else "RGB"))
    return out


def _flag(path: str, *decls: str, **kwargs):
    return config_option(EvaluateConfig, path, *decls, **kwargs)


def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, config_argument(EvaluateConfig, "data")],
    out: Annotated[Path | None, _flag("out")] = None,
    weights: Annotated[Path | None, _flag("weights")] = None,
    qf: Annotated[str | None, _flag("qualities", "--qf", extra_help="Comma-separated.")] = None,
    name: Annotated[str | None, _flag("name")] = None,
    limit: Annotated[int | None, _flag("limit")] = None,
    tile: Annotated[int | None, _flag("tile")] = None,
    context: Annotated[int | None, _flag("context")] = None,
    precision: Annotated[str | None, _flag("precision")] = None,
    device: Annotated[str | None, _flag("device")] = None,
    config: ConfigFile = None,
) -> None:
    """Compress ground truth with Pillow at each QF, restore, and report PSNR / SSIM / PSNR-B (input vs restored).

    Writes results.json, results.md, psnr_vs_qf.png (with published FBCNN/DAGN anchors on LIVE1 and BSD500) and an
    index.html with side-by-side crops. QF 70-90 are the "no harm" checks: restoring must not make good images worse.
    """
    from dagn.evaluation import evaluate as run_benchmark
    from dagn.inference import Restorer, context_setting
    from jobs.eval_report import CropGallery, markdown_table, write_report

    cfg = build_config(evaluate, ctx, EvaluateConfig, config)
    label = cfg.name or _KNOWN_SETS.get(cfg.data.name, cfg.data.name)
    truths = load_ground_truth(cfg.data, cfg.limit)
    restorer = Restorer(
        cfg.weights, device=cfg.device, tile=cfg.tile, context=context_setting(cfg.context), precision=cfg.precision
    )
    Console(stderr=True).print(
        f"model {restorer.weights}: context {f'{restorer.context} px' if restorer.context else 'whole images'}, "
        f"autocast {restorer.autocast_dtype or 'off (fp32)'}"
    )
    folder = cfg.out / label
    gallery = CropGallery(folder, truths, quality=cfg.qualities[0])

    total = len(truths) * len(cfg.qualities)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"evaluating {label}", total=total)

        def on_result(score, compressed, restored):
            gallery(score, compressed, restored)
            progress.update(task, advance=1, description=f"{label} {score.name} q{score.quality}")

        result = run_benchmark(restorer, truths.items(), cfg.qualities, dataset=label, on_result=on_result)
    written = write_report(result, folder, gallery, title=f"dagn on {label}")
    Console().print(Markdown(markdown_table(result)))
    Console().print(f"report: {written['html']}")
