"""End to end on a real local Ray and a real S3 server: ``tiny`` through the three stages with 2 DDP workers.

Images come from scikit-image and go to S3 first, so data, checkpoints and the exported model all live in S3.
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from PIL import Image
from skimage import data as skdata

import dagn
from dagn import jpeg
from dagn.checkpoint import load_model, read_metadata, save_model
from dagn.inference import Restorer
from dagn.metrics import psnr
from pipeline.storage import list_files, read_bytes, resolve, write_bytes_atomic
from pipeline.train import TrainConfig, export_model, plan_workers, train
from pipeline.train.data import TRAINING_DEGRADATION, DataConfig
from pipeline.train.seed import seed_from_model

pytestmark = pytest.mark.slow

_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@pytest.fixture(scope="module")
def s3_images(s3_server) -> str:
    """Six 160x160 RGB crops of scikit-image's pictures as PNG in a fresh bucket; returns the s3:// prefix."""
    bucket = f"t-img-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    location = resolve(f"s3://{bucket}/images")
    for name in _IMAGES:
        image = getattr(skdata, name)()[:160, :160, :3]
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG")
        write_bytes_atomic(location.fs, location.path(f"{name}.png"), out.getvalue())
    return location.uri


def _config(data: str, out: str, **overrides) -> TrainConfig:
    values = {
        "variant": "tiny",
        "data": data,
        "out": out,
        "name": f"t{uuid.uuid4().hex[:8]}",
        "stage1_steps": 4,
        "stage2_steps": 3,
        "stage3_steps": 4,
        "batch_size": 4,
        "workers": 2,
        "checkpoint_every": 2,
        "val_every": 3,
        "log_every": 1,
        "data_config": DataConfig(
            degradation=TRAINING_DEGRADATION.model_copy(update={"patch_size": 32}),
            patches_per_image=4,
            shuffle_buffer=8,
            val_images=2,
            val_size=64,
            val_qualities=(10, 50),
        ),
        **overrides,
    }
    return TrainConfig.model_validate(values)


def test_three_stages_with_two_workers_resume_and_export(ray_local, s3_images, s3_bucket, tmp_path):
    out_uri = f"s3://{s3_bucket}/run"
    cfg = _config(s3_images, out_uri)
    out = resolve(out_uri)

    # 1. an interrupted stage: this invocation may do 2 of stage 1's 4 steps
    (first,) = train(cfg.model_copy(update={"steps": 2}))
    assert (first.stage, first.step, first.finished) == (1, 2, False)
    checkpoints = [f for f in list_files(out, recursive=True) if f.startswith(f"checkpoints/{cfg.name}-stage1/")]
    assert any(f.endswith("/state.pt") for f in checkpoints), checkpoints
    assert "stage1.safetensors" not in list_files(out)

    # 2. the same command again: stage 1 continues at step 2, then stages 2 and 3 run, then the export
    results = train(cfg)
    assert [(r.stage, r.step, r.finished, r.skipped) for r in results] == [
        (1, 4, True, False),
        (2, 3, True, False),
        (3, 4, True, False),
    ]
    assert results[0].metrics["run_start_step"] == 2  # resumed, not restarted
    assert results[1].metrics["run_start_step"] == 0
    stage3 = results[2].metrics
    for key in ("val_psnr", "val_psnr_jpeg", "val_ssim", "val_ssim_jpeg", "val_psnr_q10", "val_psnr_jpeg_q50"):
        assert np.isfinite(stage3[key]), key
    assert stage3["val_psnr_jpeg_q10"] < stage3["val_psnr_jpeg_q50"]
    files = list_files(out)
    assert {"stage1.safetensors", "stage2.safetensors", "stage3.safetensors", "model.safetensors"} <= set(files)
    assert json.loads(read_bytes(out.fs, out.path("train_config.json")))["variant"] == "tiny"

    # 3. a finished run is not redone
    again = train(cfg)
    assert [(r.stage, r.skipped) for r in again] == [(1, True), (2, True), (3, True)]

    # 4. the exported weights load and restore an image
    tmp = tmp_path / "model.safetensors"
    tmp.write_bytes(read_bytes(out.fs, out.path("model.safetensors")))
    meta = read_metadata(tmp)
    assert meta["variant"] == "tiny" and meta["data"] == s3_images
    assert json.loads(meta["stage_steps"]) == {"1": 4, "2": 3, "3": 4}
    assert len(meta["git_commit"]) == 40 or meta["git_commit"] == "unknown"
    assert "val_psnr" in json.loads(meta["validation"])
    model = load_model(tmp)
    clean = skdata.chelsea()[:72, :88]
    compressed = jpeg.roundtrip(clean, 20)
    restored = Restorer(model=model, device="cpu")(compressed)
    assert restored.shape == compressed.shape and restored.dtype == np.uint8
    assert psnr(restored, clean) > psnr(compressed, clean) - 1.0  # 11 steps: near the input, not garbage


def test_a_stage_needs_the_previous_one(tmp_path):
    cfg = _config(str(tmp_path / "images"), str(tmp_path / "out"), stage="3")
    with pytest.raises(RuntimeError, match="stage 2 finished first"):
        train(cfg)
    assert isinstance(resolve(cfg.out).fs, pafs.LocalFileSystem)


@pytest.mark.parametrize("cluster_cpus", [2, 3, 16])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_cpu_training_leaves_ray_data_a_whole_cpu(tmp_path, cluster_cpus, workers, caplog):
    # Ray Data is granted Ray Train's leftover in whole CPUs; with less than one it made patches only in bursts.
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path), workers=workers)
    plan = plan_workers(cfg, cluster_cpus)
    assert plan.free_cpus >= 1 and plan.free_cpus == pytest.approx(cluster_cpus - plan.resources["CPU"] * workers)
    assert plan.resources["CPU"] > 0 and plan.threads == max(1, round(cluster_cpus / workers))
    assert "stall" not in caplog.text


def test_plan_warns_when_ray_data_would_get_no_cpu(tmp_path, caplog):
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path), workers=2, cpus_per_worker=0.75)
    assert plan_workers(cfg, 2).free_cpus == pytest.approx(0.5)
    assert "Ray Data gets no whole CPU" in caplog.text


def test_init_from_stands_in_for_stages_1_and_2(tmp_path):
    """Continuing from a model file (e.g. the shipped weights) seeds stage 3 with it, once, for the matching variant."""
    torch.manual_seed(3)
    source = save_model(dagn.build_model("tiny"), tmp_path / "shipped.safetensors")
    cfg = TrainConfig(variant="tiny", data=str(tmp_path), out=str(tmp_path / "out"), init_from=str(source))
    seed_from_model(cfg, resolve(cfg.out))
    for n in (1, 2):
        seeded = tmp_path / "out" / f"stage{n}.safetensors"
        assert read_metadata(seeded)["init_from"] == str(source)
        torch.testing.assert_close(load_model(seeded).state_dict(), load_model(source).state_dict())
    wrong = TrainConfig(variant="small", data=str(tmp_path), out=str(tmp_path / "other"), init_from=str(source))
    with pytest.raises(ValueError, match="not a 'small' model"):
        seed_from_model(wrong, resolve(wrong.out))


def test_init_from_with_stage_2_retrains_the_cs_encoder_for_a_new_input(tmp_path):
    """A model whose CS encoder read the plain image seeds stage 1 only of a stage-2 run; stage 3 alone is refused."""
    torch.manual_seed(3)
    old = dagn.build_model(dagn.get_config("tiny").model_copy(update={"cs_highpass": False}))
    source = save_model(old, tmp_path / "old.safetensors")
    common = {"variant": "tiny", "data": str(tmp_path), "init_from": str(source)}
    with pytest.raises(ValueError, match="--stage 2"):
        cfg3 = TrainConfig(**common, out=str(tmp_path / "direct"), stage="3")
        seed_from_model(cfg3, resolve(cfg3.out))
    cfg = TrainConfig(**common, out=str(tmp_path / "out"), stage="2")
    seed_from_model(cfg, resolve(cfg.out))
    assert not (tmp_path / "out" / "stage2.safetensors").exists()
    seeded = load_model(tmp_path / "out" / "stage1.safetensors")
    assert seeded.config.cs_highpass
    torch.testing.assert_close(seeded.state_dict(), load_model(source).state_dict())
    with pytest.raises(ValueError, match="stage 1 starts from scratch"):
        TrainConfig(**common, out=str(tmp_path / "x"), stage="1")


def test_export_counts_the_steps_of_the_model_it_continued_from(tmp_path):
    parent = save_model(
        dagn.build_model("tiny"), tmp_path / "p.safetensors", {"stage_steps": '{"1": 8, "2": 9, "3": 10}'}
    )
    cfg = TrainConfig(
        variant="tiny", data=str(tmp_path), out=str(tmp_path / "out"), init_from=str(parent), stage3_steps=5
    )
    seed_from_model(cfg, resolve(cfg.out))
    save_model(load_model(parent), tmp_path / "out" / "stage3.safetensors")
    exported = export_model(cfg)
    meta = read_metadata(exported)
    assert json.loads(meta["stage_steps"]) == {"1": 8, "2": 9, "3": 15}
    assert meta["init_from"] == str(parent)
