"""Batch-restore throughput: the Ray Data pipeline vs a plain single-process loop, same images, same model, one run.

Both sides do the whole job per image: read the file, decode (EXIF, ICC, alpha rules), restore with
:class:`dagn.Restorer`, encode, write. The loop is the simplest correct program (one image at a time, all cores to
torch); the pipeline is ``pipeline.restore.run_restore`` on a local Ray, timed from the call to its return
(planning, actor start-up and model load included; ``ray.init`` excluded, since a cluster is already up in
production). The two alternate ``--repeats`` times and the best time of each is kept, so load from other processes
on a shared machine skews the ratio less. Peak memory is the proportional set size (PSS: shared pages split fairly,
so Ray's shared-memory object store is not double counted), sampled every 0.1 s: of this process alone for the loop,
of this process and all its descendants (Ray's daemons and workers) for the pipeline.

CPU (this machine):
    .venv/bin/python bench/bench_restore.py --images ../shared/datasets/eval/live1_color --repeat 4
GPU (one model actor per GPU, bf16 autocast + channels_last inside dagn.Restorer):
    .venv/bin/python bench/bench_restore.py --device cuda --variant base --batch-size 8 --repeat 20
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dagn
from dagn.checkpoint import save_model
from pipeline.codec import OutputFormat, decode_image, encode_image, output_format
from pipeline.restore import RestoreConfig, run_restore


class PeakMemory:
    """Peak PSS (bytes) of this process and its descendants, sampled in a background thread."""

    def __init__(self, interval: float = 0.1, tree: bool = True) -> None:
        self.interval, self.tree, self.peak = interval, tree, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _children() -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                tree.setdefault(ppid, []).append(int(proc.name))
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

    def sample(self) -> int:
        if not self.tree:
            return self._pss(os.getpid())
        tree, todo, total = self._children(), [os.getpid()], 0
        while todo:
            pid = todo.pop()
            total += self._pss(pid)
            todo += tree.get(pid, [])
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def prepare_inputs(images: Path, folder: Path, repeat: int, quality: int) -> list[Path]:
    """JPEG copies (QF ``quality``) of every image in ``images``, ``repeat`` times under different names."""
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
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


def plain_loop(files: list[Path], src: Path, dst: Path, args: argparse.Namespace, weights: Path) -> float:
    """The single-process baseline; returns seconds (model load included, like the pipeline's actor start)."""
    start = time.perf_counter()
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
    return time.perf_counter() - start


def ray_pipeline(src: Path, dst: Path, args: argparse.Namespace, weights: Path) -> tuple[float, int]:
    cfg = RestoreConfig(
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
    start = time.perf_counter()
    summary = run_restore(cfg)
    return time.perf_counter() - start, summary.ok


def _device_line(device: str) -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = f"CPU: {cpu}, {os.cpu_count()} logical cores; torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device == "cuda" and torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("../shared/datasets/eval/live1_color"))
    parser.add_argument("--repeat", type=int, default=4, help="copies of the image set (more work per run)")
    parser.add_argument("--quality", type=int, default=10, help="JPEG quality of the prepared inputs")
    parser.add_argument("--variant", default="small", help="DAGN variant (random weights: speed only)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=None, help="model actors (default: 1 on CPU, GPUs on cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per actor (default: CPUs/workers)")
    parser.add_argument("--cpus-per-worker", type=float, default=None, help="default: what fits (see RestoreConfig)")
    parser.add_argument("--io-cpus", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tile", type=int, default=512, help="0: whole images")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed runs of each side; best kept")
    parser.add_argument("--scratch", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    if args.workers is None:
        args.workers = torch.cuda.device_count() if args.device == "cuda" else 1

    import ray

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-restore-"))
    src = scratch / "in"
    files = prepare_inputs(args.images, src, args.repeat, args.quality)
    megapixels = sum(np.prod(Image.open(p).size) for p in files) / 1e6
    torch.manual_seed(0)
    weights = save_model(dagn.build_model(args.variant).eval(), scratch / f"{args.variant}.safetensors")

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False

    print(_device_line(args.device))
    print(
        f"config: variant={args.variant} device={args.device} workers={args.workers} "
        f"threads/worker={args.threads or 'auto'} cpus/worker={args.cpus_per_worker or 'auto'} io_cpus={args.io_cpus} "
        f"batch={args.batch_size} tile={args.tile or 'none'}; Ray cluster {ray.cluster_resources()}"
    )
    print(f"inputs: {len(files)} JPEGs (QF {args.quality}), {megapixels:.1f} MP, from {args.images}")

    loop_times, ray_times, loop_mem, ray_mem = [], [], 0, 0
    for r in range(args.repeats):
        out = scratch / f"loop{r}"
        with PeakMemory(tree=False) as mem:  # the loop is this process alone (Ray's idle daemons left out)
            loop_times.append(plain_loop(files, src, out, args, weights))
        loop_mem = max(loop_mem, mem.peak)
        shutil.rmtree(out)
        out = scratch / f"ray{r}"
        with PeakMemory() as mem:
            seconds, ok = ray_pipeline(src, out, args, weights)
        ray_mem = max(ray_mem, mem.peak)
        shutil.rmtree(out)
        if ok != len(files):
            raise SystemExit(f"the pipeline restored {ok} of {len(files)} images")
        print(f"  repeat {r}: loop {loop_times[-1]:.1f} s, ray {seconds:.1f} s", flush=True)
        ray_times.append(seconds)

    loop_s, ray_s = min(loop_times), min(ray_times)
    print(f"plain loop : {loop_s:7.1f} s  {len(files) / loop_s:6.2f} images/s  {megapixels / loop_s:6.2f} MP/s")
    print(f"ray         : {ray_s:7.1f} s  {len(files) / ray_s:6.2f} images/s  {megapixels / ray_s:6.2f} MP/s")
    print(f"throughput ratio ray / loop: {loop_s / ray_s:.2f}  (goal >= 0.9)")
    print(f"peak memory (PSS, process tree): loop {loop_mem / 2**30:.2f} GiB, ray {ray_mem / 2**30:.2f} GiB")
    ray.shutdown()
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
