"""A `dagn restore` killed midway (SIGKILL, like a lost machine) and run again: nothing missing, nothing done twice,
and no credential anywhere in what either run printed or logged.

Both runs are real subprocesses with their own local Ray (in a private temp folder, so its logs can be searched)
against the session's SeaweedFS server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

import dagn
from dagn.checkpoint import save_model
from pipeline.manifest import MANIFEST_DIR, read_state
from pipeline.restore.plan import DST_FOLDERS
from pipeline.storage import resolve

pytestmark = pytest.mark.slow

N_IMAGES = 40


def _jpeg(seed: int) -> bytes:
    """Large enough that restoring dominates the run: outputs then land over seconds, not in one burst of writes,
    so the kill finds some written and most not (with 256 x 320 images all 40 once landed between two polls)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=20)
    return buffer.getvalue()


def _outputs(bucket: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/")
    keys = {o["Key"][len("out/") :] for page in pages for o in page.get("Contents", [])}
    return {k for k in keys if k.split("/")[0] not in DST_FOLDERS}


def _keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _ray_processes(temp_dir: str) -> list[int]:
    """PIDs of the processes the command started: they all carry its private RAY_TMPDIR in their environment."""
    marker = f"RAY_TMPDIR={temp_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_killed_run_resumes_without_missing_or_duplicated_work(s3_server, s3_bucket, tmp_path):
    torch.manual_seed(0)
    weights = save_model(dagn.build_model("tiny").eval(), tmp_path / "tiny.safetensors")
    s3 = boto3.client("s3")
    for i in range(N_IMAGES):
        s3.put_object(Bucket=s3_bucket, Key=f"in/batch{i % 3}/img{i:03d}.jpg", Body=_jpeg(i))

    ray_tmp = tempfile.mkdtemp(prefix="dr", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(s3_server.env(), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    dagn_cli = str(Path(sys.executable).parent / "dagn")
    command = [dagn_cli, "restore", f"s3://{s3_bucket}/in", f"s3://{s3_bucket}/out", "--weights", str(weights)]
    command += ["--batch-size", "1", "--tile", "0"]
    logs = []
    try:
        # Run 1: killed with SIGKILL (process group: the driver and the Ray it started) once some outputs exist.
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while len(_outputs(s3_bucket)) < 3 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run finished before it could be killed: make the job longer"
        os.killpg(first.pid, signal.SIGKILL)
        logs.append(first.communicate(timeout=60)[0].decode(errors="replace"))
        # Ray's workers notice their raylet is gone and exit by themselves; give them a moment.
        deadline = time.monotonic() + 30
        while _ray_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = _ray_processes(ray_tmp)
        _kill(leftover)
        done_before = _outputs(s3_bucket)
        assert 3 <= len(done_before) < N_IMAGES

        # Run 2: completes; only the missing ones are restored.
        second = subprocess.run(command, env=env, capture_output=True, timeout=300)
        logs.append(second.stdout.decode(errors="replace") + second.stderr.decode(errors="replace"))
        assert second.returncode == 0, logs[-1]
    finally:
        _kill(_ray_processes(ray_tmp))

    assert not leftover, f"processes outlived the killed run: {leftover}"
    inputs = {f"batch{i % 3}/img{i:03d}.jpg" for i in range(N_IMAGES)}
    assert _outputs(s3_bucket) == inputs  # nothing missing, nothing else

    rows = read_state(resolve(f"s3://{s3_bucket}/out")).to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(inputs) and {r["status"] for r in rows} == {"ok"}
    # The killed run stored the blocks it finished; the second run redid none of what the first one wrote (those
    # without a state row yet are adopted: outputs newer than their inputs) and restored all the rest.
    histories = _keys(s3_bucket, f"out/{MANIFEST_DIR}/runs/")
    assert len(histories) == 1  # only the finished run wrote its summary
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key=histories[0])["Body"].read()
    decisions = json.loads(body)["decisions"]
    assert decisions.get("done", 0) + decisions.get("adopted", 0) == len(done_before)
    assert decisions.get("new", 0) == N_IMAGES - len(done_before) == json.loads(body)["statuses"]["ok"]
    second_run = json.loads(body)["run_id"]
    assert {r["key"] for r in rows if r["run_id"] == second_run and r["decision"] == "new"}.isdisjoint(done_before)

    # Credentials never appear: not in either run's output, the manifest, or any log of the Ray they started.
    secrets = [s3_server.secret_key, s3_server.access_key]
    texts = [*logs, str(rows)]
    suffixes = (".log", ".out", ".err", ".txt", ".json", "")
    files = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and p.suffix in suffixes]
    texts += [p.read_bytes().decode(errors="replace") for p in files]
    assert len(texts) > 5
    for text in texts:
        for secret in secrets:
            assert secret not in text
    shutil.rmtree(ray_tmp, ignore_errors=True)
