"""`dagn submit` and `dagn jobs` against a real local Ray head (token auth on, loopback only) and real S3."""

from __future__ import annotations

import io
import json
import time
import uuid

import boto3
import pytest
from PIL import Image
from typer.testing import CliRunner

from jobs.cli import app
from jobs.local_ray import LocalRayHead
from pipeline.manifest import read_state
from pipeline.storage import resolve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    head = LocalRayHead(tmp_path_factory.mktemp("rayhead"), num_cpus=2).start()
    yield head
    head.stop()


@pytest.fixture
def with_token(ray_head, monkeypatch):
    """The CLI finds the head's token the standard way: RAY_AUTH_TOKEN_PATH."""
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_head.token_file))
    return ray_head.token_file.read_text().strip()


def dagn(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _jpeg(seed: int, quality: int = 20) -> bytes:
    import numpy as np

    pixels = (np.random.default_rng(seed).random((40, 56, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_head_listens_on_loopback_only(ray_head):
    import importlib

    import ray  # noqa: F401  (ray ships psutil among its third-party files and puts them on the path)

    psutil = importlib.import_module("psutil")
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == ray_head.pid]
    assert group, "the head's processes were not found"
    listening = [ip for proc in group for ip in _listening(psutil, proc)]
    assert listening
    assert {ip.removeprefix("::ffff:") for ip in listening} == {"127.0.0.1"}


def _listening(psutil, proc) -> list[str]:
    try:
        return [c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_submit_restore_job(ray_head, with_token, s3_server, s3_bucket, tmp_path):
    from dagn import build_model
    from dagn.checkpoint import save_model

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    keys = ["a/one.jpg", "a/b/two.jpg", "three.jpg"]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=_jpeg(i))
    weights = save_model(build_model("tiny"), tmp_path / "tiny.safetensors")
    job_id = f"dagn-test-{uuid.uuid4().hex[:8]}"

    result = dagn(
        "submit",
        "--address",
        ray_head.address,
        "--submission-id",
        job_id,
        *("--env", "AWS_ENDPOINT_URL", "--env", "AWS_ACCESS_KEY_ID", "--env", "AWS_SECRET_ACCESS_KEY"),
        *("--env", "AWS_REGION=us-east-1"),
        "restore",
        f"s3://{s3_bucket}/in",
        f"s3://{s3_bucket}/out",
        *("--weights", str(weights), "--workers", "1", "--batch-size", "2", "--tile", "0"),
    )
    assert result.exit_code == 0, result.output
    assert f"job {job_id} SUCCEEDED" in result.output
    assert "manifest:" in result.output  # the job's own output was streamed

    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="out/").get("Contents", [])}
    assert {f"out/{k}" for k in keys} <= listed
    for key in keys:
        image = Image.open(io.BytesIO(s3.get_object(Bucket=s3_bucket, Key=f"out/{key}")["Body"].read()))
        assert image.size == (56, 40)
    assert any(k.startswith("out/_manifest/") and k.endswith(".parquet") for k in listed)
    rows = read_state(resolve(f"s3://{s3_bucket}/out")).to_pylist()  # the restore's own state reader
    assert sorted(r["input"] for r in rows) == sorted(f"s3://{s3_bucket}/in/{k}" for k in keys)
    assert {r["status"] for r in rows} == {"ok"}

    status = dagn("jobs", "status", job_id, "--address", ray_head.address, "--json")
    assert status.exit_code == 0, status.output
    view = json.loads(status.output)
    assert view["status"] == "SUCCEEDED"
    assert view["runtime_env"]["env_vars"] == sorted(
        ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
    )
    logs = dagn("jobs", "logs", job_id, "--address", ray_head.address)
    assert "manifest:" in logs.output
    listing = dagn("jobs", "list", "--address", ray_head.address, "--json")
    assert job_id in {j["id"] for j in json.loads(listing.output)}

    # Neither the cluster token nor the S3 secret is ever printed.
    for out in (result.output, status.output, logs.output, listing.output):
        assert with_token not in out
        assert s3_server.secret_key not in out


def test_no_wait_then_follow_a_failing_job(ray_head, with_token):
    # Valid for the command line, refused by CleanConfig inside the job: no DST and no --reports.
    submitted = dagn("submit", "--address", ray_head.address, "--no-wait", "clean", "samples")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_")
    followed = dagn("jobs", "logs", job_id, "--follow", "--address", ray_head.address)
    assert followed.exit_code == 1, followed.output
    assert "reports" in followed.output  # the job's own error, streamed back
    assert "FAILED" in dagn("jobs", "status", job_id, "--address", ray_head.address).output


def test_jobs_stop(ray_head, with_token):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head.address, headers={"Authorization": f"Bearer {with_token}"})
    job_id = client.submit_job(entrypoint="sleep 300")
    deadline = time.monotonic() + 60
    while client.get_job_status(job_id).value != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    stopped = dagn("jobs", "stop", job_id, "--address", ray_head.address)
    assert stopped.exit_code == 0, stopped.output
    assert "STOPPED" in stopped.output
    again = dagn("jobs", "stop", job_id, "--address", ray_head.address)
    assert "already STOPPED" in again.output
    missing = dagn("jobs", "status", "raysubmit_doesnotexist", "--address", ray_head.address)
    assert missing.exit_code == 2
    assert "no job" in missing.output


def test_token_is_required_and_never_echoed(ray_head, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # and so ~/.ray/auth_token is not consulted
    without = dagn("jobs", "list", "--address", ray_head.address)
    assert without.exit_code == 2
    assert "needs a token" in without.output

    wrong = "wrong-token-" + uuid.uuid4().hex
    monkeypatch.setenv("RAY_AUTH_TOKEN", wrong)
    refused = dagn("submit", "--address", ray_head.address, "models")
    assert refused.exit_code == 2
    assert "refused" in refused.output
    assert wrong not in refused.output
