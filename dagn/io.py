"""The only converters between images and tensors.

Two representations meet here:

* **arrays**: uint8 numpy, H x W x 3 (RGB) or H x W (gray), the form images have on disk and in the pipeline;
* **tensors**: float32 NCHW in [0, 1], the form every dagn network reads and writes.

Rounding back to uint8 is round-half-to-even after clamping to [0, 1] (``torch.round``), so an array survives
``to_tensor`` -> ``to_array`` unchanged. PIL images enter through :func:`split_alpha` and leave through
:func:`merge_alpha`; how each PIL mode maps onto an array is decided there and nowhere else.

torch is imported inside the tensor functions only: the PIL/array half of this module serves processes that decode
and encode images without ever running a model (the restore pipeline's I/O workers), and torch costs them ~2 s of
start-up each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = [
    "UnsupportedModeError",
    "check_image",
    "merge_alpha",
    "split_alpha",
    "to_array",
    "to_arrays",
    "to_tensor",
]


class UnsupportedModeError(ValueError):
    """A PIL image mode that cannot be restored without silently losing information (e.g. 16-bit or float)."""


# PIL mode -> (mode of the colour part, whether the image carries alpha). Modes not listed are refused: 16/32-bit
# integer and float images would lose their depth in an 8-bit model; LAB/HSV have no defined RGB meaning here.
_MODES: dict[str, tuple[str, bool]] = {
    "1": ("L", False),
    "L": ("L", False),
    "LA": ("L", True),
    "La": ("L", True),
    "P": ("RGB", False),
    "PA": ("RGB", True),
    "RGB": ("RGB", False),
    "RGBX": ("RGB", False),
    "YCbCr": ("RGB", False),
    "CMYK": ("RGB", False),
    "RGBA": ("RGB", True),
    "RGBa": ("RGB", True),
}


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an array image (uint8, H x W or H x W x 3, non-empty); returns it unchanged."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an H x W (gray) or H x W x 3 (RGB) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def to_tensor(images: np.ndarray | list[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 image(s) -> float32 (N, C, H, W) in [0, 1]; C is 1 for gray, 3 for RGB.

    Args:
        images: one array (N = 1) or a list of arrays of identical shape.
        device: where the tensor goes; the uint8 data is moved before the float conversion (4x less traffic).
    """
    import torch

    batch = [check_image(im) for im in (images if isinstance(images, list) else [images])]
    if not batch:
        raise ValueError("no images to convert")
    if any(im.shape != batch[0].shape for im in batch):
        raise ValueError(f"images in one tensor must share a shape, got {sorted({im.shape for im in batch})}")
    stacked = np.stack(batch)
    if stacked.ndim == 3:  # gray: (N, H, W) -> (N, H, W, 1)
        stacked = stacked[..., None]
    tensor = torch.from_numpy(stacked).to(device).permute(0, 3, 1, 2)
    return tensor.float().div_(255.0).contiguous()


def to_arrays(tensor: torch.Tensor) -> list[np.ndarray]:
    """float (N, C, H, W) in [0, 1] -> N uint8 arrays, H x W for C = 1 and H x W x 3 for C = 3."""
    import torch

    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(f"expected a (N, 1 or 3, H, W) tensor, got shape {tuple(tensor.shape)}")
    data = tensor.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    data = data.permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(im[..., 0] if im.shape[2] == 1 else im) for im in data]


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """float (1, C, H, W) or (C, H, W) in [0, 1] -> one uint8 array (see :func:`to_arrays`)."""
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise ValueError(f"expected one image, (1, C, H, W) or (C, H, W), got shape {tuple(tensor.shape)}")
    return to_arrays(tensor)[0]


def split_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image -> (uint8 colour array, uint8 H x W alpha or None).

    Gray modes ("1", "L", "LA") give an H x W array so gray stays gray; palette, YCbCr and CMYK are converted to RGB
    (CMYK numerically, by Pillow: colour-manage before calling this if the file has a CMYK profile).
    Premultiplied modes are un-premultiplied first.

    Raises:
        UnsupportedModeError: for 16/32-bit, float, LAB, HSV and other modes without an 8-bit RGB/gray meaning.
    """
    mode = image.mode
    if mode not in _MODES:
        raise UnsupportedModeError(
            f"unsupported image mode {mode!r}: only 8-bit gray, RGB, palette and CMYK images (optionally with alpha) "
            "can be restored"
        )
    colour_mode, has_alpha = _MODES[mode]
    if mode == "P" and "transparency" in image.info:
        has_alpha = True
    alpha = None
    if has_alpha:
        with_alpha = image.convert("LA" if colour_mode == "L" else "RGBA")
        alpha = np.asarray(with_alpha.getchannel("A"), dtype=np.uint8).copy()
        image = with_alpha
    colour = np.asarray(image.convert(colour_mode), dtype=np.uint8).copy()
    return colour, alpha


def merge_alpha(colour: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """Inverse of :func:`split_alpha`: an "L", "LA", "RGB" or "RGBA" PIL image."""
    check_image(colour)
    pil = Image.fromarray(np.ascontiguousarray(colour))  # 2-D -> "L", H x W x 3 -> "RGB"
    if alpha is None:
        return pil
    if alpha.shape != colour.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError(f"alpha of shape {alpha.shape} / {alpha.dtype} does not match image {colour.shape[:2]}")
    pil.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
    return pil
