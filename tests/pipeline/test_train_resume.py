"""Training resumes from the newest complete checkpoint on storage, and its state is never unpickled as code: whoever
can write the checkpoint prefix must not run code in the workers (it was ``torch.load(..., weights_only=False)``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from dagn.checkpoint import save_model
from dagn.training import batch_from_numpy, build_stage, new_model
from pipeline.storage import resolve
from pipeline.train import TrainConfig
from pipeline.train.artifacts import load_state
from pipeline.train.data import TRAINING_DEGRADATION, DataConfig
from pipeline.train.driver import run_stage
from pipeline.train.resume import find_resume_point


class _Planted:
    """What an attacker would put in ``state.pt``: unpickling it runs a command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("number", [1, 2, 3])
def test_the_state_of_a_trained_stage_loads_without_pickle(number, tmp_path):
    torch.manual_seed(0)
    stage = build_stage(number, new_model("tiny"), total_steps=4)
    rng = np.random.default_rng(0)
    arrays = {k: rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for k in ("clean", "jpeg")}
    stage.step(batch_from_numpy({**arrays, "quality": np.array([10, 50])}))  # optimiser moments, step counters
    torch.save(stage.state_dict(), tmp_path / "state.pt")
    resumed = build_stage(number, new_model("tiny"), total_steps=4)
    resumed.load_state_dict(load_state(tmp_path / "state.pt"))
    assert resumed.step_count == 1
    torch.testing.assert_close(resumed.state_dict(), stage.state_dict())  # weights, moments, RNG: all of it


def test_a_pickle_planted_in_the_checkpoint_prefix_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"stage": 3, "step": 5, "net": _Planted(str(marker))}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"refusing the checkpoint state .*state.pt: not plain tensors"):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()
    torch.load(tmp_path / "state.pt", weights_only=False)  # what resuming used to do
    assert marker.exists()


def test_a_plan_shorter_than_what_is_done_is_refused_before_ray(tmp_path):
    cfg = TrainConfig(variant="tiny", data=str(tmp_path / "images"), out=str(tmp_path / "out"), stage1_steps=60)
    folder = tmp_path / "out" / "checkpoints" / cfg.run_name(1) / "checkpoint_2026-12-01_00-00-00.000000"
    save_model(new_model("tiny"), folder / "model.safetensors", {"step": "250"})
    torch.save({"step": 250}, folder / "state.pt")
    with pytest.raises(ValueError, match="stage 1 has done 250 steps already, more than the 60 planned"):
        run_stage(cfg, 1)


def test_the_newest_complete_checkpoint_is_chosen_and_incomplete_ones_passed_over(tmp_path, caplog):
    out = resolve(str(tmp_path / "out"))
    state = build_stage(1, new_model("tiny"), total_steps=4).state_dict()
    damaged = {"15": "no state", "20": "truncated state", "25": "damaged model"}
    for step in (5, 10, 15, 20, 25):
        folder = tmp_path / "out" / "checkpoints" / "run" / f"checkpoint_2026-12-01_00-00-{step:02d}.000000"
        save_model(new_model("tiny"), folder / "model.safetensors", {"step": str(step)})
        if damaged.get(str(step)) != "no state":
            torch.save(state, folder / "state.pt")
        if damaged.get(str(step)) == "truncated state":
            (folder / "state.pt").write_bytes((folder / "state.pt").read_bytes()[:1000])
        if damaged.get(str(step)) == "damaged model":
            blob = bytearray((folder / "model.safetensors").read_bytes())
            blob[-100] ^= 0xFF
            (folder / "model.safetensors").write_bytes(bytes(blob))
    point = find_resume_point(out, "run")
    assert point is not None and point.step == 10 and point.folder.endswith("00-00-10.000000")
    passed_over = [r.getMessage() for r in caplog.records if "passing over" in r.getMessage()]
    assert len(passed_over) == 3 and "state.pt is missing" in passed_over[2]
    assert find_resume_point(out, "another-run") is None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def _training_workers(endpoint: bytes) -> list[int]:
    """Pids of this test session's Ray Train workers (other Rays on the machine have other S3 endpoints)."""
    procs = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [
        int(p.name) for p in procs if b"RayTrainWorker" in _read(p / "cmdline") and endpoint in _read(p / "environ")
    ]


def _checkpoint_steps(out, run_name: str) -> list[int]:
    """The step of every checkpoint folder of the run, complete or not (a step done twice shows twice)."""
    from dagn.checkpoint import verify_model_file

    folder = Path(out.path(f"checkpoints/{run_name}"))
    return sorted(int(verify_model_file(m)["step"]) for m in folder.glob("checkpoint_*/model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("max_failures", [0, 1], ids=["rerun", "restarted"])
def test_a_worker_killed_right_after_a_checkpoint_resumes_from_that_checkpoint(
    ray_local, s3_server, tmp_path, max_failures
):
    """Killed with no restarts allowed, the run fails and the next invocation resumes; with one allowed, Ray Train
    restarts the workers and they resume from the newest checkpoint on storage, within the same invocation."""
    (tmp_path / "images").mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        Image.fromarray(np.ascontiguousarray(getattr(skdata, name)()[:96, :96, :3])).save(
            tmp_path / f"images/{name}.png"
        )
    data = DataConfig(
        degradation=TRAINING_DEGRADATION.model_copy(update={"patch_size": 32}),
        patches_per_image=4,
        shuffle_buffer=8,
        val_images=2,
    )
    cfg = TrainConfig(
        variant="tiny", data=str(tmp_path / "images"), out=str(tmp_path / "out"), name="killed", stage1_steps=2000,
        batch_size=2, workers=1, checkpoint_every=5, log_every=5, keep_checkpoints=50, data_config=data,
        max_failures=max_failures, steps=None if max_failures == 0 else 40,
    )  # fmt: skip
    out, endpoint, killed = resolve(cfg.out), s3_server.env()["AWS_ENDPOINT_URL"].encode(), []

    def kill_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            point = find_resume_point(out, cfg.run_name(1))
            if point is not None and point.step >= 15 and _training_workers(endpoint):
                for pid in _training_workers(endpoint):
                    os.kill(pid, signal.SIGKILL)
                killed.append(point.step)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_a_checkpoint)
    killer.start()
    if max_failures == 0:
        with pytest.raises(Exception):  # noqa: B017 (Ray Train's error for a lost worker)
            run_stage(cfg, 1)
        killer.join()
        assert killed, "no checkpoint at step 15 or later appeared in time"
        newest = find_resume_point(out, cfg.run_name(1))
        assert newest is not None and newest.step >= killed[0]
        result = run_stage(cfg.model_copy(update={"steps": 5}), 1)  # this invocation: 5 more steps
        assert result.step == newest.step + 5
    else:
        result = run_stage(cfg, 1)
        killer.join()
        assert killed, "no checkpoint at step 15 or later appeared in time"
        assert result.step == 40  # the invocation's end, not 40 past where the restart resumed
    steps = _checkpoint_steps(out, cfg.run_name(1))
    assert len(steps) == len(set(steps)), f"steps done twice: {steps}"  # resumed where it was, nothing redone
