"""``dagn train``: DAGN's three training stages on Ray Train, from a folder or S3 to a folder or S3."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from jobs.options import ConfigFile, RayAddress, S3Endpoint, build_config, config_option
from pipeline.train import TrainConfig

__all__ = ["train"]


def _flag(path: str, *decls: str, **kwargs):
    return config_option(TrainConfig, path, *decls, **kwargs)


def train(
    ctx: typer.Context,
    variant: Annotated[str | None, _flag("variant")] = None,
    data: Annotated[str | None, _flag("data")] = None,
    out: Annotated[str | None, _flag("out")] = None,
    stage: Annotated[str | None, _flag("stage", extra_help="(1, 2, 3 or all)")] = None,
    steps: Annotated[int | None, _flag("steps", extra_help="Re-run the command to continue.")] = None,
    stage1_steps: Annotated[int | None, _flag("stage1_steps")] = None,
    stage2_steps: Annotated[int | None, _flag("stage2_steps")] = None,
    stage3_steps: Annotated[int | None, _flag("stage3_steps")] = None,
    workers: Annotated[int | None, _flag("workers")] = None,
    gpus_per_worker: Annotated[float | None, _flag("gpus_per_worker")] = None,
    threads_per_worker: Annotated[int | None, _flag("threads_per_worker")] = None,
    batch_size: Annotated[int | None, _flag("batch_size")] = None,
    patch_size: Annotated[int | None, _flag("data_config.degradation.patch_size", "--patch-size")] = None,
    val_images: Annotated[int | None, _flag("data_config.val_images", "--val-images")] = None,
    lr: Annotated[float | None, _flag("optim.lr", "--lr")] = None,
    name: Annotated[str | None, _flag("name")] = None,
    init_from: Annotated[str | None, _flag("init_from")] = None,
    s3_endpoint: S3Endpoint = None,
    address: RayAddress = None,
    config: ConfigFile = None,
) -> None:
    """Train DAGN in three stages (CI auto-encoder, CS encoder, restoration) and export OUT/model.safetensors.

    Re-running the same command resumes an interrupted stage from its latest checkpoint; finished stages are skipped.
    """
    from pipeline.train import train as run_training

    cfg = build_config(train, ctx, TrainConfig, config, **{"s3.endpoint_url": s3_endpoint, "ray_address": address})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = run_training(cfg)  # a ValueError (a user's mistake, unusable data) becomes one line: jobs.errors
    for r in results:
        state = "skipped (already finished)" if r.skipped else ("finished" if r.finished else "stopped")
        typer.echo(f"stage {r.stage}: {state} at step {r.step}/{r.total_steps}")
    if results and not results[-1].finished:
        typer.echo("not finished: run the same command again to continue")
    elif 3 in cfg.stages():
        typer.echo(f"model: {cfg.out.rstrip('/')}/model.safetensors")
