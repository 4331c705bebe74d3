"""Training throughput (samples/s) of DAGN's stage 3 on Ray Train: 1 and 2 workers, fp32 and bf16, in one run.

Each configuration is a real stage-3 run of ``dagn train`` (Ray Data patches, TorchTrainer, DDP) from a randomly
initialised model, timed on its steady part (the first ``--warmup`` steps are left out). Configurations run in
alternation, ``--repeats`` times each, and the best run of each is kept, so load from other processes on a shared
machine skews the ratio less. For the runs with 2 workers it also prints where the machine's cores went during the
steady part (from /proc, once a second): the trainers, Ray Data (patch making and its split coordinator), the rest of
Ray (daemons, Ray Train's controller actors, this driver) and idle time, which is what keeps the ratio below 2.
Last, with Ray shut down, the same steps in 1 and 2 plain torch processes (DDP over gloo, random patches, no data
pipeline): the ratio this machine allows, which the Ray runs' ratio can approach but not pass.

Precision: the worker-scaling runs use training's default (bf16 autocast on GPUs and on CPUs with native bf16, else
fp32); the 2-worker run (and its plain-torch twin) is repeated in the other precision, and both are printed side by
side. ``--precision fp32`` or ``bf16`` forces one for every run instead.

CPU (this machine):   python bench/bench_train.py
GPU (1 worker per GPU, bf16 autocast, needs 2 GPUs for the ratio; channels_last as on CPU):
                      python bench/bench_train.py --gpus-per-worker 1 --batch-size 64 --patch-size 128
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import procfs  # bench/, beside this script
from PIL import Image

import dagn
from dagn.checkpoint import save_model
from dagn.precision import cpu_has_bf16
from pipeline.ray_session import start_ray
from pipeline.storage import resolve, write_bytes_atomic
from pipeline.train import TrainConfig, run_stage
from pipeline.train.data import TRAINING_DEGRADATION, DataConfig


def _sample_images(folder: Path) -> str:
    """A few real pictures from scikit-image, so the bench runs anywhere."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"):
        Image.fromarray(np.ascontiguousarray(getattr(data, name)()[..., :3])).save(folder / f"{name}.png")
    return str(folder)


class CpuSampler:
    """CPU seconds (user + system) of every process on the machine, with its title, once a second in a thread."""

    GROUPS = (("trainers", ("RayTrainWorker",)), ("Ray Data", ("MapBatches", "SplitCoordinator")))

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        out = {}
        for pid in procfs.pids():
            title, cpu = procfs.title(pid), procfs.cpu_seconds(pid)
            if title is not None and cpu is not None:
                out[pid] = (title, cpu)
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._snapshot()))
            self._stop.wait(1.0)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> dict[str, float]:
        """Cores used per group between the samples nearest to ``start`` and ``end`` (and idle, by difference).

        Each second is charged to the title a process had at its end (Ray renames a worker as it takes a task)."""
        times = [t for t, _ in self.samples]
        i0, i1 = (min(range(len(times)), key=lambda i: abs(times[i] - t)) for t in (start, end))
        if i1 <= i0:
            return {}
        used: dict[str, float] = {}
        for (_, before), (_, after) in zip(self.samples[i0:i1], self.samples[i0 + 1 : i1 + 1], strict=True):
            for pid, (title, cpu) in after.items():
                group = next((g for g, keys in self.GROUPS if any(k in title for k in keys)), None)
                if group is None:
                    group = "other Ray + driver" if "ray" in title or pid == os.getpid() else "rest of the machine"
                used[group] = used.get(group, 0.0) + cpu - before.get(pid, (title, 0.0))[1]
        span = times[i1] - times[i0]
        used = {group: seconds / span for group, seconds in used.items()}
        used["idle"] = max(0.0, (os.cpu_count() or 1) - sum(used.values()))
        return used


def _run(
    args: argparse.Namespace, data: str, workers: int, threads: int | None, bf16: bool
) -> tuple[float, dict[str, float]]:
    out = Path(args.scratch) / f"w{workers}t{threads}-{uuid.uuid4().hex[:6]}"
    # Stage 3 starts from the stage-2 file; a random model is as fast to train as a trained one.
    seed = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        seed.write(save_model(dagn.build_model(args.variant), Path(tmp) / "m.safetensors").read_bytes())
    location = resolve(str(out))
    write_bytes_atomic(location.fs, location.path("stage2.safetensors"), seed.getvalue())
    cfg = TrainConfig(
        variant=args.variant,
        data=data,
        out=str(out),
        stage="3",
        name="bench",
        stage3_steps=args.steps,
        batch_size=args.batch_size,
        workers=workers,
        threads_per_worker=threads,
        gpus_per_worker=args.gpus_per_worker,
        amp=bf16,
        log_every=args.warmup,
        checkpoint_every=args.steps,
        data_config=DataConfig(
            degradation=TRAINING_DEGRADATION.model_copy(update={"patch_size": args.patch_size}),
            val_images=0,
            **({"patches_per_image": args.patches_per_image} if args.patches_per_image else {}),
        ),
    )
    with CpuSampler() as sampler:
        result = run_stage(cfg, 3)
    metrics = result.metrics
    return float(metrics["steady_samples_per_s"]), sampler.cores(metrics["steady_from_unix"], metrics["steady_to_unix"])


def _plain_worker(rank: int, world: int, port: int, args: argparse.Namespace, bf16: bool, rates) -> None:
    """One process of the no-Ray reference: stage 3 of a random model on random uint8 patches, DDP over gloo."""
    import torch
    import torch.distributed as dist

    from dagn.training import batch_from_numpy, build_stage

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(rank)
    stage = build_stage(
        3,
        dagn.build_model(args.variant),
        total_steps=args.steps,
        distributed=world > 1,
        autocast_dtype=torch.bfloat16 if bf16 else None,
    )
    rng = np.random.default_rng(rank)
    shape = (args.batch_size, args.patch_size, args.patch_size, 3)
    batches = [{k: rng.integers(0, 256, shape, dtype=np.uint8) for k in ("clean", "jpeg")} for _ in range(4)]
    for step in range(args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        stage.step(batch_from_numpy(batches[step % len(batches)]))
    rates[rank] = (args.steps - args.warmup) * args.batch_size * world / (time.perf_counter() - start)
    if world > 1:
        dist.destroy_process_group()


def _plain(args: argparse.Namespace, world: int, bf16: bool) -> float:
    """samples/s of ``world`` plain torch processes (1 thread each), no Ray and no data pipeline: what the machine
    allows, the ceiling of the Ray runs' ratio."""
    import torch.multiprocessing as mp

    from jobs.local_s3 import free_port

    ctx = mp.get_context("spawn")
    rates = ctx.Manager().dict()
    port = free_port()
    procs = [ctx.Process(target=_plain_worker, args=(r, world, port, args, bf16, rates)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return rates[0]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="small")
    parser.add_argument("--data", help="training images, folder or s3:// (default: scikit-image samples)")
    parser.add_argument("--steps", type=int, default=40, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the rate")
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--patches-per-image", type=int, help=f"default: training's ({DataConfig().patches_per_image})")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--precision", choices=("both", "fp32", "bf16"), default="both", help="both: the 2-worker run in each"
    )
    parser.add_argument("--scratch", default="runs/bench_train", help="checkpoints of the bench runs go here")
    return parser.parse_args()


def _configs(args: argparse.Namespace, cpus: int, gpus: int, bf16: bool) -> list[tuple[int, int | None, bool]]:
    """(workers, threads per worker, bf16) of each Ray run."""
    if args.gpus_per_worker:
        configs = [(1, None, bf16)] + ([(2, None, bf16)] if gpus >= 2 * args.gpus_per_worker else [])
    else:  # 1 worker with 1 thread and with every core, 2 workers with cores / 2 threads each
        configs = [(1, 1, bf16), (1, cpus, bf16), (2, max(1, cpus // 2), bf16)]
    if args.precision == "both":  # the last (widest) configuration again in the other precision
        configs.append((*configs[-1][:2], not bf16))
    return configs


def _ray_runs(args, data, configs) -> dict[tuple[int, int | None, bool], float]:
    best: dict[tuple[int, int | None, bool], float] = {}
    for r in range(args.repeats):
        for key in configs:
            workers, threads, amp = key
            rate, cores = _run(args, data, workers, threads, amp)
            best[key] = max(rate, best.get(key, 0.0))
            line = (
                f"  run {r + 1}: {workers} worker(s) x {threads or 'auto'} thread(s), {_precision(amp)}: "
                f"{rate:7.1f} samples/s"
            )
            if workers == 2 and cores:
                line += "  (cores: " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()) + ")"
            print(line)
    return best


def _plain_runs(args, cpus: int, bf16: bool) -> dict[tuple[int, bool], float]:
    """The same steps in plain processes, with Ray shut down (CPU only)."""
    plain: dict[tuple[int, bool], float] = {}
    if args.gpus_per_worker or cpus < 2:
        return plain
    plain_configs = [(1, bf16), (2, bf16)] + ([(2, not bf16)] if args.precision == "both" else [])
    for r in range(args.repeats):
        for world, amp in plain_configs:
            rate = _plain(args, world, amp)
            plain[(world, amp)] = max(rate, plain.get((world, amp), 0.0))
            print(
                f"  run {r + 1}: {world} plain torch process(es) x 1 thread, {_precision(amp)}, no Ray: "
                f"{rate:7.1f} samples/s"
            )
    return plain


def _print_ratios(args, best, plain, configs, cpus: int, bf16: bool) -> None:
    print("\nworkers  threads/worker  precision  samples/s (best)")
    for (workers, threads, amp), rate in best.items():
        print(f"{workers:>7}  {threads or 'auto':>14}  {_precision(amp):>9}  {rate:16.1f}")
    one = best[configs[0]]
    if args.precision == "both":
        widest = configs[-2][:2]
        rates = {amp: best[(*widest, amp)] for amp in (False, True)}
        print(
            f"\nstage 3, {widest[0]} worker(s): fp32 {rates[False]:.1f} samples/s, bf16 {rates[True]:.1f} samples/s, "
            f"bf16 / fp32 {rates[True] / rates[False]:.2f}x"
        )
        if (2, False) in plain and (2, True) in plain:
            print(
                f"plain torch, 2 processes: fp32 {plain[(2, False)]:.1f}, bf16 {plain[(2, True)]:.1f} samples/s, "
                f"bf16 / fp32 {plain[(2, True)] / plain[(2, False)]:.2f}x"
            )
    two_key = next((k for k in configs if k[0] == 2 and k[2] == bf16), None)
    if two_key is not None:
        two = best[two_key]
        print(f"\nratio 2 workers / 1 worker (1 thread): {two / one:.2f}x (goal >= 1.7x)")
        if (1, cpus, bf16) in best and cpus > 1:
            print(f"ratio 2 workers / 1 worker ({cpus} threads): {two / best[(1, cpus, bf16)]:.2f}x")
    if plain:
        one_p, two_p = plain[(1, bf16)], plain[(2, bf16)]
        print(
            f"no Ray (plain torch DDP, random patches, {_precision(bf16)}): 1 process {one_p:.1f}, 2 processes "
            f"{two_p:.1f} samples/s, ratio {two_p / one_p:.2f}x: the most two workers can give on this machine"
        )


def main() -> None:
    args = _arguments()
    import ray

    start_ray(quiet=True, object_store_bytes=2**30)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    data = args.data or _sample_images(Path(args.scratch) / "images")
    default_bf16 = bool(args.gpus_per_worker) or cpu_has_bf16()
    bf16 = default_bf16 if args.precision == "both" else args.precision == "bf16"
    configs = _configs(args, cpus, gpus, bf16)
    print(procfs.machine_line(cuda=bool(args.gpus_per_worker)))
    print(
        f"config: variant {args.variant}, stage 3, batch {args.batch_size} per worker, patch {args.patch_size}, "
        f"{args.steps} steps ({args.warmup} warm-up), gpus/worker {args.gpus_per_worker}, "
        f"native bf16 on this CPU {cpu_has_bf16()}, channels_last, Ray CPUs {cpus} GPUs {gpus}, "
        f"best of {args.repeats}"
    )
    best = _ray_runs(args, data, configs)
    ray.shutdown()
    plain = _plain_runs(args, cpus, bf16)
    _print_ratios(args, best, plain, configs, cpus, bf16)


def _precision(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


if __name__ == "__main__":
    main()
