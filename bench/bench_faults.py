"""Fault injection on a real restore: nothing lost, nothing done twice, nothing wrong.

One run on a private SeaweedFS server and a private local Ray. ``--images`` small JPEGs are restored twice from the
same S3 prefix: once without faults (the reference) and once while this script injects, as outputs appear, a kill
-9 of a model actor, a kill -9 of a write actor, a stall of the S3 server (SIGSTOP for ``--stall`` seconds) and a
kill -9 of the driver with its whole Ray; the killed run is then run again to completion (it takes the dead run's
lease over at once). It prints faults injected, outputs expected / present / lost (missing, or not ok in the final
state) / duplicated (work done twice: inside the killed run, a block retried after an actor kill; by the rerun, an
input that already had its output) / wrong (not pixel-identical to the reference).

    .venv/bin/python bench/bench_faults.py --images 300
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

import dagn
from dagn.checkpoint import save_model
from jobs.local_s3 import LocalS3

BUCKET = "faults"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 96)[None, :, None] + rng.normal(0, 20, (64, 96, 3))
    buffer = io.BytesIO()
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=15)
    return buffer.getvalue()


def _pids(marker: str, name: str = "") -> list[int]:
    """Processes whose command line or environment holds ``marker`` (a run's RAY_TMPDIR: its Ray daemons and workers
    inherit it) and whose command line holds ``name`` (Ray titles an actor's process after its class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (marker in cmdline or marker in environ) and name in cmdline:
            found.append(int(entry.name))
    return found


class Run:
    """One `dagn restore` subprocess with a Ray of its own (RAY_TMPDIR), killable with everything it started."""

    def __init__(self, work: Path, dst: str, args: list[str], env: dict[str, str]) -> None:
        self.ray_tmp = tempfile.mkdtemp(prefix="rf-", dir="/tmp")
        cmd = [sys.executable, "-m", "jobs.cli", "restore", f"s3://{BUCKET}/in", f"s3://{BUCKET}/{dst}", *args]
        self.log = open(work / f"{dst}-{time.time():.0f}.log", "w")  # noqa: SIM115 (closed in wait)
        self.process = subprocess.Popen(
            cmd,
            env={**env, "RAY_TMPDIR": self.ray_tmp},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 3600) -> int:
        code = self.process.wait(timeout)
        self.log.close()
        self._kill_ray()
        return code

    @property
    def ray_did_not_start(self) -> bool:
        return "timed out during startup" in Path(self.log.name).read_text(errors="replace")

    def _kill_ray(self) -> None:
        for pid in _pids(self.ray_tmp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.wait()


def _run_to_end(work: Path, dst: str, args: list[str], env: dict[str, str], tries: int = 3) -> int:
    """A run waited for; started again when Ray itself did not come up (its 30 s raylet limit, on a loaded host)."""
    for _ in range(tries):
        run = Run(work, dst, args, env)
        code = run.wait()
        if not run.ray_did_not_start:
            return code
    return code


def _not_outputs(prefix: str) -> tuple[str, ...]:
    return (f"{prefix}/_manifest/", f"{prefix}/_reports/")


def _outputs(client, prefix: str) -> dict[str, bytes]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith(_not_outputs(prefix))]
    return {k[len(prefix) + 1 :]: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _state_rows(client, prefix: str, *, parts_only: bool = False) -> list[dict]:
    """Every row of every state file under ``prefix/_manifest/state/`` (or of its uncompacted parts only)."""
    rows = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/_manifest/state/"):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if name.endswith(".parquet") and (name.startswith("part-") or not parts_only):
                body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
                rows += pq.read_table(io.BytesIO(body), columns=["key", "status", "decision", "run_id"]).to_pylist()
    return rows


@dataclass
class Killed:
    """What the driver kill left: the outputs present and the rows of the killed runs' uncompacted parts."""

    outputs: set[str] = field(default_factory=set)
    part_rows: list[dict] = field(default_factory=list)

    def redone_within(self) -> int:
        """Inputs restored twice inside one killed run (a block retried after an actor kill): ok rows of one key and
        one run in more than one part."""
        seen = Counter((r["key"], r["run_id"]) for r in self.part_rows if r["status"] == "ok")
        return sum(1 for n in seen.values() if n > 1)

    def redone_by_rerun(self, final_rows: list[dict]) -> int:
        """Inputs that had an output before the rerun and that the rerun restored again (decision ``new``)."""
        killed_runs = {r["run_id"] for r in self.part_rows}
        again = {r["key"] for r in final_rows if r["decision"] == "new" and r["run_id"] not in killed_runs}
        return len(again & self.outputs)


def _faulted_run(
    work: Path, common: list[str], env: dict[str, str], client, server, args
) -> tuple[list[str], int, Killed]:
    """The restore into out/ with the faults injected as its outputs appear; the faults, the last exit code and what
    the driver kill left."""
    faults: list[str] = []
    run = Run(work, "out", common, env)

    def when_outputs(n: int) -> None:
        while run.process.poll() is None:
            listed = client.list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents", [])
            if sum(not o["Key"].startswith(_not_outputs("out")) for o in listed) >= n:
                return
            time.sleep(0.3)

    def kill_actor(name: str) -> None:
        pids = _pids(run.ray_tmp, name)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            faults.append(f"kill -9 of the {name} actor (pid {pids[0]})")

    step = max(10, args.images // 8)
    when_outputs(step)
    for _ in range(2):  # Ray itself did not come up (a loaded host): start the run again
        if run.process.poll() is None or not run.ray_did_not_start:
            break
        run = Run(work, "out", common, env)
        when_outputs(step)
    kill_actor("RestoreStage")
    when_outputs(2 * step)
    kill_actor("WriteStage")
    when_outputs(3 * step)
    os.killpg(server._process.pid, signal.SIGSTOP)
    time.sleep(args.stall)
    os.killpg(server._process.pid, signal.SIGCONT)
    faults.append(f"S3 server stalled {args.stall:.0f} s (SIGSTOP)")
    when_outputs(4 * step)
    if run.process.poll() is None:
        run.kill()
        faults.append("kill -9 of the driver and its Ray, then a rerun")
        killed = Killed(outputs=set(_outputs(client, "out")), part_rows=_state_rows(client, "out", parts_only=True))
        return faults, _run_to_end(work, "out", common, env), killed  # its lease is taken over: its pid is gone
    return faults, run.wait(), Killed()


def _print_table(client, reference: dict[str, bytes], faults: list[str], code: int, killed: Killed) -> None:
    outputs = _outputs(client, "out")
    final = _state_rows(client, "out")
    wrong = sum(
        1
        for key, data in outputs.items()
        if key not in reference
        or not np.array_equal(
            np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(io.BytesIO(reference[key])))
        )
    )
    uploads = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    print(f"\nfaults injected ({len(faults)}):")
    for f in faults:
        print(f"  - {f}")
    lost = len(set(reference) - set(outputs)) + sum(1 for r in final if r["status"] != "ok")
    print(
        "\n| outputs expected | present | lost | duplicated within a run | duplicated by the rerun | wrong "
        "| multipart uploads left | last exit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {len(reference)} | {len(outputs)} | {lost} | {killed.redone_within()} | "
        f"{killed.redone_by_rerun(final)} | {wrong} | {len(uploads)} | {code} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--stall", type=float, default=8.0, help="Seconds the S3 server is paused.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    with LocalS3(work / "s3") as server:
        env = {**os.environ, **server.env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        os.environ.update(server.env())
        server.create_bucket(BUCKET)
        client = boto3.client("s3")
        for i in range(args.images):
            client.put_object(Bucket=BUCKET, Key=f"in/d{i % 7}/img{i:04d}.jpg", Body=_jpeg(i))
        weights = save_model(dagn.build_model("tiny").eval(), work / "tiny.safetensors")
        config = work / "restore.yaml"
        config.write_text("lease_seconds: 5\ns3:\n  read_timeout: 2\n  max_attempts: 10\n")
        common = ["--weights", str(weights), "--workers", "1", "--batch-size", "2", "--config", str(config)]

        start = time.monotonic()
        _run_to_end(work, "ref", common, env)
        reference = _outputs(client, "ref")
        print(f"fault-free run: {len(reference)} outputs in {time.monotonic() - start:.0f} s", flush=True)
        faults, code, killed = _faulted_run(work, common, env, client, server, args)
        _print_table(client, reference, faults, code, killed)
        print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
