"""The model file: checked once in the driver, fetched by each loading process when it lives on S3."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyarrow.fs as pafs

from pipeline.restore.config import RestoreConfig
from pipeline.storage import S3Settings, is_s3, local_copy, resolve_file

__all__ = ["check_weights", "weights_path"]


@contextlib.contextmanager
def weights_path(weights: str | None, s3: S3Settings) -> Iterator[str | None]:
    """A local path for ``weights`` for the block (None stays None: the shipped weights); an s3:// model file is
    copied for the block (a copy per loading process, so a model replaced at the same URI is never served stale)."""
    if weights is None or not is_s3(weights):
        yield weights
        return
    with local_copy(*resolve_file(weights, s3)) as path:
        yield str(path)


def check_weights(cfg: RestoreConfig) -> None:
    """Refuse in the driver, before Ray starts, a model file that is missing (FileNotFoundError) or damaged
    (:class:`dagn.checkpoint.ModelFileError`): one clear line, not a traceback from every actor or black outputs."""
    from dagn.checkpoint import shipped_weights, verify_model_file

    if cfg.weights is None:
        path = shipped_weights()  # raises FileNotFoundError when the package has no default.json
        if not path.exists():
            raise FileNotFoundError(f"the shipped weights {path} are missing; pass --weights")
        verify_model_file(path)
        return
    where, name = resolve_file(cfg.weights, cfg.s3)
    if where.fs.get_file_info(where.path(name)).type != pafs.FileType.File:
        raise FileNotFoundError(f"model file not found: {cfg.weights}")
    with weights_path(cfg.weights, cfg.s3) as path:
        verify_model_file(path)
