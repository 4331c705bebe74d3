"""Every mistake a user can make ends in one short message naming the problem and the option or file to change:
no traceback, exit status 2 for what the user gave wrong and 1 for work that failed; ``--debug`` shows the
traceback. Each case runs the real command on real files, a real S3 server or a real closed port."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import dagn
from dagn.checkpoint import save_model
from jobs.cli import app

runner = CliRunner()


def dagn_cli(*args: str, **env: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "300", **env})
    assert "Traceback" not in result.output
    return result


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(save_model(dagn.build_model("tiny").eval(), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


def test_missing_folder(tmp_path):
    result = dagn_cli("restore", str(tmp_path / "no-such"), str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "SRC" in result.output and "no such folder" in result.output


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = dagn_cli("train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "no images" in result.output and "--data" in result.output
    result = dagn_cli("evaluate", str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no images in DATA" in result.output


def test_unreadable_weights_file(tmp_path, photos):
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"not a model at all")
    result = dagn_cli("restore", str(photos), str(tmp_path / "out"), "--weights", str(garbage))
    assert result.exit_code == 2
    assert "--weights" in result.output and str(garbage) in result.output
    assert not (tmp_path / "out").exists()  # refused before any work


def test_bad_option_value(tmp_path, photos):
    result = dagn_cli("restore", str(photos), str(tmp_path / "out"), "--quality", "101")
    assert result.exit_code == 2 and "quality" in result.output
    result = dagn_cli("restore", str(photos), str(tmp_path / "out"), "--workers", "many")
    assert result.exit_code == 2 and "--workers" in result.output


def test_unreachable_s3(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = dagn_cli("train", "--data", "s3://bucket/images", "--out", str(tmp_path), "--s3-endpoint", endpoint)
    assert result.exit_code == 1
    assert "cannot reach S3" in result.output and "--s3-endpoint" in result.output


def test_refused_credentials(tmp_path, s3_server, s3_bucket):
    result = dagn_cli(
        "train", "--data", f"s3://{s3_bucket}/images", "--out", str(tmp_path), "--s3-endpoint", s3_server.endpoint,
        AWS_SECRET_ACCESS_KEY="wrong-secret",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "S3 refused the credentials" in result.output and "AWS_SECRET_ACCESS_KEY" in result.output
    assert "wrong-secret" not in result.output


def test_unreachable_ray(tmp_path, photos):
    address = f"127.0.0.1:{_closed_port()}"
    result = dagn_cli("train", "--data", str(photos), "--out", str(tmp_path / "out"), "--address", address)
    assert result.exit_code == 1
    assert "cannot reach the Ray cluster" in result.output and "--address" in result.output


def test_full_disk(tmp_path, weights, photos):
    if not os.path.exists("/dev/full"):
        pytest.fail("the test needs /dev/full (Linux) to fill a disk for real")
    out = tmp_path / "report"
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "results.json").symlink_to("/dev/full")  # every write there fails with ENOSPC
    result = dagn_cli("evaluate", str(photos), "--weights", weights, "--qf", "10", "--out", str(out))
    assert result.exit_code == 1
    assert "no space left on the device" in result.output


def test_debug_shows_the_traceback(tmp_path):
    args = ["restore", str(tmp_path / "no-such"), str(tmp_path / "out")]
    for result in (runner.invoke(app, ["--debug", *args]), runner.invoke(app, args, env={"DAGN_DEBUG": "1"})):
        assert result.exit_code != 0
        assert result.exception is not None and "no such folder" in str(result.exception)
