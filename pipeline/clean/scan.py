"""The scan, one shard per call of a pool of actors: list it, reuse what is unchanged since its last scan, read the
first bytes of the rest, write the shard's report and scan state (not in a dry run), and send on only its counts.

::

    REPORTS/_state/<shard>.parquet            the shard's latest scan (a row per file), for the next incremental run
    REPORTS/clean-<run>/scan/<shard>.parquet  this run's report rows of the shard (scan plus the action)
    REPORTS/clean-<run>/restore-list/<shard>.txt   the shard's keys below the threshold (the restore's list)
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dagn.jpeg import estimate_quality
from pipeline.keys import UnsafeKeyError
from pipeline.listing import Shard, list_shard
from pipeline.manifest import shard_id
from pipeline.storage import Location, S3Settings, location, parquet_bytes, read_bytes, redact, write_bytes_atomic

__all__ = ["COUNTS_SCHEMA", "SCAN_SCHEMA", "ShardScan", "probe"]

SCAN_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # path relative to SRC
        pa.field("size", pa.int64()),  # bytes, from the listing
        pa.field("mtime_ns", pa.int64()),  # modification time from the listing (null when the store has none)
        pa.field("kind", pa.string(), nullable=False),  # jpeg | not-jpeg | unreadable | empty
        pa.field("qf", pa.int16()),  # estimated IJG quality (jpeg only)
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("error", pa.string()),  # unreadable: why
        pa.field("reused", pa.bool_()),  # taken from the previous scan instead of reading the file
    ]
)

REPORT_SCHEMA = pa.schema(
    [
        *SCAN_SCHEMA,
        pa.field("input", pa.string(), nullable=False),  # URI of the file
        pa.field("action", pa.string(), nullable=False),  # restore | keep | ignore
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

COUNT_NAMES = ("files", "bytes", "jpeg", "not_jpeg", "unreadable", "empty", "below_threshold")
COUNT_NAMES += ("below_threshold_bytes", "read", "reused")
COUNTS_SCHEMA = pa.schema([*(pa.field(n, pa.int64()) for n in COUNT_NAMES), pa.field("qf_bins", pa.list_(pa.int64()))])


def _read_head(fs: pafs.FileSystem, path: str, n: int) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read(n)


def probe(location: Location, key: str, size: int, header_bytes: int = 65536) -> dict[str, Any]:
    """What one file is: kind, estimated quality and size in pixels, from its first bytes. Never raises."""
    from PIL import Image

    row: dict[str, Any] = {"key": key, "size": size, "kind": "unreadable"}
    try:
        path = location.path(key)
    except UnsafeKeyError as e:  # never read, and so never restored
        return {**row, "error": str(e)}
    if size == 0:
        return {**row, "kind": "empty", "error": "empty file (0 bytes)"}
    try:
        head = _read_head(location.fs, path, header_bytes)
        if not head.startswith(b"\xff\xd8\xff"):
            return {**row, "kind": "not-jpeg", "error": "not a JPEG file (no SOI marker)"}
        qf = estimate_quality(head)
        if qf is None and size > len(head):
            # Headers longer than the first read (big EXIF/XMP/ICC segments, thumbnails): read the whole file.
            head = read_bytes(location.fs, path)
            qf = estimate_quality(head)
        if qf is None:
            return {**row, "error": "JPEG without readable quantization tables (corrupt or truncated header)"}
        row.update(kind="jpeg", qf=qf)
        try:
            with Image.open(io.BytesIO(head)) as image:
                row["width"], row["height"] = image.size
        except Exception:
            pass  # the size is a nicety of the report; the QF is what counts
    except Exception as e:
        row["error"] = redact(f"cannot read: {type(e).__name__}: {e}")
    return row


def scan_listing(
    src: Location, shard: Shard, extensions: tuple[str, ...], follow_symlinks: bool
) -> tuple[pa.Table, list[dict]]:
    """(the shard's files with one of ``extensions``, an unreadable scan row per link problem)."""
    listing, problems = list_shard(src, shard, follow_symlinks=follow_symlinks)
    wanted = [posixpath.splitext(k)[1].lower() in extensions for k in listing["key"].to_pylist()]
    suffixes = [posixpath.splitext(p.path)[1].lower() for p in problems]
    rows = [
        {"key": p.path, "kind": "unreadable", "error": p.error, "reused": False}
        for p, suffix in zip(problems, suffixes, strict=True)
        if suffix in extensions or not suffix  # a link named like an image, or a folder link
    ]
    return listing.filter(pa.array(wanted, pa.bool_())), rows


def _read_scan(reports: Location, shard: str) -> pa.Table | None:
    path = reports.path(f"_state/{shard}.parquet")
    if reports.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        return pq.read_table(pa.BufferReader(read_bytes(reports.fs, path))).select(SCAN_SCHEMA.names).cast(SCAN_SCHEMA)
    except (OSError, KeyError, pa.ArrowException):
        return None  # unreadable: scan the shard again


def _reuse(listing: pa.Table, previous: pa.Table | None) -> tuple[list[dict], list[dict]]:
    """(rows reused from ``previous``, listing rows still to scan). A row is reused when size and mtime match."""
    known = {r["key"]: r for r in previous.to_pylist()} if previous is not None else {}
    reused, todo = [], []
    for row in listing.to_pylist():
        old = known.get(row["key"])
        if old and old["mtime_ns"] is not None and (old["size"], old["mtime_ns"]) == (row["size"], row["mtime_ns"]):
            reused.append({**old, "reused": True})
        else:
            todo.append(row)
    return reused, todo


def _counts(scanned: pa.Table, threshold: int, read: int) -> dict[str, Any]:
    kind, qf, size = scanned["kind"], scanned["qf"], scanned["size"]
    below = pc.fill_null(pc.and_(pc.equal(kind, "jpeg"), pc.less(qf, threshold)), False)
    counts = {"files": len(scanned), "bytes": pc.sum(size).as_py() or 0, "read": read, "reused": len(scanned) - read}
    for name, value in (("jpeg", "jpeg"), ("not_jpeg", "not-jpeg"), ("unreadable", "unreadable"), ("empty", "empty")):
        counts[name] = pc.sum(pc.equal(kind, value).cast(pa.int64())).as_py() or 0
    counts["below_threshold"] = pc.sum(below.cast(pa.int64())).as_py() or 0
    counts["below_threshold_bytes"] = pc.sum(pc.filter(size, below)).as_py() or 0
    qfs = pc.drop_null(qf).to_numpy(zero_copy_only=False).astype(np.int64)
    counts["qf_bins"] = np.bincount(np.minimum((qfs - 1) // 10, 9), minlength=10).tolist()
    return counts


class ShardScan:
    """Scans one shard per call (a block of one shard row) and writes its report; yields its counts."""

    def __init__(self, *, src: str, reports: str, s3: S3Settings, run_id: str, threshold: int, cfg: dict) -> None:
        self.src, self.reports, self.s3, self.run_id, self.threshold = src, reports, s3, run_id, threshold
        self.extensions, self.header_bytes = tuple(cfg["extensions"]), cfg["header_bytes"]
        self.incremental, self.follow_symlinks = cfg["incremental"], cfg["follow_symlinks"]
        self.write = not cfg["dry_run"]
        self.pool = ThreadPoolExecutor(max_workers=cfg["scan_threads"])

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for prefix, recursive in zip(batch["prefix"].to_pylist(), batch["recursive"].to_pylist(), strict=True):
            counts = self._scan(Shard(prefix, recursive))
            yield pa.Table.from_pylist([counts], schema=COUNTS_SCHEMA)

    def _scan(self, shard: Shard) -> dict[str, Any]:
        src, reports = location(self.src, self.s3), location(self.reports, self.s3)
        sid = shard_id(shard.prefix, shard.recursive)
        listing, problems = scan_listing(src, shard, self.extensions, self.follow_symlinks)
        reused, todo = _reuse(listing, _read_scan(reports, sid) if self.incremental else None)
        found = list(self.pool.map(lambda r: probe(src, r["key"], r["size"], self.header_bytes), todo))
        for row, listed in zip(found, todo, strict=True):
            row.update(mtime_ns=listed["mtime_ns"], reused=False)
        scanned = pa.Table.from_pylist(reused + found + problems, schema=SCAN_SCHEMA).sort_by("key")
        if self.write:
            write_bytes_atomic(reports.fs, reports.path(f"_state/{sid}.parquet"), parquet_bytes(scanned))
            self._report(src, reports, sid, scanned)
        return _counts(scanned, self.threshold, len(found))

    def _report(self, src: Location, reports: Location, sid: str, scanned: pa.Table) -> None:
        if not len(scanned):
            return
        below = pc.fill_null(pc.and_(pc.equal(scanned["kind"], "jpeg"), pc.less(scanned["qf"], self.threshold)), False)
        action = pc.if_else(below, "restore", pc.if_else(pc.equal(scanned["kind"], "jpeg"), "keep", "ignore"))
        inputs = [src.uri_of(k) for k in scanned["key"].to_pylist()]
        report = scanned.append_column("input", pa.array(inputs)).append_column("action", action)
        report = report.append_column("run_id", pa.array([self.run_id] * len(report))).cast(REPORT_SCHEMA)
        folder = f"clean-{self.run_id}"
        write_bytes_atomic(reports.fs, reports.path(f"{folder}/scan/{sid}.parquet"), parquet_bytes(report))
        keys = pc.filter(scanned["key"], below).to_pylist()
        if keys:
            data = ("\n".join(keys) + "\n").encode()
            write_bytes_atomic(reports.fs, reports.path(f"{folder}/restore-list/{sid}.txt"), data)
