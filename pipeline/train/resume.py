"""Where a stage run continues: the newest complete checkpoint on storage, found and checked by dagn itself.

Ray Train records its checkpoints in a snapshot that it writes only after it has processed a report, so a worker
killed right after a checkpoint leaves a snapshot naming an older one, and resuming from Ray Train's own choice redoes
up to two checkpoint intervals. The checkpoint folders in OUT are the truth: the stage continues from the newest whose
model file verifies and whose state loads without pickle; a folder that a killed upload left incomplete is passed
over with a warning naming it.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from dagn.checkpoint import verify_model_file
from pipeline.storage import Location, local_copy
from pipeline.train.artifacts import MODEL_FILE, STATE_FILE, load_state

__all__ = ["ResumePoint", "find_resume_point", "newest_resume_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """A complete checkpoint: its folder relative to OUT and the step its model was saved at."""

    folder: str
    step: int


def _checkpoint_folders(out: Location, run_name: str) -> list[str]:
    """The run's checkpoint folders relative to OUT, newest first (Ray Train names them by their time)."""
    selector = pafs.FileSelector(out.path(f"checkpoints/{run_name}"), recursive=False, allow_not_found=True)
    names = [
        os.path.basename(info.path)
        for info in out.fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory and os.path.basename(info.path).startswith("checkpoint")
    ]
    return [f"checkpoints/{run_name}/{name}" for name in sorted(names, reverse=True)]


def _checked(out: Location, folder: str) -> tuple[ResumePoint, dict] | None:
    """The folder as a resume point and its stage state, once its model verifies and its state loads (without
    running any pickled code), else None (with a warning)."""
    try:
        with local_copy(out, f"{folder}/{MODEL_FILE}") as model:
            meta = verify_model_file(model)
        with local_copy(out, f"{folder}/{STATE_FILE}") as state_file:
            state = load_state(state_file)
    except (FileNotFoundError, ValueError) as e:  # ModelFileError and a refused state are ValueErrors
        missing = isinstance(e, FileNotFoundError)
        problem = f"{posixpath.basename(str(e.filename or 'a file'))} is missing" if missing else str(e)
        log.warning("passing over the incomplete checkpoint %s: %s", out.uri_of(folder), problem)
        return None
    return ResumePoint(folder=folder, step=int(meta.get("step", 0))), state


def newest_resume_state(out: Location, run_name: str) -> tuple[ResumePoint, dict] | None:
    """The newest complete checkpoint of the run and its stage state, each read once (None when it has none)."""
    return next(filter(None, (_checked(out, folder) for folder in _checkpoint_folders(out, run_name))), None)


def find_resume_point(out: Location, run_name: str) -> ResumePoint | None:
    """The newest complete checkpoint of the run (None when it has none)."""
    found = newest_resume_state(out, run_name)
    return found[0] if found else None
