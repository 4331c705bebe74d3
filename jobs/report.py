"""``dagn report DST``: the runs that wrote into DST, and the latest one's report page."""

from __future__ import annotations

import datetime as dt
import webbrowser
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs.errors import UserError
from jobs.options import S3Endpoint
from pipeline.report import REPORTS_DIR, list_reports
from pipeline.storage import S3Settings, resolve

__all__ = ["report"]


def report(
    dst: Annotated[str, typer.Argument(help="Output folder or s3://bucket/prefix of restore runs.")],
    open_page: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the latest report in a browser (local DST only).")
    ] = True,
    s3_endpoint: S3Endpoint = None,
) -> None:
    """List the runs that left a report in DST/_reports/ and open the latest one's page."""
    location = resolve(dst, S3Settings(endpoint_url=s3_endpoint))
    records = list_reports(location)
    if not records:
        raise UserError(f"no run reports under {location.uri_of(REPORTS_DIR)}: check DST (restore runs write them)")
    table = Table("run", "started (UTC)", "seconds", "inputs", "ok", "skipped", "failed", "report")
    for r in records:
        started = dt.datetime.fromtimestamp(r.started, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        counts = [str(r.counts.get(s, 0)) for s in ("ok", "skipped", "failed")]
        page = location.uri_of(f"{REPORTS_DIR}/{r.run_id}/index.html")
        table.add_row(r.run_id, started, f"{r.seconds:.0f}", str(r.total), *counts, page)
    console = Console(width=250)
    console.print(table)
    latest = location.uri_of(f"{REPORTS_DIR}/{records[-1].run_id}/index.html")
    console.print(f"latest: {latest}", highlight=False)
    if open_page and "://" not in latest:
        webbrowser.open(f"file://{latest}")
