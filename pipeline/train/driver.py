"""The driver of a training job: each stage a Ray Train run, in order, then the export."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

from dagn.checkpoint import load_model
from pipeline.ray_session import start_ray
from pipeline.storage import Location, resolve, write_bytes_atomic
from pipeline.train.artifacts import MODEL_FILE, exists, save_remote_model, stage_file
from pipeline.train.config import StageResult, TrainConfig
from pipeline.train.data import build_train_dataset, list_images, readable_images, split_images
from pipeline.train.export import export_model
from pipeline.train.plan import WorkerPlan, plan_workers
from pipeline.train.resume import ResumePoint, find_resume_point
from pipeline.train.seed import seed_from_model
from pipeline.train.worker import train_loop

__all__ = ["run_stage", "train"]

log = logging.getLogger(__name__)


def _trainer(cfg: TrainConfig, number: int, out: Location, plan: WorkerPlan, val_images: list[str], dataset, resume):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        train_loop,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "stage": number,
            "threads": plan.threads,
            "val_images": val_images,
            "end": _last_step(cfg, number, resume),
        },
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=plan.resources
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run_name(number),
            storage_path=out.path("checkpoints"),
            storage_filesystem=out.fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets={"train": dataset},
    )


def _last_step(cfg: TrainConfig, number: int, resume: ResumePoint | None) -> int:
    """The step this invocation stops at: ``cfg.steps`` more than where it resumes (a restart after a failure does
    not extend it)."""
    total = cfg.stage_steps(number)
    return min(total, (resume.step if resume else 0) + (cfg.steps or total))


def _fit(cfg: TrainConfig, number: int, out: Location, resume: ResumePoint | None):
    """Plan the data and the workers of one stage run, and run it; returns Ray Train's result."""
    import ray

    data = resolve(cfg.data, cfg.s3)
    images = readable_images(data, list_images(data), need=1)  # split_images holds out fewer when few
    train_images, val_images = split_images(images, cfg.data_config.val_images)
    start_ray(cfg.ray_address, object_store_bytes=2**30)
    previous = resume.folder if resume else ""  # a resumed run draws fresh patches
    steps_this_run = min(cfg.stage_steps(number), cfg.steps or cfg.stage_steps(number))
    n_samples = int(steps_this_run * cfg.batch_size * cfg.workers * 1.02) + cfg.batch_size * cfg.workers * 4
    plan = plan_workers(cfg, float(ray.cluster_resources().get("CPU", 1)))
    dataset = build_train_dataset(
        data.uri,
        train_images,
        n_samples=n_samples,
        seed=zlib.crc32(f"{cfg.seed}/{number}/{previous}".encode()),
        cfg=cfg.data_config,
        s3=cfg.s3,
        free_cpus=plan.free_cpus,
    )
    log.info(
        "stage %d: %d training / %d validation images, %d worker(s) x %s, %d thread(s) each, batch %d per worker",
        number, len(train_images), len(val_images), cfg.workers, plan.resources, plan.threads, cfg.batch_size,
    )  # fmt: skip
    return _trainer(cfg, number, out, plan, val_images, dataset, resume).fit()


def run_stage(cfg: TrainConfig, number: int) -> StageResult:
    """Run (or resume) one stage as a Ray Train run; writes ``stageN.safetensors`` when the stage is finished."""
    out = resolve(cfg.out, cfg.s3)
    total = cfg.stage_steps(number)
    if exists(out, stage_file(number)):
        log.info("stage %d already finished (%s); skipping", number, out.uri_of(stage_file(number)))
        return StageResult(stage=number, step=total, total_steps=total, finished=True, skipped=True)
    if number > 1 and not exists(out, stage_file(number - 1)):
        raise RuntimeError(f"stage {number} needs stage {number - 1} finished first ({stage_file(number - 1)})")

    resume = find_resume_point(out, cfg.run_name(number))
    done = resume.step if resume else 0
    if done > total:  # it used to say "resumed at step 250 of 60" and go on
        raise ValueError(
            f"stage {number} has done {done} steps already, more than the {total} planned: plan at least {done} "
            f"(--stage{number}-steps) or train under a new --name"
        )
    result = _fit(cfg, number, out, resume)
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    step = int(metrics.get("step", 0))
    finished = step >= total
    if finished:
        if result.checkpoint is None:
            raise RuntimeError(f"stage {number} finished without a checkpoint")
        with result.checkpoint.as_directory() as d:
            model = load_model(Path(d) / MODEL_FILE)
        metadata = {"variant": cfg.variant, "stage": str(number), "steps": str(total), "data": cfg.data}
        save_remote_model(model, out, stage_file(number), metadata)
        log.info("stage %d finished at step %d -> %s", number, step, out.uri_of(stage_file(number)))
    else:
        log.info("stage %d stopped at step %d of %d; run the same command again to continue", number, step, total)
    return StageResult(stage=number, step=step, total_steps=total, finished=finished, metrics=metrics)


def train(cfg: TrainConfig) -> list[StageResult]:
    """Run the configured stages in order, stopping at the first one that is not finished; export after stage 3."""
    out = resolve(cfg.out, cfg.s3)
    write_bytes_atomic(out.fs, out.path("train_config.json"), cfg.model_dump_json(indent=2).encode())
    if cfg.init_from:
        seed_from_model(cfg, out)
    results = []
    for number in cfg.stages():
        result = run_stage(cfg, number)
        results.append(result)
        if not result.finished:
            return results
    if 3 in cfg.stages() and (not results[-1].skipped or not exists(out, "model.safetensors")):
        uri = export_model(cfg, results[-1].metrics)
        log.info("exported %s", uri)
    return results
