"""The model files a training run keeps in ``OUT``: where each lives and how it travels between OUT and a process.

OUT may be S3, and safetensors loads from a local file, so files go through a temporary copy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from dagn.checkpoint import load_model, read_metadata, save_model
from dagn.models import DAGN
from pipeline.storage import Location, S3Settings, local_copy, resolve_file, write_bytes_atomic

__all__ = [
    "MODEL_FILE",
    "STATE_FILE",
    "exists",
    "load_remote_model",
    "load_state",
    "remote_metadata",
    "save_remote_model",
    "stage_file",
]

STATE_FILE = "state.pt"  # optimiser, schedule and model state inside a Ray Train checkpoint
MODEL_FILE = "model.safetensors"  # the model alone, beside it (what a finished stage exports)


def load_state(path: str | Path) -> dict:
    """The resume state in a checkpoint, loaded without running any pickled code.

    Whoever can write the checkpoint prefix (often a shared bucket) could otherwise run code in every training worker:
    ``weights_only`` unpickles only tensors and plain containers, which is all a stage's state holds.

    Raises:
        ValueError: naming the file when it holds anything else (a planted pickle, a damaged file).
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"refusing the checkpoint state {path}: not plain tensors ({first})") from None


def stage_file(number: int) -> str:
    """The file of a finished stage: its model, the seed of the next stage."""
    return f"stage{number}.safetensors"


def exists(location: Location, relative: str) -> bool:
    return location.fs.get_file_info(location.path(relative)).type == pafs.FileType.File


def load_remote_model(location: Location, relative: str) -> DAGN:
    with local_copy(location, relative) as local:
        return load_model(local)


def remote_metadata(uri: str, s3: S3Settings) -> dict[str, str]:
    with local_copy(*resolve_file(uri, s3)) as local:
        return read_metadata(local)


def save_remote_model(model: DAGN, location: Location, relative: str, metadata: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = save_model(model, Path(tmp) / "model.safetensors", metadata)
        write_bytes_atomic(location.fs, location.path(relative), local.read_bytes())
    return location.uri_of(relative)
