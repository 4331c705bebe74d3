"""Where run reports live: ``DST/_reports/<run>/`` (a clean run's: ``REPORTS/clean-<run>/``) holds ``index.html``,
``report.json`` (the :class:`RunRecord`) and ``crops/``; :func:`list_reports` finds them again for ``dagn report``."""

from __future__ import annotations

import json
import posixpath

import pyarrow.fs as pafs

from pipeline.report.crops import crop_pair
from pipeline.report.page import render_page
from pipeline.report.record import RunRecord
from pipeline.storage import Location, read_bytes, write_bytes_atomic

__all__ = ["REPORTS_DIR", "list_reports", "write_report"]

REPORTS_DIR = "_reports"
PAGE, RECORD = "index.html", "report.json"


def write_report(record: RunRecord, src: Location, dst: Location, reports: Location | None = None) -> str:
    """Write the report of ``record`` to ``REPORTS/<run>/`` (default REPORTS: ``DST/_reports``), with crops of its
    sample read from SRC and DST; returns the page's URI."""
    out = reports or dst.child(REPORTS_DIR)
    folder = record.run_id
    crops = []
    for i, (input_uri, output_uri) in enumerate(record.sample):
        pair = crop_pair(input_uri, output_uri, src, dst)
        if pair is None:
            continue
        names = (f"crops/{i}-before.png", f"crops/{i}-after.png")
        for name, data in zip(names, pair, strict=True):
            write_bytes_atomic(out.fs, out.path(posixpath.join(folder, name)), data)
        crops.append((posixpath.basename(input_uri), *names))
    write_bytes_atomic(out.fs, out.path(posixpath.join(folder, RECORD)), record.model_dump_json(indent=1).encode())
    write_bytes_atomic(out.fs, out.path(posixpath.join(folder, PAGE)), render_page(record, crops).encode())
    return out.uri_of(posixpath.join(folder, PAGE))


def list_reports(dst: Location) -> list[RunRecord]:
    """The runs that left a report below DST, oldest first."""
    selector = pafs.FileSelector(dst.path(REPORTS_DIR), recursive=False, allow_not_found=True)
    records = []
    for info in dst.fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory:
            continue
        path = posixpath.join(info.path, RECORD)
        if dst.fs.get_file_info(path).type == pafs.FileType.File:
            records.append(RunRecord.model_validate(json.loads(read_bytes(dst.fs, path))))
    return sorted(records, key=lambda r: (r.started, r.run_id))
