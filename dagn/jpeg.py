"""JPEG encoding, decoding and quality estimation with Pillow's libjpeg.

Every JPEG the project makes goes through :func:`compress`, so training degradations and the benchmark rows use one
encoder with one set of settings: Pillow's defaults plus ``quality=q`` (4:2:0 chroma subsampling for RGB, baseline,
no optimisation). That setting reproduces the published JPEG rows of LIVE1 and BSD500 exactly; changing it (e.g.
``subsampling=0``) would silently shift every baseline.

:func:`estimate_quality` recovers the IJG quality factor from the quantization tables in a file. DAGN itself is blind
and never needs it; it serves to label inputs, to check data sets and to report which QF an archive was saved at.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = [
    "compress",
    "decode",
    "estimate_quality",
    "ijg_tables",
    "quantization_tables",
    "roundtrip",
]

# ITU-T T.81 Annex K.1 / K.2 example tables, natural (row-major) order. IJG libjpeg scales these for quality q.
_LUMA_BASE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
)
_CHROMA_BASE = np.full((8, 8), 99, dtype=np.int64)
_CHROMA_BASE[:4, :4] = [
    [17, 18, 24, 47],
    [18, 21, 26, 66],
    [24, 26, 56, 99],
    [47, 66, 99, 99],
]


def _validate_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise TypeError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    return int(quality)


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """The (luminance, chrominance) 8x8 tables libjpeg writes for ``quality``, natural order, uint16.

    Mirrors ``jpeg_set_quality(..., force_baseline=TRUE)``, which Pillow calls: the Annex K tables scaled by
    ``5000 / q`` below 50 and ``200 - 2 q`` from 50 on, rounded, and clamped to 1..255.
    """
    quality = _validate_quality(quality)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    luma = np.clip((_LUMA_BASE * scale + 50) // 100, 1, 255)
    chroma = np.clip((_CHROMA_BASE * scale + 50) // 100, 1, 255)
    return luma.astype(np.uint16), chroma.astype(np.uint16)


# Candidate tables for q = 1..100, shape (100, 2, 64), computed once; log2 taken for the best-estimate distance.
_CANDIDATES = np.stack([np.stack(ijg_tables(q)).reshape(2, 64) for q in range(1, 101)])
_LOG_CANDIDATES = np.log2(_CANDIDATES.astype(np.float64))


def _to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"expected a PIL image in mode 'L' or 'RGB', got {image.mode!r}; convert it first")
        return image
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an H x W (gray) or H x W x 3 (RGB) array, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot compress an empty image of shape {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image))


def compress(image: Image.Image | np.ndarray, quality: int) -> bytes:
    """Encode ``image`` as JPEG at IJG ``quality`` (1..100) with Pillow's default settings.

    Args:
        image: uint8 array, H x W x 3 (RGB) or H x W (gray), or a PIL image in mode ``RGB`` or ``L``.
        quality: IJG quality factor, 1 (worst) to 100.

    Returns:
        The JPEG file as bytes.

    Raises:
        ValueError: on a quality outside 1..100 or an image that is not uint8 RGB / gray.
        TypeError: on a quality that is not an integer, or an image that is neither array nor PIL image.
    """
    quality = _validate_quality(quality)
    pil = _to_pil(image)
    buffer = io.BytesIO()
    # Only quality: every other setting stays Pillow's default (see the module docstring for why).
    pil.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes to a uint8 array: H x W for grayscale files, H x W x 3 RGB for everything else.

    No EXIF orientation is applied; callers that need it (the pipeline) handle it themselves.
    """
    with Image.open(io.BytesIO(data)) as pil:
        if pil.mode != "L":
            pil = pil.convert("RGB")
        return np.array(pil, dtype=np.uint8)


def roundtrip(image: Image.Image | np.ndarray, quality: int) -> np.ndarray:
    """JPEG-compress and decode ``image``: the degraded input a restoration model sees. Gray in, gray out."""
    return decode(compress(image, quality))


def quantization_tables(data: bytes) -> list[np.ndarray] | None:
    """The quantization tables of a JPEG file, ordered by table id, each 8x8 uint16 in natural (row-major) order.

    The file stores tables in zigzag order; Pillow (>= 8.3, checked on 13.0) already reorders them to natural
    order in ``Image.quantization``, so they are used as is (``tests/dagn/test_jpeg.py`` pins this against the
    Annex K table). Only the headers are parsed, no pixels are decoded.

    Returns:
        The tables, or None when ``data`` is not a JPEG with quantization tables (PNG, truncated or garbage bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(bytes(data))) as pil:
            # MPO (multi-picture, many cameras) is a JPEG subclass in Pillow and carries the same tables.
            if pil.format not in ("JPEG", "MPO"):
                return None
            tables = getattr(pil, "quantization", None) or {}
    except Exception:
        return None
    result = []
    for table_id in sorted(tables):
        values = np.asarray(tables[table_id], dtype=np.int64)
        if values.size != 64 or values.min() < 1 or values.max() > 65535:
            return None
        result.append(values.reshape(8, 8).astype(np.uint16))
    return result or None


def estimate_quality(data: bytes) -> int | None:
    """The IJG quality factor (1..100) a JPEG file was most likely saved at, from its quantization tables.

    Exact for files written with libjpeg's standard scaling of the Annex K tables (Pillow, ImageMagick, most
    software): every q in 1..100 gives distinct tables, so the match is unique, for colour and gray files alike.
    Table 0 is compared with the luminance table and any further tables with the chrominance table.

    For other tables (camera firmware, Photoshop, custom ``qtables``) the answer is the IJG quality whose tables are
    closest in mean squared log2 ratio over all coefficients (the candidates include libjpeg's clamping to 1..255).
    A log distance because quality acts as a multiplicative scale on the tables, so a relative error weights the
    fine low-frequency steps as much as the coarse high-frequency ones; squared rather than absolute because the
    absolute log distance is flat and multimodal for tables far from Annex K shapes (e.g. flat ones), the squared
    one has a single clear minimum. Ties go to the lower quality.

    Returns:
        The quality, or None when ``data`` is not a JPEG with quantization tables. Never raises on bad bytes.
    """
    try:
        tables = quantization_tables(data)
    except TypeError:
        return None
    if not tables:
        return None
    observed = np.stack([t.reshape(64) for t in tables]).astype(np.float64)
    which = np.minimum(np.arange(len(tables)), 1)  # 0 -> luminance candidate, >= 1 -> chrominance candidate
    candidates = _CANDIDATES[:, which, :]
    exact = np.flatnonzero((candidates == observed).all(axis=(1, 2)))
    if exact.size:
        return int(exact[0]) + 1
    distance = np.square(_LOG_CANDIDATES[:, which, :] - np.log2(observed)).mean(axis=(1, 2))
    return int(np.argmin(distance)) + 1
