"""``dagn train``: DAGN's three training stages on Ray Train, from a folder or S3 to a folder or S3."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from jobs.settings import load_settings

__all__ = ["train"]


def train(
    variant: Annotated[
        str | None, typer.Option(help="DAGN variant to train (see `dagn models`). [default: small]")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Training images: a local folder or s3://bucket/prefix.")] = None,
    out: Annotated[
        str | None, typer.Option(help="Checkpoints and model.safetensors: a local folder or s3://bucket/prefix.")
    ] = None,
    stage: Annotated[str | None, typer.Option(help="1, 2, 3 or all. [default: all]")] = None,
    steps: Annotated[
        int | None, typer.Option(help="Cap on the steps each stage run does now; re-run to continue.")
    ] = None,
    stage1_steps: Annotated[int | None, typer.Option(help="Planned steps of stage 1 (CI auto-encoder).")] = None,
    stage2_steps: Annotated[int | None, typer.Option(help="Planned steps of stage 2 (CS encoder).")] = None,
    stage3_steps: Annotated[int | None, typer.Option(help="Planned steps of stage 3 (restoration).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers (DDP processes). [default: 1]")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per worker; 0 = CPU. [default: 0]")] = None,
    threads_per_worker: Annotated[
        int | None, typer.Option(help="torch threads per worker. [default: cluster CPUs / workers]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per step and worker. [default: 16]")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Training patch side, a multiple of 16. [default: 64]")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of stages 1 and 3 (and 2 unless set).")] = None,
    name: Annotated[str | None, typer.Option(help="Run-name prefix (<name>-stage<N>). [default: dagn]")] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint URL.")
    ] = None,
    ray_address: Annotated[str | None, typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to join.")] = None,
    init_from: Annotated[
        str | None,
        typer.Option(help="Continue from this model file (e.g. the shipped weights): stage 3 starts from it."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="YAML file with TrainConfig options.")
    ] = None,
) -> None:
    """Train DAGN in three stages (CI auto-encoder, CS encoder, restoration) and export OUT/model.safetensors.

    Re-running the same command resumes an interrupted stage from its latest checkpoint; finished stages are skipped.
    """
    from pipeline.train import TrainConfig
    from pipeline.train import train as run_training

    overrides = {
        "variant": variant,
        "data": data,
        "out": out,
        "stage": stage,
        "steps": steps,
        "stage1_steps": stage1_steps,
        "stage2_steps": stage2_steps,
        "stage3_steps": stage3_steps,
        "workers": workers,
        "gpus_per_worker": gpus_per_worker,
        "threads_per_worker": threads_per_worker,
        "batch_size": batch_size,
        "name": name,
        "s3.endpoint_url": s3_endpoint,
        "ray_address": ray_address,
        "init_from": init_from,
    }
    overrides.update({"optim.lr": lr, "data_config.degradation.patch_size": patch_size})
    cfg = load_settings(TrainConfig, config, **overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = run_training(cfg)
    for r in results:
        state = "skipped (already finished)" if r.skipped else ("finished" if r.finished else "stopped")
        typer.echo(f"stage {r.stage}: {state} at step {r.step}/{r.total_steps}")
    if results and not results[-1].finished:
        typer.echo("not finished: run the same command again to continue")
    elif 3 in cfg.stages():
        typer.echo(f"model: {cfg.out.rstrip('/')}/model.safetensors")
