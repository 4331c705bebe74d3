"""The training degradation of DAGN's released recipe: clean patch -> (clean, JPEG) pair.

Per sample: a random (patch + margin) crop of the clean image, one of the 8 dihedral transforms, JPEG at a quality
drawn from a mix of a uniform range (a quarter of the time) and a discrete set, then the patch cut from the same
place in both images. Half of the time the cut sits at a random offset inside the margin, so the 8x8 JPEG block grid
is not always aligned with the patch border; a model trained only on aligned patches learns where block edges fall,
which real, cropped or resized JPEGs do not respect.

Everything is numpy uint8 and driven by an explicit ``np.random.Generator``, so a data loader worker seeded once
produces a reproducible stream and no torch is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dagn import jpeg

__all__ = ["DegradationConfig", "DegradedPatch", "degrade", "sample_quality"]


class DegradationConfig(BaseModel):
    """Knobs of the training degradation; the defaults are the released DAGN recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patch_size: int = Field(96, ge=1, description="Side of the square training patch, in pixels.")
    crop_margin: int = Field(
        8,
        ge=0,
        description="Extra pixels around the patch in the crop that is JPEG-compressed (96 + 8 -> a 104 crop); "
        "the patch is cut from it at an offset of 0..crop_margin per axis.",
    )
    p_uniform_quality: float = Field(
        0.25, ge=0.0, le=1.0, description="Probability of drawing the QF uniformly from uniform_quality_range."
    )
    uniform_quality_range: tuple[int, int] = Field(
        (8, 96), description="Inclusive (low, high) range of the uniform QF draw, within 1..100."
    )
    quality_set: tuple[int, ...] = Field(
        (10, 20, 30, 40, 50, 60),
        description="QFs drawn with equal probability when the uniform draw is not taken, each within 1..100.",
    )
    p_misaligned: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Probability of cutting the patch at a random offset in [0, crop_margin] per axis instead of "
        "at (0, 0), where it is aligned with the 8x8 JPEG grid. As in the recipe, the random offset itself may "
        "fall on the grid (0 or 8 on both axes: 4 of 81 draws with the default margin).",
    )
    flip_rotate: bool = Field(True, description="Apply one of the 8 flips/rot90s, uniformly, before compression.")

    @model_validator(mode="after")
    def _check_qualities(self) -> DegradationConfig:
        low, high = self.uniform_quality_range
        if not 1 <= low <= high <= 100:
            raise ValueError(f"uniform_quality_range must satisfy 1 <= low <= high <= 100, got {(low, high)}")
        if any(not 1 <= q <= 100 for q in self.quality_set):
            raise ValueError(f"quality_set entries must be in 1..100, got {self.quality_set}")
        if not self.quality_set and self.p_uniform_quality < 1.0:
            raise ValueError("quality_set is empty, so p_uniform_quality must be 1.0")
        return self

    @property
    def crop_size(self) -> int:
        """Side of the crop that is JPEG-compressed: patch_size + crop_margin."""
        return self.patch_size + self.crop_margin


@dataclass(frozen=True)
class DegradedPatch:
    """One training pair.

    Attributes:
        clean: uint8 patch, P x P x 3 (or P x P for gray input).
        jpeg: the decoded JPEG of the same region, same shape and dtype.
        quality: the JPEG quality factor used.
        offset: (row, col) of the patch inside the compressed crop; (0, 0) means aligned with the 8x8 grid.
    """

    clean: np.ndarray
    jpeg: np.ndarray
    quality: int
    offset: tuple[int, int]


def sample_quality(rng: np.random.Generator, cfg: DegradationConfig) -> int:
    """Draw a JPEG quality factor: uniform over the range with p_uniform_quality, else uniform over quality_set."""
    if rng.random() < cfg.p_uniform_quality:
        low, high = cfg.uniform_quality_range
        return int(rng.integers(low, high + 1))
    return int(cfg.quality_set[rng.integers(len(cfg.quality_set))])


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {getattr(image, 'dtype', type(image).__name__)}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an H x W (gray) or H x W x 3 (RGB) array, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot degrade an empty image of shape {image.shape}")


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad bottom/right so both sides are at least ``size``; no copy when already large enough."""
    pad_h = max(0, size - image.shape[0])
    pad_w = max(0, size - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="reflect")


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """Transform k in 0..7 of the dihedral group: rot90 by k % 4, then a left-right flip when k >= 4."""
    out = np.rot90(image, k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return out


def degrade(
    image: np.ndarray,
    rng: np.random.Generator,
    cfg: DegradationConfig,
    quality: int | None = None,
) -> DegradedPatch:
    """Make one (clean, JPEG) training pair from a clean image, deterministically given ``rng``.

    Args:
        image: clean uint8 image, H x W x 3 RGB or H x W gray. Images smaller than the crop are reflect-padded.
        rng: source of all randomness (crop, transform, QF, offset).
        cfg: degradation settings.
        quality: fixed QF; None draws one with :func:`sample_quality`.

    Returns:
        The clean and JPEG patches of the same region, the QF and the patch offset inside the compressed crop.
    """
    _check_image(image)
    crop = cfg.crop_size
    # 1. random (patch + margin) crop of the clean image
    source = _pad_to(image, crop)
    top = int(rng.integers(source.shape[0] - crop + 1))
    left = int(rng.integers(source.shape[1] - crop + 1))
    region = source[top : top + crop, left : left + crop]
    # 2. one of the 8 flips/rotations
    if cfg.flip_rotate:
        region = _dihedral(region, int(rng.integers(8)))
    region = np.ascontiguousarray(region)
    # 3. JPEG of the whole crop, so its 8x8 grid starts at the crop origin
    if quality is None:
        quality = sample_quality(rng, cfg)
    decoded = jpeg.roundtrip(region, quality)
    # 4. the patch, grid-aligned at (0, 0) or at a random offset inside the margin
    if cfg.crop_margin > 0 and rng.random() < cfg.p_misaligned:
        dy, dx = (int(v) for v in rng.integers(cfg.crop_margin + 1, size=2))
    else:
        dy, dx = 0, 0
    size = cfg.patch_size
    return DegradedPatch(
        clean=region[dy : dy + size, dx : dx + size].copy(),
        jpeg=decoded[dy : dy + size, dx : dx + size].copy(),
        quality=int(quality),
        offset=(dy, dx),
    )
