"""A local Ray head for development and tests: ``ray start --head --block`` on loopback, with token auth.

Safe beside other Ray instances on the same machine:

* every port is chosen free, including the two metrics ports Ray otherwise fixes (44217, 44227);
* the temp dir is a fresh short folder under /tmp (Ray's unix socket paths must stay under about 107 bytes);
* the node runs as a single-node cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which makes Ray take 127.0.0.1
  as the node address, so the GCS, raylet, agents and dashboard listen on loopback only (a plain ``ray start``
  swaps 127.0.0.1 for the machine's routable address and binds its gRPC servers to all interfaces);
* token auth is on: a random token goes to a 0600 file handed over by ``RAY_AUTH_TOKEN_PATH``, never as a value on
  a command line or in the environment of the head;
* it stops by PID: SIGTERM to the ``ray start --block`` process, which takes its children down, then SIGKILL to its
  own process group for any straggler. Never ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobs.local_s3 import _is_free, free_port

__all__ = ["LocalRayHead"]

_PORT_OPTIONS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "metrics-export-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
)
_WORKER_PORTS = 200


def _worker_port_range() -> tuple[int, int]:
    """A free block of ports below the ephemeral range (where outgoing connections could take them)."""
    for _ in range(200):
        low = random.randrange(20000, 30000 - _WORKER_PORTS)
        if all(_is_free(p) for p in range(low, low + _WORKER_PORTS, 7)):
            return low, low + _WORKER_PORTS - 1
    raise RuntimeError("no free worker port range found on 127.0.0.1")


@dataclass
class LocalRayHead:
    """Start with :meth:`start` (or ``with LocalRayHead(folder) as head:``); ``address`` is the job API URL.

    ``folder`` keeps the token file and the output of ``ray start``; Ray's own temp dir (sessions, sockets, logs)
    is a fresh ``/tmp/rayXXXXXX`` removed by :meth:`stop`.
    """

    folder: Path
    num_cpus: int = 2
    object_store_memory: int = 300 * 2**20
    token_auth: bool = True
    ports: dict[str, int] = field(default_factory=dict)
    temp_dir: Path | None = None
    _process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The job submission / dashboard address, http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    @property
    def token_file(self) -> Path:
        return Path(self.folder) / "auth_token"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def env(self) -> dict[str, str]:
        """What a client needs: the address, and where the token is (the file, not the token)."""
        env = {"RAY_ADDRESS": self.address}
        if self.token_auth:
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        return env

    def start(self, timeout: float = 120.0) -> LocalRayHead:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.token_auth and not self.token_file.exists():
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.ports = {name: free_port() for name in _PORT_OPTIONS}
        low, high = _worker_port_range()
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
        env.update(
            PATH=bin_dir + os.pathsep + env.get("PATH", ""),  # jobs run the `python` found here: this venv's
            RAY_AUTH_MODE="token" if self.token_auth else "disabled",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # single node: the node address stays 127.0.0.1
            RAY_USAGE_STATS_ENABLED="0",
            AUTOSCALER_METRIC_PORT=str(free_port()),
            DASHBOARD_METRIC_PORT=str(free_port()),
        )
        if self.token_auth:
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        ray_bin = Path(bin_dir) / "ray"
        cmd = [
            str(ray_bin) if ray_bin.exists() else "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_memory}",
            *[f"--{name}={port}" for name, port in self.ports.items()],
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
        ]
        with open(self.folder / "ray-start.out", "ab") as out:
            self._process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _headers(self) -> dict[str, str]:
        if not self.token_auth:
            return {}
        return {"Authorization": "Bearer " + self.token_file.read_text().strip()}

    def _wait_ready(self, timeout: float) -> None:
        """Ready when the job API answers and the head node's agent is up (jobs need it to start)."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"ray start exited with {self._process.returncode}; see {self.folder / 'ray-start.out'}"
                )
            try:
                jobs = requests.get(f"{self.address}/api/jobs/", headers=self._headers(), timeout=2)
                nodes = requests.get(f"{self.address}/nodes?view=summary", headers=self._headers(), timeout=2)
                if jobs.ok and nodes.ok and nodes.json().get("data", {}).get("summary"):
                    return
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray head on {self.address} not ready after {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this head and everything it started (by PID and its own process group), then drop the temp dir."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # `ray start --block` shuts its children down on SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of this head only: its own process group
            process.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # SIGKILLed children take a moment to go
                try:
                    os.killpg(process.pid, 0)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(0.1)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
