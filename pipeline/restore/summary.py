"""What a run did, in a bounded object: counts, a QF histogram, a throughput series and the first failures.

Its size does not grow with the archive (the rows themselves are in the state), so the driver can keep it for a run
of any length, store it as the run's history and hand it to a report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest import Decision, RowStatus

__all__ = ["RestoreSummary"]

SERIES_POINTS = 64  # throughput samples kept; when full, every other one is dropped and the spacing doubles
QF_BINS = 10


@dataclass
class RestoreSummary:
    """Counts by status and by decision, QF histogram (bins of 10), (seconds, rows done) series, first failures."""

    run_id: str
    dry_run: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    qf_histogram: list[int] = field(default_factory=lambda: [0] * QF_BINS)
    nodes: dict[str, int] = field(default_factory=dict)  # restored rows per Ray node (where the work went)
    megapixels: float = 0.0
    seconds: float = 0.0
    pipeline_seconds: float = 0.0
    series: list[tuple[float, int]] = field(default_factory=list)
    manifest: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    keep_failures: int = 20
    _start: float = field(default_factory=time.perf_counter, repr=False)
    _spacing: float = field(default=1.0, repr=False)

    @property
    def ok(self) -> int:
        return self.statuses.get(RowStatus.ok.value, 0)

    @property
    def skipped(self) -> int:
        return self.statuses.get(RowStatus.skipped.value, 0)

    @property
    def failed(self) -> int:
        return self.statuses.get(RowStatus.failed.value, 0)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def to_restore(self) -> int:
        return sum(n for d, n in self.decisions.items() if Decision(d).to_restore)

    @property
    def images_per_second(self) -> float:
        return self.ok / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    def add(self, rows: pa.Table) -> None:
        """Count a chunk of finished rows (each weighs its ``count``: planning sends tallies of the rows it kept)."""
        counts = rows["count"]
        adopted = pc.equal(rows["decision"], Decision.adopted.value)
        statuses = pc.if_else(pc.fill_null(adopted, False), RowStatus.skipped.value, rows["status"])  # not restored now
        for values, target in ((statuses, self.statuses), (rows["decision"], self.decisions)):
            grouped = pa.table({"v": values, "n": counts}).group_by("v").aggregate([("n", "sum")])
            for value, n in zip(grouped["v"].to_pylist(), grouped["n_sum"].to_pylist(), strict=True):
                if value is not None:
                    target[value] = target.get(value, 0) + n
        ok = rows.filter(pc.equal(statuses, RowStatus.ok.value))
        pixels = pc.sum(pc.multiply(ok["width"].cast(pa.int64()), ok["height"].cast(pa.int64()))).as_py()
        self.megapixels += (pixels or 0) / 1e6
        for qf in rows.filter(pc.is_valid(rows["qf"]))["qf"].to_pylist():
            self.qf_histogram[min((qf - 1) // 10, QF_BINS - 1)] += 1
        for node in ok["node"].to_pylist():
            if node:
                self.nodes[node] = self.nodes.get(node, 0) + 1
        if len(self.failures) < self.keep_failures and self.failed:
            failed = rows.filter(pc.equal(rows["status"], RowStatus.failed.value)).select(["input", "error"])
            self.failures += [
                (r["input"], r["error"]) for r in failed.to_pylist()[: self.keep_failures - len(self.failures)]
            ]
        self._sample()

    def _sample(self) -> None:
        now = time.perf_counter() - self._start
        if self.series and now - self.series[-1][0] < self._spacing:
            return
        self.series.append((round(now, 3), self.ok + self.failed))
        if len(self.series) > SERIES_POINTS:
            self.series = self.series[::2]
            self._spacing *= 2

    def as_dict(self) -> dict:
        """Plain JSON-able fields (for the run's history file and reports)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}
