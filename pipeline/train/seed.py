"""``init_from``: a trained model file stands in for the stages before the first one a run trains."""

from __future__ import annotations

import logging

from dagn.models import DAGN, get_config
from pipeline.storage import Location, resolve_file
from pipeline.train.artifacts import exists, load_remote_model, save_remote_model, stage_file
from pipeline.train.config import TrainConfig

__all__ = ["seed_from_model"]

log = logging.getLogger(__name__)


def seed_from_model(cfg: TrainConfig, out: Location) -> None:
    """Write ``init_from`` as the results of :meth:`TrainConfig.seeded_stages` (once), so training continues from it.

    Its config must be the variant's, except that a model whose CS encoder read another input (``cs_highpass``) may
    seed stage 1 of a stage-2 run, which trains that encoder for the variant's input.
    """
    stages = cfg.seeded_stages()
    if all(exists(out, stage_file(n)) for n in stages):
        return
    parent = load_remote_model(*resolve_file(cfg.init_from, cfg.s3))
    config = get_config(cfg.variant)
    theirs = parent.config.model_dump()
    differ = {k for k, v in config.model_dump().items() if theirs[k] != v}
    if differ - {"cs_highpass"}:
        raise ValueError(f"init_from {cfg.init_from} is not a {cfg.variant!r} model (it differs in {sorted(differ)})")
    if differ and 2 in stages:
        raise ValueError(
            f"init_from {cfg.init_from} has a CS encoder trained with cs_highpass={parent.config.cs_highpass}; "
            "train it for this variant first (--stage 2), then run stage 3"
        )
    model = DAGN(config)
    model.load_state_dict(parent.state_dict())
    for number in stages:
        meta = {"variant": cfg.variant, "stage": str(number), "init_from": cfg.init_from}
        save_remote_model(model, out, stage_file(number), meta)
    log.info("continuing from %s (it stands in for stage(s) %s)", cfg.init_from, stages)
