"""What a batch restore is asked to do: every option, validated once in the driver."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.codec import MAX_PIXELS, OutputFormat
from pipeline.extensions import IMAGE_EXTENSIONS
from pipeline.lease import LeaseSeconds
from pipeline.storage import Extensions, S3Settings

__all__ = ["DEFAULT_EXTENSIONS", "RestoreConfig"]

DEFAULT_EXTENSIONS = IMAGE_EXTENSIONS


class RestoreConfig(BaseModel):
    """Every knob of a batch restore. Credentials are not among them: they come from the standard AWS sources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str = Field(description="Input folder or s3://bucket/prefix; every file below it (recursively) is an input.")
    dst: str = Field(description="Output folder or s3://bucket/prefix; outputs mirror the input names below it.")
    list_file: str | None = Field(
        None,
        description="The inputs, by paths relative to SRC: a text file with one per line, or a Parquet file with a "
        "`key` column (and optionally `size`, `last_modified_date`, as S3 Inventory writes them); local or s3://.",
    )
    weights: str | None = Field(
        None, description="DAGN model file (.safetensors, local or s3://); default: the shipped weights."
    )
    format: OutputFormat = Field(
        OutputFormat.same, description="Output format: same (JPEG, PNG, WebP keep theirs; others PNG), png, jpeg, webp."
    )
    quality: int = Field(95, ge=1, le=100, description="JPEG / WebP quality of the outputs.")
    workers: int | None = Field(
        None,
        ge=1,
        description="A fixed number of model actors (one model copy each); default: a pool that grows from 1 to "
        "max_workers as the cluster has room.",
    )
    max_workers: int | None = Field(
        None,
        ge=1,
        description="Most model actors of the growing pool; default: on GPU, the GPUs the cluster has or its "
        "autoscaler may add, / gpus_per_worker; on CPU, one per CPU the cluster has, at least 16 (nodes may join).",
    )
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per model actor; 0 runs on CPU.")
    cpus_per_worker: float | None = Field(
        None,
        gt=0,
        description="CPUs reserved per model actor; default: 1 on GPU, on CPU what fits beside the I/O tasks.",
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="Torch threads per model actor; default: the cluster's CPUs / workers on CPU, 2 on GPU."
    )
    io_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs reserved per read/decode and per encode/write actor; default 1 on GPU (decoding a large "
        "JPEG is real CPU work), 0.25 on CPU (where the model actors need the cores).",
    )
    io_workers: int | None = Field(
        None,
        ge=1,
        description="Most read/decode and encode/write actors each (the pools grow from 1 with the cluster's CPUs); "
        "default: 4 per model actor on GPU, one per 8 model actors on CPU.",
    )
    read_threads: int = Field(8, ge=1, description="Concurrent reads inside one read/decode actor (they wait on I/O).")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Images (same size) or tiles per model call; default 8 on GPU, 1 on CPU (where bigger batches "
        "only cost cache).",
    )
    tile: int | None = Field(
        1024,
        ge=16,
        description="Largest tile side (bounds memory); 0 or None runs every image whole. Models trained on patches "
        "below 128 px run in tiles of their patch size anyway (see dagn.inference).",
    )
    tile_overlap: int = Field(32, ge=0, description="Minimum overlap between tiles in pixels.")
    context: int | None = Field(
        None,
        ge=0,
        description="Largest region (pixels) the model sees at once; default: the model's own (whole images for "
        "models trained on patches of 128 px or more, else their patch size; see dagn.inference); 0: whole images.",
    )
    min_qf: int | None = Field(None, ge=1, le=100, description="Restore only JPEGs with an estimated QF >= this.")
    max_qf: int | None = Field(None, ge=1, le=100, description="Restore only JPEGs with an estimated QF <= this.")
    overwrite: bool = Field(False, description="Redo every input, done or not (default: only new and changed ones).")
    dry_run: bool = Field(False, description="Plan only: count the inputs by what a run would do; write nothing.")
    shard_depth: int = Field(
        1,
        ge=0,
        le=8,
        description="Directory (S3 prefix) levels the key space is cut into shards at; each shard is listed, "
        "compared with its state and planned in its own task. Keep it the same between runs: state is kept per shard.",
    )
    state_rows: int = Field(
        1000, ge=1, description="Finished rows per state part (a killed run redoes at most the blocks in flight)."
    )
    max_pixels: int = Field(
        MAX_PIXELS, ge=1, description="Refuse images with more pixels than this (decompression bomb guard)."
    )
    extensions: Extensions = Field(DEFAULT_EXTENSIONS, description="Input file extensions (case-insensitive).")
    lease_seconds: LeaseSeconds = 300
    follow_symlinks: bool = Field(
        False,
        description="Follow symbolic links in a local SRC (loops are detected); default: each link is a failed row, "
        "since it may point outside SRC.",
    )
    s3: S3Settings = Field(
        default_factory=S3Settings, description="Where S3 is (endpoint, region); keys come from the AWS_* variables."
    )

    @field_validator("tile", mode="before")
    @classmethod
    def _zero_is_whole(cls, v: Any) -> Any:
        return None if v == 0 else v

    @model_validator(mode="after")
    def _check(self) -> RestoreConfig:
        if self.min_qf is not None and self.max_qf is not None and self.min_qf > self.max_qf:
            raise ValueError(f"min_qf ({self.min_qf}) is above max_qf ({self.max_qf})")
        if self.tile is not None and self.tile_overlap >= self.tile:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be below tile ({self.tile})")
        return self

    @property
    def qf_filter(self) -> bool:
        return self.min_qf is not None or self.max_qf is not None

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_worker > 0
