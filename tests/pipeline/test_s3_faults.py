"""S3 writes under faults, on a private SeaweedFS server: a stall is retried within the run and leaves no multipart
upload behind (pyarrow's streams opened one for every object and left it when the server stalled); permanent errors
fail at once."""

from __future__ import annotations

import os
import signal
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from jobs.local_s3 import LocalS3
from pipeline.storage import S3Settings, resolve, write_bytes_atomic

pytestmark = pytest.mark.slow

SETTINGS = S3Settings(read_timeout=1, connect_timeout=1, max_attempts=8, multipart_threshold=5 * 2**20)


@pytest.fixture
def server(tmp_path, monkeypatch):
    with LocalS3(tmp_path / "s3") as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        s3.create_bucket("stall")
        yield s3


def test_an_s3_stall_is_retried_and_leaves_no_multipart_upload_behind(server):
    location = resolve("s3://stall/out", SETTINGS)
    payloads = {f"small-{i:03d}.jpg": bytes([i]) * 3000 for i in range(120)}
    payloads["small-010.png"] = os.urandom(11 * 2**20)  # above the threshold: three parts, written during the stall
    written, errors = [], []

    def write_all() -> None:
        for name, data in sorted(payloads.items()):
            try:
                write_bytes_atomic(location.fs, location.path(name), data)
            except Exception as e:
                errors.append((name, e))
            written.append(name)

    thread = threading.Thread(target=write_all)
    thread.start()
    while len(written) < 8 and thread.is_alive():
        time.sleep(0.01)
    os.killpg(server._process.pid, signal.SIGSTOP)  # the server stalls mid-run, as in the fault-injection pass
    time.sleep(3)
    os.killpg(server._process.pid, signal.SIGCONT)
    thread.join(180)

    client = boto3.client("s3")
    assert client.list_multipart_uploads(Bucket="stall").get("Uploads", []) == []
    assert not errors and len(written) == len(payloads)  # every write finished within the run
    stored = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket="stall")["Contents"]}
    assert stored == {f"out/{name}": len(data) for name, data in payloads.items()}


def test_uploads_left_by_retried_creates_are_aborted(server):
    """A CreateMultipartUpload that reached a stalled server and was retried leaves an upload whose id never came
    back; the write that follows sweeps it away with its own."""
    client, location = boto3.client("s3"), resolve("s3://stall/out", SETTINGS)
    orphan = client.create_multipart_upload(Bucket="stall", Key="out/big.png")["UploadId"]
    other = client.create_multipart_upload(Bucket="stall", Key="out/big.png.old")["UploadId"]  # another key: kept
    write_bytes_atomic(location.fs, location.path("big.png"), os.urandom(6 * 2**20))
    left = [(u["Key"], u["UploadId"]) for u in client.list_multipart_uploads(Bucket="stall").get("Uploads", [])]
    assert left == [("out/big.png.old", other)] and orphan not in dict(left).values()
    assert client.head_object(Bucket="stall", Key="out/big.png")["ContentLength"] == 6 * 2**20


def test_permanent_errors_fail_at_once(server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")  # refused with 403: never worth a retry
    location = resolve("s3://stall/out", SETTINGS)
    start = time.monotonic()
    with pytest.raises(ClientError) as error:
        write_bytes_atomic(location.fs, location.path("a.jpg"), b"x")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert time.monotonic() - start < 5  # seven retries with backoff would take tens of seconds
