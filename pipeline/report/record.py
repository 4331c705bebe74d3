"""What a run report holds, gathered from the finished rows as they stream past the driver, in bounded memory.

Counts by status and by reason, the QF histograms of what was found and what was restored, the run's throughput
as a series of at most ``series_points`` points (buckets double in width as the run grows), the first failures,
and a uniform sample of restored inputs for before/after crops (reservoir sampling, so the sample is chosen while
the run goes and never needs a second pass over the archive). Nothing in it grows with the number of inputs.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

__all__ = ["QF_BINS", "RunRecord"]

QF_BINS = tuple(range(0, 101, 10))  # QF histogram edges: 1-10, 11-20, ..., 91-100
_OTHER = "(other reasons)"


def _reason(status: str, reason: str | None, error: str | None) -> str:
    """A short, repeatable reason: the skip reason, or a failure's message up to its first colon."""
    text = reason if status != "failed" else (error or "")
    return (text or status).split(":")[0].strip()[:80] or status


def _qf_bin(qf: int) -> int:
    return min(max((int(qf) - 1) // 10, 0), len(QF_BINS) - 2)


class RunRecord(BaseModel):
    """The bounded summary of one restore run; :meth:`add` takes each batch of finished rows."""

    run_id: str
    command: str = "restore"
    src: str = ""
    dst: str = ""
    started: float = Field(default_factory=time.time)
    seconds: float = 0.0
    counts: dict[str, int] = Field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = Field(default_factory=dict)
    qf_found: list[int] = Field(default_factory=lambda: [0] * (len(QF_BINS) - 1))
    qf_restored: list[int] = Field(default_factory=lambda: [0] * (len(QF_BINS) - 1))
    bucket_seconds: float = 1.0
    restored_per_bucket: list[int] = Field(default_factory=list)
    failures: list[tuple[str, str]] = Field(default_factory=list)
    sample: list[tuple[str, str]] = Field(default_factory=list)
    megapixels: float = 0.0
    max_reasons: int = 30
    max_failures: int = 20
    sample_size: int = 6
    series_points: int = 60
    seen_ok: int = 0
    seed: int = 0

    def add(self, rows: pa.Table, now: float | None = None) -> None:
        elapsed = (time.time() if now is None else now) - self.started
        restored = 0
        columns = ("input", "output", "status", "reason", "error", "qf", "width", "height", "count")
        for row in rows.select([c for c in columns if c in rows.column_names]).to_pylist():
            status, weight = row["status"], row.get("count") or 1  # a tally row stands for ``count`` inputs
            if status is None:  # a tally of listed files that are no input (planning's): nothing to report
                continue
            self.counts[status] = self.counts.get(status, 0) + weight
            if status != "ok":
                self._count_reason(status, _reason(status, row.get("reason"), row.get("error")), weight)
            if row.get("qf") is not None:
                self.qf_found[_qf_bin(row["qf"])] += weight
            if status == "failed" and len(self.failures) < self.max_failures:
                self.failures.append((row["input"], row.get("error") or ""))
            if status == "ok":
                restored += 1
                self._restored(row)
        self._tick(elapsed, restored)

    def _count_reason(self, status: str, reason: str, weight: int) -> None:
        by_reason = self.reasons.setdefault(status, {})
        if reason not in by_reason and sum(len(r) for r in self.reasons.values()) >= self.max_reasons:
            reason = _OTHER
        by_reason[reason] = by_reason.get(reason, 0) + weight

    def _restored(self, row: dict[str, Any]) -> None:
        if row.get("qf") is not None:
            self.qf_restored[_qf_bin(row["qf"])] += 1
        if row.get("width") and row.get("height"):
            self.megapixels += row["width"] * row["height"] / 1e6
        self.seen_ok += 1
        pair = (row["input"], row.get("output") or "")
        if len(self.sample) < self.sample_size:
            self.sample.append(pair)
        else:  # reservoir sampling: every restored input ends up in the sample with the same chance
            slot = random.Random(f"{self.seed}/{self.seen_ok}").randrange(self.seen_ok)
            if slot < self.sample_size:
                self.sample[slot] = pair

    def _tick(self, elapsed: float, restored: int) -> None:
        """Add ``restored`` to the bucket of ``elapsed`` seconds, halving the resolution when the series is full."""
        while int(elapsed / self.bucket_seconds) >= self.series_points:
            merged = self.restored_per_bucket + [0] * (len(self.restored_per_bucket) % 2)
            self.restored_per_bucket = [merged[i] + merged[i + 1] for i in range(0, len(merged), 2)]
            self.bucket_seconds *= 2
        index = int(max(elapsed, 0) / self.bucket_seconds)
        self.restored_per_bucket += [0] * (index + 1 - len(self.restored_per_bucket))
        self.restored_per_bucket[index] += restored
        self.seconds = max(self.seconds, elapsed)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
