"""How a stage run shares the cluster between the training workers and the patch-making Ray Data actors."""

from __future__ import annotations

import logging
import math

from pydantic import BaseModel

from pipeline.train.config import TrainConfig

__all__ = ["WorkerPlan", "plan_workers"]

log = logging.getLogger(__name__)


class WorkerPlan(BaseModel):
    """How a stage run uses the cluster: each training worker's Ray resources and torch threads, and the CPUs left
    over for the patch-making Ray Data actors."""

    resources: dict[str, float]
    threads: int
    free_cpus: float


def plan_workers(cfg: TrainConfig, cluster_cpus: float) -> WorkerPlan:
    """The :class:`WorkerPlan` of ``cfg`` on a cluster of ``cluster_cpus`` CPUs."""
    if cfg.cpus_per_worker is not None:
        cpus = cfg.cpus_per_worker
    elif cfg.use_gpu:
        cpus = 1.0
    else:
        cpus = max(0.1, (cluster_cpus - cfg.data_cpus) / cfg.workers)
        cpus = math.floor(cpus * 100) / 100
    resources = {"CPU": cpus}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    threads = cfg.threads_per_worker or max(1, round(cluster_cpus / cfg.workers if not cfg.use_gpu else cpus))
    free_cpus = cluster_cpus - cpus * cfg.workers
    if free_cpus < 1:
        log.warning(
            "the training workers hold %.2f of %.0f CPUs: Ray Data gets no whole CPU for making patches, "
            "so training will stall on data", cpus * cfg.workers, cluster_cpus,
        )  # fmt: skip
    return WorkerPlan(resources=resources, threads=threads, free_cpus=free_cpus)
