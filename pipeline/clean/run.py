"""The cleaning job: scan the archive shard by shard, restore what is below the threshold, write the summary.

::

    shards of SRC (driver)   the same shards as a restore (pipeline.listing)
    scan                     actors: per shard, unchanged files reused, the rest read by their first bytes; the
      |                      shard's report, scan state and restore list are written there; only counts come back
    restore                  the restore pipeline over the folder of restore lists (max_qf = threshold - 1 as a guard)
    summary                  REPORTS/clean-<run>/summary.json and summary.md, from the counts (no table in the driver),
                             and index.html, the run's page (pipeline.report)

A dry run (``--dry-run``) scans and counts, and writes nothing: no reports, no scan state, no lease.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.clean.config import CleanConfig
from pipeline.clean.report import histogram, markdown
from pipeline.clean.scan import COUNT_NAMES, ShardScan
from pipeline.lease import hold
from pipeline.listing import Shard, discover_shards
from pipeline.manifest import new_run_id
from pipeline.report import RunRecord, write_report
from pipeline.storage import Location, location, write_bytes_atomic

__all__ = ["CleanResult", "run_clean"]

log = logging.getLogger(__name__)


@dataclass
class CleanResult:
    run_id: str
    report: str | None  # the run's folder of reports; None after a dry run, which writes none
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return (self.summary.get("restore") or {}).get("failed", 0)


def _scan(cfg: CleanConfig, run_id: str) -> tuple[dict[str, int], list[int]]:
    """Counts over all shards and the QF histogram's counts (bins of 10)."""
    import ray

    shards = [s.as_row() for s in discover_shards(location(cfg.src, cfg.s3), cfg.shard_depth)]
    shards = shards or [Shard("", recursive=False).as_row()]
    options = {"extensions": cfg.extensions, "header_bytes": cfg.header_bytes, "incremental": cfg.incremental}
    options.update(scan_threads=cfg.scan_threads, follow_symlinks=cfg.follow_symlinks, dry_run=cfg.dry_run)
    ds = ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
        ShardScan,
        batch_format="pyarrow",
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.scan_workers),
        num_cpus=cfg.scan_cpus,
        fn_constructor_kwargs={
            "src": cfg.src,
            "reports": cfg.reports_uri,
            "s3": cfg.s3,
            "run_id": run_id,
            "threshold": cfg.threshold,
            "cfg": options,
        },
    )
    counts, bins = dict.fromkeys(COUNT_NAMES, 0), [0] * 10
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            for name in COUNT_NAMES:
                counts[name] += row[name]
            bins = [a + b for a, b in zip(bins, row["qf_bins"], strict=True)]
    return counts, bins


def _restore(cfg: CleanConfig, folder: Location, record: RunRecord) -> dict[str, Any]:
    from pipeline.restore import run_restore

    summary = run_restore(cfg.restore_config(folder.uri_of("restore-list")), on_rows=record.add)
    return {
        "run_id": summary.run_id,
        "ok": summary.ok,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 3),
        "manifest": summary.manifest,
        "failures": [list(f) for f in summary.failures],
    }


def run_clean(cfg: CleanConfig, *, on_stage: Callable[[str], None] | None = None) -> CleanResult:
    """Scan, restore what is below the threshold (unless dry run / no DST), write the summary. Needs Ray.

    Args:
        cfg: the job.
        on_stage: told "scan", "restore", "report" as each begins (for progress output).
    """
    if cfg.dst is None or cfg.dry_run:  # nothing is written to DST
        return _clean(cfg, on_stage)
    with hold(location(cfg.dst, cfg.s3), cfg.s3, seconds=cfg.lease_seconds, what=f"dagn clean {cfg.src}"):
        return _clean(cfg, on_stage)


def _clean(cfg: CleanConfig, on_stage: Callable[[str], None] | None) -> CleanResult:
    say = on_stage or (lambda stage: None)
    started, started_at = time.perf_counter(), dt.datetime.now(dt.timezone.utc)
    run_id = new_run_id()
    reports = location(cfg.reports_uri, cfg.s3)
    folder = reports.child(f"clean-{run_id}")
    record = RunRecord(run_id=f"clean-{run_id}", command="clean", src=cfg.src, dst=cfg.dst or "(scan only)")
    say("scan")
    counts, bins = _scan(cfg, run_id)
    scan_seconds = time.perf_counter() - started
    restore = None
    if counts["below_threshold"] and cfg.dst is not None and not cfg.dry_run:
        say("restore")
        restore = _restore(cfg, folder, record)
    say("report")
    qf_histogram = histogram([])
    for b, n in zip(qf_histogram, bins, strict=True):
        b["count"] = n
    summary = {
        "run_id": run_id,
        "started": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "src": location(cfg.src, cfg.s3).uri,
        "dst": location(cfg.dst, cfg.s3).uri if cfg.dst is not None else None,
        "threshold": cfg.threshold,
        "dry_run": cfg.dry_run or cfg.dst is None,
        "report": None if cfg.dry_run else folder.uri,
        "counts": {k: counts[k] for k in COUNT_NAMES if k not in ("read", "reused")},
        "scan": {"read": counts["read"], "reused": counts["reused"], "seconds": round(scan_seconds, 3)},
        "qf_histogram": qf_histogram,
        "restore": restore,
    }
    if cfg.dry_run:
        return CleanResult(run_id=run_id, report=None, summary={**summary, "page": None})
    summary["page"] = _write_page(cfg, record, counts, bins, reports)
    write_bytes_atomic(folder.fs, folder.path("summary.json"), json.dumps(summary, indent=2).encode())
    write_bytes_atomic(folder.fs, folder.path("summary.md"), markdown(summary).encode())
    return CleanResult(run_id=run_id, report=folder.uri, summary=summary)


_SCAN_LABELS = {"not_jpeg": "not a JPEG", "unreadable": "unreadable", "empty": "empty"}  # scan counts shown


def _write_page(cfg: CleanConfig, record: RunRecord, counts: dict[str, int], bins: list[int], reports: Location) -> str:
    """The run's page beside its summary: what the scan found (its QF histogram, its counts as the "scan" reasons)
    and, from the restore's rows as they streamed past, what was restored, the throughput, failures and crops."""
    record.qf_found = list(bins)  # the scan saw every JPEG; the restore's rows only those below the threshold
    record.seconds = max(record.seconds, time.time() - record.started)
    record.reasons["scan"] = {
        f"JPEG, quality below {cfg.threshold}": counts["below_threshold"],
        f"JPEG, quality {cfg.threshold} or more": counts["jpeg"] - counts["below_threshold"],
        **{label: counts[name] for name, label in _SCAN_LABELS.items()},
    }
    dst = location(cfg.dst, cfg.s3) if cfg.dst is not None else reports
    return write_report(record, location(cfg.src, cfg.s3), dst, reports)
