"""DAGN's three training stages as Ray Train runs, from a local folder or S3, checkpointed to a folder or S3.

Layout of the output location ``OUT`` (a local path or ``s3://bucket/prefix``)::

    OUT/train_config.json           the TrainConfig of the latest invocation
    OUT/checkpoints/<name>-stage1/  Ray Train run of stage 1 (checkpoint_*/state.pt + model.safetensors)
    OUT/stage1.safetensors          stage 1 finished: the DAGN after it, the seed of stage 2 (likewise 2 and 3)
    OUT/model.safetensors           the exported inference weights (after stage 3), with provenance metadata

Each stage is its own Ray Train run (``TorchTrainer``, DDP over gloo on CPU or NCCL on GPU) named
``<name>-stage<N>``; re-running the same command resumes it from its latest checkpoint (Ray Train restores the run
by name) and a stage whose ``stageN.safetensors`` exists is not run again. ``steps_per_run`` caps how many steps one
invocation does per stage, so a long stage can be trained in pieces; the learning-rate schedule always spans the
stage's planned ``stageN_steps``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.fs as pafs
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dagn import metrics as quality
from dagn.checkpoint import load_model, read_metadata, save_model
from dagn.inference import Restorer
from dagn.models import DAGN, get_config, list_variants
from dagn.training import OptimConfig, Stage, batch_from_numpy, build_stage, new_model
from pipeline.storage import Location, S3Settings, read_bytes, resolve, resolve_file, write_bytes_atomic
from pipeline.train_data import DataConfig, build_train_dataset, list_images, load_validation_set, split_images

__all__ = ["StageResult", "TrainConfig", "WorkerPlan", "export_model", "plan_workers", "run_stage", "train"]

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MODEL_FILE = "model.safetensors"


class TrainConfig(BaseModel):
    """Every option of a training job (the CLI flags and the YAML file fill this)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant: str = Field("small", description="DAGN variant to train (see `dagn models`).")
    data: str = Field(..., description="Training images: a local folder or s3://bucket/prefix.")
    out: str = Field(..., description="Checkpoints and the exported model: a local folder or s3://bucket/prefix.")
    stage: Literal["1", "2", "3", "all"] = Field("all", description="Stage to run, or all three in order.")
    name: str = Field("dagn", pattern=r"^[A-Za-z0-9_.-]+$", description="Run-name prefix: <name>-stage<N>.")
    stage1_steps: int = Field(300, ge=1, description="Planned optimisation steps of stage 1 (CI auto-encoder).")
    stage2_steps: int = Field(
        2000,
        ge=1,
        description="Planned optimisation steps of stage 2 (CS encoder). Cheap (~1/10 of a stage-3 step), and the "
        "QF regression sits at the predict-the-mean plateau for the first ~700 steps on 64 px patches.",
    )
    stage3_steps: int = Field(3000, ge=1, description="Planned optimisation steps of stage 3 (restoration).")
    steps: int | None = Field(None, ge=1, description="Cap on the steps each stage run does in this invocation.")
    batch_size: int = Field(16, ge=1, description="Patches per step and per worker.")
    workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes).")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; 0 trains on CPU (gloo).")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs reserved per worker (default: what the data actors leave, split evenly)."
    )
    data_cpus: int = Field(
        1,
        ge=1,
        description="Whole CPUs left to the patch-making Ray Data actors (CPU training). Whole, because Ray Data "
        "2.60 is granted what Ray Train leaves over in whole CPUs: a leftover of 0.5 counted as none, and patches "
        "were then made only once the trainers had drained every buffer (stalls of ~0.7 s every 20 steps).",
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch intra-op threads per worker (default: cluster CPUs / workers on CPU)."
    )
    amp: bool | None = Field(None, description="bf16 autocast (default: on for GPU, off for CPU).")
    channels_last: bool = Field(
        True, description="channels-last tensors: faster on GPUs and CPUs alike (2 CPU workers: 1.11x samples/s)."
    )
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser settings, shared by the stages.")
    stage2_lr: float | None = Field(None, gt=0, description="Peak lr of stage 2 (default: optim.lr).")
    data_config: DataConfig = Field(default_factory=DataConfig, description="Patches, validation split, data actors.")
    checkpoint_every: int = Field(
        200, ge=1, description="Steps between checkpoints (also at each validation and at each run's end)."
    )
    val_every: int = Field(500, ge=1, description="Stage 3: steps between validations (and one at the end).")
    log_every: int = Field(10, ge=1, description="Steps between progress lines.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept per stage run.")
    seed: int = Field(0, description="Seed of the model initialisation and the data plan.")
    init_from: str | None = Field(
        None,
        description="Model file (path or s3:// URI, e.g. the shipped weights) to continue from: it stands in for "
        "the stages before the first one run (with stage 2: stage 1, so its CS encoder is trained further; "
        "otherwise stages 1 and 2, so stage 3 starts from its weights).",
    )
    s3: S3Settings = Field(
        default_factory=S3Settings, description="Where S3 is (endpoint, region); keys come from the AWS_* variables."
    )
    ray_address: str | None = Field(None, description="Ray cluster to join (default: start a local one).")

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str) -> str:
        if v not in list_variants():
            raise ValueError(f"unknown variant {v!r}; choose one of {', '.join(list_variants())}")
        return v

    @field_validator("data", "out")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # Ray workers run elsewhere: a relative local path must mean the same folder for them.
        return v if "://" in v else str(Path(v).expanduser().resolve())

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.data_config.degradation.patch_size % 16:
            raise ValueError("data_config.degradation.patch_size must be a multiple of 16 (the encoders' stride)")
        if self.init_from and self.stage == "1":
            raise ValueError("init_from continues a trained model from stage 2 or 3; stage 1 starts from scratch")
        return self

    def seeded_stages(self) -> list[int]:
        """Stages whose results ``init_from`` stands in for."""
        if not self.init_from:
            return []
        return [1] if self.stage == "2" else [1, 2]

    def stages(self) -> list[int]:
        return [1, 2, 3] if self.stage == "all" else [int(self.stage)]

    def stage_steps(self, number: int) -> int:
        return {1: self.stage1_steps, 2: self.stage2_steps, 3: self.stage3_steps}[number]

    def stage_optim(self, number: int) -> OptimConfig:
        if number == 2 and self.stage2_lr is not None:
            return self.optim.model_copy(update={"lr": self.stage2_lr})
        return self.optim

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def run_name(self, number: int) -> str:
        return f"{self.name}-stage{number}"


class StageResult(BaseModel):
    """Where a stage stands after :func:`run_stage`."""

    stage: int
    step: int
    total_steps: int
    finished: bool
    skipped: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)


# -- helpers shared by driver and workers ---------------------------------------------------------------------------


def _stage_file(number: int) -> str:
    return f"stage{number}.safetensors"


def _exists(location: Location, relative: str) -> bool:
    return location.fs.get_file_info(location.path(relative)).type == pafs.FileType.File


@contextlib.contextmanager
def _downloaded(location: Location, relative: str) -> Iterator[Path]:
    """A model file of a folder or S3 location as a local temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model.safetensors"
        local.write_bytes(read_bytes(location.fs, location.path(relative)))
        yield local


def _load_remote_model(location: Location, relative: str) -> DAGN:
    with _downloaded(location, relative) as local:
        return load_model(local)


def _remote_metadata(uri: str, s3: S3Settings) -> dict[str, str]:
    with _downloaded(*resolve_file(uri, s3)) as local:
        return read_metadata(local)


def _lineage_steps(cfg: TrainConfig) -> dict[str, int]:
    """Optimisation steps per stage behind the exported weights: a model continued with ``init_from`` has its
    parent's stages 1 and 2, and its parent's stage-3 steps plus this run's."""
    steps = {str(n): cfg.stage_steps(n) for n in (1, 2, 3)}
    if cfg.init_from:
        parent = json.loads(_remote_metadata(cfg.init_from, cfg.s3).get("stage_steps", "{}"))
        if {"1", "2", "3"} <= set(parent):
            steps = {"1": int(parent["1"]), "2": int(parent["2"]), "3": int(parent["3"]) + cfg.stage3_steps}
        out = resolve(cfg.out, cfg.s3)
        retrained = _remote_metadata(out.uri_of(_stage_file(2)), cfg.s3).get("steps")
        if retrained:  # stage 2 was run again here (a new CS encoder): its steps replace the parent's
            steps["2"] = int(retrained)
    return steps


def _save_remote_model(model: DAGN, location: Location, relative: str, metadata: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = save_model(model, Path(tmp) / "model.safetensors", metadata)
        write_bytes_atomic(location.fs, location.path(relative), local.read_bytes())
    return location.uri_of(relative)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- validation -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(model: DAGN, images: list, device: torch.device, context: int | None = None) -> dict[str, float]:
    """Mean PSNR/SSIM of the JPEG input and of the restored image against the clean crop, per QF and overall.

    The model runs as :class:`dagn.Restorer` runs it for users: in regions of ``context`` pixels (the patch size).
    """
    # A copy: the Restorer puts its model in eval mode and channels_last; the trained one stays as DDP holds it.
    restorer = Restorer(model=copy.deepcopy(model), device=str(device), context=context)
    sums: dict[str, list[float]] = {}
    for item in images:
        for q, jpeg_image in item.jpegs.items():
            restored_image = restorer(jpeg_image)
            for key, value in (
                (f"psnr_jpeg_q{q}", quality.psnr(jpeg_image, item.clean)),
                (f"psnr_q{q}", quality.psnr(restored_image, item.clean)),
                (f"ssim_jpeg_q{q}", quality.ssim(jpeg_image, item.clean)),
                (f"ssim_q{q}", quality.ssim(restored_image, item.clean)),
            ):
                sums.setdefault(key, []).append(value)
    out = {f"val_{k}": float(np.mean(v)) for k, v in sums.items()}
    for kind in ("psnr", "ssim"):
        restored = [v for k, v in out.items() if k.startswith(f"val_{kind}_q")]
        jpeg_values = [v for k, v in out.items() if k.startswith(f"val_{kind}_jpeg_q")]
        if restored:
            out[f"val_{kind}"] = float(np.mean(restored))
            out[f"val_{kind}_jpeg"] = float(np.mean(jpeg_values))
    if "val_psnr" in out:
        out["val_psnr_gain"] = out["val_psnr"] - out["val_psnr_jpeg"]
    return out


# -- the worker loop ------------------------------------------------------------------------------------------------


def _report_with_checkpoint(metrics: dict[str, float], stage: Stage, metadata: dict[str, str]) -> None:
    """Rank 0: write state + model to a temporary folder and report it (the synchronous upload copies it)."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="dagn-ckpt-") as tmp:
        torch.save(stage.state_dict(), os.path.join(tmp, STATE_FILE))
        save_model(stage.model, os.path.join(tmp, MODEL_FILE), metadata)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of one stage run."""
    import ray.train
    import ray.train.torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig.model_validate(loop_config["config"])
    number: int = loop_config["stage"]
    total = cfg.stage_steps(number)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(loop_config["threads"])
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    amp = cfg.amp if cfg.amp is not None else cfg.use_gpu

    out = resolve(cfg.out, cfg.s3)
    if number == 1:
        torch.manual_seed(cfg.seed)
        model = new_model(cfg.variant)
    else:
        model = _load_remote_model(out, _stage_file(number - 1))
        model.train()
    stage = build_stage(
        number,
        model,
        total_steps=total,
        optim=cfg.stage_optim(number),
        device=device,
        distributed=world > 1,
        autocast_dtype=torch.bfloat16 if amp else None,
        channels_last=cfg.channels_last,
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            stage.load_state_dict(torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False))
        if rank == 0:
            log.info("stage %d: resumed at step %d of %d", number, stage.step_count, total)
    start = stage.step_count
    end = min(total, start + (cfg.steps or total))
    meta = {"variant": cfg.variant, "stage": str(number), "data": cfg.data}

    val_images = []
    if number == 3 and rank == 0 and loop_config["val_images"]:
        val_images = load_validation_set(resolve(cfg.data, cfg.s3), loop_config["val_images"], cfg.data_config)

    def report(metrics: dict[str, float], step: int) -> None:
        metrics = {**metrics, "step": step, "total_steps": total, "stage": number, "run_start_step": start}
        if number == 3 and val_images and (step % cfg.val_every == 0 or step == end):
            patch = cfg.data_config.degradation.patch_size
            metrics.update(validate(stage.model, val_images, device, context=patch))
            log.info(
                "stage 3 step %d validation: PSNR %.2f dB (JPEG %.2f, gain %+.2f), SSIM %.4f (JPEG %.4f)",
                step, metrics["val_psnr"], metrics["val_psnr_jpeg"], metrics["val_psnr_gain"],
                metrics["val_ssim"], metrics["val_ssim_jpeg"],
            )  # fmt: skip
        if rank == 0:
            _report_with_checkpoint(metrics, stage, {**meta, "step": str(step)})
        else:
            ray.train.report(metrics)

    if start >= end:
        report({}, start)
        return

    shard = ray.train.get_dataset_shard("train")
    window: dict[str, list[float]] = {}
    t_start = t_window = time.monotonic()
    samples_per_step = cfg.batch_size * world
    step = start
    warmup = min(cfg.log_every, max(0, end - start - 1))  # steps left out of the steady rate (start-up, data ramp)
    t_steady = t_start
    for arrays in shard.iter_batches(
        batch_size=cfg.batch_size,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=cfg.data_config.shuffle_buffer or None,
        local_shuffle_seed=cfg.seed + rank + 1000 * start,
        prefetch_batches=2,
    ):
        step_metrics = stage.step(batch_from_numpy(arrays, device, cfg.channels_last))
        step = stage.step_count
        if step - start == warmup:
            t_steady = time.monotonic()
        for k, v in step_metrics.items():
            window.setdefault(k, []).append(v)
        if rank == 0 and (step % cfg.log_every == 0 or step == end):
            now = time.monotonic()
            n = len(window["loss"])
            rate = n * samples_per_step / max(now - t_window, 1e-9)
            overall = (step - start) * samples_per_step / max(now - t_start, 1e-9)
            eta = (end - step) * samples_per_step / overall if overall > 0 else float("inf")
            extras = " ".join(f"{k} {np.mean(v):.4g}" for k, v in window.items() if k not in ("loss", "lr"))
            log.info(
                "stage %d step %d/%d (run ends at %d) loss %.4f lr %.2e %s | %.1f samples/s | ETA %s",
                number, step, total, end, np.mean(window["loss"]), step_metrics["lr"], extras, rate, _format_eta(eta),
            )  # fmt: skip
        if step % cfg.log_every == 0 or step == end:
            window, t_window = {}, time.monotonic()
        validation_due = number == 3 and step % cfg.val_every == 0
        if step % cfg.checkpoint_every == 0 or validation_due or step == end:
            now = time.monotonic()
            rates = {"samples_per_s": (step - start) * samples_per_step / (now - t_start)}
            if step - start > warmup:
                rates["steady_samples_per_s"] = (step - start - warmup) * samples_per_step / (now - t_steady)
                # the steady window in wall-clock time, so a profiler outside Ray can line its samples up with it
                wall = time.time()
                rates["steady_from_unix"] = wall - (now - t_steady)
                rates["steady_to_unix"] = wall
            report({**step_metrics, **rates}, step)
        if step >= end:
            break
    if step < end:  # the stream ran dry (it is planned with a margin, so this should not happen); keep what we have
        log.warning("stage %d: data ended at step %d before %d", number, step, end)
        if step % cfg.checkpoint_every != 0:
            report({}, step)


# -- driver ---------------------------------------------------------------------------------------------------------


def _ensure_ray(cfg: TrainConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.ray_address:
        ray.init(address=cfg.ray_address)
    else:  # no dashboard on a local Ray, so no state API either: see pipeline.ray_tweaks
        ray.init(
            include_dashboard=False,
            object_store_memory=1024 * 2**20,
            runtime_env={"worker_process_setup_hook": "pipeline.ray_tweaks.quiet_state_api_warnings"},
        )


def _latest_checkpoint_name(location: Location, run_name: str) -> str:
    """Name of the newest checkpoint folder of a run ("" if none): makes a resumed run draw fresh patches."""
    selector = pafs.FileSelector(location.path(f"checkpoints/{run_name}"), recursive=False, allow_not_found=True)
    names = [
        os.path.basename(info.path)
        for info in location.fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory and os.path.basename(info.path).startswith("checkpoint")
    ]
    return max(names, default="")


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


def run_stage(cfg: TrainConfig, number: int) -> StageResult:
    """Run (or resume) one stage as a Ray Train run; writes ``stageN.safetensors`` when the stage is finished."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    out = resolve(cfg.out, cfg.s3)
    total = cfg.stage_steps(number)
    if _exists(out, _stage_file(number)):
        log.info("stage %d already finished (%s); skipping", number, out.uri_of(_stage_file(number)))
        return StageResult(stage=number, step=total, total_steps=total, finished=True, skipped=True)
    if number > 1 and not _exists(out, _stage_file(number - 1)):
        raise RuntimeError(f"stage {number} needs stage {number - 1} finished first ({_stage_file(number - 1)})")

    _ensure_ray(cfg)
    data = resolve(cfg.data, cfg.s3)
    train_images, val_images = split_images(list_images(data), cfg.data_config.val_images)
    run_name = cfg.run_name(number)
    previous = _latest_checkpoint_name(out, run_name)
    steps_this_run = min(total, cfg.steps or total)
    n_samples = int(steps_this_run * cfg.batch_size * cfg.workers * 1.02) + cfg.batch_size * cfg.workers * 4
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    plan = plan_workers(cfg, cluster_cpus)
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
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "stage": number,
            "threads": plan.threads,
            "val_images": val_images,
        },
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=plan.resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=out.path("checkpoints"),
            storage_filesystem=out.fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    step = int(metrics.get("step", 0))
    finished = step >= total
    if finished:
        if result.checkpoint is None:
            raise RuntimeError(f"stage {number} finished without a checkpoint")
        with result.checkpoint.as_directory() as d:
            model = load_model(Path(d) / MODEL_FILE)
        _save_remote_model(
            model,
            out,
            _stage_file(number),
            {"variant": cfg.variant, "stage": str(number), "steps": str(total), "data": cfg.data},
        )
        log.info("stage %d finished at step %d -> %s", number, step, out.uri_of(_stage_file(number)))
    else:
        log.info("stage %d stopped at step %d of %d; run the same command again to continue", number, step, total)
    return StageResult(stage=number, step=step, total_steps=total, finished=finished, metrics=metrics)


def export_model(cfg: TrainConfig, metrics: dict[str, float] | None = None) -> str:
    """Write ``OUT/model.safetensors``: the finished stage-3 model with provenance metadata; returns its URI."""
    out = resolve(cfg.out, cfg.s3)
    model = _load_remote_model(out, _stage_file(3))
    metadata = {
        "variant": cfg.variant,
        "stage_steps": json.dumps(_lineage_steps(cfg)),
        "data": cfg.data,
        "git_commit": _git_commit(),
        "degradation": cfg.data_config.degradation.model_dump_json(),
        "batch_size": str(cfg.batch_size * cfg.workers),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cfg.init_from:
        metadata["init_from"] = cfg.init_from
    if metrics:
        metadata["validation"] = json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")})
    return _save_remote_model(model, out, "model.safetensors", metadata)


def _seed_from_model(cfg: TrainConfig, out: Location) -> None:
    """Write ``init_from`` as the results of :meth:`TrainConfig.seeded_stages` (once), so training continues from it.

    Its config must be the variant's, except that a model whose CS encoder read another input (``cs_highpass``) may
    seed stage 1 of a stage-2 run, which trains that encoder for the variant's input.
    """
    stages = cfg.seeded_stages()
    if all(_exists(out, _stage_file(n)) for n in stages):
        return
    parent = _load_remote_model(*resolve_file(cfg.init_from, cfg.s3))
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
        _save_remote_model(model, out, _stage_file(number), meta)
    log.info("continuing from %s (it stands in for stage(s) %s)", cfg.init_from, stages)


def train(cfg: TrainConfig) -> list[StageResult]:
    """Run the configured stages in order, stopping at the first one that is not finished; export after stage 3."""
    out = resolve(cfg.out, cfg.s3)
    write_bytes_atomic(out.fs, out.path("train_config.json"), cfg.model_dump_json(indent=2).encode())
    if cfg.init_from:
        _seed_from_model(cfg, out)
    results = []
    for number in cfg.stages():
        result = run_stage(cfg, number)
        results.append(result)
        if not result.finished:
            return results
    if 3 in cfg.stages() and (not results[-1].skipped or not _exists(out, "model.safetensors")):
        uri = export_model(cfg, results[-1].metrics)
        log.info("exported %s", uri)
    return results
