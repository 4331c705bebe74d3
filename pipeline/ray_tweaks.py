"""Workarounds for Ray 2.60 behaviours that cost a small machine dearly; each says what it fixes and why.

Idle spinning: Ray Data's scheduling loop blocks in ``ray.wait`` only while it has tasks in flight. When every
operator is back-pressured (the prefetch buffers are full and the trainers are still computing), nothing is in
flight and the loop runs flat out, taking from the trainers a good part of a core on a small machine.
:class:`IdleBackoff` sleeps 20 ms after a loop step that returned at once, so an idle executor polls at ~50 Hz
instead of spinning; a step that waited on a task is left alone. Blocks are buffered far ahead of the trainers,
so the added latency is never waited on. (Measurements: bench/results/design-measurements.md.)

Small blocks without a CPU: a planner's rows are a few hundred bytes each, so Ray Data packs everything one call
yields into one block, and a block is one task on one actor: a shard of 10^5 inputs would be restored by one model
actor however many the pool has. ``Dataset.repartition(target_num_rows_per_block=...)`` cuts them, but its tasks
ask for a whole CPU, which a cluster whose CPUs the actor pools hold never frees (the run then hangs); given no CPU,
they are not limited at all, and each starts a worker process of its own (Ray kills idle workers beyond one per CPU
within a second), whose imports hold up the model actors' start on a small machine. :func:`split_blocks` cuts
them in a pool of actors that reserve no CPU: they only slice Arrow tables, and start once.

Listing without a CPU: Ray 2.60 reads Parquet through a ``ListFiles -> ReadFiles`` pair whose listing task asks for
a whole CPU whatever ``num_cpus`` the read is given; on a cluster whose CPUs the restore's actor pools already hold,
that task never starts and a run over an S3 Inventory hangs. :func:`read_parquet` takes Ray Data's single-operator
Parquet read instead, whose tasks reserve what they are asked to.

State-API warnings: Ray Train's PlacementGroupCleaner asks the state API (served by the dashboard) every second
whether the controller lives; a local Ray started without a dashboard answers with an error each time, and the
cleaner logs a warning for it, thousands an hour in the training output. :func:`quiet_state_api_warnings`, run as
the job's ``worker_process_setup_hook``, raises that one logger to ERROR.
"""

from __future__ import annotations

import logging
import time

from ray.data._internal.execution.execution_callback import ExecutionCallback

__all__ = ["IdleBackoff", "quiet_state_api_warnings", "read_parquet", "split_blocks", "with_idle_backoff"]


class IdleBackoff(ExecutionCallback):
    """Sleep ``PAUSE_S`` after a scheduling step that took less than ``BUSY_S`` (nothing to wait on)."""

    BUSY_S = 0.002
    PAUSE_S = 0.02

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def on_execution_step(self, executor) -> None:
        if time.perf_counter() - self._last < self.BUSY_S:
            self._pause()
        self._last = time.perf_counter()

    def _pause(self) -> None:
        time.sleep(self.PAUSE_S)


def with_idle_backoff(dataset):
    """The same dataset, whose executions (wherever they run, e.g. a SplitCoordinator) back off when idle."""
    classes = dataset.context.custom_execution_callback_classes
    if IdleBackoff not in classes:
        classes.append(IdleBackoff)
    return dataset


def split_blocks(dataset, rows: int, actors: int):
    """The same rows in blocks of at most ``rows``, cut (streaming) by up to ``actors`` actors that reserve no CPU."""
    import ray

    split = dataset.repartition(target_num_rows_per_block=rows)
    op = split._logical_plan.dag  # the StreamingRepartition operator just added (a frozen dataclass)
    object.__setattr__(op, "ray_remote_args", {**op.ray_remote_args, "num_cpus": 0})
    object.__setattr__(op, "compute", ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, actors)))
    return split


def read_parquet(path: str, *, filesystem, num_cpus: float):
    """``ray.data.read_parquet`` whose every task reserves ``num_cpus`` (the listing task included)."""
    import ray

    context = ray.data.DataContext.get_current()
    saved, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        return ray.data.read_parquet(path, filesystem=filesystem, num_cpus=num_cpus)
    finally:
        context.use_datasource_v2 = saved


def quiet_state_api_warnings() -> None:
    """Worker setup hook: silence the PlacementGroupCleaner's per-second warning when there is no dashboard."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
