"""The scheduled cleaning job: scan an archive, estimate each JPEG's quality, restore the badly compressed, report.

::

    list (driver)       one listing of SRC: key, size, modification time
      |                 incremental: keys whose size and mtime match the previous report reuse its findings
    scan (Ray tasks)    the first ``header_bytes`` of each file (more only when its headers run longer): JPEG or
      |                 not, quality from the quantization tables (:func:`dagn.jpeg.estimate_quality`), size
    restore             the keys with QF < threshold go to the batch restore as a list file, with
      |                 ``max_qf = threshold - 1`` as a second guard (:func:`pipeline.restore.run_restore`): done
      |                 outputs are skipped there, so a nightly run only restores what is new
    report              REPORTS/clean-<run_id>/: scan.parquet (a row per file: what was found and done),
                        summary.json and summary.md (counts, QF histogram, restore results), restore-list.txt

Only headers are read in the scan, so a nightly pass over millions of files costs listing plus a ranged read each
(and nothing for unchanged files when incremental).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dagn.jpeg import estimate_quality
from pipeline.extensions import JPEG_EXTENSIONS
from pipeline.keys import UnsafeKeyError
from pipeline.lease import hold
from pipeline.manifest import new_run_id, read_manifest
from pipeline.storage import (
    Extensions,
    ListingProblem,
    Location,
    S3Settings,
    is_s3,
    iter_listing,
    read_bytes,
    redact,
    resolve,
    write_bytes_atomic,
)

__all__ = [
    "JPEG_EXTENSIONS",
    "SCAN_SCHEMA",
    "CleanConfig",
    "CleanResult",
    "histogram",
    "list_archive",
    "probe",
    "run_clean",
    "scan_batch",
]

log = logging.getLogger(__name__)

REPORTS_DIR = "_reports"
_SET_BY_CLEAN = {"src", "dst", "list_file", "max_qf", "min_qf", "s3", "extensions", "follow_symlinks", "lease_seconds"}

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
        pa.field("reused", pa.bool_()),  # taken from the previous report instead of reading the file
    ]
)

REPORT_SCHEMA = pa.schema(
    [
        *SCAN_SCHEMA,
        pa.field("input", pa.string(), nullable=False),  # URI of the file
        pa.field("action", pa.string(), nullable=False),  # restore | keep | ignore
        pa.field("restore_status", pa.string()),  # ok | skipped | failed | null (not restored, or dry run)
        pa.field("restore_detail", pa.string()),  # failed: the error; skipped: the reason
        pa.field("output", pa.string()),  # URI of the restored image
        pa.field("run_id", pa.string(), nullable=False),
    ]
)


class CleanConfig(BaseModel):
    """Every knob of a cleaning run. Credentials are not among them: they come from the standard AWS sources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str = Field(description="Archive to scan: folder or s3://bucket/prefix (recursive).")
    dst: str | None = Field(None, description="Where restored images go (mirrored names); none: scan and report only.")
    threshold: int = Field(50, ge=2, le=100, description="Restore JPEGs whose estimated quality is below this.")
    reports: str | None = Field(
        None, description="Folder or s3:// prefix for the reports (default: DST/_reports; required without DST)."
    )
    dry_run: bool = Field(False, description="Scan and report what would be restored, restore nothing.")
    incremental: bool = Field(
        True, description="Reuse the previous report's findings for files whose size and mtime are unchanged."
    )
    extensions: Extensions = Field(JPEG_EXTENSIONS, description="File extensions scanned (case-insensitive).")
    follow_symlinks: bool = Field(
        False, description="Follow symbolic links in a local SRC (loops detected); default: report each as unreadable."
    )
    lease_seconds: float = Field(
        300,
        ge=5,
        description="Lifetime of the run's lease on DST (renewed every third of it while the run lives): how long a "
        "killed run keeps the next one out; two cleans (or a clean and a restore) on one DST never run at once.",
    )
    header_bytes: int = Field(
        65536, ge=1024, description="Bytes read per file for the scan (more only when its headers run longer)."
    )
    scan_batch_size: int = Field(256, ge=1, description="Files per scan task.")
    scan_threads: int = Field(16, ge=1, description="Concurrent reads inside one scan task (they wait on I/O).")
    scan_cpus: float = Field(0.25, gt=0, description="CPUs reserved per scan task.")
    restore: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the restore step, as for `dagn restore` (workers, gpus_per_worker, weights, ...).",
    )
    s3: S3Settings = Field(
        default_factory=S3Settings, description="Where S3 is (endpoint, region); keys come from the AWS_* variables."
    )

    @model_validator(mode="after")
    def _check(self) -> CleanConfig:
        if self.dst is None and self.reports is None:
            raise ValueError("reports: give a reports location when there is no DST (scan-only run)")
        if self.dst is not None and _inside(self.dst, self.src):
            raise ValueError(f"dst: {self.dst} must not be the source or lie inside it (it would be scanned next time)")
        clash = sorted(_SET_BY_CLEAN & set(self.restore))
        if clash:
            raise ValueError(f"restore: {', '.join(clash)} are set by the cleaning job itself")
        if self.dst is not None:
            try:
                self.restore_config("validation-only")
            except ValidationError as e:
                problems = "; ".join(
                    f"restore.{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()
                )
                raise ValueError(problems) from None
        return self

    @property
    def reports_uri(self) -> str:
        return self.reports or posixpath.join(str(self.dst).rstrip("/"), REPORTS_DIR)

    def restore_config(self, list_file: str):
        """The restore job for the files listed in ``list_file`` (with max_qf = threshold - 1 as a guard)."""
        from pipeline.restore import RestoreConfig

        return RestoreConfig(
            src=self.src,
            dst=self.dst,
            list_file=list_file,
            max_qf=self.threshold - 1,
            follow_symlinks=self.follow_symlinks,
            lease_seconds=self.lease_seconds,
            s3=self.s3,
            **self.restore,
        )


def _normalised(uri: str) -> str:
    if is_s3(uri):
        return uri.rstrip("/")
    return Path(uri).expanduser().resolve().as_posix()


def _inside(child: str, parent: str) -> bool:
    """Whether location ``child`` is ``parent`` or below it (no filesystem access)."""
    c, p = _normalised(child), _normalised(parent)
    return c == p or c.startswith(p.rstrip("/") + "/")


# -- listing and scanning --------------------------------------------------------------------------------------------


def list_archive(
    location: Location, extensions: tuple[str, ...], follow_symlinks: bool = False
) -> tuple[pa.Table, pa.Table]:
    """One listing: (key, size, mtime_ns) of every file below the root with one of ``extensions``, sorted by key, and
    scan rows (kind unreadable) for entries that are no readable file (dangling links, loops, links not followed)."""
    keys, sizes, mtimes, problems = [], [], [], []
    for item in iter_listing(location, recursive=True, follow_symlinks=follow_symlinks):
        suffix = posixpath.splitext(item.path)[1].lower()
        if isinstance(item, ListingProblem):
            if suffix in extensions or not suffix:
                problems.append({"key": item.path, "kind": "unreadable", "error": item.error, "reused": False})
        elif suffix in extensions:
            keys.append(item.path)
            sizes.append(item.size)
            mtimes.append(item.mtime_ns)
    schema = pa.schema([SCAN_SCHEMA.field(n) for n in ("key", "size", "mtime_ns")])
    listing = pa.table({"key": keys, "size": sizes, "mtime_ns": mtimes}, schema=schema).sort_by("key")
    return listing, pa.Table.from_pylist(problems, schema=SCAN_SCHEMA)


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


@lru_cache(maxsize=8)
def _location(uri: str, s3: S3Settings) -> Location:
    return resolve(uri, s3)


def scan_batch(batch: pa.Table, *, src: str, s3: S3Settings, header_bytes: int, threads: int) -> pa.Table:
    """Ray task: probe every file of a batch (key, size, mtime_ns), reads overlapping on a small thread pool."""
    location = _location(src, s3)
    rows = batch.to_pylist()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(rows)))) as pool:
        found = list(pool.map(lambda r: probe(location, r["key"], r["size"], header_bytes), rows))
    for row, listed in zip(found, rows, strict=True):
        row.update(mtime_ns=listed["mtime_ns"], reused=False)
    return pa.Table.from_pylist(found, schema=SCAN_SCHEMA)


def _scan(cfg: CleanConfig, listing: pa.Table) -> pa.Table:
    if not len(listing):
        return SCAN_SCHEMA.empty_table()
    import ray

    n = cfg.scan_batch_size
    blocks = [listing.slice(i, n) for i in range(0, len(listing), n)]
    ds = ray.data.from_arrow(blocks).map_batches(
        scan_batch,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=cfg.scan_cpus,
        fn_kwargs={"src": cfg.src, "s3": cfg.s3, "header_bytes": cfg.header_bytes, "threads": cfg.scan_threads},
    )
    tables = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    return pa.concat_tables([t.cast(SCAN_SCHEMA) for t in tables]) if tables else SCAN_SCHEMA.empty_table()


# -- reports ---------------------------------------------------------------------------------------------------------


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _previous_scan(reports: Location) -> pa.Table | None:
    """The scan rows of the most recent earlier report under ``reports`` (run ids sort by time)."""
    selector = pafs.FileSelector(reports.root, recursive=True, allow_not_found=True)
    found = sorted(
        info.path
        for info in reports.fs.get_file_info(selector)
        if info.type == pafs.FileType.File and posixpath.basename(info.path) == "scan.parquet"
    )
    for path in reversed(found):
        table = _read_scan(reports.fs, path)
        if table is not None:
            return table
    return None


def _read_scan(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    try:
        return pq.read_table(pa.BufferReader(read_bytes(fs, path))).select(SCAN_SCHEMA.names).cast(SCAN_SCHEMA)
    except (OSError, KeyError, pa.ArrowException) as e:
        log.warning("ignoring unreadable earlier report %s: %s", path, e)
        return None


def _reuse(listing: pa.Table, previous: pa.Table | None) -> tuple[pa.Table, pa.Table]:
    """(rows reused from ``previous``, listing rows still to scan). A row is reused when size and mtime match."""
    if previous is None or not len(previous) or not len(listing):
        return SCAN_SCHEMA.empty_table(), listing
    known = {r["key"]: r for r in previous.to_pylist()}
    reused, todo = [], []
    for row in listing.to_pylist():
        old = known.get(row["key"])
        if old and old["mtime_ns"] is not None and (old["size"], old["mtime_ns"]) == (row["size"], row["mtime_ns"]):
            reused.append({**old, "reused": True})
        else:
            todo.append(row)
    todo_table = pa.Table.from_pylist(todo, schema=listing.schema) if todo else listing.schema.empty_table()
    return pa.Table.from_pylist(reused, schema=SCAN_SCHEMA), todo_table


def histogram(qfs: list[int], width: int = 10) -> list[dict[str, Any]]:
    """Counts of quality factors in bins of ``width``: 1-10, 11-20, ..., 91-100."""
    bins = [{"range": f"{lo}-{min(lo + width - 1, 100)}", "count": 0} for lo in range(1, 101, width)]
    for q in qfs:
        bins[min((q - 1) // width, len(bins) - 1)]["count"] += 1
    return bins


def _markdown(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"# dagn clean {summary['run_id']}",
        "",
        f"- source: `{summary['src']}`",
        f"- destination: `{summary['dst'] or '(none: scan only)'}`",
        f"- threshold: restore JPEGs with estimated quality below **{summary['threshold']}**"
        + (" (dry run: nothing restored)" if summary["dry_run"] else ""),
        f"- {c['files']} files ({c['bytes'] / 1e6:.1f} MB) in {summary['seconds']:.1f} s; "
        f"{summary['scan']['read']} scanned, {summary['scan']['reused']} unchanged since the last report",
        "",
        "| found | files |",
        "|---|---:|",
        f"| JPEG, quality below {summary['threshold']} | {c['below_threshold']} |",
        f"| JPEG, quality {summary['threshold']} or more | {c['jpeg'] - c['below_threshold']} |",
        f"| not a JPEG | {c['not_jpeg']} |",
        f"| unreadable | {c['unreadable']} |",
        f"| empty | {c['empty']} |",
        "",
        "## Estimated JPEG quality",
        "",
        "| QF | files | |",
        "|---|---:|---|",
    ]
    bins = summary["qf_histogram"]
    peak = max((b["count"] for b in bins), default=0) or 1
    lines += [f"| {b['range']} | {b['count']} | {'█' * round(30 * b['count'] / peak)} |" for b in bins]
    r = summary["restore"]
    if r:
        lines += [
            "",
            "## Restore",
            "",
            f"run `{r['run_id']}`: {r['ok']} restored, {r['skipped']} skipped (already done), {r['failed']} failed, "
            f"{r['seconds']:.1f} s; manifest `{r['manifest']}`",
        ]
        for path, error in r["failures"]:
            lines.append(f"- failed `{path}`: {error}")
    lines += ["", f"Rows per file: `{summary['report']}/scan.parquet`", ""]
    return "\n".join(lines)


# -- the job ---------------------------------------------------------------------------------------------------------


@dataclass
class CleanResult:
    run_id: str
    report: str
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return (self.summary.get("restore") or {}).get("failed", 0)


def run_clean(cfg: CleanConfig, *, on_stage: Callable[[str], None] | None = None) -> CleanResult:
    """Scan, restore what is below the threshold (unless dry run / no DST), write the report. Needs Ray.

    Args:
        cfg: the job.
        on_stage: told "list", "scan", "restore", "report" as each begins (for progress output).
    """
    if cfg.dst is None:
        return _clean(cfg, on_stage)
    with hold(resolve(cfg.dst, cfg.s3), cfg.s3, seconds=cfg.lease_seconds, what=f"dagn clean {cfg.src}"):
        return _clean(cfg, on_stage)


def _restore_step(cfg: CleanConfig, folder: Location, to_restore: list[str], say) -> tuple[dict, dict | None]:
    """Restore the inputs below the threshold (listed in the report folder); their manifest rows by input URI and
    the restore's summary (nothing when there is nothing to restore, no DST or a dry run)."""
    if to_restore:
        list_file = folder.path("restore-list.txt")
        write_bytes_atomic(folder.fs, list_file, ("\n".join(to_restore) + "\n").encode())
    if not to_restore or cfg.dst is None or cfg.dry_run:
        return {}, None
    from pipeline.restore import run_restore

    say("restore")
    summary = run_restore(cfg.restore_config(folder.uri_of("restore-list.txt")))
    manifest = read_manifest(resolve(cfg.dst, cfg.s3))
    mine = manifest.filter(pc.equal(manifest["run_id"], summary.run_id))
    restore_summary = {
        "run_id": summary.run_id,
        "ok": summary.ok,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 3),
        "manifest": summary.manifest,
        "failures": [list(f) for f in summary.failures],
    }
    return {r["input"]: r for r in mine.to_pylist()}, restore_summary


def _report_table(scanned: pa.Table, src: Location, actions: list[str], restore_rows: dict, run_id: str) -> pa.Table:
    """The scan with what was done to each file (a row per file)."""
    inputs = [src.uri_of(k) for k in scanned.column("key").to_pylist()]
    done = [restore_rows.get(uri, {}) for uri in inputs]
    report = scanned
    for name, values in (
        ("input", inputs),
        ("action", actions),
        ("restore_status", [d.get("status") for d in done]),
        ("restore_detail", [d.get("error") or d.get("reason") for d in done]),
        ("output", [d.get("output") for d in done]),
        ("run_id", [run_id] * len(inputs)),
    ):
        report = report.append_column(REPORT_SCHEMA.field(name), pa.array(values, REPORT_SCHEMA.field(name).type))
    return report


def _counts(scanned: pa.Table, below: list[bool]) -> dict[str, int]:
    kinds, sizes = scanned.column("kind").to_pylist(), scanned.column("size").to_pylist()
    return {
        "files": len(kinds),
        "bytes": int(sum(s or 0 for s in sizes)),
        "jpeg": kinds.count("jpeg"),
        "not_jpeg": kinds.count("not-jpeg"),
        "unreadable": kinds.count("unreadable"),
        "empty": kinds.count("empty"),
        "below_threshold": sum(below),
        "below_threshold_bytes": int(sum(s or 0 for s, b in zip(sizes, below, strict=True) if b)),
    }


def _clean(cfg: CleanConfig, on_stage: Callable[[str], None] | None) -> CleanResult:
    say = on_stage or (lambda stage: None)
    started, started_at = time.perf_counter(), dt.datetime.now(dt.timezone.utc)
    run_id = new_run_id()
    src = resolve(cfg.src, cfg.s3)
    reports = resolve(cfg.reports_uri, cfg.s3)
    folder = reports.child(f"clean-{run_id}")

    say("list")
    listing, problems = list_archive(src, cfg.extensions, cfg.follow_symlinks)
    reused, todo = _reuse(listing, _previous_scan(reports) if cfg.incremental else None)
    log.info("clean %s: %d files, %d unchanged since the last report", run_id, len(listing), len(reused))

    say("scan")
    scan_start = time.perf_counter()
    scanned = pa.concat_tables([reused, problems, _scan(cfg, todo)]).sort_by("key")
    scan_seconds = time.perf_counter() - scan_start

    kinds = scanned.column("kind").to_pylist()
    qfs = scanned.column("qf").to_pylist()
    below = [k == "jpeg" and q is not None and q < cfg.threshold for k, q in zip(kinds, qfs, strict=True)]
    actions = ["restore" if b else ("keep" if k == "jpeg" else "ignore") for k, b in zip(kinds, below, strict=True)]
    to_restore = [key for key, b in zip(scanned.column("key").to_pylist(), below, strict=True) if b]
    restore_rows, restore_summary = _restore_step(cfg, folder, to_restore, say)

    say("report")
    report = _report_table(scanned, src, actions, restore_rows, run_id)
    write_bytes_atomic(folder.fs, folder.path("scan.parquet"), _parquet_bytes(report))
    summary_doc = {
        "run_id": run_id,
        "started": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "src": src.uri,
        "dst": resolve(cfg.dst, cfg.s3).uri if cfg.dst is not None else None,
        "threshold": cfg.threshold,
        "dry_run": cfg.dry_run or cfg.dst is None,
        "report": folder.uri,
        "counts": _counts(scanned, below),
        "scan": {"read": len(todo), "reused": len(reused), "seconds": round(scan_seconds, 3)},
        "qf_histogram": histogram([q for q in qfs if q is not None]),
        "restore": restore_summary,
    }
    write_bytes_atomic(folder.fs, folder.path("summary.json"), json.dumps(summary_doc, indent=2).encode())
    write_bytes_atomic(folder.fs, folder.path("summary.md"), _markdown(summary_doc).encode())
    return CleanResult(run_id=run_id, report=folder.uri, summary=summary_doc)
