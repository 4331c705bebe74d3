"""The batch restore as one Ray Data pipeline; the driver only counts what streams out of it.

::

    shards of SRC (driver: a few directory levels)     or a list file / S3 Inventory read as a dataset
      |
    plan          actors: per shard, list SRC and DST, read its state; send on what needs work, tally the rest
    read          actors: concurrent reads, QF from the quantization tables, --min-qf/--max-qf, decode
    restore       model actors (a pool that grows with the cluster): dagn.Restorer, tiles and batches inside
    write         actors: encode, atomic write to the mirrored key
    record        actors: a state part per shard and block of finished rows (pipeline.manifest)
      v
    driver        a bounded summary; after a list file's run, the shards it touched are compacted in parallel
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.lease import hold
from pipeline.manifest import MANIFEST_DIR, compact_shard, new_run_id
from pipeline.ray_tweaks import split_blocks
from pipeline.restore.config import RestoreConfig
from pipeline.restore.plan import PlanOptions
from pipeline.restore.resources import ActorPlan, actor_resources, cluster_limits
from pipeline.restore.source import planned_rows
from pipeline.restore.stages import ReadStage, RecordStage, RestoreStage, WriteStage
from pipeline.restore.summary import RestoreSummary
from pipeline.restore.weights import check_weights
from pipeline.storage import inside, location, write_bytes_atomic

__all__ = ["build_pipeline", "run_restore"]

log = logging.getLogger(__name__)


BLOCK_BATCHES = 4  # model batches per block of work: enough to pipeline within a task, small enough to spread


def _stage(ds, udf, actors: ActorPlan, batch_size: int, kwargs: dict, model: bool = False):
    import ray

    if model:
        low, high, cpus, memory = actors.min_workers, actors.max_workers, actors.cpus, actors.memory
    else:
        low, high, cpus, memory = 1, actors.io_workers, actors.io_cpus, actors.io_memory
    return ds.map_batches(
        udf,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=max(low, high)),
        num_cpus=cpus,
        num_gpus=(actors.gpus or None) if model else None,
        memory=memory,
        fn_constructor_kwargs=kwargs,
    )


def build_pipeline(cfg: RestoreConfig, run_id: str, actors: ActorPlan):
    """The lazy dataset of finished rows (planned only, with ``dry_run``)."""
    s3, fmt = cfg.s3, cfg.format
    opts = PlanOptions(
        cfg.src,
        cfg.dst,
        s3,
        fmt,
        cfg.extensions,
        cfg.overwrite,
        cfg.min_qf,
        cfg.max_qf,
        run_id,
        cfg.dry_run,
        cfg.follow_symlinks,
    )
    ds = planned_rows(cfg, opts, actors)
    if cfg.dry_run:
        return ds
    ds = split_blocks(ds, BLOCK_BATCHES * max(actors.batch_size, 4), actors.io_workers)  # a shard over the pool
    read = {"src": cfg.src, "dst": cfg.dst, "s3": s3, "fmt": fmt.value, "min_qf": cfg.min_qf, "max_qf": cfg.max_qf}
    read.update(max_pixels=cfg.max_pixels, threads=cfg.read_threads)
    ds = _stage(ds, ReadStage, actors, max(actors.batch_size, 4), read)
    model = {"weights": cfg.weights, "s3": s3, "device": "cuda" if cfg.on_gpu else "cpu", "tile": cfg.tile}
    model.update(
        tile_overlap=cfg.tile_overlap, context=cfg.context, batch_size=actors.batch_size, threads=actors.threads
    )
    ds = _stage(ds, RestoreStage, actors, actors.batch_size, model, model=True)
    ds = _stage(ds, WriteStage, actors, max(actors.batch_size, 8), {"dst": cfg.dst, "s3": s3, "quality": cfg.quality})
    return _stage(ds, RecordStage, actors, cfg.state_rows, {"dst": cfg.dst, "s3": s3, "run_id": run_id})


def _compact(shards: set[str], dst: str, s3, cpus: float) -> None:
    """Fold this run's parts into each touched shard's current file, many shards at a time."""
    if not shards:
        return
    import ray

    def compact(batch: pa.Table) -> pa.Table:
        target = location(dst, s3)
        return pa.table({"rows": [compact_shard(target, shard) for shard in batch["shard"].to_pylist()]})

    ds = ray.data.from_items([{"shard": s} for s in sorted(shards)])
    ds.map_batches(compact, batch_format="pyarrow", batch_size=16, num_cpus=cpus).materialize()


def run_restore(cfg: RestoreConfig, *, on_rows: Callable[[pa.Table], None] | None = None) -> RestoreSummary:
    """Restore everything under ``cfg.src`` that is new or changed (plan only with ``dry_run``); needs Ray.

    Args:
        cfg: the job.
        on_rows: called with every chunk of finished rows as they arrive (a progress bar); tally rows carry counts.

    Returns:
        The bounded summary: counts by status and decision, throughput, first failures.
    """
    started = time.perf_counter()
    if inside(cfg.dst, cfg.src):
        raise ValueError(f"the destination {cfg.dst} must not be the source or lie inside it")
    check_weights(cfg)
    dst = location(cfg.dst, cfg.s3)
    if cfg.dry_run:  # writes nothing, so it needs no lease
        return _run(cfg, dst, started, on_rows)
    with hold(dst, cfg.s3, seconds=cfg.lease_seconds, what=f"dagn restore {cfg.src}"):
        return _run(cfg, dst, started, on_rows)


def _run(cfg: RestoreConfig, dst, started: float, on_rows) -> RestoreSummary:
    run_id = new_run_id()
    summary = RestoreSummary(run_id=run_id, dry_run=cfg.dry_run, manifest=dst.uri_of(MANIFEST_DIR))
    actors = actor_resources(cfg, *cluster_limits())
    log.info("run %s: %s", run_id, actors)
    touched: set[str] = set()
    for rows in build_pipeline(cfg, run_id, actors).iter_batches(batch_format="pyarrow", batch_size=None):
        summary.add(rows)
        touched.update(s for s in pc.unique(rows["shard"]).to_pylist() if s)
        if on_rows:
            on_rows(rows)
    summary.pipeline_seconds = time.perf_counter() - started
    if not cfg.dry_run and cfg.list_file is not None:  # a full listing's planner compacts its shard next time
        _compact(touched, cfg.dst, cfg.s3, actors.io_cpus)
    if not cfg.dry_run:
        summary.seconds = time.perf_counter() - started
        history = json.dumps(summary.as_dict(), indent=1).encode()
        write_bytes_atomic(dst.fs, dst.path(f"{MANIFEST_DIR}/runs/{run_id}.json"), history)
    summary.seconds = time.perf_counter() - started
    return summary
