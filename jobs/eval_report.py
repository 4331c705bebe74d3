"""Evaluation reports: JSON, a Markdown table, a PSNR-vs-QF plot with published anchors, and an HTML crop gallery."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from dagn.evaluation import DAGN_MEAN_GAIN_BSD500, PUBLISHED, EvalResult, ImageScore

__all__ = ["CropGallery", "markdown_table", "write_report"]

log = logging.getLogger(__name__)


def markdown_table(result: EvalResult) -> str:
    """One row per QF: JPEG input vs restored PSNR / SSIM / PSNR-B, the gain, and a no-harm flag."""
    lines = [
        f"**{result.dataset}** ({int(next(iter(result.summary.values()))['images'])} images)" if result.scores else "",
        "",
        "| QF | JPEG PSNR / SSIM / PSNR-B | restored PSNR / SSIM / PSNR-B | gain (dB) |",
        "|---:|---|---|---:|",
    ]
    for q, s in result.summary.items():
        gain = s["psnr"] - s["jpeg_psnr"]
        flag = "" if gain >= 0 else " (worse than input)"
        lines.append(
            f"| {q} | {s['jpeg_psnr']:.2f} / {s['jpeg_ssim']:.4f} / {s['jpeg_psnr_b']:.2f} "
            f"| {s['psnr']:.2f} / {s['ssim']:.4f} / {s['psnr_b']:.2f} | {gain:+.2f}{flag} |"
        )
    low = [s["psnr"] - s["jpeg_psnr"] for q, s in result.summary.items() if q in (10, 20, 30, 40)]
    if len(low) == 4:
        lines += ["", f"Mean PSNR gain over QF 10-40: **{np.mean(low):+.2f} dB**"]
    return "\n".join(lines) + "\n"


def _plot(result: EvalResult, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'dagn[plot]'); skipping the plot")
        return False
    qs = list(result.summary)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(qs, [result.summary[q]["jpeg_psnr"] for q in qs], "o-", color="0.5", label="JPEG input")
    ax.plot(qs, [result.summary[q]["psnr"] for q in qs], "o-", color="C0", lw=2, label="dagn (restored)")
    anchors = PUBLISHED.get(result.dataset, {})
    for i, (method, values) in enumerate(anchors.items()):
        if method == "JPEG":
            continue
        ax.plot(list(values), list(values.values()), "x--", color=f"C{i + 1}", alpha=0.8, label=f"{method} (published)")
    if result.dataset == "bsd500" and "JPEG" in anchors:
        jq = anchors["JPEG"]
        ax.plot(
            list(jq),
            [v + DAGN_MEAN_GAIN_BSD500 for v in jq.values()],
            ":",
            color="k",
            label="DAGN (JPEG + 2.06 dB mean)",
        )
    ax.set_xlabel("JPEG quality factor")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{result.dataset}: restoration vs JPEG input")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


class CropGallery:
    """Collects side-by-side crops (truth, JPEG, restored) where the JPEG error is largest, for a few images."""

    def __init__(
        self, folder: Path, truths: dict[str, np.ndarray], *, quality: int, max_images: int = 6, crop: int = 128
    ):
        self.folder, self.truths, self.quality, self.max_images, self.crop = folder, truths, quality, max_images, crop
        self.rows: list[tuple[ImageScore, list[str]]] = []

    def __call__(self, score: ImageScore, compressed: np.ndarray, restored: np.ndarray) -> None:
        if score.quality != self.quality or len(self.rows) >= self.max_images:
            return
        truth = self.truths[score.name]
        y, x = self._worst_window(compressed, truth)
        files = []
        for label, img in (("truth", truth), ("jpeg", compressed), ("restored", restored)):
            patch = img[y : y + self.crop, x : x + self.crop]
            name = f"{Path(score.name).stem}_q{score.quality}_{label}.png"
            (self.folder / "crops").mkdir(parents=True, exist_ok=True)
            Image.fromarray(patch).resize((patch.shape[1] * 2, patch.shape[0] * 2), Image.NEAREST).save(
                self.folder / "crops" / name
            )
            files.append(f"crops/{name}")
        self.rows.append((score, files))

    def _worst_window(self, compressed: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
        err = np.abs(compressed.astype(np.float32) - truth.astype(np.float32))
        err = err.mean(axis=2) if err.ndim == 3 else err
        c = min(self.crop, *err.shape)
        best, pos = -1.0, (0, 0)
        for y in range(0, err.shape[0] - c + 1, max(c // 2, 1)):
            for x in range(0, err.shape[1] - c + 1, max(c // 2, 1)):
                e = float(err[y : y + c, x : x + c].mean())
                if e > best:
                    best, pos = e, (y, x)
        return pos

    def html(self) -> str:
        cells = []
        for score, (truth, jpg, restored) in self.rows:
            cells.append(
                f"<tr><td>{html.escape(score.name)}</td>"
                f"<td><img src='{truth}'><br>ground truth</td>"
                f"<td><img src='{jpg}'><br>JPEG q{score.quality}: {score.jpeg_psnr:.2f} dB</td>"
                f"<td><img src='{restored}'><br>restored: {score.psnr:.2f} dB</td></tr>"
            )
        return "<table>" + "".join(cells) + "</table>"


def write_report(
    result: EvalResult, folder: Path, gallery: CropGallery | None = None, title: str = ""
) -> dict[str, Path]:
    """Write results.json, results.md, psnr_vs_qf.png and index.html into ``folder``; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "results.json", "markdown": folder / "results.md"}
    written["json"].write_text(json.dumps(result.to_dict(), indent=1))
    table = markdown_table(result)
    written["markdown"].write_text(table)
    plot = folder / "psnr_vs_qf.png"
    if _plot(result, plot):
        written["plot"] = plot
    rows = "".join(
        f"<tr><td>{q}</td><td>{s['jpeg_psnr']:.2f}</td><td>{s['psnr']:.2f}</td>"
        f"<td>{s['psnr'] - s['jpeg_psnr']:+.2f}</td><td>{s['jpeg_ssim']:.4f}</td><td>{s['ssim']:.4f}</td>"
        f"<td>{s['jpeg_psnr_b']:.2f}</td><td>{s['psnr_b']:.2f}</td></tr>"
        for q, s in result.summary.items()
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title or result.dataset)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;text-align:center}"
        "img{image-rendering:pixelated}</style></head><body>"
        f"<h1>{html.escape(title or result.dataset)}</h1>"
        "<table border=1><tr><th>QF</th><th>JPEG PSNR</th><th>restored PSNR</th><th>gain</th><th>JPEG SSIM</th>"
        f"<th>restored SSIM</th><th>JPEG PSNR-B</th><th>restored PSNR-B</th></tr>{rows}</table>"
        + ("<p><img src='psnr_vs_qf.png'></p>" if "plot" in written else "")
        + (f"<h2>Crops (largest JPEG error, 2x)</h2>{gallery.html()}" if gallery and gallery.rows else "")
        + "</body></html>"
    )
    written["html"] = folder / "index.html"
    written["html"].write_text(page)
    return written
