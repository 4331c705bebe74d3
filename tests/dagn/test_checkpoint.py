from __future__ import annotations

import pytest
import torch

import dagn
from dagn.checkpoint import content_hash, load_model, read_metadata, save_model


def test_round_trip_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    model = dagn.build_model("tiny")
    model.train()
    model(torch.rand(4, 3, 32, 32))  # move BatchNorm statistics away from their init
    model.eval()
    path = save_model(model, tmp_path / "m.safetensors", {"steps": "7"})
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    assert read_metadata(path)["steps"] == "7"
    x = torch.rand(1, 3, 37, 21)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    assert len(content_hash(path)) == 12


def test_foreign_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a dagn model file"):
        load_model(tmp_path / "x.safetensors")
