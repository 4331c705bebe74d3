"""Restore images with a trained DAGN: the one inference entry point for arrays and PIL images.

>>> from PIL import Image
>>> import dagn
>>> restored = dagn.restore_image(Image.open("photo.jpg"))            # shipped weights  # doctest: +SKIP
>>> restorer = dagn.Restorer("model.safetensors", tile=512)           # reuse for many images  # doctest: +SKIP
>>> out = restorer(np.asarray(Image.open("photo.jpg").convert("RGB")))  # uint8 in, uint8 out  # doctest: +SKIP

Rules that hold for every entry point here:

* **Precision and layout.** The model runs in channels_last, under bfloat16 autocast on CUDA (float16 where the GPU
  has no bfloat16) and on CPUs with native bf16 units, else in float32 (:mod:`dagn.precision`; ``precision``
  forces either). Outputs are float32 before rounding to uint8.
* **Gray images.** DAGN is an RGB network. A gray image (H x W) is replicated to three equal channels, restored, and
  brought back to one channel as the mean of the three output channels (the least-squares projection back onto
  gray). Gray in, gray out.
* **Tiling.** With ``tile`` set, images larger than ``tile`` along either side run as overlapping tiles blended
  without seams (:mod:`dagn.tiling`); smaller images run whole.
* **Context.** A model trained on patches below :data:`WHOLE_IMAGE_PATCH` pixels is run on regions of its patch
  size: its bottleneck saw 4 x 4 feature maps whose every cell touches the padding, and on whole photos it learnt
  nothing about, it restores worse (the 64 px ``small`` weights at QF 90 on BSD500 image 101084: 25.4 dB whole,
  35.0 dB in 64 px tiles, 34.9 dB JPEG). Models trained on larger patches run on whole images (tiles only for
  memory). So the tile size is at most ``context``, by default :func:`auto_context` of the training patch size
  recorded in the model file, with a quarter of it as overlap; tiles of that size run in batches of at least 16.
* **Batching.** :meth:`Restorer.restore_batch` stacks images of the same size (and tiles of one size) into batches
  of ``batch_size``; results come back in input order.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from dagn.checkpoint import load_model, read_metadata, shipped_weights
from dagn.io import check_image, merge_alpha, split_alpha, to_arrays, to_tensor
from dagn.models import DAGN
from dagn.precision import Precision, autocast, autocast_dtype
from dagn.tiling import tiled_apply

__all__ = ["WHOLE_IMAGE_PATCH", "Restorer", "auto_context", "context_setting", "restore_image", "training_patch_size"]

log = logging.getLogger(__name__)

# Training patch size from which a model runs on whole images: from 128 px on, the bottleneck of `small` sees 8 x 8
# maps with an inner part away from the padding, and the guiders pool over patches of a realistic size.
WHOLE_IMAGE_PATCH = 128


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Restorer:
    """A loaded DAGN ready to restore uint8 images; build once, call many times.

    Args:
        weights: a model file written by :func:`dagn.checkpoint.save_model`; None means the shipped weights.
        model: an already built model to use instead of loading ``weights`` (it is moved to ``device`` and set to
            eval mode). Give one of ``weights`` and ``model``, not both.
        device: "cuda", "cuda:1", "cpu", ...; None picks CUDA when available, else CPU.
        tile: tile side in pixels for large images (None: always whole images). 256-512 suits most memory budgets.
        tile_overlap: minimum overlap between neighbouring tiles in pixels.
        batch_size: images (or tiles) per forward pass.
        context: the largest square the model sees at once (see the module notes); "auto": :func:`auto_context` of
            the training patch size in the model file's metadata (None when it has none, or for ``model``); None: no
            limit.
        precision: "auto" (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), "bf16" or "fp32".
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        model: DAGN | None = None,
        device: str | None = None,
        tile: int | None = None,
        tile_overlap: int = 32,
        batch_size: int = 1,
        context: int | Literal["auto"] | None = "auto",
        precision: Precision = "auto",
    ) -> None:
        if weights is not None and model is not None:
            raise ValueError("give either weights or model, not both")
        if tile is not None and tile < 16:
            raise ValueError(f"tile must be at least 16 pixels, got {tile}")
        if tile is not None and not 0 <= tile_overlap < tile:
            raise ValueError(f"tile_overlap must be in 0..tile-1, got {tile_overlap} for tile {tile}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or _default_device())
        if model is None:
            path = Path(weights) if weights is not None else shipped_weights()
            model = load_model(path, device="cpu")
            self.weights: Path | None = path
            self.context = auto_context(training_patch_size(path)) if context == "auto" else context
        else:
            self.weights = None
            self.context = None if context == "auto" else context
        if self.context is not None and self.context < 16:
            raise ValueError(f"context must be at least 16 pixels, got {self.context}")
        self.model = model.to(self.device).eval()
        self.tile, self.tile_overlap, self.batch_size = tile, tile_overlap, batch_size
        self._tile_batch = batch_size
        if self.context is not None and (tile is None or tile > self.context):
            self.tile, self.tile_overlap = self.context, self.context // 4
            self._tile_batch = max(batch_size, 16)
        self.autocast_dtype = autocast_dtype(self.device, precision)
        # channels_last is faster for these convolutions on GPUs and on CPUs alike (1.4x for `small` on 2 CPU cores).
        self.model = self.model.to(memory_format=torch.channels_last)
        self._align = 16
        log.debug(
            "Restorer on %s (%s): tile %s, context %s, batch %d",
            self.device, self.autocast_dtype or torch.float32, self.tile, self.context, batch_size,
        )  # fmt: skip

    # -- tensors ----------------------------------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One model call on an RGB float batch on the device; float32 output clamped to [0, 1]."""
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.autocast_dtype):
            y = self.model(x)
        return y.float().clamp_(0.0, 1.0)

    @torch.inference_mode()
    def restore_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) RGB in [0, 1] on any device -> restored float32 batch on the same device."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB tensor, got shape {tuple(x.shape)}")
        source_device = x.device
        x = x.to(self.device, torch.float32)
        if self.tile is None:
            y = torch.cat([self._forward(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        else:
            y = tiled_apply(
                self._forward,
                x,
                tile=self.tile,
                overlap=self.tile_overlap,
                align=self._align,
                batch_size=self._tile_batch,
            )
        return y.to(source_device)

    # -- arrays -----------------------------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Restore one uint8 image, H x W x 3 (RGB) or H x W (gray); returns the same shape and dtype."""
        return self.restore_batch([image])[0]

    def restore_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Restore uint8 images of any sizes; same-size images share batches. Results are in input order."""
        for image in images:
            check_image(image)
        results: list[np.ndarray | None] = [None] * len(images)
        for indices in _same_size_groups(images):
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                x = to_tensor([_as_rgb(images[i]) for i in chunk], device=self.device)
                for i, restored in zip(chunk, to_arrays(self.restore_tensor(x)), strict=True):
                    results[i] = _like(restored, images[i])
        return results  # type: ignore[return-value]


def context_setting(pixels: int | None) -> int | Literal["auto"] | None:
    """A configured context (None: the model's own, 0: whole images) as :class:`Restorer` takes it."""
    return "auto" if pixels is None else (pixels or None)


def auto_context(patch_size: int | None) -> int | None:
    """The context a model trained on ``patch_size`` patches runs in by default: its patch size below
    :data:`WHOLE_IMAGE_PATCH`, else (or when unknown) None, whole images."""
    return patch_size if patch_size is not None and patch_size < WHOLE_IMAGE_PATCH else None


def training_patch_size(path: str | Path) -> int | None:
    """The patch size a model file was trained on (its ``degradation`` metadata), or None if it does not say."""
    try:
        return int(json.loads(read_metadata(path)["degradation"])["patch_size"])
    except (KeyError, TypeError, ValueError):
        return None


def _same_size_groups(images: list[np.ndarray]) -> Iterator[list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    yield from groups.values()


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def _like(restored: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Back to the input's layout: a gray input gets the rounded mean of the three restored channels."""
    if original.ndim == 2:
        return np.round(restored.astype(np.float32).mean(axis=2)).astype(np.uint8)
    return restored


@functools.lru_cache(maxsize=2)
def _cached_restorer(weights: str | None) -> Restorer:
    return Restorer(weights, tile=512)


def restore_image(image: Image.Image, weights: str | Path | None = None) -> Image.Image:
    """Restore a PIL image with the shipped weights (or ``weights``); the model is loaded once and cached.

    Gray stays gray ("1"/"L" -> "L"), alpha is passed through untouched ("LA"/"RGBA"/"PA"), palette, YCbCr and
    CMYK become RGB; the ICC profile (except a CMYK one, which no longer fits) and EXIF are copied to the result.
    Large images run as seamless tiles (512 px, or the context of a model trained on small patches, see
    :class:`Restorer`). EXIF orientation is not applied: pixels stay as stored.

    Raises:
        dagn.io.UnsupportedModeError: for 16/32-bit, float and other modes DAGN cannot restore without loss.
    """
    restorer = _cached_restorer(str(weights) if weights is not None else None)
    colour, alpha = split_alpha(image)
    result = merge_alpha(restorer(colour), alpha)
    for key in ("exif", "dpi"):
        if key in image.info:
            result.info[key] = image.info[key]
    if "icc_profile" in image.info and image.mode != "CMYK":
        result.info["icc_profile"] = image.info["icc_profile"]
    return result
