"""The Ray workarounds: the idle back-off is wired into real Ray Data executions, and only backs off when idle."""

from __future__ import annotations

import logging
import time

from pipeline.ray_tweaks import IdleBackoff, quiet_state_api_warnings, split_blocks, with_idle_backoff


def test_backoff_sleeps_only_after_a_step_that_returned_at_once(monkeypatch):
    pauses: list[IdleBackoff] = []
    monkeypatch.setattr(IdleBackoff, "_pause", lambda self: pauses.append(self))
    callback = IdleBackoff()
    callback.on_execution_step(None)  # right after construction: nothing was waited on
    assert pauses == [callback]
    callback._last = time.perf_counter() - 10 * IdleBackoff.BUSY_S  # the step waited on a task
    callback.on_execution_step(None)
    assert pauses == [callback]


def test_backoff_runs_inside_a_real_execution_and_leaves_the_global_context_alone(ray_local, monkeypatch):
    import ray.data

    pauses: list[IdleBackoff] = []
    pause = IdleBackoff._pause
    monkeypatch.setattr(IdleBackoff, "_pause", lambda self: (pauses.append(self), pause(self)))
    monkeypatch.setattr(IdleBackoff, "BUSY_S", 0.05)  # an idle step here: ~1 ms quiet, up to ~10 ms on a loaded machine
    ds = with_idle_backoff(ray.data.range(64, override_num_blocks=8)).map_batches(lambda b: b, batch_size=8)
    assert IdleBackoff in ds.context.custom_execution_callback_classes
    assert IdleBackoff not in ray.data.DataContext.get_current().custom_execution_callback_classes
    rows = 0
    for batch in ds.iter_batches(batch_size=8, prefetch_batches=1):  # a slow consumer: the executor idles
        rows += len(batch["id"])
        time.sleep(0.05)
    assert rows == 64
    assert pauses, "the executor never backed off"


class _Pass:
    def __call__(self, batch):
        return batch


def test_split_blocks_cuts_in_actors_that_need_no_cpu_between_pools_holding_every_cpu(ray_local):
    import ray.data

    def stage(ds, batch_size):  # one actor of 1 CPU: two of them hold both CPUs of the test cluster, as a run's pools
        return ds.map_batches(_Pass, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)

    split = split_blocks(stage(ray.data.range(1000, override_num_blocks=1), None), 16, actors=2)
    cut = split._logical_plan.dag
    assert isinstance(cut.compute, ray.data.ActorPoolStrategy) and cut.compute.max_size == 2  # not per block
    assert cut.ray_remote_args["num_cpus"] == 0
    sizes = [len(b["id"]) for b in stage(split, 16).iter_batches(batch_size=None, batch_format="numpy")]
    assert max(sizes) <= 16 and sum(sizes) == 1000 and len(sizes) >= 1000 // 16


def test_state_api_warnings_are_quieted():
    name = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    logger = logging.getLogger(name)
    before = logger.level
    try:
        quiet_state_api_warnings()
        assert not logger.isEnabledFor(logging.WARNING)
        assert logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(before)
