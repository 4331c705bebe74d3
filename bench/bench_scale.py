"""Archive scale: real ``dagn restore`` runs over 10^5 and 10^6 inputs (hard links of one tiny JPEG), side by side.

For each size it prints: time to the first written output and driver peak RSS of a first run (stopped once it has
restored for ``--window`` seconds: the whole run would take hours on a laptop), the planning rate of ``--dry-run``,
and driver peak RSS and wall time of a resume after 3 earlier runs (DST holding every output and the state those
runs leave: a current file per shard and two more runs' parts), where planning is all there is to do. Then the
ratios 10^6 / 10^5. ``--e2e N`` adds a complete run over N inputs (outputs, state rows, RSS over time, a rerun that
restores nothing), ``--kill N`` a run killed with SIGKILL halfway through N inputs and rerun, ``--s3 N`` the first-run
figures over N objects in a SeaweedFS server.

    nice .venv/bin/python bench/bench_scale.py --sizes 100000,1000000 --e2e 10000 --kill 10000 --s3 100000
"""

from __future__ import annotations

import argparse
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bench.procfs import machine_line
from pipeline.listing import Shard
from pipeline.manifest import SCHEMA, STATE_DIR, new_run_id, read_state, shard_id, write_shard_part
from pipeline.storage import parquet_bytes, resolve, write_bytes_atomic

PER_DIR = 1000
DAGN = str(Path(sys.executable).parent / "dagn")


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=30)
    return buffer.getvalue()


def make_tree(root: Path, n: int) -> list[str]:
    """``n`` hard links of a tiny JPEG (one file per 50 folders), ``PER_DIR`` per folder; returns the folder names."""
    root.mkdir(parents=True, exist_ok=True)
    folders = [f"d{i:05d}" for i in range((n + PER_DIR - 1) // PER_DIR)]
    for f, folder in enumerate(folders):
        if f % 50 == 0:  # a file takes at most 65,000 links
            original = root.parent / f"{root.name}-{f}.jpg"
            original.write_bytes(_jpeg())
        (root / folder).mkdir(exist_ok=True)
        for i in range(min(PER_DIR, n - f * PER_DIR)):
            os.link(original, root / folder / f"{i:04d}.jpg")
    return folders


def fake_earlier_runs(src: Path, dst: Path, folders: list[str]) -> None:
    """DST as 3 finished runs leave it: every output, a current state file per shard, parts of two later runs."""
    location = resolve(str(dst))
    runs = [new_run_id() for _ in range(3)]
    for f, folder in enumerate(folders):
        names = sorted(p.name for p in (src / folder).iterdir())
        stat = (src / folder / names[0]).stat()  # a folder's files are links of one file
        if f % 50 == 0:  # outputs are links of their own files: an input's already hold 50,000 links
            original = dst.parent / f"{dst.name}-{f}.jpg"
            shutil.copyfile(src / folder / names[0], original)
        (dst / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            os.link(original, dst / folder / name)
        keys = [f"{folder}/{name}" for name in names]
        shard = shard_id(Shard(folder, True).prefix, True)
        for i, run in enumerate(runs):
            chosen = keys if i == 0 else keys[: len(keys) // 10]  # later runs redid a tenth (changed inputs)
            rows = _rows(src, dst, chosen, stat, run)
            if i == 0:
                write_bytes_atomic(
                    location.fs, location.path(f"{STATE_DIR}/{shard}/current.parquet"), parquet_bytes(rows)
                )
            else:
                write_shard_part(location, shard, run, rows)
    for run in runs:
        (dst / "_manifest" / "runs").mkdir(parents=True, exist_ok=True)
        (dst / "_manifest" / "runs" / f"{run}.json").write_text(json.dumps({"run_id": run}))


def _rows(src: Path, dst: Path, keys: list[str], stat: os.stat_result, run: str):
    import pyarrow as pa

    n = len(keys)
    values = {
        "key": keys,
        "input": [f"{src}/{k}" for k in keys],
        "output": [f"{dst}/{k}" for k in keys],
        "size": [stat.st_size] * n,
        "mtime_ns": [stat.st_mtime_ns] * n,
        "status": ["ok"] * n,
        "decision": ["new"] * n,
        "qf": [30] * n,
        "width": [16] * n,
        "height": [16] * n,
        "mode": ["RGB"] * n,
        "milliseconds": [1.0] * n,
        "run_id": [run] * n,
    }
    return pa.table({name: values.get(name, [None] * n) for name in SCHEMA.names}, schema=SCHEMA)


def _status_mib(pid: int, field: str) -> float | None:
    """A memory figure of /proc/PID/status (VmRSS: now, VmHWM: peak), in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def _first_output(dst: Path) -> bool:
    with contextlib.suppress(OSError):
        for entry in os.scandir(dst):
            if entry.is_dir() and not entry.name.startswith("_") and any(os.scandir(entry.path)):
                return True
    return False


def _ray_pids(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if f"RAY_TMPDIR={marker}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
    return found


def run(args: list[str], *, stop_after: float | None = None, kill_when=None, env_extra=None, timeout=3600) -> dict:
    """One ``dagn restore``; samples driver RSS every 0.5 s. Stops it (SIGKILL, with the Ray it started) ``stop_after``
    seconds after its first output, or when ``kill_when()`` is true."""
    ray_tmp = tempfile.mkdtemp(prefix="bs", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", **(env_extra or {}))
    dst = Path(args[2]) if not args[2].startswith("s3://") else None
    start = time.perf_counter()
    p = subprocess.Popen(
        [DAGN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    first, peak, samples, killed = None, 0.0, [], False
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(p.stdout.read)
        while p.poll() is None and time.perf_counter() - start < timeout:
            now = time.perf_counter() - start
            peak = max(peak, _status_mib(p.pid, "VmHWM") or 0.0)
            samples.append((round(now, 1), _status_mib(p.pid, "VmRSS")))
            if first is None and ((dst is not None and _first_output(dst)) or (kill_when and kill_when("first"))):
                first = now
            if (stop_after is not None and first is not None and now - first > stop_after) or (
                kill_when and kill_when("kill")
            ):
                os.killpg(p.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.5)
        p.wait()
        text = out.result().decode(errors="replace")
    time.sleep(2)
    for pid in _ray_pids(ray_tmp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return {
        "seconds": time.perf_counter() - start,
        "first": first,
        "peak": peak,
        "samples": samples,
        "rc": p.returncode,
        "killed": killed,
        "output": text,
    }


def _summary(dst: Path) -> dict:
    runs = sorted((dst / "_manifest" / "runs").glob("*.json"))
    return json.loads(runs[-1].read_text()) if runs else {}


def bench_size(scratch: Path, n: int, weights: list[str], window: float) -> dict:
    src, dst = scratch / f"in{n}", scratch / f"out{n}"
    t = time.perf_counter()
    folders = make_tree(src, n)
    print(f"  {n}: tree of hard links in {time.perf_counter() - t:.0f} s", flush=True)
    first = run(["restore", str(src), str(dst), *weights], stop_after=window)
    print(f"  {n}: first run, first output {first['first']} s, driver peak {first['peak']:.0f} MiB", flush=True)
    dry = run(["restore", str(src), str(scratch / f"dry{n}"), "--dry-run", *weights])
    planned, dry["run_seconds"] = _count(dry["output"])
    print(f"  {n}: dry run, {planned} planned in {dry['run_seconds']} s (rc {dry['rc']})", flush=True)
    shutil.rmtree(dst)
    fake_earlier_runs(src, dst, folders)
    resume = run(["restore", str(src), str(dst), *weights])
    summary = _summary(dst)
    return {"first": first, "dry": dry, "planned": planned, "resume": resume, "resume_summary": summary}


def _count(output: str) -> tuple[int, float]:
    """(inputs in the printed decisions table, the run's own seconds: from planning on, without Ray's start)."""
    total, seconds = 0, 0.0
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 2 and cells[1].isdigit() and cells[0] != "not_image":
            total += int(cells[1])
        elif len(cells) == 7 and cells[0].isdigit():
            seconds = float(cells[4])
    return total, seconds


def bench_s3(scratch: Path, n: int, weights: list[str], window: float) -> None:
    """The first-run figures and a dry run over ``n`` objects in a SeaweedFS server (``PER_DIR`` per prefix)."""
    import boto3

    from jobs.local_s3 import LocalS3

    with LocalS3(scratch / "s3") as server:
        server.create_bucket("bench")
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        )
        body = _jpeg()
        keys = [f"in/d{i // PER_DIR:05d}/{i % PER_DIR:04d}.jpg" for i in range(n)]
        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: client.put_object(Bucket="bench", Key=k, Body=body), keys))
        print(f"  s3 {n}: uploaded in {time.perf_counter() - t:.0f} s", flush=True)

        def written(what: str) -> bool:
            return what == "first" and client.list_objects_v2(Bucket="bench", Prefix="out/d", MaxKeys=1)["KeyCount"] > 0

        env = server.env()
        first = run(
            ["restore", "s3://bench/in", "s3://bench/out", *weights],
            stop_after=window,
            kill_when=written,
            env_extra=env,
        )
        dry = run(["restore", "s3://bench/in", "s3://bench/dry", "--dry-run", *weights], env_extra=env)
        planned, seconds = _count(dry["output"])
    print(
        f"s3 {n:>6} objects: first output {first['first']:.1f} s, driver peak {first['peak']:.0f} MiB | dry run "
        f"{planned} planned in {seconds:.1f} s ({planned / max(seconds, 1e-9):.0f} keys/s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--window", type=float, default=20.0, help="seconds a first run restores before it is stopped")
    parser.add_argument("--e2e", type=int, default=0, help="a complete run over this many inputs, then a rerun")
    parser.add_argument("--kill", type=int, default=0, help="a run killed halfway through this many inputs, rerun")
    parser.add_argument("--s3", type=int, default=0, help="first-run figures over this many objects in SeaweedFS")
    parser.add_argument("--scratch", default=None)
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-scale-"))
    weights = _weights(scratch)
    print(machine_line())
    results = {}
    for n in [int(s) for s in args.sizes.split(",") if s]:  # --sizes "": only the other figures
        results[n] = r = bench_size(scratch, n, weights, args.window)
        rate = r["planned"] / r["dry"]["run_seconds"] if r["dry"]["run_seconds"] else 0
        print(
            f"{n:>9} inputs: first output {r['first']['first']:.1f} s, driver peak {r['first']['peak']:.0f} MiB | "
            f"dry run {r['planned']} planned in {r['dry']['run_seconds']:.1f} s ({rate:.0f} keys/s, peak "
            f"{r['dry']['peak']:.0f} MiB) | resume after 3 runs {r['resume']['seconds']:.1f} s, peak "
            f"{r['resume']['peak']:.0f} MiB, decisions {r['resume_summary'].get('decisions')}",
            flush=True,
        )
    sizes = sorted(results)
    if len(sizes) >= 2:
        a, b = results[sizes[0]], results[sizes[-1]]
        print(
            f"ratios {sizes[-1]} / {sizes[0]}: first output {b['first']['first'] / a['first']['first']:.2f}x "
            f"(goal <= 1.5), driver peak first run {b['first']['peak'] / a['first']['peak']:.2f}x (goal <= 1.25), "
            f"resume {b['resume']['peak'] / a['resume']['peak']:.2f}x (goal <= 1.25)"
        )
    if args.e2e:
        e2e(scratch, args.e2e, weights)
    if args.kill:
        kill_and_rerun(scratch, args.kill, weights)
    if args.s3:
        bench_s3(scratch, args.s3, weights, args.window)


def _weights(scratch: Path) -> list[str]:
    import torch

    import dagn
    from dagn.checkpoint import save_model

    torch.manual_seed(0)
    return ["--weights", str(save_model(dagn.build_model("tiny").eval(), scratch / "tiny.safetensors")), "--tile", "0"]


def e2e(scratch: Path, n: int, weights: list[str]) -> None:
    src, dst = scratch / f"e2e{n}", scratch / f"e2e{n}-out"
    make_tree(src, n)
    full = run(["restore", str(src), str(dst), *weights])
    outputs = sum(1 for p in dst.rglob("*.jpg"))
    state = read_state(resolve(str(dst)))
    rss = [s for _, s in full["samples"] if s]
    quarter = max(1, len(rss) // 4)
    again = run(["restore", str(src), str(dst), *weights])
    s = _summary(dst)
    print(
        f"e2e {n}: {full['seconds']:.0f} s, rc {full['rc']}, {outputs} outputs, {state.num_rows} state rows "
        f"({len(set(state['key'].to_pylist()))} keys); driver RSS median first quarter {np.median(rss[:quarter]):.0f} "
        f"MiB, last quarter {np.median(rss[-quarter:]):.0f} MiB, peak {full['peak']:.0f} | "
        f"rerun {again['seconds']:.0f} s: "
        f"statuses {s.get('statuses')}, decisions {s.get('decisions')}",
        flush=True,
    )


def kill_and_rerun(scratch: Path, n: int, weights: list[str]) -> None:
    src, dst = scratch / f"kill{n}", scratch / f"kill{n}-out"
    make_tree(src, n)
    counted = {"n": 0, "t": 0.0}

    def halfway(what: str) -> bool:
        if what == "first":
            return False
        if time.perf_counter() - counted["t"] > 2:
            counted.update(n=sum(len(os.listdir(d)) for d in dst.glob("d*")), t=time.perf_counter())
        return counted["n"] >= n // 2

    killed = run(["restore", str(src), str(dst), *weights], kill_when=halfway)
    before = sum(1 for _ in dst.rglob("*.jpg"))
    dry = run(["restore", str(src), str(dst), "--dry-run", *weights])  # the rerun's planning alone
    planned, plan_seconds = _count(dry["output"])
    again = run(["restore", str(src), str(dst), *weights])
    s = _summary(dst)
    state = read_state(resolve(str(dst)))
    after = sum(1 for _ in dst.rglob("*.jpg"))
    print(
        f"kill -9 at {before}/{n} outputs after {killed['seconds']:.0f} s (killed {killed['killed']}); rerun planning "
        f"(its --dry-run) {planned} keys in {plan_seconds:.1f} s; rerun "
        f"{again['seconds']:.0f} s rc {again['rc']}: {after} outputs, {state.num_rows} state rows, "
        f"{len(set(state['key'].to_pylist()))} keys, "
        f"statuses {state.group_by('status').aggregate([('key', 'count')]).to_pylist()}; "
        f"decisions {s.get('decisions')}; redone {s.get('decisions', {}).get('new', 0) - (n - before)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
