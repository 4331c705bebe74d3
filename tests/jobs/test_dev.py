"""`dagn dev s3`: a real S3 server on loopback that prints its variables and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import boto3
import pytest


@pytest.mark.slow
def test_dev_s3_prints_env_and_stops_on_ctrl_c(tmp_path):
    command = ["dev", "s3", "--dir", str(tmp_path / "s3"), "--port", "0", "--bucket", "photos"]
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    try:
        env, lines = {}, []
        deadline = time.monotonic() + 90
        while "# bucket s3://photos (created)" not in lines:
            assert time.monotonic() < deadline, lines
            line = process.stdout.readline()
            assert line, f"dagn dev s3 ended early: {process.stderr.read()}"
            lines.append(line.strip())
            if line.startswith("export "):
                name, _, value = line[len("export ") :].strip().partition("=")
                env[name] = value
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env)

        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        s3.put_object(Bucket="photos", Key="a.txt", Body=b"hi")
        assert s3.get_object(Bucket="photos", Key="a.txt")["Body"].read() == b"hi"

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the S3 server outlived dagn dev s3"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
