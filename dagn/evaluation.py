"""The JPEG-artifact benchmark protocol: compress ground truth with Pillow at each QF, restore, score against truth.

Pillow's ``quality=q`` with default settings reproduces the published JPEG rows exactly; colour sets are scored on
RGB, grayscale sets on their single channel (FBCNN/DAGN protocol; see dagn.metrics for the metric definitions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from dagn import jpeg, metrics

__all__ = ["PUBLISHED", "EvalResult", "ImageScore", "evaluate", "summarize"]

# Published RGB PSNR (dB) by benchmark and QF, from ../shared/notes/dagn.md; drawn as anchors in reports.
PUBLISHED: dict[str, dict[str, dict[int, float]]] = {
    "live1": {
        "JPEG": {10: 25.69, 20: 28.06, 30: 29.37, 40: 30.28},
        "QGAC": {10: 27.62, 20: 29.88, 30: 31.17, 40: 32.05},
        "FBCNN": {10: 27.77, 20: 30.11, 30: 31.43, 40: 32.34},
        "GRL-S": {10: 28.13, 20: 30.49, 30: 31.85, 40: 32.79},
    },
    "bsd500": {
        "JPEG": {10: 25.84, 20: 28.21, 30: 29.57, 40: 30.52},
        "QGAC": {10: 27.74, 20: 30.01, 30: 31.33, 40: 32.25},
        "FBCNN": {10: 27.85, 20: 30.14, 30: 31.45, 40: 32.36},
        "GRL-S": {10: 28.26, 20: 30.57, 30: 31.92, 40: 32.86},
    },
}
DAGN_MEAN_GAIN_BSD500 = 2.06  # dB over JPEG, mean of QF 10-40: the only DAGN figure in the abstract


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image at one QF: the JPEG input and the restoration, both against the ground truth."""

    name: str
    quality: int
    jpeg_psnr: float
    jpeg_ssim: float
    jpeg_psnr_b: float
    psnr: float
    ssim: float
    psnr_b: float


@dataclass
class EvalResult:
    """Per-image scores plus their means per QF (``summary[q]`` holds the same fields as :class:`ImageScore`)."""

    dataset: str
    scores: list[ImageScore] = field(default_factory=list)

    @property
    def summary(self) -> dict[int, dict[str, float]]:
        return summarize(self.scores)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "summary": {str(q): v for q, v in self.summary.items()},
            "images": [asdict(s) for s in self.scores],
        }


def summarize(scores: Iterable[ImageScore]) -> dict[int, dict[str, float]]:
    by_q: dict[int, list[ImageScore]] = {}
    for s in scores:
        by_q.setdefault(s.quality, []).append(s)
    keys = ("jpeg_psnr", "jpeg_ssim", "jpeg_psnr_b", "psnr", "ssim", "psnr_b")
    return {
        q: {k: float(np.mean([getattr(s, k) for s in group])) for k in keys} | {"images": float(len(group))}
        for q, group in sorted(by_q.items())
    }


def evaluate(
    restore: Callable[[np.ndarray], np.ndarray],
    images: Iterable[tuple[str, np.ndarray]],
    qualities: Iterable[int],
    *,
    dataset: str = "",
    on_result: Callable[[ImageScore, np.ndarray, np.ndarray], None] | None = None,
) -> EvalResult:
    """Score ``restore`` (uint8 image -> uint8 image of the same shape) on ground-truth ``images`` at each QF.

    Args:
        restore: the restoration under test, e.g. a :class:`dagn.inference.Restorer`.
        images: (name, uint8 H x W x 3 RGB or H x W gray ground truth) pairs.
        qualities: JPEG quality factors to compress the ground truth with.
        dataset: a label kept in the result.
        on_result: called with (score, jpeg image, restored image) after each image, e.g. to save crops.
    """
    qualities = list(qualities)
    result = EvalResult(dataset=dataset)
    for name, truth in images:
        for q in qualities:
            compressed = jpeg.roundtrip(truth, q)
            restored = restore(compressed)
            if restored.shape != truth.shape or restored.dtype != np.uint8:
                raise ValueError(
                    f"restore returned {restored.dtype} {restored.shape} for {name}, need uint8 {truth.shape}"
                )
            score = ImageScore(
                name=name,
                quality=q,
                jpeg_psnr=metrics.psnr(compressed, truth),
                jpeg_ssim=metrics.ssim(compressed, truth),
                jpeg_psnr_b=metrics.psnr_b(compressed, truth),
                psnr=metrics.psnr(restored, truth),
                ssim=metrics.ssim(restored, truth),
                psnr_b=metrics.psnr_b(restored, truth),
            )
            result.scores.append(score)
            if on_result is not None:
                on_result(score, compressed, restored)
    return result
