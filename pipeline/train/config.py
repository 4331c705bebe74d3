"""What a training job is told (:class:`TrainConfig`, filled by the CLI flags and the YAML file) and what a stage
run reports back (:class:`StageResult`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dagn.models import list_variants
from dagn.training import OptimConfig
from pipeline.storage import S3Settings
from pipeline.train.data import DataConfig

__all__ = ["StageResult", "TrainConfig"]


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
        description="Planned optimisation steps of stage 2 (CS encoder). Many, because its steps are cheap and the "
        "QF regression first sits a long while at the predict-the-mean plateau.",
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
        description="Whole CPUs left to the patch-making Ray Data actors (CPU training). Whole, because Ray Data is "
        "granted what Ray Train leaves over in whole CPUs: a fraction counts as none, and training then stalls on "
        "data.",
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch intra-op threads per worker (default: cluster CPUs / workers on CPU)."
    )
    amp: bool | None = Field(
        None, description="bf16 autocast (default: on GPUs and on CPUs with native bf16, see dagn.precision)."
    )
    channels_last: bool = Field(
        True, description="channels-last tensors: faster for these convolutions on GPUs and CPUs alike."
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
    max_failures: int = Field(
        2,
        ge=0,
        description="Restarts of a stage run's workers after one dies (a lost node, a preempted instance, a failed "
        "health check); each restart continues from the newest complete checkpoint on storage.",
    )
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
