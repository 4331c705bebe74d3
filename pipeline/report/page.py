"""The report page of a run: one self-contained HTML file (inline CSS and SVG, crops beside it), read by a person
the morning after. Rendering only: no I/O here."""

from __future__ import annotations

import datetime as dt
import html
import itertools

from pipeline.report.record import QF_BINS, RunRecord

__all__ = ["render_page"]

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.failed { color: #b00; } .ok { color: #070; }
figure { display: inline-block; margin: 0 1em 1em 0; } figcaption { font-size: 12px; max-width: 400px; }
img { image-rendering: pixelated; border: 1px solid #ccc; } img.broken { outline: 3px solid #b00; }
"""
# Marks images that did not load, and counts them on <body> (data-images / data-images-loaded) for checks.
_SCRIPT = """
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0);
  images.filter((i) => !loaded.includes(i)).forEach((i) => i.classList.add("broken"));
  document.body.dataset.images = images.length;
  document.body.dataset.imagesLoaded = loaded.length;
});
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _counts(record: RunRecord) -> str:
    rows = "".join(
        f'<tr><td class="{_e(status)}">{_e(status)}</td><td class="n" data-count="{_e(status)}">{n}</td></tr>'
        for status, n in sorted(record.counts.items())
    )
    total = f'<tr><th>total</th><td class="n" data-count="total">{record.total}</td></tr>'
    reasons = "".join(
        f"<tr><td>{_e(status)}</td><td>{_e(reason)}</td><td class='n'>{n}</td></tr>"
        for status, by_reason in sorted(record.reasons.items())
        for reason, n in sorted(by_reason.items(), key=lambda item: -item[1])
    )
    return (
        f"<h2>Inputs by status</h2><table>{rows}{total}</table>"
        f"<h2>By reason</h2><table><tr><th>status</th><th>reason</th><th>inputs</th></tr>{reasons}</table>"
    )


def _bars(values: list[int], labels: list[str], title: str, color: str) -> str:
    """A bar chart as inline SVG, one bar per value, with its count above it."""
    width, height, bar = 40 * len(values), 150, 30
    top = max(values, default=0) or 1
    parts = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = round(110 * value / top)
        x = i * 40 + 5
        parts.append(
            f'<rect x="{x}" y="{125 - h}" width="{bar}" height="{h}" fill="{color}"><title>{value}</title></rect>'
            f'<text x="{x + bar / 2}" y="{120 - h}" font-size="10" text-anchor="middle">{value}</text>'
            f'<text x="{x + bar / 2}" y="140" font-size="10" text-anchor="middle">{_e(label)}</text>'
        )
    return (
        f"<figure><svg width='{width}' height='{height}' role='img' aria-label='{_e(title)}'>{''.join(parts)}</svg>"
        f"<figcaption>{_e(title)}</figcaption></figure>"
    )


def _throughput(record: RunRecord) -> str:
    rates = [n / record.bucket_seconds for n in record.restored_per_bucket]
    if not rates:
        return "<p>No image was restored.</p>"
    width, height, top = 600, 160, max(rates) or 1.0
    mean = sum(record.restored_per_bucket) / max(record.seconds, 1e-9)
    step = width / max(len(rates) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 10 - (height - 20) * r / top:.1f}" for i, r in enumerate(rates))
    return (
        f"<figure><svg width='{width}' height='{height}' role='img' aria-label='throughput'>"
        f"<polyline points='{points}' fill='none' stroke='#36c' stroke-width='2'/></svg>"
        f"<figcaption>images restored per second, in buckets of {record.bucket_seconds:g} s, over "
        f"{record.seconds:.0f} s; peak {top:.2f}/s, mean {mean:.2f}/s"
        "</figcaption></figure>"
    )


def _failures(record: RunRecord) -> str:
    if not record.failures:
        return "<p>None.</p>"
    rows = "".join(
        f"<tr><td>{_e(path)}</td><td class='failed'>{_e(error)}</td></tr>" for path, error in record.failures
    )
    more = record.counts.get("failed", 0) - len(record.failures)
    tail = f"<p>... and {more} more: see the manifest.</p>" if more > 0 else ""
    return f"<table><tr><th>input</th><th>error</th></tr>{rows}</table>{tail}"


def _crops(crops: list[tuple[str, str, str]]) -> str:
    if not crops:
        return "<p>No sample (nothing was restored).</p>"
    return "".join(
        f"<figure><img src='{_e(before)}' alt='before: {_e(name)}'> <img src='{_e(after)}' alt='after: {_e(name)}'>"
        f"<figcaption>{_e(name)}: input (left), restored (right)</figcaption></figure>"
        for name, before, after in crops
    )


def render_page(record: RunRecord, crops: list[tuple[str, str, str]]) -> str:
    """The page; ``crops`` holds (input name, before-file, after-file) with file names relative to the page."""
    started = dt.datetime.fromtimestamp(record.started, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    labels = [f"{lo + 1}-{hi}" for lo, hi in itertools.pairwise(QF_BINS)]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dagn {_e(record.command)} {_e(record.run_id)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>dagn {_e(record.command)}: run {_e(record.run_id)}</h1>
<p>{_e(record.src)} &rarr; {_e(record.dst)}<br>started {started}, {record.seconds:.0f} s,
{record.megapixels:.2f} MP restored</p>
{_counts(record)}
<h2>Estimated JPEG quality (QF)</h2>
{_bars(record.qf_found, labels, "QF of the JPEG inputs found", "#999")}
{_bars(record.qf_restored, labels, "QF of the inputs restored", "#3a3")}
<h2>Throughput</h2>
{_throughput(record)}
<h2>First failures</h2>
{_failures(record)}
<h2>Sample: before and after</h2>
{_crops(crops)}
<script>{_SCRIPT}</script>
</body></html>
"""
