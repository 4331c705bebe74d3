"""Image files <-> arrays for the restore pipeline: decoding with every safety check, encoding with metadata kept.

Pure functions on bytes (no Ray, no storage), so each rule is tested directly:

* **Decode** (:func:`decode_image`): refuses empty files, non-images and decompression bombs (the pixel count from
  the header is checked *before* any pixel is decoded), applies the EXIF orientation, converts CMYK to sRGB (through
  its ICC profile when there is one), keeps gray as gray and splits off alpha (:func:`dagn.io.split_alpha` decides
  how each mode maps). The ICC profile and the EXIF block (orientation reset) travel with the pixels.
* **Encode** (:func:`encode_image`): JPEG, PNG or WebP with the ICC profile and EXIF written back.
* **Naming** (:func:`output_key`): the output name depends on the input *name* only, never on its content, so a
  resumed run can tell what is done from one listing of the destination, without reading any input.
"""

from __future__ import annotations

import io
import math
import posixpath
import warnings
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from dagn.io import UnsupportedModeError, merge_alpha, split_alpha
from pipeline.extensions import JPEG_EXTENSIONS

__all__ = [
    "MAX_PIXELS",
    "DecodeError",
    "Decoded",
    "EncodeError",
    "OutputFormat",
    "decode_image",
    "decode_rgb",
    "encode_image",
    "output_format",
    "output_key",
]

_ORIENTATION = 0x0112
MAX_PIXELS = 100_000_000  # the default decompression bomb guard (restore's --max-pixels, training's images)
_SUFFIXES = {"JPEG": JPEG_EXTENSIONS, "PNG": (".png",), "WEBP": (".webp",)}


class OutputFormat(str, Enum):
    """File format of restored images."""

    same = "same"
    png = "png"
    jpeg = "jpeg"
    webp = "webp"


class DecodeError(ValueError):
    """An input that cannot be restored; the message is written to the manifest as is."""


class EncodeError(ValueError):
    """A restored image that cannot be written in the requested format."""


@dataclass
class Decoded:
    """A decoded, upright image ready for the model, with what the output file should carry."""

    pixels: np.ndarray  # uint8, H x W (gray) or H x W x 3 (RGB)
    alpha: np.ndarray | None  # uint8 H x W, passed through untouched
    format: str  # Pillow's name of the input format ("JPEG", "PNG", ...)
    icc_profile: bytes | None
    exif: bytes | None  # orientation reset: the pixels are already upright


def output_format(key: str, requested: OutputFormat) -> str:
    """Pillow format name for the output of ``key``: ``same`` follows the input's extension (JPEG, PNG and WebP stay
    what they are; anything else becomes PNG), otherwise the requested format."""
    if requested is not OutputFormat.same:
        return requested.value.upper()
    suffix = posixpath.splitext(key)[1].lower()
    return next((fmt for fmt, suffixes in _SUFFIXES.items() if suffix in suffixes), "PNG")


def output_key(key: str, requested: OutputFormat) -> str:
    """Relative output name for input ``key``: the same name when the format's extension already fits, otherwise
    the extension replaced (``a/b.tif`` -> ``a/b.png``; ``a/b.jpg`` with ``--format webp`` -> ``a/b.webp``)."""
    fmt = output_format(key, requested)
    stem, suffix = posixpath.splitext(key)
    return key if suffix.lower() in _SUFFIXES[fmt] else stem + _SUFFIXES[fmt][0]


def decode_image(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode image bytes for restoration.

    Args:
        data: the whole file.
        max_pixels: largest width x height accepted; larger images are refused before decoding (bomb guard).

    Raises:
        DecodeError: with a message fit for the manifest, for every input that cannot be restored.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    fmt = "image"
    try:
        with warnings.catch_warnings():
            # Pillow's own guard warns at 89 MP and raises at 179 MP; ours (max_pixels) is explicit and checked first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
            width, height = pil.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"decompression bomb guard: {width} x {height} = {width * height:,} pixels exceeds the limit "
                    f"of {max_pixels:,} (raise --max-pixels to allow it)"
                )
            fmt = pil.format or fmt
            short = _short_jpeg_scan(data) if fmt == "JPEG" else None
            if short:
                raise DecodeError(short)
            pil.load()
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(f"not an image: no known image format ({len(data):,} bytes)") from None
    except Image.DecompressionBombError as e:
        raise DecodeError(f"decompression bomb guard (Pillow): {e}") from None
    except Exception as e:
        raise DecodeError(f"corrupt or truncated {fmt} data: {e}") from None

    icc = pil.info.get("icc_profile") or None
    exif = pil.getexif()
    upright = ImageOps.exif_transpose(pil)  # also drops the orientation tag from its own EXIF
    exif_bytes = None
    if len(exif):
        exif.pop(_ORIENTATION, None)
        exif_bytes = exif.tobytes() if len(exif) else None

    if upright.mode == "CMYK":
        upright, icc = _cmyk_to_srgb(upright, icc)
    try:
        pixels, alpha = split_alpha(upright)
    except UnsupportedModeError as e:
        raise DecodeError(str(e)) from None
    return Decoded(pixels=pixels, alpha=alpha, format=fmt, icc_profile=icc, exif=exif_bytes)


def decode_rgb(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes as uint8 H x W x 3 RGB (what training cuts patches from), with :func:`decode_image`'s
    checks; gray images get three equal channels and alpha is dropped.

    Raises:
        DecodeError: as :func:`decode_image`.
    """
    pixels = decode_image(data, max_pixels=max_pixels).pixels
    return np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=2)) if pixels.ndim == 2 else pixels


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}  # Huffman-coded frames (arithmetic coding has no bit floor)
_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a length field


def _short_jpeg_scan(data: bytes) -> str | None:
    """Why a JPEG's entropy-coded data is too short for the size its frame header declares, or None.

    libjpeg decodes such a file "successfully": it warns of a premature end and fills the rest with flat gray, and
    Pillow drops the warning. A forged header over a tiny scan (1000 x 1000 declared over 16 x 16 of data) would
    then be restored for minutes and marked ok. Huffman coding spends at least one bit per 8 x 8 block and component
    (the DC code, in every mode), so fewer bits than blocks cannot be a whole image.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, frame = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None  # not a marker where one must be: Pillow's own decoder reports it
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF:
            frame = data[pos + 4 : pos + 2 + length]
        elif marker in _ARITHMETIC:
            return None
        elif marker == 0xDA:  # start of scan: everything after its header is (mostly) entropy-coded data
            if frame is None or len(frame) < 6:
                return None
            return _blocks_check(frame, len(data) - (pos + 2 + length))
        pos += 2 + length
    return None


def _blocks_check(frame: bytes, scan_bytes: int) -> str | None:
    height, width, components = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
    sampling = [(b >> 4, b & 15) for b in frame[7 : 6 + 3 * components : 3]]
    if not sampling or not all(h and v for h, v in sampling):
        return None
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    blocks = sum(
        math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8) for h, v in sampling
    )
    if 8 * scan_bytes >= blocks:
        return None
    return (
        f"corrupt JPEG: {scan_bytes:,} bytes of scan data cannot hold the {width} x {height} image its header "
        "declares (a forged size or a premature end of data)"
    )


def _cmyk_to_srgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Colour-managed CMYK -> sRGB when the file has a profile (the output then carries sRGB), else Pillow's formula."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            return converted, ImageCms.ImageCmsProfile(srgb).tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion below
    return image.convert("RGB"), None


def encode_image(
    pixels: np.ndarray,
    *,
    alpha: np.ndarray | None,
    fmt: str,
    quality: int,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> bytes:
    """Encode a restored image as ``fmt`` ("JPEG", "PNG", "WEBP") with the input's ICC profile and EXIF.

    JPEG is written at ``quality`` with 4:4:4 chroma from quality 90 up (restored detail is not thrown away again)
    and 4:2:0 below; WebP at ``quality`` (lossy); PNG losslessly. JPEG has no alpha channel, so an image with alpha
    is refused rather than silently flattened.

    Raises:
        EncodeError: for alpha with JPEG, or an unknown format.
    """
    image = merge_alpha(pixels, alpha)
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = exif
    if fmt == "JPEG":
        if alpha is not None:
            raise EncodeError("JPEG cannot store the alpha channel of this image: use --format png or webp")
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        options.update(quality=quality)
    elif fmt != "PNG":
        raise EncodeError(f"unsupported output format {fmt!r}")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
