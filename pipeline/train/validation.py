"""Stage 3's validation: the model restores held-out JPEGs the way users run it, scored against the clean images."""

from __future__ import annotations

import copy

import numpy as np
import torch

from dagn import metrics as quality
from dagn.inference import Restorer
from dagn.models import DAGN
from pipeline.train.data import ValidationImage

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: DAGN, images: list[ValidationImage], device: torch.device, context: int | None = None
) -> dict[str, float]:
    """Mean PSNR/SSIM of the JPEG input and of the restored image against the clean crop, per QF and overall.

    The model runs as :class:`dagn.Restorer` runs it for users: in regions of ``context`` pixels (None: whole).
    """
    # A copy: the Restorer puts its model in eval mode and channels_last; the trained one stays as DDP holds it.
    restorer = Restorer(model=copy.deepcopy(model), device=str(device), context=context)
    sums: dict[str, list[float]] = {}
    for item in images:
        for q, jpeg_image in item.jpegs.items():
            restored_image = restorer(jpeg_image)
            for key, value in (
                (f"psnr_jpeg_q{q}", quality.psnr(jpeg_image, item.clean)),
                (f"psnr_q{q}", quality.psnr(restored_image, item.clean)),
                (f"ssim_jpeg_q{q}", quality.ssim(jpeg_image, item.clean)),
                (f"ssim_q{q}", quality.ssim(restored_image, item.clean)),
            ):
                sums.setdefault(key, []).append(value)
    out = {f"val_{k}": float(np.mean(v)) for k, v in sums.items()}
    for kind in ("psnr", "ssim"):
        restored = [v for k, v in out.items() if k.startswith(f"val_{kind}_q")]
        jpeg_values = [v for k, v in out.items() if k.startswith(f"val_{kind}_jpeg_q")]
        if restored:
            out[f"val_{kind}"] = float(np.mean(restored))
            out[f"val_{kind}_jpeg"] = float(np.mean(jpeg_values))
    if "val_psnr" in out:
        out["val_psnr_gain"] = out["val_psnr"] - out["val_psnr_jpeg"]
    return out
