"""The cleaning report's summary: counts, QF histogram and restore results, as JSON and Markdown."""

from __future__ import annotations

from typing import Any

__all__ = ["histogram", "markdown"]


def histogram(qfs: list[int], width: int = 10) -> list[dict[str, Any]]:
    """Counts of quality factors in bins of ``width``: 1-10, 11-20, ..., 91-100."""
    bins = [{"range": f"{lo}-{min(lo + width - 1, 100)}", "count": 0} for lo in range(1, 101, width)]
    for q in qfs:
        bins[min((q - 1) // width, len(bins) - 1)]["count"] += 1
    return bins


def markdown(summary: dict[str, Any]) -> str:
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
    lines += ["", f"Rows per file, one Parquet file per shard: `{summary['report']}/scan/`", ""]
    return "\n".join(lines)
