"""`dagn restore` through typer's CliRunner, on the session's local Ray and SeaweedFS S3 server."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import dagn
from dagn.checkpoint import save_model
from jobs.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(save_model(dagn.build_model("tiny").eval(), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


def _jpeg(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=20)
    return buffer.getvalue()


def test_help_lists_the_options():
    result = runner.invoke(app, ["restore", "--help"])
    assert result.exit_code == 0
    for option in ("--weights", "--format", "--workers", "--gpus-per-worker", "--batch-size", "--tile", "--min-qf"):
        assert option in result.output
    assert "--max-qf" in result.output and "--overwrite" in result.output and "--s3-endpoint" in result.output


def test_bad_options_fail_before_any_work(tmp_path):
    config = tmp_path / "restore.yaml"
    config.write_text("min_qf: 50\nquality: 80\n")
    result = runner.invoke(app, ["restore", "in", "out", "--config", str(config), "--max-qf", "10"])
    assert result.exit_code == 2 and "min_qf" in result.output
    result = runner.invoke(app, ["restore", "in", "out", "--format", "gif"])
    assert result.exit_code == 2


def test_config_file_and_flags_combine(tmp_path):
    from jobs.settings import load_settings
    from pipeline.restore import RestoreConfig

    config = tmp_path / "restore.yaml"
    config.write_text("tile: 256\nquality: 80\nworkers: 3\n")
    cfg = load_settings(RestoreConfig, config, src="in", dst="out", quality=90, tile=None)
    assert (cfg.tile, cfg.quality, cfg.workers) == (256, 90, 3)  # flags win, the file fills the rest
    cfg = load_settings(RestoreConfig, config, src="in", dst="out", tile=0)
    assert cfg.tile is None  # --tile 0: whole images, even over the file's tile


def test_restore_s3_prefix_then_resume(ray_local, s3_server, s3_bucket, weights):
    s3 = boto3.client("s3")
    for key, body in {"a.jpg": _jpeg(1), "sub/b.jpg": _jpeg(2, (32, 64)), "broken.jpg": b"\xff\xd8\xff nope"}.items():
        s3.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=body)
    args = ["restore", f"s3://{s3_bucket}/in", f"s3://{s3_bucket}/out", "--weights", weights, "--format", "png"]
    args += ["--tile", "0", "--s3-endpoint", s3_server.endpoint]

    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # one input failed
    assert "broken.jpg" in result.output and "restore" in result.output
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="out/")["Contents"]
    outputs = sorted(o["Key"] for o in listed if "/_manifest/" not in o["Key"] and "/_reports/" not in o["Key"])
    assert outputs == ["out/a.png", "out/sub/b.png"]
    assert any(o["Key"].endswith("/index.html") and "/_reports/" in o["Key"] for o in listed)  # the run's report
    body = s3.get_object(Bucket=s3_bucket, Key="out/sub/b.png")["Body"].read()
    assert Image.open(io.BytesIO(body)).size == (64, 32)

    s3.delete_object(Bucket=s3_bucket, Key="in/broken.jpg")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "skipped" in again.output
    for text in (result.output, again.output):
        assert s3_server.secret_key not in text and s3_server.access_key not in text


def test_damaged_weights_are_one_line_and_exit_2_before_any_output(tmp_path, weights):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(0))
    blob = bytearray(Path(weights).read_bytes())
    blob[-512:-256] = np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(blob))
    for command in (["restore", str(src), str(tmp_path / "out")], ["clean", str(src), str(tmp_path / "out")]):
        result = runner.invoke(app, [*command, "--weights", str(damaged)])
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("error:") and "corrupt" in result.output
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()
