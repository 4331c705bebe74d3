"""``dagn publish``: make a trained model the shipped default, with its model card and training log.

The file is named with a hash of its content (``dagn-<variant>-<sha12>.safetensors``) so a name always means the same
weights; ``dagn/weights/default.json`` points at it and ``dagn/weights/MODEL_CARD.md`` says how it was made and scores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Annotated

import typer

from dagn.checkpoint import (
    CONTENT_HASH_KEY,
    ModelFileError,
    content_hash,
    load_model,
    read_metadata,
    save_model,
    verify_model_file,
)
from dagn.complexity import count_parameters, gflops_per_megapixel

REPO = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = REPO / "dagn" / "weights"
_PROGRESS = re.compile(r"stage \d step \d+/\d+.*|stage \d step \d+ validation: .*|stage \d: .*|val_.*|exported .*")


def _training_log_lines(log: Path, every: int = 100) -> list[str]:
    """The progress lines of a `dagn train` log, thinned to one per ``every`` steps (validation lines all kept)."""
    kept = []
    for raw in log.read_text(errors="replace").splitlines():
        match = _PROGRESS.search(raw)
        if not match or "TrainingReport(" in raw:  # Ray Train's own echo of the metrics
            continue
        line = match.group(0)
        step = re.match(r"stage \d step (\d+)/", line)
        if step is None or int(step.group(1)) % every == 0:
            kept.append(line)
    return kept


def _shown_path(uri: str) -> str:
    """A local path as seen from the repository (``../shared/datasets/train``), so cards do not name one machine."""
    if "://" in uri or not Path(uri).is_absolute():
        return uri
    return os.path.relpath(uri, REPO)


def model_card(model_file: Path, eval_dir: Path | None, notes: str) -> str:
    meta = read_metadata(model_file)
    model = load_model(model_file)
    lines = [
        f"# dagn `{meta.get('variant', '?')}` — {model_file.name}",
        "",
        "DAGN (arXiv 2405.09291) trained from scratch with this project's own three-stage `dagn train` job.",
        "",
        "| | |",
        "|---|---|",
        f"| variant | `{meta.get('variant', '?')}` ({count_parameters(model) / 1e6:.2f} M parameters, "
        f"{gflops_per_megapixel(model):.0f} GFLOP per megapixel) |",
        f"| training data | `{_shown_path(meta.get('data', '?'))}` (BSDS500 train + val and 49 photos) |",
        f"| steps per stage | {meta.get('stage_steps', '?')} |",
        *([f"| continued from | `{meta['init_from']}` |"] if "init_from" in meta else []),
        f"| global batch | {meta.get('batch_size', '?')} patches |",
        f"| degradation | `{meta.get('degradation', '?')}` |",
        f"| git commit | {meta.get('git_commit', '?')} |",
        f"| exported | {meta.get('exported', '?')} |",
        f"| sha256 (12) | {content_hash(model_file)} |",
        "",
    ]
    if notes:
        lines += ["## How it was trained", "", notes.strip(), ""]
    if eval_dir is not None:
        lines += ["## Evaluation (`dagn evaluate`, Pillow JPEG at each QF, RGB for colour sets, gray sets on Y)", ""]
        for results in sorted(eval_dir.glob("*/results.md")):
            lines += [results.read_text().strip(), ""]
    return "\n".join(lines) + "\n"


def publish(
    model_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Exported model.safetensors.")],
    eval_dir: Annotated[
        Path | None, typer.Option(help="`dagn evaluate --out` folder whose results go into the model card.")
    ] = None,
    log: Annotated[
        Path | None, typer.Option(help="`dagn train` log; its progress lines are kept beside the weights.")
    ] = None,
    notes: Annotated[
        Path | None, typer.Option(help="Markdown file with training notes (hardware, hours, commands).")
    ] = None,
    weights_dir: Annotated[Path, typer.Option(help="Where shipped weights live.")] = WEIGHTS_DIR,
) -> None:
    """Copy a trained model into dagn/weights under a content-hash name and make it the shipped default."""
    try:
        meta = verify_model_file(model_file)  # a damaged model is never shipped
    except ModelFileError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    weights_dir.mkdir(parents=True, exist_ok=True)
    rehashed = None
    if CONTENT_HASH_KEY not in meta:  # exported before files recorded it: shipped with it, so loads can check it
        rehashed = model_file = save_model(load_model(model_file), weights_dir / f".{model_file.name}.tmp", meta)
    name = f"dagn-{meta.get('variant', 'model')}-{content_hash(model_file)}.safetensors"
    target = weights_dir / name
    shutil.copyfile(model_file, target)
    if rehashed is not None:
        rehashed.unlink()
    (weights_dir / "default.json").write_text(json.dumps({"file": name}, indent=1) + "\n")
    card = model_card(target, eval_dir, notes.read_text() if notes else "")
    (weights_dir / "MODEL_CARD.md").write_text(card)
    if log is not None:
        log_file = weights_dir / "training-log.txt"
        lines = [f"# {name}: `dagn train` progress lines", *_training_log_lines(log)]
        if "init_from" in meta and log_file.exists():  # keep the log of the model it continued from, above
            lines = [*log_file.read_text().splitlines(), "", *lines]
        log_file.write_text("\n".join(lines) + "\n")
    typer.echo(f"shipped {target}")
