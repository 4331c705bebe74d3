"""The model file: checked once in the driver, fetched once per worker process when it lives on S3."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.restore.config import RestoreConfig
from pipeline.storage import S3Settings, is_s3, read_bytes, resolve_file

__all__ = ["check_weights", "local_weights"]


def local_weights(weights: str | None, s3: S3Settings) -> str | None:
    """A local path for ``weights``: s3:// model files are downloaded once per process into a temporary folder."""
    if weights is None or not is_s3(weights):
        return weights
    where, name = resolve_file(weights, s3)
    digest = hashlib.sha256(weights.encode()).hexdigest()[:12]
    local = Path(tempfile.gettempdir()) / "dagn-weights" / f"{digest}-{name}"
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        tmp.write_bytes(read_bytes(where.fs, where.path(name)))
        tmp.replace(local)
    return str(local)


def check_weights(cfg: RestoreConfig) -> None:
    """Refuse in the driver, before Ray starts, a model file that is missing (FileNotFoundError) or damaged
    (:class:`dagn.checkpoint.ModelFileError`): one clear line, not a traceback from every actor or black outputs."""
    from dagn.checkpoint import shipped_weights, verify_model_file

    if cfg.weights is None:
        path = shipped_weights()  # raises FileNotFoundError when the package has no default.json
        if not path.exists():
            raise FileNotFoundError(f"the shipped weights {path} are missing; pass --weights")
    elif is_s3(cfg.weights):
        where, name = resolve_file(cfg.weights, cfg.s3)
        if where.fs.get_file_info(where.path(name)).type != pafs.FileType.File:
            raise FileNotFoundError(f"model file not found: {cfg.weights}")
        path = local_weights(cfg.weights, cfg.s3)
    else:
        path = cfg.weights
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file not found: {cfg.weights}")
    verify_model_file(path)
