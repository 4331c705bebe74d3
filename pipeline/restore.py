"""Batch restore on Ray Data: list -> skip what is done -> read + decode -> DAGN actor pool -> encode + write.

::

    plan (driver)       one listing of SRC (or a list file), one listing of DST, the manifest of earlier runs
      |                 -> rows decided without reading anything: done (output exists), QF-skipped before, empty
    read + decode       actors (fractional CPU): bytes, QF from the quantization tables, --min-qf/--max-qf, decode
      |                 with EXIF orientation / ICC / CMYK / alpha / bomb guard; bad input becomes a failed row
    restore             actor pool (ActorPoolStrategy; num_gpus per actor on GPU clusters): dagn.Restorer, tiles
      |                 and same-size batches inside
    encode + write      actors: --format / --quality, atomic write to the mirrored key, then the batch's manifest part
      v
    driver              counts rows as they stream in (progress bar), compacts the manifest at the end

Images travel between stages as raw uint8 bytes plus width/height/channels columns (not tensor extension types), so
gray, RGB, any size and any failure mix freely in one block. Resume and the manifest layout: :mod:`pipeline.manifest`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dagn.jpeg import estimate_quality
from pipeline.codec import DecodeError, EncodeError, OutputFormat, decode_image, encode_image, output_format
from pipeline.extensions import IMAGE_EXTENSIONS
from pipeline.keys import UnsafeKeyError, key_paths
from pipeline.lease import hold
from pipeline.manifest import (
    MANIFEST_DIR,
    SCHEMA,
    RunWriter,
    compact,
    latest_rows,
    new_run_id,
    read_manifest,
    write_part,
)
from pipeline.storage import (
    Extensions,
    ListingProblem,
    Location,
    S3Settings,
    is_s3,
    list_entries,
    read_bytes,
    redact,
    resolve,
    resolve_file,
    write_bytes_atomic,
)

__all__ = [
    "ActorPlan",
    "RestoreConfig",
    "RestoreSummary",
    "actor_resources",
    "build_pipeline",
    "check_weights",
    "plan_restore",
    "run_restore",
]

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = IMAGE_EXTENSIONS


class RestoreConfig(BaseModel):
    """Every knob of a batch restore. Credentials are not among them: they come from the standard AWS sources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str = Field(description="Input folder or s3://bucket/prefix; every file below it (recursively) is an input.")
    dst: str = Field(description="Output folder or s3://bucket/prefix; outputs mirror the input names below it.")
    list_file: str | None = Field(
        None, description="Text file (path or s3:// URI) naming the inputs, one path relative to SRC per line."
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
        description="Model actors, one model copy each; default: GPUs / gpus_per_worker on GPU, on CPU one per CPU "
        "(up to 16), each with 1 torch thread.",
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
    io_cpus: float = Field(
        0.25, gt=0, description="CPUs reserved per read/decode and per encode/write actor (small: they wait on I/O)."
    )
    io_workers: int | None = Field(
        None,
        ge=1,
        description="Most read/decode and encode/write actors each (pools grow from 1 as needed); default: 1 on "
        "CPU, 2 per model actor on GPU.",
    )
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
    overwrite: bool = Field(False, description="Redo inputs whose output exists (default: skip them).")
    max_pixels: int = Field(
        100_000_000, ge=1, description="Refuse images with more pixels than this (decompression bomb guard)."
    )
    extensions: Extensions = Field(DEFAULT_EXTENSIONS, description="Input file extensions (case-insensitive).")
    lease_seconds: float = Field(
        300,
        ge=5,
        description="Lifetime of the run's lease on DST (renewed every third of it while the run lives): how long "
        "a killed run keeps the next one out (see pipeline.lease).",
    )
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


@dataclass
class RestoreSummary:
    """What a run did; ``failures`` holds the first few (input, error) pairs for the report."""

    run_id: str
    total: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    pipeline_seconds: float = 0.0
    manifest: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.ok / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    def add(self, rows: pa.Table, keep_failures: int = 20) -> None:
        statuses = rows.column("status").to_pylist()
        self.total += len(statuses)
        self.ok += statuses.count("ok")
        self.skipped += statuses.count("skipped")
        self.failed += statuses.count("failed")
        for row in rows.filter(pc.equal(rows["status"], "ok")).select(["width", "height"]).to_pylist():
            self.megapixels += row["width"] * row["height"] / 1e6
        if len(self.failures) < keep_failures and self.failed:
            failed = rows.filter(pc.equal(rows["status"], "failed")).select(["input", "error"]).to_pylist()
            self.failures += [(r["input"], r["error"]) for r in failed[: keep_failures - len(self.failures)]]


# -- plan (driver) -------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run will do: inputs to read (relative key, size or -1) and rows already decided without reading."""

    todo: list[tuple[str, int]]
    decided: pa.Table


def _rows(**columns: list) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({name: columns.get(name, [None] * n) for name in SCHEMA.names}, schema=SCHEMA)


def _list_inputs(cfg: RestoreConfig, src: Location, problems: list[ListingProblem]) -> list[tuple[str, int]]:
    if cfg.list_file is None:
        return list_entries(src, cfg.extensions, follow_symlinks=cfg.follow_symlinks, problems=problems)
    if is_s3(cfg.list_file):
        where, name = resolve_file(cfg.list_file, cfg.s3)
        text = read_bytes(where.fs, where.path(name)).decode()
    else:
        text = Path(cfg.list_file).read_text()
    keys = [line.strip() for line in text.splitlines()]
    return [(k, -1) for k in dict.fromkeys(k for k in keys if k and not k.startswith("#"))]


def _qf_skip_reason(min_qf: int | None, max_qf: int | None, qf: int | None) -> str | None:
    """Why an input with estimated quality ``qf`` (None: not a JPEG) is outside the range, or None if inside."""
    if min_qf is None and max_qf is None:
        return None
    if qf is None:
        return "not a JPEG with quantization tables, and --min-qf/--max-qf select by JPEG quality"
    if min_qf is not None and qf < min_qf:
        return f"estimated QF {qf} is below --min-qf {min_qf}"
    if max_qf is not None and qf > max_qf:
        return f"estimated QF {qf} is above --max-qf {max_qf}"
    return None


def _remove_stale_temporaries(dst: Location, names: list[str]) -> None:
    """Hidden ``.name.xxxxxxxx.tmp`` files a killed run left behind on a local disk (S3 writes leave none)."""
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base.startswith(".") and base.endswith(".tmp") and not name.startswith(MANIFEST_DIR + "/"):
            dst.fs.delete_file(dst.path(name))


def plan_restore(cfg: RestoreConfig, src: Location, dst: Location, run_id: str) -> Plan:
    """Decide, from listings and the manifest only, which inputs need reading.

    * a key that could leave SRC or DST       -> failed (:func:`pipeline.keys.key_paths`);
    * a dangling or looping link, a link not followed (local SRC) -> failed;
    * output exists (one listing of DST)     -> skipped, "done", unless ``overwrite``;
    * skipped for its QF by an earlier run, and still outside the range -> skipped again without reading;
    * zero bytes (size from the listing)      -> failed;
    * two inputs mapping to one output name   -> the later ones failed;
    * everything else                         -> to do.
    """
    if src.uri.rstrip("/") == dst.uri.rstrip("/") or dst.uri.startswith(src.uri.rstrip("/") + "/"):
        raise ValueError(f"the destination {dst.uri} must not be the source or lie inside it")
    problems: list[ListingProblem] = []
    inputs = _list_inputs(cfg, src, problems)
    existing: set[str] = set()
    previous: dict[str, dict] = {}
    if not cfg.overwrite:
        names = [name for name, _ in list_entries(dst) if not name.startswith(MANIFEST_DIR + "/")]
        if isinstance(dst.fs, pafs.LocalFileSystem):
            _remove_stale_temporaries(dst, names)
        existing = set(names)
        previous = latest_rows(read_manifest(dst))  # input -> status, qf, width, height, mode of its latest row

    columns = ("input", "output", "status", "error", "reason", "qf", "width", "height", "mode")
    decided: dict[str, list] = {name: [] for name in columns}

    def decide(key: str, status: str, out: str | None = None, **values: object) -> None:
        values.update(input=src.uri_of(key), output=dst.uri_of(out) if out else None, status=status)
        for name in columns:
            decided[name].append(values.get(name))

    for problem in problems:  # dangling links, link loops, links not followed: named, never silently dropped
        decide(problem.path, "failed", error=problem.error)
    todo: list[tuple[str, int]] = []
    claimed: dict[str, str] = {}
    for key, size in inputs:
        try:
            out = key_paths(key, src, dst, cfg.format).out_key
        except UnsafeKeyError as e:
            decide(key, "failed", error=str(e))
            continue
        if out in claimed:
            decide(key, "failed", error=f"output name {out} is also the output of {claimed[out]}; rename one")
            continue
        claimed[out] = key
        before = previous.get(src.uri_of(key)) or {}
        if out in existing:
            # Carry what the run that restored it measured, so the latest run's rows describe the whole archive.
            known = {k: before.get(k) for k in ("qf", "width", "height", "mode")} if before.get("mode") else {}
            decide(key, "skipped", out, reason="done: the output exists (use --overwrite to redo)", **known)
        elif before.get("status") == "skipped" and (
            reason := _qf_skip_reason(cfg.min_qf, cfg.max_qf, before["qf"]) if before.get("qf") is not None else None
        ):
            decide(key, "skipped", reason=reason, qf=before["qf"])
        elif size == 0:
            decide(key, "failed", error="empty file (0 bytes)")
        else:
            todo.append((key, size))
    n = len(decided["input"])
    table = _rows(**decided, milliseconds=[0.0] * n, run_id=[run_id] * n) if n else SCHEMA.empty_table()
    return Plan(todo=todo, decided=table)


# -- stages (workers) ----------------------------------------------------------------------------------------------

_WORK_SCHEMA = pa.schema(
    [
        *[f for f in SCHEMA if f.name != "run_id"],
        pa.field("key", pa.string()),
        pa.field("out_key", pa.string()),
        pa.field("out_format", pa.string()),
        pa.field("channels", pa.int8()),
        pa.field("pixels", pa.large_binary()),
        pa.field("alpha", pa.large_binary()),
        pa.field("icc", pa.large_binary()),
        pa.field("exif", pa.large_binary()),
    ]
)


@lru_cache(maxsize=8)
def _location(uri: str, s3: S3Settings) -> Location:
    return resolve(uri, s3)


def _pixels(row: dict) -> np.ndarray:
    shape = (row["height"], row["width"]) + ((3,) if row["channels"] == 3 else ())
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(shape)


def read_and_decode(
    batch: pa.Table,
    *,
    src: str,
    dst: str,
    s3: S3Settings,
    fmt: str,
    min_qf: int | None,
    max_qf: int | None,
    max_pixels: int,
) -> pa.Table:
    """Stage 1: read each input, estimate its QF, apply the QF filter and decode it (or fail the row)."""
    source, target = _location(src, s3), _location(dst, s3)
    rows = []
    for key in batch.column("key").to_pylist():
        start = time.perf_counter()
        row: dict = {"input": source.uri_of(key), "key": key, "status": "pending"}
        try:
            paths = key_paths(key, source, target, OutputFormat(fmt))
        except UnsafeKeyError as e:  # the plan refuses these already; a second guard where the bytes are read
            rows.append({**row, "status": "failed", "error": str(e), "milliseconds": 0.0})
            continue
        row.update(
            output=target.uri_of(paths.out_key),
            out_key=paths.out_key,
            out_format=output_format(key, OutputFormat(fmt)),
        )
        try:
            data = read_bytes(source.fs, paths.source)
            row["qf"] = estimate_quality(data)
            reason = _qf_skip_reason(min_qf, max_qf, row["qf"])
            if reason:
                row.update(status="skipped", reason=reason)
            else:
                decoded = decode_image(data, max_pixels=max_pixels)
                pixels = decoded.pixels
                row.update(
                    height=pixels.shape[0],
                    width=pixels.shape[1],
                    channels=1 if pixels.ndim == 2 else 3,
                    pixels=pixels.tobytes(),
                    alpha=decoded.alpha.tobytes() if decoded.alpha is not None else None,
                    icc=decoded.icc_profile,
                    exif=decoded.exif,
                )
        except DecodeError as e:
            row.update(status="failed", error=str(e))
        except Exception as e:  # storage errors and anything unexpected: one failed row, never a failed job
            row.update(status="failed", error=redact(f"cannot read input: {type(e).__name__}: {e}"))
        row["milliseconds"] = 1000 * (time.perf_counter() - start)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=_WORK_SCHEMA)


def _local_weights(weights: str | None, s3: S3Settings) -> str | None:
    """A local path for ``weights``: s3:// model files are downloaded once per process into a temporary folder."""
    if weights is None or not is_s3(weights):
        return weights
    where, name = resolve_file(weights, s3)
    digest = hashlib.sha256(weights.encode()).hexdigest()[:12]
    local = Path(tempfile.gettempdir()) / "dagn-weights" / f"{digest}-{name}"
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        tmp.write_bytes(read_bytes(where.fs, where.path(name)))
        tmp.replace(local)
    return str(local)


def check_weights(cfg: RestoreConfig) -> None:
    """Refuse in the driver, before Ray starts, a model file that is missing (FileNotFoundError) or damaged
    (:class:`dagn.checkpoint.ModelFileError`): one clear line, not a traceback from every actor or black outputs."""
    from dagn.checkpoint import shipped_weights, verify_model_file

    if cfg.weights is None:
        path = shipped_weights()  # raises FileNotFoundError when the package has no default.json
        if not path.exists():
            raise FileNotFoundError(f"the shipped weights {path} are missing; pass --weights")
    elif is_s3(cfg.weights):
        where, name = resolve_file(cfg.weights, cfg.s3)
        if where.fs.get_file_info(where.path(name)).type != pafs.FileType.File:
            raise FileNotFoundError(f"model file not found: {cfg.weights}")
        path = _local_weights(cfg.weights, cfg.s3)
    else:
        path = cfg.weights
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file not found: {cfg.weights}")
    verify_model_file(path)


class _IOStage:
    """An I/O stage as an actor that calls ``stage`` with the options it was built with.

    The I/O stages run in small actor pools rather than as tasks: Ray keeps only about one idle worker process per
    CPU and kills the rest after a second, so short tasks beside long-lived model actors make it start new worker
    processes all the time, each paying Python, Ray and library imports again (measured here: ~3 CPU-seconds per
    process, twice the CPU of the whole job on a 2-core machine). Actors start once.
    """

    stage: Callable[..., pa.Table]

    def __init__(self, **options: object) -> None:
        self.options = options

    def __call__(self, batch: pa.Table) -> pa.Table:
        return type(self).stage(batch, **self.options)


class ReadStage(_IOStage):
    """Actor for stage 1 (:func:`read_and_decode`)."""

    stage = staticmethod(read_and_decode)


class RestoreStage:
    """Stage 2 (actors): one :class:`dagn.Restorer` per actor, loaded once; restores the pending rows of a batch."""

    def __init__(
        self,
        *,
        weights: str | None,
        s3: S3Settings,
        device: str,
        tile: int | None,
        tile_overlap: int,
        context: int | None,
        batch_size: int,
        threads: int,
    ) -> None:
        import torch

        from dagn import Restorer
        from dagn.inference import context_setting

        torch.set_num_threads(threads)
        local = _local_weights(weights, s3)
        self.restorer = Restorer(
            local,
            device=device,
            tile=tile,
            tile_overlap=tile_overlap,
            batch_size=batch_size,
            context=context_setting(context),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        pending = [r for r in rows if r["status"] == "pending"]
        if pending:
            self._restore(pending)
        return pa.Table.from_pylist(rows, schema=_WORK_SCHEMA)

    def _restore(self, rows: list[dict]) -> None:
        start = time.perf_counter()
        try:
            restored = self.restorer.restore_batch([_pixels(r) for r in rows])
        except Exception:
            if len(rows) > 1:  # find the culprit (e.g. out of memory on one huge image): one by one
                for r in rows:
                    self._restore([r])
                return
            row = rows[0]
            log.exception("restoring %s failed", row["input"])
            row.update(status="failed", error="restoration failed (see the worker log)", pixels=None)
            return
        elapsed_ms = 1000 * (time.perf_counter() - start)
        total_pixels = sum(r["width"] * r["height"] for r in rows)
        for r, image in zip(rows, restored, strict=True):
            r["pixels"] = image.tobytes()
            r["milliseconds"] += elapsed_ms * r["width"] * r["height"] / total_pixels


def encode_and_write(batch: pa.Table, *, dst: str, s3: S3Settings, quality: int, run_id: str) -> pa.Table:
    """Stage 3: encode and atomically write each restored image, then store the batch's manifest part."""
    target = _location(dst, s3)
    rows = batch.to_pylist()
    for row in rows:
        if row["status"] != "pending":
            continue
        start = time.perf_counter()
        try:
            alpha = row["alpha"]
            data = encode_image(
                _pixels(row),
                alpha=np.frombuffer(alpha, np.uint8).reshape(row["height"], row["width"]) if alpha else None,
                fmt=row["out_format"],
                quality=quality,
                icc_profile=row["icc"],
                exif=row["exif"],
            )
            write_bytes_atomic(target.fs, target.path(row["out_key"]), data)
            mode = ("L" if row["channels"] == 1 else "RGB") + ("A" if alpha else "")
            row.update(status="ok", mode=mode)
        except EncodeError as e:
            row.update(status="failed", error=str(e))
        except Exception as e:
            row.update(status="failed", error=redact(f"cannot write output: {type(e).__name__}: {e}"))
        row["milliseconds"] += 1000 * (time.perf_counter() - start)
    manifest_rows = [{**{k: r.get(k) for k in SCHEMA.names}, "run_id": run_id} for r in rows]
    for r in manifest_rows:
        if r["status"] != "ok":  # an output exists (or is named) only for restored rows
            r["output"] = r["mode"] = None
    table = pa.Table.from_pylist(manifest_rows, schema=SCHEMA)
    if len(table):
        write_part(target, run_id, table)
    return table


class WriteStage(_IOStage):
    """Actor for stage 3 (:func:`encode_and_write`)."""

    stage = staticmethod(encode_and_write)


# -- composition ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorPlan:
    """How the stages run: ``workers`` model actors, each reserving ``cpus`` and ``gpus``, running ``threads`` and
    restoring ``batch_size`` images or tiles per call; read and write pools of up to ``io_workers`` actors each."""

    workers: int
    cpus: float
    gpus: float
    threads: int
    batch_size: int
    io_workers: int


def actor_resources(cfg: RestoreConfig, cluster: dict[str, float]) -> ActorPlan:
    """Fill in the model stage's defaults from the cluster's resources (``ray.cluster_resources()``).

    * workers: on GPU, the cluster's GPUs / ``gpus_per_worker`` (at least 1: an autoscaling cluster may have none
      yet); on CPU one actor per CPU (up to 16), each with one torch thread. Independent single-threaded actors keep
      every core busy with no intra-op synchronisation, which on a machine shared with other work is several times
      faster than one actor with many threads (bench/bench_restore.py prints both).
    * CPUs reserved: Ray waits forever, without an error, when the stages together ask for more CPUs than the cluster
      has, so on CPU the reservation fits the actors plus the first read and write actors; on GPU 1 per actor.
    * threads: the cluster's CPUs shared among the actors on CPU, 2 on GPU (the GPU does the work).
    * batch size: 8 on GPU; 1 on CPU, where a batch of 4 costs ~20 % more per image (cache) and gains nothing.
    * I/O actors: at most 1 read and 1 write actor on CPU (decoding costs ~1 % of restoring there), 2 per model
      actor on GPU.
    """
    gpu = cfg.gpus_per_worker > 0
    cluster_cpus = float(cluster.get("CPU", 0.0))
    if cfg.workers is not None:
        workers = cfg.workers
    elif gpu:
        workers = max(1, int(cluster.get("GPU", 0.0) // cfg.gpus_per_worker))
    else:
        workers = max(1, min(16, int(cluster_cpus)))
    if cfg.cpus_per_worker is not None:
        cpus = cfg.cpus_per_worker
    elif gpu or cluster_cpus <= 0:  # no CPUs reported yet (an autoscaling cluster): let Ray scale for 1 each
        cpus = 1.0
    else:
        cpus = round(min(1.0, max(0.05, (cluster_cpus - 2 * cfg.io_cpus) / workers)), 2)
    if cfg.threads_per_worker is not None:
        threads = cfg.threads_per_worker
    else:
        threads = 2 if gpu else max(1, int(cluster_cpus or os.cpu_count() or 1) // workers)
    needed = workers * cpus + 2 * cfg.io_cpus  # the I/O pools start with one actor each
    if not gpu and 0 < cluster_cpus < needed:
        log.warning(
            "%d actors x %.2f CPUs + 2 x %.2f I/O CPUs = %.2f CPUs > the %.0f this cluster has: the run waits until "
            "the cluster grows (it would hang on a fixed-size one); lower --workers or cpus_per_worker",
            workers,
            cpus,
            cfg.io_cpus,
            needed,
            cluster_cpus,
        )
    return ActorPlan(
        workers=workers,
        cpus=cpus,
        gpus=cfg.gpus_per_worker,
        threads=threads,
        batch_size=cfg.batch_size or (8 if gpu else 1),
        io_workers=cfg.io_workers or (2 * workers if gpu else 1),
    )


def build_pipeline(cfg: RestoreConfig, todo: list[tuple[str, int]], run_id: str):
    """The lazy Ray Dataset of manifest rows for ``todo``: read + decode -> restore actors -> encode + write."""
    import ray

    src, dst = _location(cfg.src, cfg.s3), _location(cfg.dst, cfg.s3)
    actors = actor_resources(cfg, ray.cluster_resources())
    log.info("model stage: %s", actors)
    keys = [k for k, _ in todo]
    read_rows = max(actors.batch_size, 4)  # rows per call of the read actors (and per input block at least)
    write_rows = max(actors.batch_size, 8)  # rows per call of the write actors = per manifest part
    # Small jobs: at least ~16 blocks, so reads start in parallel and results stream early. Large ones: 64 keys per
    # block, so a million inputs make ~16k blocks, not a quarter million.
    rows = max(read_rows, min(64, math.ceil(len(keys) / 16)))
    blocks = [pa.table({"key": keys[i : i + rows]}) for i in range(0, len(keys), rows)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        ReadStage,
        batch_format="pyarrow",
        batch_size=read_rows,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors.io_workers),
        num_cpus=cfg.io_cpus,
        fn_constructor_kwargs={
            "src": src.uri,
            "dst": dst.uri,
            "s3": cfg.s3,
            "fmt": cfg.format.value,
            "min_qf": cfg.min_qf,
            "max_qf": cfg.max_qf,
            "max_pixels": cfg.max_pixels,
        },
    )
    ds = ds.map_batches(
        RestoreStage,
        batch_format="pyarrow",
        batch_size=actors.batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors.workers),
        num_cpus=actors.cpus,
        num_gpus=actors.gpus or None,
        fn_constructor_kwargs={
            "weights": cfg.weights,
            "s3": cfg.s3,
            "device": "cuda" if cfg.gpus_per_worker > 0 else "cpu",
            "tile": cfg.tile,
            "tile_overlap": cfg.tile_overlap,
            "context": cfg.context,
            "batch_size": actors.batch_size,
            "threads": actors.threads,
        },
    )
    return ds.map_batches(
        WriteStage,
        batch_format="pyarrow",
        batch_size=write_rows,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors.io_workers),
        num_cpus=cfg.io_cpus,
        fn_constructor_kwargs={"dst": dst.uri, "s3": cfg.s3, "quality": cfg.quality, "run_id": run_id},
    )


def run_restore(
    cfg: RestoreConfig,
    *,
    on_start: Callable[[int], None] | None = None,
    on_rows: Callable[[pa.Table], None] | None = None,
) -> RestoreSummary:
    """Restore everything under ``cfg.src`` that is not done yet; needs a connected Ray (``ray.init``).

    Args:
        cfg: the job.
        on_start: called once with the number of inputs listed (for a progress bar).
        on_rows: called with every chunk of finished manifest rows as they arrive.

    Returns:
        Counts, throughput (restored images over the time the pipeline ran) and the first failures.
    """
    started = time.perf_counter()
    check_weights(cfg)
    src, dst = resolve(cfg.src, cfg.s3), resolve(cfg.dst, cfg.s3)
    with hold(dst, cfg.s3, seconds=cfg.lease_seconds, what=f"dagn restore {src.uri}"):
        return _run(cfg, src, dst, started, on_start, on_rows)


def _run(
    cfg: RestoreConfig,
    src: Location,
    dst: Location,
    started: float,
    on_start: Callable[[int], None] | None,
    on_rows: Callable[[pa.Table], None] | None,
) -> RestoreSummary:
    run_id = new_run_id()
    plan = plan_restore(cfg, src, dst, run_id)
    summary = RestoreSummary(run_id=run_id, manifest=dst.uri_of(MANIFEST_DIR))
    log.info(
        "run %s: %d inputs, %d to read, %d decided from listings",
        run_id,
        len(plan.todo) + len(plan.decided),
        len(plan.todo),
        len(plan.decided),
    )
    if on_start:
        on_start(len(plan.todo) + len(plan.decided))
    compact(dst)  # parts left by killed runs, before this run adds its own
    writer = RunWriter(dst, run_id)
    try:
        if len(plan.decided):
            write_part(dst, run_id, plan.decided)
            writer.add(plan.decided)
            summary.add(plan.decided)
            if on_rows:
                on_rows(plan.decided)
        if plan.todo:
            pipeline_start = time.perf_counter()
            for rows in build_pipeline(cfg, plan.todo, run_id).iter_batches(batch_format="pyarrow", batch_size=None):
                writer.add(rows)
                summary.add(rows)
                if on_rows:
                    on_rows(rows)
            summary.pipeline_seconds = time.perf_counter() - pipeline_start
    except BaseException:
        writer.abort()  # Ctrl-C or a failed pipeline: the parts stay, and the next run compacts them
        raise
    writer.close()
    summary.seconds = time.perf_counter() - started
    return summary
