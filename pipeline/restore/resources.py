"""How big the stages' actor pools may grow and what each actor reserves, from the cluster it runs on."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pipeline.restore.config import RestoreConfig

__all__ = ["ActorPlan", "actor_resources", "cluster_limits"]

log = logging.getLogger(__name__)

MODEL_BYTES_PER_PIXEL = 16  # uint8 in and out plus the float32 image the tiles are blended into
IO_BYTES_PER_PIXEL = 8  # decoded pixels, alpha and the copy Arrow makes of them
CPU_POOL_FLOOR = 16  # a CPU pool may grow this far even on a small cluster: nodes may join
IO_POOLS = 5  # plan, read, write and record start with one actor each; a list file's reader runs beside them


@dataclass(frozen=True)
class ActorPlan:
    """The model pool grows from ``min_workers`` to ``max_workers`` actors, each reserving ``cpus``, ``gpus`` and
    ``memory`` bytes, running ``threads`` torch threads on ``batch_size`` images or tiles per call; the read and the
    write pools grow from 1 to ``io_workers`` actors of ``io_cpus`` and ``io_memory`` bytes each."""

    min_workers: int
    max_workers: int
    cpus: float
    gpus: float
    threads: int
    batch_size: int
    memory: int
    io_cpus: float
    io_workers: int
    io_memory: int


def cluster_limits() -> tuple[dict[str, float], dict[str, float]]:
    """(resources the cluster has now, the most its autoscaler may give it: empty when it has no autoscaler)."""
    import ray

    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # a private API: without it, the pools grow to what the cluster has
        most = {}
    return ray.cluster_resources(), {k: float(v) for k, v in most.items()}


def _model_pool(cfg: RestoreConfig, cpus_now: float, most: dict[str, float], gpus_now: float) -> tuple[int, int]:
    if cfg.workers is not None:
        return cfg.workers, cfg.workers
    if cfg.max_workers is not None:
        return 1, cfg.max_workers
    if cfg.on_gpu:
        gpus = max(gpus_now, most.get("GPU", 0.0))
        return 1, max(1, math.floor(gpus / cfg.gpus_per_worker)) if gpus < 1e9 else 1024
    return 1, max(CPU_POOL_FLOOR, int(max(cpus_now, min(most.get("CPU", 0.0), 1e6))))


def actor_resources(cfg: RestoreConfig, cluster: dict[str, float], most: dict[str, float] | None = None) -> ActorPlan:
    """Sizes from the cluster's resources now (``ray.cluster_resources()``) and at most (the autoscaler's).

    * model pool: ``workers`` fixed, else from 1 up to ``max_workers``, else up to the GPUs the cluster has or may
      have / ``gpus_per_worker``, else (CPU) one per CPU, at least 16 so that joining nodes are used.
    * CPUs per model actor: 1 on GPU; on CPU what lets one actor per CPU sit beside the first actor of each I/O pool
      (Ray waits forever, without an error, when the stages together ask for more than a fixed cluster has).
    * threads: 2 on GPU; on CPU 1 per actor of a growing pool (independent single-threaded actors waste nothing on
      intra-op synchronisation), the CPUs shared out for a fixed one.
    * I/O actors: 1 CPU each on GPU (decoding is real CPU work) and up to 4 per model actor; on CPU 0.25 and 1 per
      16 CPUs. Memory: what one image of ``max_pixels`` needs in each (tiles bound the model's working memory).
    """
    most = most or {}
    gpu = cfg.on_gpu
    cpus_now = float(cluster.get("CPU", 0.0))
    io_cpus = cfg.io_cpus or (1.0 if gpu else 0.25)
    low, high = _model_pool(cfg, cpus_now, most, float(cluster.get("GPU", 0.0)))
    per_cpu = cpus_now if cfg.workers is None else cfg.workers
    if cfg.cpus_per_worker is not None:
        cpus = cfg.cpus_per_worker
    elif gpu or cpus_now <= 0:  # no CPUs reported yet (an autoscaling cluster): let Ray scale for 1 each
        cpus = 1.0
    else:
        cpus = round(min(1.0, max(0.05, (cpus_now - IO_POOLS * io_cpus) / max(per_cpu, 1))), 2)
    if cfg.threads_per_worker is not None:
        threads = cfg.threads_per_worker
    else:
        threads = 2 if gpu else (1 if cfg.workers is None else max(1, int(cpus_now or 1) // cfg.workers))
    if not gpu and 0 < cpus_now < low * cpus + IO_POOLS * io_cpus:
        log.warning(
            "%d model actors x %.2f CPUs and the I/O actors need more than the %.0f CPUs there are: the run "
            "waits for the cluster to grow; lower --workers",
            low,
            cpus,
            cpus_now,
        )
    batch = cfg.batch_size or (8 if gpu else 1)
    return ActorPlan(
        min_workers=low,
        max_workers=high,
        cpus=cpus,
        gpus=cfg.gpus_per_worker,
        threads=threads,
        batch_size=batch,
        memory=cfg.max_pixels * MODEL_BYTES_PER_PIXEL,
        io_cpus=io_cpus,
        io_workers=cfg.io_workers or (4 * high if gpu else max(1, int(cpus_now) // 16)),
        io_memory=cfg.max_pixels * IO_BYTES_PER_PIXEL,
    )
