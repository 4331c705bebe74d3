"""The stages after planning, each a small actor class for ``map_batches``: read + decode, restore, encode + write,
record. Rows not ``pending`` (settled by planning or an earlier stage) pass every stage untouched.

The I/O stages run as actors, not tasks: Ray keeps only about one idle worker process per CPU and kills the rest
after a second, so short tasks beside long-lived model actors make it start new worker processes all the time, each
paying Python, Ray and library imports again. Actors start once.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dagn.jpeg import estimate_quality
from pipeline.codec import DecodeError, EncodeError, OutputFormat, decode_image, encode_image
from pipeline.keys import UnsafeKeyError, key_paths
from pipeline.manifest import SCHEMA, RowStatus, write_shard_part
from pipeline.restore.plan import qf_skip_reason
from pipeline.restore.rows import WORK_SCHEMA, pixels_of, work_table
from pipeline.restore.weights import weights_path
from pipeline.storage import S3Settings, location, read_bytes, redact, write_bytes_atomic

__all__ = ["ReadStage", "RecordStage", "RestoreStage", "WriteStage"]

log = logging.getLogger(__name__)

PENDING = RowStatus.pending.value


class ReadStage:
    """Read each pending input (``threads`` reads at a time), estimate its QF, apply the QF range and decode it."""

    def __init__(self, *, src: str, dst: str, s3: S3Settings, fmt: str, min_qf, max_qf, max_pixels: int, threads: int):
        self.src, self.dst, self.s3, self.fmt = src, dst, s3, OutputFormat(fmt)
        self.min_qf, self.max_qf, self.max_pixels = min_qf, max_qf, max_pixels
        self.pool = ThreadPoolExecutor(max_workers=threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        pending = [r for r in rows if r["status"] == PENDING]
        for row, data in zip(pending, self.pool.map(self._fetch, pending), strict=True):
            self._decode(row, data)
        return work_table(rows)

    def _fetch(self, row: dict) -> bytes | Exception:
        start = time.perf_counter()
        try:
            source, target = location(self.src, self.s3), location(self.dst, self.s3)
            return read_bytes(source.fs, key_paths(row["key"], source, target, self.fmt).source)
        except Exception as e:  # a failed row, never a failed job
            return e
        finally:
            row["milliseconds"] = 1000 * (time.perf_counter() - start)

    def _decode(self, row: dict, data: bytes | Exception) -> None:
        start = time.perf_counter()
        try:
            if isinstance(data, Exception):
                raise data
            row["qf"] = estimate_quality(data)
            reason = qf_skip_reason(self.min_qf, self.max_qf, row["qf"])
            if reason:
                row.update(status=RowStatus.skipped.value, reason=reason, output=None)
                return
            decoded = decode_image(data, max_pixels=self.max_pixels)
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
        except (DecodeError, UnsafeKeyError) as e:
            row.update(status=RowStatus.failed.value, error=str(e), output=None)
        except Exception as e:  # storage errors and anything unexpected: one failed row
            row.update(status=RowStatus.failed.value, error=redact(f"cannot read input: {type(e).__name__}: {e}"))
            row["output"] = None
        finally:
            row["milliseconds"] += 1000 * (time.perf_counter() - start)


class RestoreStage:
    """One :class:`dagn.Restorer` per actor, loaded once; restores the pending rows of a batch."""

    def __init__(
        self, *, weights, s3: S3Settings, device: str, tile, tile_overlap: int, context, batch_size: int, threads: int
    ):
        import ray
        import torch

        from dagn import Restorer
        from dagn.inference import context_setting

        torch.set_num_threads(threads)
        self.node = ray.get_runtime_context().get_node_id()
        with weights_path(weights, s3) as path:
            self.restorer = Restorer(
                path,
                device=device,
                tile=tile,
                tile_overlap=tile_overlap,
                batch_size=batch_size,
                context=context_setting(context),
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        pending = [r for r in rows if r["status"] == PENDING]
        if pending:
            self._restore(pending)
        return work_table(rows)

    def _restore(self, rows: list[dict]) -> None:
        start = time.perf_counter()
        try:
            restored = self.restorer.restore_batch([pixels_of(r) for r in rows])
        except Exception:
            if len(rows) > 1:  # find the culprit (e.g. out of memory on one huge image): one by one
                for r in rows:
                    self._restore([r])
                return
            row = rows[0]
            log.exception("restoring %s failed", row["input"])
            row.update(status=RowStatus.failed.value, error="restoration failed (see the worker log)", pixels=None)
            row["output"] = None
            return
        elapsed_ms = 1000 * (time.perf_counter() - start)
        total_pixels = sum(r["width"] * r["height"] for r in rows)
        for r, image in zip(rows, restored, strict=True):
            r["pixels"] = image.tobytes()
            r["node"] = self.node
            r["milliseconds"] += elapsed_ms * r["width"] * r["height"] / total_pixels


class WriteStage:
    """Encode and atomically write each restored image; the rows leave without their pixels."""

    def __init__(self, *, dst: str, s3: S3Settings, quality: int) -> None:
        self.dst, self.s3, self.quality = dst, s3, quality

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        target = location(self.dst, self.s3)
        for row in rows:
            if row["status"] == PENDING:
                self._write(target, row)
            row.update(pixels=None, alpha=None, icc=None, exif=None)
        return work_table(rows)

    def _write(self, target, row: dict) -> None:
        start = time.perf_counter()
        try:
            alpha = row["alpha"]
            data = encode_image(
                pixels_of(row),
                alpha=np.frombuffer(alpha, np.uint8).reshape(row["height"], row["width"]) if alpha else None,
                fmt=row["out_format"],
                quality=self.quality,
                icc_profile=row["icc"],
                exif=row["exif"],
            )
            write_bytes_atomic(target.fs, target.path(row["out_key"]), data)
            row.update(
                status=RowStatus.ok.value, mode=("L" if row["channels"] == 1 else "RGB") + ("A" if alpha else "")
            )
        except EncodeError as e:
            row.update(status=RowStatus.failed.value, error=str(e), output=None)
        except Exception as e:
            row.update(status=RowStatus.failed.value, error=redact(f"cannot write output: {type(e).__name__}: {e}"))
            row["output"] = None
        row["milliseconds"] += 1000 * (time.perf_counter() - start)


class RecordStage:
    """Store each block of finished rows (thousands, not a batch of images) as one state part per shard it holds."""

    def __init__(self, *, dst: str, s3: S3Settings, run_id: str) -> None:
        self.dst, self.s3, self.run_id = dst, s3, run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.filter(pc.and_(pc.is_valid(batch["key"]), pc.is_valid(batch["shard"])))
        target = location(self.dst, self.s3)
        for shard in pc.unique(rows["shard"]).to_pylist():
            part = rows.filter(pc.equal(rows["shard"], shard)).select(SCHEMA.names).cast(SCHEMA)
            write_shard_part(target, shard, self.run_id, part)
        return batch.select([n for n in WORK_SCHEMA.names if n not in ("pixels", "alpha", "icc", "exif")])
