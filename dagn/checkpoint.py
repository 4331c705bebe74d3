"""Model files: safetensors weights with the architecture config and provenance in the header metadata.

One self-contained file per model, so a checkpoint reloads without guessing hyper-parameters from tensor shapes,
and no pickle is ever executed on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dagn.models import DAGN, DAGNConfig

__all__ = ["content_hash", "load_model", "read_metadata", "save_model", "shipped_weights"]

_FORMAT = "dagn-v1"
_WEIGHTS_DIR = Path(__file__).parent / "weights"


def save_model(model: DAGN, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (weights, BatchNorm statistics, config) to a safetensors file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {**(metadata or {}), "format": _FORMAT, "config": model.config.model_dump_json()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in header.items()})
    tmp.replace(path)  # atomic: a reader never sees a half-written model
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> DAGN:
    """Load a model file written by :func:`save_model` (default: the shipped weights), in eval mode."""
    path = Path(path) if path is not None else shipped_weights()
    meta = read_metadata(path)
    if meta.get("format") != _FORMAT or "config" not in meta:
        raise ValueError(f"{path} is not a dagn model file (no '{_FORMAT}' metadata)")
    model = DAGN(DAGNConfig.model_validate_json(meta["config"]))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()


def content_hash(path: str | Path, length: int = 12) -> str:
    """Short SHA-256 of a file's bytes; shipped weights are named with it so a name always means the same model."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]


def shipped_weights() -> Path:
    """Path of the default weights that ship inside the package (named in dagn/weights/default.json)."""
    index = _WEIGHTS_DIR / "default.json"
    if not index.exists():
        raise FileNotFoundError(f"no shipped weights: {index} is missing")
    return _WEIGHTS_DIR / json.loads(index.read_text())["file"]
