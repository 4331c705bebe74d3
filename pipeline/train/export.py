"""The inference weights a finished training exports, ``OUT/model.safetensors``, with their provenance."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from pipeline.storage import resolve
from pipeline.train.artifacts import load_remote_model, remote_metadata, save_remote_model, stage_file
from pipeline.train.config import TrainConfig

__all__ = ["export_model"]


def _lineage_steps(cfg: TrainConfig) -> dict[str, int]:
    """Optimisation steps per stage behind the exported weights: a model continued with ``init_from`` has its
    parent's stages 1 and 2, and its parent's stage-3 steps plus this run's."""
    steps = {str(n): cfg.stage_steps(n) for n in (1, 2, 3)}
    if cfg.init_from:
        parent = json.loads(remote_metadata(cfg.init_from, cfg.s3).get("stage_steps", "{}"))
        if {"1", "2", "3"} <= set(parent):
            steps = {"1": int(parent["1"]), "2": int(parent["2"]), "3": int(parent["3"]) + cfg.stage3_steps}
        out = resolve(cfg.out, cfg.s3)
        retrained = remote_metadata(out.uri_of(stage_file(2)), cfg.s3).get("steps")
        if retrained:  # stage 2 was run again here (a new CS encoder): its steps replace the parent's
            steps["2"] = int(retrained)
    return steps


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_model(cfg: TrainConfig, metrics: dict[str, float] | None = None) -> str:
    """Write ``OUT/model.safetensors``: the finished stage-3 model with provenance metadata; returns its URI."""
    out = resolve(cfg.out, cfg.s3)
    model = load_remote_model(out, stage_file(3))
    metadata = {
        "variant": cfg.variant,
        "stage_steps": json.dumps(_lineage_steps(cfg)),
        "data": cfg.data,
        "git_commit": _git_commit(),
        "degradation": cfg.data_config.degradation.model_dump_json(),
        "batch_size": str(cfg.batch_size * cfg.workers),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cfg.init_from:
        metadata["init_from"] = cfg.init_from
    if metrics:
        metadata["validation"] = json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")})
    return save_remote_model(model, out, "model.safetensors", metadata)
