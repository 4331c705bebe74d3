"""Training resume state is never unpickled as code: whoever can write the checkpoint prefix must not run code in
the workers (it was ``torch.load(..., weights_only=False)``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from dagn.training import batch_from_numpy, build_stage, new_model
from pipeline.train.artifacts import load_state


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
    from dagn.checkpoint import save_model
    from pipeline.train import TrainConfig
    from pipeline.train.driver import run_stage

    cfg = TrainConfig(variant="tiny", data=str(tmp_path / "images"), out=str(tmp_path / "out"), stage1_steps=60)
    folder = tmp_path / "out" / "checkpoints" / cfg.run_name(1) / "checkpoint_2026-12-01_00-00-00.000000"
    save_model(new_model("tiny"), folder / "model.safetensors", {"step": "250"})
    with pytest.raises(ValueError, match="stage 1 has done 250 steps already, more than the 60 planned"):
        run_stage(cfg, 1)
