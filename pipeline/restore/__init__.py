"""Batch restore on Ray Data, at archive scale: plan per shard, read + decode, restore, write, record.

The modules, in the order a row meets them: :mod:`~pipeline.restore.config` (the options),
:mod:`~pipeline.restore.source` and :mod:`~pipeline.restore.plan` (shards, planned against their state),
:mod:`~pipeline.restore.stages` (read, restore, write, record), :mod:`~pipeline.restore.resources` (pool sizes),
:mod:`~pipeline.restore.run` (the recipe) and :mod:`~pipeline.restore.summary` (what the driver keeps).
"""

from pipeline.restore.config import DEFAULT_EXTENSIONS, RestoreConfig
from pipeline.restore.resources import ActorPlan, actor_resources
from pipeline.restore.run import build_pipeline, run_restore
from pipeline.restore.summary import RestoreSummary
from pipeline.restore.weights import check_weights

__all__ = [
    "DEFAULT_EXTENSIONS",
    "ActorPlan",
    "RestoreConfig",
    "RestoreSummary",
    "actor_resources",
    "build_pipeline",
    "check_weights",
    "run_restore",
]
