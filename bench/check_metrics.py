"""Check dagn.metrics against published per-image values (golden test of the evaluation protocol).

The reference folder holds restored PNGs and the log of the run that produced them, with lines like
``bikes.bmp - PSNR: 26.39 dB; SSIM: 0.802; PSNRB: 26.12 dB.``. For every PNG present, the ground truth of the same
stem is loaded from --gt and PSNR / SSIM / PSNR-B are recomputed. A row matches when our value, rounded as the log
rounds it, equals the published one, or differs from it by at most 0.01 dB (PSNR, PSNR-B) / 0.001 (SSIM).
Exits with status 1 unless every row matches.

    python bench/check_metrics.py ../shared/datasets/reference/fbcnn_live1_color_qf10 \\
        --gt ../shared/datasets/eval/live1_color
"""

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dagn.metrics import psnr, psnr_b, ssim

LOG_LINE = re.compile(r"(\S+?)\.\w+ - PSNR: ([\d.]+) dB; SSIM: ([\d.]+); PSNRB: ([\d.]+) dB")
# metric name, function, decimals in the log, tolerance
METRICS = [("PSNR", psnr, 2, 0.01), ("SSIM", ssim, 3, 0.001), ("PSNR-B", psnr_b, 2, 0.01)]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def published_values(folder: Path) -> dict[str, tuple[float, ...]]:
    """Map image stem -> (PSNR, SSIM, PSNR-B) from every ``*.log`` in the folder; later lines win."""
    values = {}
    for log in sorted(folder.glob("*.log")):
        for match in LOG_LINE.finditer(log.read_text()):
            values[match[1]] = tuple(float(v) for v in match.groups()[1:])
    return values


def matches(ours: float, published: float, decimals: int, tol: float) -> bool:
    return round(ours, decimals) == published or abs(ours - published) <= tol + 1e-12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="folder with restored PNGs and the *.log of published values")
    parser.add_argument("--gt", type=Path, required=True, help="folder with the ground-truth PNGs of the same names")
    args = parser.parse_args()

    published = published_values(args.reference)
    images = sorted(p for p in args.reference.glob("*.png") if p.stem in published)
    if not images:
        parser.error(f"no PNG in {args.reference} has a value in its *.log")

    header = f"{'image':<16}" + "".join(f"{name + ' ours':>13}{'published':>11}{'diff':>9}" for name, *_ in METRICS)
    print(header + "  ok")
    all_ok = True
    for path in images:
        restored, truth = load_rgb(path), load_rgb(args.gt / path.name)
        row, row_ok = f"{path.stem:<16}", True
        for (_, fn, decimals, tol), pub in zip(METRICS, published[path.stem], strict=True):
            ours = fn(restored, truth)
            row_ok &= matches(ours, pub, decimals, tol)
            row += f"{ours:>13.{decimals + 2}f}{pub:>11.{decimals}f}{ours - pub:>+9.{decimals + 2}f}"
        all_ok &= row_ok
        print(row + ("  yes" if row_ok else "  NO"))
    print(f"{len(images)} images, {'all match' if all_ok else 'MISMATCH'} (tolerance 0.01 dB PSNR/PSNR-B, 0.001 SSIM)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
