"""Batch-restore throughput: the Ray Data pipeline vs a plain single-process loop, same images, same model, one run.

Both sides do the whole job per image: read the file, decode (EXIF, ICC, alpha rules), restore with
:class:`dagn.Restorer`, encode, write. The loop is the simplest correct program (one image at a time), timed with
torch on all cores and with one thread; the faster of the two is the baseline. The pipeline is
``pipeline.restore.run_restore`` on a local Ray with its default model stage (``actor_resources``), timed from the
call to its return (planning, actor start-up and model load included; ``ray.init`` excluded, since a cluster is
already up in production). Loops and pipeline alternate ``--repeats`` times and the best time of each is kept, so
load from other processes on a shared machine skews the ratio less; the CPU seconds each side used (process tree)
and the load average are printed too, to tell overhead from contention.

Peak memory is the proportional set size (PSS: shared pages split fairly, so Ray's shared-memory object store is not
double counted) of this process alone for the loop, and of this process and all its descendants (Ray's daemons and
workers) for the pipeline, sampled every 0.5 s in one more, untimed run of each side. Not in the timed runs: PSS
comes from walking every process's page tables, ~60 ms of CPU per sample of a Ray process tree, which on 2 cores
slowed the pipeline it measured by ~5 % (and the one-process loop by almost nothing). Timed runs sample only CPU
times, once a second, which costs a few milliseconds.

CPU (this machine):
    .venv/bin/python bench/bench_restore.py --images ../shared/datasets/eval/live1_color --repeat 8
GPU (one model actor per GPU, bf16 autocast + channels_last inside dagn.Restorer):
    .venv/bin/python bench/bench_restore.py --device cuda --variant base --batch-size 8 --repeat 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import procfs  # bench/, beside this script
import torch
from PIL import Image

import dagn
from dagn.checkpoint import read_metadata, save_model, shipped_weights
from dagn.inference import auto_context, training_patch_size
from pipeline.codec import OutputFormat, decode_image, encode_image, output_format
from pipeline.extensions import IMAGE_EXTENSIONS
from pipeline.ray_session import start_ray
from pipeline.restore import RestoreConfig, run_restore


class TreeMonitor:
    """CPU seconds and, with ``memory``, peak PSS (bytes) of this process (and, with ``tree``, its descendants),
    sampled in a thread.

    CPU time per process is the last value seen before it exited, so processes that live less than one interval
    are missed; Ray's workers live for the whole run.
    """

    def __init__(self, interval: float = 1.0, tree: bool = True, memory: bool = False) -> None:
        self.interval, self.tree, self.memory, self.peak = interval, tree, memory, 0
        self._cpu: dict[int, float] = {}
        self._cpu_start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_seconds(self) -> float:
        return sum(v - self._cpu_start.get(pid, 0.0) for pid, v in self._cpu.items())

    @staticmethod
    def _children() -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for pid in procfs.pids():
            parent = procfs.parent_of(pid)
            if parent is not None:
                tree.setdefault(parent, []).append(pid)
        return tree

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _pids(self) -> list[int]:
        if not self.tree:
            return [os.getpid()]
        tree, todo, found = self._children(), [os.getpid()], []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += tree.get(pid, [])
        return found

    def sample(self) -> int:
        total = 0
        for pid in self._pids():
            total += self._pss(pid) if self.memory else 0
            cpu = procfs.cpu_seconds(pid)
            if cpu is not None:
                self._cpu[pid] = cpu
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMonitor:
        self.sample()
        self._cpu_start = dict(self._cpu)  # count only what is used from now on
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def prepare_inputs(images: Path, folder: Path, repeat: int, quality: int) -> list[Path]:
    """JPEG copies (QF ``quality``) of every image in ``images``, ``repeat`` times under different names."""
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not sources:
        raise SystemExit(f"no images in {images}")
    folder.mkdir(parents=True)
    written = []
    for r in range(repeat):
        for src in sources:
            with Image.open(src) as im:
                path = folder / f"r{r}" / f"{src.stem}.jpg"
                path.parent.mkdir(exist_ok=True)
                im.convert("L" if im.mode == "L" else "RGB").save(path, format="JPEG", quality=quality)
                written.append(path)
    return written


def plain_loop(
    files: list[Path], src: Path, dst: Path, args: argparse.Namespace, weights: Path, threads: int
) -> tuple[float, float]:
    """The single-process baseline with ``threads`` torch threads.

    Returns (seconds, steady images/s): the whole run (model load included, like the pipeline's actor start-up) and
    the rate after the first image.
    """
    torch.set_num_threads(threads)
    start = time.perf_counter()
    first = None
    restorer = dagn.Restorer(weights, device=args.device, tile=args.tile or None, batch_size=1)
    for path in files:
        key = path.relative_to(src).as_posix()
        decoded = decode_image(path.read_bytes(), max_pixels=100_000_000)
        restored = restorer(decoded.pixels)
        data = encode_image(
            restored,
            alpha=decoded.alpha,
            fmt=output_format(key, OutputFormat.same),
            quality=95,
            icc_profile=decoded.icc_profile,
            exif=decoded.exif,
        )
        out = dst / key
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        first = first or time.perf_counter()
    end = time.perf_counter()
    return end - start, (len(files) - 1) / (end - first) if end > first else float("nan")


def _config(src: Path, dst: Path, args: argparse.Namespace, weights: Path) -> RestoreConfig:
    return RestoreConfig(
        src=str(src),
        dst=str(dst),
        weights=str(weights),
        workers=args.workers,
        gpus_per_worker=1.0 if args.device == "cuda" else 0.0,
        cpus_per_worker=args.cpus_per_worker,
        threads_per_worker=args.threads,
        batch_size=args.batch_size,
        tile=args.tile or None,
        io_cpus=args.io_cpus,
    )


def ray_pipeline(src: Path, dst: Path, args: argparse.Namespace, weights: Path) -> tuple[float, int, float]:
    """Returns (seconds, images restored, steady images/s after the first batch of results arrived)."""
    arrivals: list[tuple[float, int]] = []
    start = time.perf_counter()
    summary = run_restore(
        _config(src, dst, args, weights), on_rows=lambda rows: arrivals.append((time.perf_counter(), len(rows)))
    )
    end = time.perf_counter()
    after_first = sum(n for _, n in arrivals[1:])
    steady = after_first / (end - arrivals[0][0]) if len(arrivals) > 1 else float("nan")
    return end - start, summary.ok, steady


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("../shared/datasets/eval/live1_color"))
    parser.add_argument("--repeat", type=int, default=8, help="copies of the image set (more work per run)")
    parser.add_argument("--quality", type=int, default=10, help="JPEG quality of the prepared inputs")
    parser.add_argument("--variant", default="small", help="DAGN variant (random weights: speed only)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=None, help="model actors (default: RestoreConfig's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per actor (default: CPUs/workers)")
    parser.add_argument("--cpus-per-worker", type=float, default=None, help="default: what fits (see RestoreConfig)")
    parser.add_argument("--io-cpus", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=None, help="default: RestoreConfig's (1 on CPU)")
    parser.add_argument("--tile", type=int, default=1024, help="0: whole images")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed runs of each side; best kept")
    parser.add_argument("--scratch", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    return args


def _random_weights(args: argparse.Namespace, scratch: Path) -> Path:
    """Random weights (speed only) that say they were trained like the shipped ones, so both sides run them the way
    users' restores run (whole, or in tiles of a small training patch size: see dagn.inference)."""
    torch.manual_seed(0)
    shipped = read_metadata(shipped_weights())
    return save_model(
        dagn.build_model(args.variant).eval(),
        scratch / f"{args.variant}.safetensors",
        {"degradation": shipped["degradation"]} if "degradation" in shipped else None,
    )


@dataclass
class _Runs:
    """Wall time, steady rate and CPU seconds of every timed run, per side (loop: per torch thread count)."""

    loop_threads: list[int]
    loop_times: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    loop_steady: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    loop_cpu: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    ray_times: list[float] = field(default_factory=list)
    ray_steady: list[float] = field(default_factory=list)
    ray_cpu: list[float] = field(default_factory=list)

    @property
    def best(self) -> int:
        return min(self.loop_threads, key=lambda t: min(self.loop_times[t]))


def _timed_runs(files, src: Path, scratch: Path, args, weights: Path) -> _Runs:
    """The plain loops and the pipeline, alternating, ``args.repeats`` times.

    The baseline is the better of two plain loops: torch on all cores, and one thread (which wins when other work
    shares the machine: intra-op threads then wait on each other).
    """
    runs = _Runs(loop_threads=sorted({1, os.cpu_count() or 1}))
    default_threads = torch.get_num_threads()
    for r in range(args.repeats):
        for threads in runs.loop_threads:
            out = scratch / f"loop{r}-{threads}"
            with TreeMonitor(tree=False) as mon:  # the loop is this process alone (Ray's idle daemons left out)
                seconds, steady = plain_loop(files, src, out, args, weights, threads)
            runs.loop_times[threads].append(seconds)
            runs.loop_steady[threads].append(steady)
            runs.loop_cpu[threads].append(mon.cpu_seconds)
            shutil.rmtree(out)
        torch.set_num_threads(default_threads)
        out = scratch / f"ray{r}"
        with TreeMonitor() as mon:
            seconds, ok, steady = ray_pipeline(src, out, args, weights)
        runs.ray_cpu.append(mon.cpu_seconds)
        shutil.rmtree(out)
        if ok != len(files):
            raise SystemExit(f"the pipeline restored {ok} of {len(files)} images")
        runs.ray_times.append(seconds)
        runs.ray_steady.append(steady)
        loops = ", ".join(
            f"loop {t} thr {runs.loop_times[t][-1]:.1f} s ({runs.loop_cpu[t][-1]:.0f} CPU-s)" for t in runs.loop_threads
        )
        print(
            f"  repeat {r}: {loops}, ray {seconds:.1f} s ({runs.ray_cpu[-1]:.0f} CPU-s); "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    torch.set_num_threads(default_threads)
    return runs


def _memory_pass(files, src: Path, scratch: Path, args, weights: Path, threads: int) -> tuple[int, int]:
    """Peak PSS of the plain loop (this process) and of the pipeline (the process tree), in an untimed pass."""
    print("memory pass (untimed, PSS sampled every 0.5 s) ...", flush=True)
    default_threads = torch.get_num_threads()
    with TreeMonitor(interval=0.5, tree=False, memory=True) as mon:
        plain_loop(files, src, scratch / "mem-loop", args, weights, threads)
    loop_mem = mon.peak
    torch.set_num_threads(default_threads)
    with TreeMonitor(interval=0.5, memory=True) as mon:
        ray_pipeline(src, scratch / "mem-ray", args, weights)
    return loop_mem, mon.peak


def _print_results(runs: _Runs, n: int, megapixels: float, memory: tuple[int, int]) -> None:
    best = runs.best
    loop_s, ray_s = min(runs.loop_times[best]), min(runs.ray_times)
    for t in runs.loop_threads:
        s = min(runs.loop_times[t])
        print(
            f"plain loop, {t} thread(s): {s:7.1f} s  {n / s:6.2f} images/s  {megapixels / s:6.2f} MP/s"
            f"  (steady {max(runs.loop_steady[t]):.2f} images/s)"
        )
    print(
        f"ray pipeline            : {ray_s:7.1f} s  {n / ray_s:6.2f} images/s  {megapixels / ray_s:6.2f} MP/s"
        f"  (steady {max(runs.ray_steady):.2f} images/s)"
    )
    print(f"throughput ratio ray / best loop ({best} thread(s)): {loop_s / ray_s:.2f}  (goal >= 0.9)")
    best_steady = max(max(v) for v in runs.loop_steady.values())
    print(f"steady-state ratio (after the first result, start-up left out): {max(runs.ray_steady) / best_steady:.2f}")
    loop_cpu, ray_cpu = min(runs.loop_cpu[best]) / n, min(runs.ray_cpu) / n
    print(f"CPU seconds per image (least of the runs): loop {loop_cpu:.2f}, ray {ray_cpu:.2f}")
    loop_mem, ray_mem = memory
    print(f"peak memory (PSS): loop {loop_mem / 2**30:.2f} GiB (process), ray {ray_mem / 2**30:.2f} GiB (process tree)")


def main() -> None:
    args = _arguments()
    import ray

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-restore-"))
    src = scratch / "in"
    files = prepare_inputs(args.images, src, args.repeat, args.quality)
    megapixels = sum(np.prod(Image.open(p).size) for p in files) / 1e6
    weights = _random_weights(args, scratch)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start_ray(quiet=True)
    print(procfs.machine_line(cuda=args.device == "cuda"))
    from pipeline.restore import actor_resources

    actors = actor_resources(_config(src, scratch / "x", args, weights), ray.cluster_resources())
    print(
        f"config: variant={args.variant} device={args.device} batch={args.batch_size} tile={args.tile or 'none'} "
        f"context={auto_context(training_patch_size(weights)) or 'whole'} io_cpus={args.io_cpus}; "
        f"model stage {actors}; Ray cluster CPU={ray.cluster_resources().get('CPU')}"
    )
    print(f"inputs: {len(files)} JPEGs (QF {args.quality}), {megapixels:.1f} MP, from {args.images}")
    runs = _timed_runs(files, src, scratch, args, weights)
    memory = _memory_pass(files, src, scratch, args, weights, runs.best)
    _print_results(runs, len(files), megapixels, memory)
    ray.shutdown()
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
