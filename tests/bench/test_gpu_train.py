"""bench/gpu_train.py on CPU with a few steps: it trains from a model file, evaluates and writes a new one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

import dagn
from dagn.checkpoint import load_model, read_metadata, save_model

SCRIPT = Path(__file__).parents[2] / "bench" / "gpu_train.py"


def test_a_few_cpu_steps_write_a_changed_model(tmp_path):
    train, live = tmp_path / "train" / "photos", tmp_path / "live1"
    train.mkdir(parents=True)
    live.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        image = getattr(skdata, name)()[:96, :128, :3]
        Image.fromarray(np.ascontiguousarray(image)).save(train / f"{name}.png")
    Image.fromarray(skdata.rocket()[:48, :64]).save(live / "rocket.png")
    torch.manual_seed(0)
    start = save_model(dagn.build_model("tiny"), tmp_path / "start.safetensors", {"variant": "tiny"})
    out = tmp_path / "new.safetensors"
    command = [sys.executable, str(SCRIPT), "--weights", str(start), "--data", str(tmp_path / "train")]
    command += ["--eval", str(live), "--out", str(out), "--device", "cpu", "--steps", "3", "--batch-size", "8"]
    command += ["--patch-size", "32", "--loader-workers", "0", "--val-images", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 training / 1 held-out images" in done.stdout and "trained 3 steps, 24 samples" in done.stdout
    assert "live1: PSNR gain per QF" in done.stdout
    before, after = load_model(start).state_dict(), load_model(out).state_dict()
    assert not torch.equal(before["tail.0.weight"], after["tail.0.weight"])  # trained
    encoder = [k for k in before if k.startswith("ci_encoder.") and before[k].is_floating_point()]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)  # the encoders stay frozen
    meta = read_metadata(out)
    assert json.loads(meta["stage_steps"])["3"] == 3 and json.loads(meta["gpu_train"])["steps"] == 3
