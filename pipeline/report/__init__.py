"""Morning-after reports of restore runs: a bounded record gathered while the run goes (:mod:`.record`), crops of a
sample (:mod:`.crops`), the page (:mod:`.page`) and where it is kept (:mod:`.store`)."""

from pipeline.report.record import RunRecord
from pipeline.report.store import REPORTS_DIR, list_reports, write_report

__all__ = ["REPORTS_DIR", "RunRecord", "list_reports", "write_report"]
