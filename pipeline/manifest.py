"""Restore state: one current row per input, kept per shard of the key space under ``DST/_manifest/state/``.

Layout (all writes atomic, see :func:`pipeline.storage.write_bytes_atomic`)::

    DST/_manifest/state/<shard id>/current.parquet            the shard's compacted state, one row per input
    DST/_manifest/state/<shard id>/part-<run>-<uuid>.parquet  rows a run added since (a block of rows each)
    DST/_manifest/runs/<run>.json                             the bounded summary of each run (history; never read
                                                              by planning)

A shard's state is ``current.parquet`` overlaid with its parts in name order (a run id starts with its UTC start
time, so later parts win). A run writes a part per shard for each block of finished rows, right after their outputs,
so a run killed at any moment loses only the rows of the blocks in flight (whose outputs, if written, are adopted by
the next run: see :mod:`pipeline.restore.plan`). Compaction rewrites ``current.parquet`` and then deletes the parts
it merged: a crash in between leaves rows that the overlay counts once. Each row carries the size and modification
time the input had when it was read, so an input rewritten since is noticed and done again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import posixpath
import uuid
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.storage import Location, parquet_bytes, read_bytes, write_bytes_atomic

__all__ = [
    "MANIFEST_DIR",
    "SCHEMA",
    "STATE_DIR",
    "Decision",
    "RowStatus",
    "compact_shard",
    "new_run_id",
    "read_shard_state",
    "read_state",
    "replace_shard_state",
    "shard_id",
    "write_shard_part",
]

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"
STATE_DIR = f"{MANIFEST_DIR}/state"
CURRENT = "current.parquet"


class RowStatus(str, Enum):
    """Where an input stands. ``pending`` exists only inside a run (planned, not finished)."""

    pending = "pending"
    ok = "ok"
    skipped = "skipped"
    failed = "failed"


class Decision(str, Enum):
    """Why planning did (or did not) send an input on: the counts of ``--dry-run`` and of every run's summary."""

    new = "new"  # no state, no output: to restore
    changed = "changed"  # size or mtime differ from when its output was made: to restore
    output_missing = "output_missing"  # restored before, output gone since: to restore
    retry = "retry"  # failed before: to restore
    overwrite = "overwrite"  # --overwrite: to restore
    qf_again = "qf_again"  # skipped for its QF before, inside the range now: to restore
    done = "done"  # restored, unchanged, output present: nothing to do
    adopted = "adopted"  # output newer than the input but no state row (a killed run's last blocks): recorded
    qf_range = "qf_range"  # skipped for its QF before and still outside the range: nothing to do, not read
    empty = "empty"  # zero bytes: failed without reading
    unsafe_key = "unsafe_key"  # a key that could leave SRC or DST: failed
    name_clash = "name_clash"  # two inputs with one output name: the later failed
    not_image = "not_image"  # a file without an image extension: not an input
    not_found = "not_found"  # named by the list file, absent from SRC: failed
    bad_entry = "bad_entry"  # a link not followed, dangling or looping (local SRC): failed

    @property
    def to_restore(self) -> bool:
        return self in _TO_RESTORE


_TO_RESTORE = {Decision.new, Decision.changed, Decision.output_missing, Decision.retry, Decision.overwrite}
_TO_RESTORE.add(Decision.qf_again)

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # path of the input relative to SRC
        pa.field("input", pa.string(), nullable=False),  # URI of the input
        pa.field("output", pa.string()),  # URI of the output (restored rows only)
        pa.field("size", pa.int64()),  # bytes of the input when it was planned
        pa.field("mtime_ns", pa.int64()),  # modification time of the input then (S3: LastModified)
        pa.field("status", pa.string(), nullable=False),  # RowStatus
        pa.field("decision", pa.string()),  # Decision that sent it on
        pa.field("error", pa.string()),  # failed: what went wrong
        pa.field("reason", pa.string()),  # skipped: why
        pa.field("qf", pa.int16()),  # JPEG quality estimated from the quantization tables (null: not a JPEG)
        pa.field("width", pa.int32()),  # upright size of the image
        pa.field("height", pa.int32()),
        pa.field("mode", pa.string()),  # mode of the output image: L, LA, RGB, RGBA
        pa.field("milliseconds", pa.float32()),  # time spent on this input in its run (read to write)
        pa.field("run_id", pa.string(), nullable=False),  # the run that wrote the row
    ]
)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def shard_id(prefix: str, recursive: bool) -> str:
    """A fixed-length folder name for a shard (prefixes can be long or hold any character)."""
    return hashlib.sha1(f"{prefix}\0{int(recursive)}".encode()).hexdigest()[:20]


def _shard_files(dst: Location, shard: str) -> list[str]:
    """Names of the shard's state files, ``current.parquet`` first, then the parts in the order they overlay it."""
    selector = pafs.FileSelector(dst.path(f"{STATE_DIR}/{shard}"), allow_not_found=True)
    names = [posixpath.basename(i.path) for i in dst.fs.get_file_info(selector) if i.type == pafs.FileType.File]
    parts = sorted(n for n in names if n.startswith("part-") and n.endswith(".parquet"))
    return ([CURRENT] if CURRENT in names else []) + parts


def _read(dst: Location, relative: str) -> pa.Table | None:
    try:
        return pq.read_table(pa.BufferReader(read_bytes(dst.fs, dst.path(relative)))).select(SCHEMA.names).cast(SCHEMA)
    except (OSError, KeyError, pa.ArrowException) as e:
        log.warning("ignoring unreadable state file %s: %s", relative, e)
        return None


def _latest(tables: list[pa.Table]) -> pa.Table:
    """One row per key: the last one in the order of ``tables`` (and of rows within them)."""
    if not tables:
        return SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    order = pa.array(np.arange(len(table)))
    last = pa.table({"key": table["key"], "i": order}).group_by("key", use_threads=False).aggregate([("i", "max")])
    return table.take(np.sort(last["i_max"].to_numpy()))


def read_shard_state(dst: Location, shard: str) -> tuple[pa.Table, list[str]]:
    """(the shard's current rows, one per key; the names of the files they came from)."""
    files = _shard_files(dst, shard)
    tables = [t for t in (_read(dst, f"{STATE_DIR}/{shard}/{name}") for name in files) if t is not None]
    return _latest(tables), files


def write_shard_part(dst: Location, shard: str, run_id: str, rows: pa.Table) -> None:
    """Add a block of finished rows to a shard's state."""
    name = f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet"
    write_bytes_atomic(dst.fs, dst.path(f"{STATE_DIR}/{shard}/{name}"), parquet_bytes(rows.select(SCHEMA.names)))


def replace_shard_state(dst: Location, shard: str, state: pa.Table, files: list[str]) -> None:
    """Make ``state`` the shard's ``current.parquet``, then delete the parts among ``files`` (merged into it)."""
    write_bytes_atomic(dst.fs, dst.path(f"{STATE_DIR}/{shard}/{CURRENT}"), parquet_bytes(state.sort_by("key")))
    for name in files:
        if name != CURRENT:
            dst.fs.delete_file(dst.path(f"{STATE_DIR}/{shard}/{name}"))


def compact_shard(dst: Location, shard: str) -> int:
    """Fold a shard's parts into its ``current.parquet``; returns the rows it holds."""
    state, files = read_shard_state(dst, shard)
    if any(name != CURRENT for name in files):
        replace_shard_state(dst, shard, state, files)
    return len(state)


def read_state(dst: Location) -> pa.Table:
    """Every shard's current rows (for tests, reports and users' own analysis; planning reads one shard at a time)."""
    selector = pafs.FileSelector(dst.path(STATE_DIR), allow_not_found=True)
    shards = sorted(
        posixpath.basename(i.path) for i in dst.fs.get_file_info(selector) if i.type == pafs.FileType.Directory
    )
    tables = [read_shard_state(dst, shard)[0] for shard in shards]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
