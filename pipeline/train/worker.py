"""One Ray Train worker of one stage run: build the stage, resume it, then step, log, validate and checkpoint.

Every worker calls ``ray.train.report`` at the same steps (Ray Train requires it); rank 0 alone attaches a
checkpoint, logs and validates.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dagn.checkpoint import save_model
from dagn.inference import auto_context
from dagn.precision import cpu_has_bf16
from dagn.training import Stage, batch_from_numpy, build_stage, decay_start, new_model
from pipeline.storage import resolve
from pipeline.train.artifacts import (
    MODEL_FILE,
    STATE_FILE,
    load_remote_model,
    save_remote_model,
    stage_file,
)
from pipeline.train.config import TrainConfig
from pipeline.train.data import ValidationImage, load_validation_set
from pipeline.train.meter import ThroughputMeter
from pipeline.train.resume import newest_resume_state
from pipeline.train.validation import validate

__all__ = ["train_loop"]

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What one worker knows about its stage run."""

    cfg: TrainConfig
    number: int
    rank: int
    world: int
    device: torch.device
    stage: Stage
    start: int = 0
    end: int = 0
    val_images: list[ValidationImage] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.cfg.stage_steps(self.number)


def _build(loop_config: dict[str, Any]) -> _Run:
    """The stage of this worker: a fresh model for stage 1, else the previous stage's, on this worker's device."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(loop_config["config"])
    number: int = loop_config["stage"]
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    torch.set_num_threads(loop_config["threads"])
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    amp = cfg.amp if cfg.amp is not None else (cfg.use_gpu or cpu_has_bf16())
    if number == 1:
        torch.manual_seed(cfg.seed)
        model = new_model(cfg.variant)
    else:
        model = load_remote_model(resolve(cfg.out, cfg.s3), stage_file(number - 1))
        model.train()
    stage = build_stage(
        number,
        model,
        total_steps=cfg.stage_steps(number),
        optim=cfg.stage_optim(number),
        device=device,
        distributed=world > 1,
        autocast_dtype=torch.bfloat16 if amp else None,
        channels_last=cfg.channels_last,
    )
    return _Run(cfg=cfg, number=number, rank=ctx.get_world_rank(), world=world, device=device, stage=stage)


def _resume(run: _Run, end: int) -> None:
    """Continue from the newest complete checkpoint on storage (not Ray Train's snapshot, which lags), if any: the
    one the driver found, or a newer one when Ray Train restarts the workers after a failure; this invocation
    stops at step ``end``, wherever it resumed."""
    out = resolve(run.cfg.out, run.cfg.s3)
    found = newest_resume_state(out, run.cfg.run_name(run.number))
    if found is not None:
        run.stage.load_state_dict(found[1])
        if run.rank == 0:
            log.info("stage %d: resumed at step %d of %d", run.number, run.stage.step_count, run.total)
    run.start = run.stage.step_count
    run.end = max(run.start, end)  # the driver's end is at most the stage's total


def _validation_due(run: _Run, step: int) -> bool:
    return run.number == 3 and step % run.cfg.val_every == 0


def _checkpoint_due(run: _Run, step: int) -> bool:
    return step % run.cfg.checkpoint_every == 0 or _validation_due(run, step) or step == run.end


def _log_due(run: _Run, step: int) -> bool:
    return step % run.cfg.log_every == 0 or step == run.end


def _validation_metrics(run: _Run, step: int) -> dict[str, float]:
    if not run.val_images or not (_validation_due(run, step) or step == run.end):
        return {}
    context = auto_context(run.cfg.data_config.degradation.patch_size)  # as the exported model will run
    metrics = validate(run.stage.export_model(), run.val_images, run.device, context=context)
    log.info(
        "stage 3 step %d validation: PSNR %.2f dB (JPEG %.2f, gain %+.2f), SSIM %.4f (JPEG %.4f)",
        step, metrics["val_psnr"], metrics["val_psnr_jpeg"], metrics["val_psnr_gain"],
        metrics["val_ssim"], metrics["val_ssim_jpeg"],
    )  # fmt: skip
    return metrics


def _report(run: _Run, metrics: dict[str, float], step: int) -> None:
    """Report to Ray Train; rank 0 writes state + model to a temporary folder and attaches it as the checkpoint
    (the synchronous upload copies it before the folder goes)."""
    import ray.train

    metrics = {**metrics, "step": step, "total_steps": run.total, "stage": run.number, "run_start_step": run.start}
    metrics.update(_validation_metrics(run, step))
    if run.rank != 0:
        ray.train.report(metrics)
        return
    metadata = {"variant": run.cfg.variant, "stage": str(run.number), "data": run.cfg.data, "step": str(step)}
    with tempfile.TemporaryDirectory(prefix="dagn-ckpt-") as tmp:
        torch.save(run.stage.state_dict(), os.path.join(tmp, STATE_FILE))
        save_model(run.stage.export_model(), os.path.join(tmp, MODEL_FILE), metadata)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _save_branch_point(run: _Run, step: int) -> None:
    """Rank 0, at the first step of the decay phase: the model a longer run continues from (``--init-from``)."""
    optim = run.stage.optim
    if run.rank != 0 or optim.decay_steps is None or step != decay_start(run.total, optim):
        return
    name = f"stage{run.number}-pre-decay.safetensors"
    out = resolve(run.cfg.out, run.cfg.s3)
    metadata = {"variant": run.cfg.variant, "stage": str(run.number), "data": run.cfg.data, "step": str(step)}
    save_remote_model(run.stage.export_model(), out, name, metadata)
    log.info("stage %d: decay begins at step %d; the model before it is %s", run.number, step, out.uri_of(name))


def _log_progress(run: _Run, step: int, window: dict[str, list[float]], lr: float, meter: ThroughputMeter) -> None:
    extras = " ".join(f"{k} {np.mean(v):.4g}" for k, v in window.items() if k not in ("loss", "lr"))
    log.info(
        "stage %d step %d/%d (run ends at %d) loss %.4f lr %.2e %s | %.1f samples/s | ETA %s",
        run.number, step, run.total, run.end, np.mean(window["loss"]), lr, extras, meter.window_rate(),
        meter.eta(step),
    )  # fmt: skip


def _batches(run: _Run):
    import ray.train

    return ray.train.get_dataset_shard("train").iter_batches(
        batch_size=run.cfg.batch_size,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=run.cfg.data_config.shuffle_buffer or None,
        local_shuffle_seed=run.cfg.seed + run.rank + 1000 * run.start,
        prefetch_batches=2,
    )


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of one stage run (``TorchTrainer``'s ``train_loop_per_worker``)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run = _build(loop_config)
    _resume(run, loop_config["end"])
    if run.number == 3 and run.rank == 0 and loop_config["val_images"]:
        run.val_images = load_validation_set(
            resolve(run.cfg.data, run.cfg.s3), loop_config["val_images"], run.cfg.data_config
        )
    if run.start >= run.end:
        _report(run, {}, run.start)
        return
    _save_branch_point(run, run.start)  # a run resumed exactly where its decay begins
    warmup = min(run.cfg.log_every, max(0, run.end - run.start - 1))  # left out of the steady rate
    meter = ThroughputMeter(
        start=run.start, end=run.end, samples_per_step=run.cfg.batch_size * run.world, warmup=warmup
    )
    window: dict[str, list[float]] = {}
    step = run.start
    for arrays in _batches(run):
        step_metrics = run.stage.step(batch_from_numpy(arrays, run.device, run.cfg.channels_last))
        step = run.stage.step_count
        meter.step(step)
        for k, v in step_metrics.items():
            window.setdefault(k, []).append(v)
        if _log_due(run, step):
            if run.rank == 0:
                _log_progress(run, step, window, step_metrics["lr"], meter)
            window = {}
            meter.new_window()
        if _checkpoint_due(run, step):
            _report(run, {**step_metrics, **meter.rates(step)}, step)
        _save_branch_point(run, step)
        if step >= run.end:
            break
    if step < run.end:  # the stream ran dry (it is planned with a margin, so this should not happen); keep what we have
        log.warning("stage %d: data ended at step %d before %d", run.number, step, run.end)
        if step % run.cfg.checkpoint_every != 0:
            _report(run, {}, step)
