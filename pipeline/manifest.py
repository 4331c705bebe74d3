"""The restore manifest: one Parquet row per input and run, stored under ``DST/_manifest/``.

Layout (all writes atomic, see :func:`pipeline.storage.write_bytes_atomic`)::

    DST/_manifest/runs/<run_id>/part-<uuid>.parquet   written while a run goes, one per finished batch
    DST/_manifest/<run_id>.parquet                    the same rows compacted into one file when a run ends

A batch's part is written right after its outputs, so a run killed at any moment keeps the rows of every batch it
finished. The driver also receives every row and writes the run's single file itself at the end (no re-reading of
parts); the next run compacts leftover parts of killed runs. A run id starts with its UTC start time, so
sorting run ids sorts runs. Every run writes a row for *every* input it listed (restored, skipped or failed), so the
latest run's rows describe the whole archive; :func:`latest_rows` gives the most recent row per input across runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.storage import Location, delete_tree, list_entries, read_bytes, write_bytes_atomic

__all__ = [
    "MANIFEST_DIR",
    "SCHEMA",
    "RunWriter",
    "compact",
    "latest_rows",
    "new_run_id",
    "read_manifest",
    "write_part",
]

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"

SCHEMA = pa.schema(
    [
        pa.field("input", pa.string(), nullable=False),  # URI of the input
        pa.field("output", pa.string()),  # URI of the output (where it is or would be)
        pa.field("status", pa.string(), nullable=False),  # ok | skipped | failed
        pa.field("error", pa.string()),  # failed: what went wrong
        pa.field("reason", pa.string()),  # skipped: why
        pa.field("qf", pa.int16()),  # JPEG quality estimated from the quantization tables (null: not a JPEG)
        pa.field("width", pa.int32()),  # upright size of the image
        pa.field("height", pa.int32()),
        pa.field("mode", pa.string()),  # mode of the output image: L, LA, RGB, RGBA
        pa.field("milliseconds", pa.float32()),  # time spent on this input in this run (read to write)
        pa.field("run_id", pa.string(), nullable=False),
    ]
)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def _to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_part(dst: Location, run_id: str, table: pa.Table) -> str:
    """Store manifest rows of one batch; returns the path written."""
    path = dst.path(f"{MANIFEST_DIR}/runs/{run_id}/part-{uuid.uuid4().hex}.parquet")
    write_bytes_atomic(dst.fs, path, _to_bytes(table.select(SCHEMA.names).cast(SCHEMA)))
    return path


def _files(dst: Location) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(compacted file per run id, part files per run id), relative to the destination root."""
    compacted: dict[str, str] = {}
    parts: dict[str, list[str]] = {}
    for relative, _ in list_entries(dst.child(MANIFEST_DIR)):
        pieces = relative.split("/")
        if len(pieces) == 1 and relative.endswith(".parquet"):
            compacted[relative[: -len(".parquet")]] = f"{MANIFEST_DIR}/{relative}"
        elif len(pieces) == 3 and pieces[0] == "runs" and relative.endswith(".parquet"):
            parts.setdefault(pieces[1], []).append(f"{MANIFEST_DIR}/{relative}")
    return compacted, parts


def _read(dst: Location, relative: str) -> pa.Table | None:
    try:
        return pq.read_table(pa.BufferReader(read_bytes(dst.fs, dst.path(relative)))).cast(SCHEMA)
    except (OSError, pa.ArrowException) as e:
        log.warning("ignoring unreadable manifest file %s: %s", relative, e)
        return None


def read_manifest(dst: Location) -> pa.Table:
    """Every manifest row of every run under ``dst`` (compacted files and leftover parts), sorted by run id."""
    compacted, parts = _files(dst)
    tables = []
    for run_id in sorted(set(compacted) | set(parts)):
        files = [compacted[run_id]] if run_id in compacted else parts[run_id]
        tables += [t for t in (_read(dst, f) for f in files) if t is not None]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def latest_rows(table: pa.Table, columns: tuple[str, ...] = ("status", "qf", "width", "height", "mode")) -> dict:
    """The most recent row per input (by run id; within a run, the last one written), as input -> {column: value}.

    Deduplicated in Arrow first, so an archive with many runs costs one Python dict per input, not per row.
    """
    if not len(table):
        return {}
    ordered = table.select(["input", "run_id", *columns]).sort_by([("run_id", "ascending")])
    last = ordered.group_by("input", use_threads=False).aggregate([(c, "last") for c in columns])
    values = [last.column(f"{c}_last").to_pylist() for c in columns]
    inputs = last.column("input").to_pylist()
    return {key: {c: v[i] for c, v in zip(columns, values, strict=True)} for i, key in enumerate(inputs)}


class RunWriter:
    """Collects a run's rows as they stream in and stores them as ``_manifest/<run_id>.parquet`` at the end.

    Rows go to a local temporary Parquet file (bounded memory for millions of rows), which is uploaded atomically by
    :meth:`close`; the run's parts folder is deleted afterwards. Parts written by killed runs are left to
    :func:`compact`.
    """

    def __init__(self, dst: Location, run_id: str) -> None:
        self.dst, self.run_id, self.rows = dst, run_id, 0
        self._file = tempfile.NamedTemporaryFile(suffix=".parquet", delete=False)  # noqa: SIM115 - closed in close()
        self._writer = pq.ParquetWriter(self._file.name, SCHEMA, compression="zstd")

    def add(self, rows: pa.Table) -> None:
        if len(rows):
            self._writer.write_table(rows.select(SCHEMA.names).cast(SCHEMA))
            self.rows += len(rows)

    def close(self) -> str | None:
        """Store the run's file (if it has rows) and drop its parts; returns the file's path on the destination."""
        self._writer.close()
        self._file.close()
        try:
            path = None
            if self.rows:
                path = self.dst.path(f"{MANIFEST_DIR}/{self.run_id}.parquet")
                write_bytes_atomic(self.dst.fs, path, Path(self._file.name).read_bytes())
            delete_tree(self.dst.fs, self.dst.path(posixpath.join(MANIFEST_DIR, "runs", self.run_id)))
            _remove_empty_runs_folder(self.dst)
            return path
        finally:
            os.unlink(self._file.name)

    def abort(self) -> None:
        """A run that failed: keep its parts (some rows may never have reached the driver) for :func:`compact`."""
        self._writer.close()
        self._file.close()
        os.unlink(self._file.name)


def compact(dst: Location) -> list[str]:
    """Merge the parts of every run (this one and any killed earlier) into one file per run; returns the run ids.

    The merged file is written before the parts are deleted, and readers prefer it, so a crash in between loses
    nothing and double-counts nothing.
    """
    compacted, parts = _files(dst)
    done = []
    for run_id, files in sorted(parts.items()):
        if run_id not in compacted:
            tables = [t for t in (_read(dst, f) for f in files) if t is not None]
            if not tables:
                continue
            merged = pa.concat_tables(tables)
            write_bytes_atomic(dst.fs, dst.path(f"{MANIFEST_DIR}/{run_id}.parquet"), _to_bytes(merged))
        delete_tree(dst.fs, dst.path(posixpath.join(MANIFEST_DIR, "runs", run_id)))
        done.append(run_id)
    _remove_empty_runs_folder(dst)
    return done


def _remove_empty_runs_folder(dst: Location) -> None:
    """An empty ``runs/`` folder on a local disk (S3 has no empty prefixes) is clutter; drop it."""
    runs = dst.path(f"{MANIFEST_DIR}/runs")
    if not dst.fs.get_file_info(pafs.FileSelector(runs, allow_not_found=True)):
        delete_tree(dst.fs, runs)
