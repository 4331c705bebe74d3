"""Before/after crops of the sampled inputs: the same upright centre region of an input and of its output."""

from __future__ import annotations

import io
import logging

from PIL import Image, ImageOps

from pipeline.storage import Location, read_bytes

__all__ = ["CROP_SIDE", "crop_pair"]

log = logging.getLogger(__name__)

CROP_SIDE = 192  # pixels shown per crop (at most): enough to see ringing and blocking around an edge


def _relative(uri: str, root: Location) -> str | None:
    prefix = root.uri.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else None


def _crop(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    w, h = upright.size
    side_w, side_h = min(CROP_SIDE, w), min(CROP_SIDE, h)
    left, top = (w - side_w) // 2, (h - side_h) // 2
    return upright.crop((left, top, left + side_w, top + side_h))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def crop_pair(input_uri: str, output_uri: str, src: Location, dst: Location) -> tuple[bytes, bytes] | None:
    """PNG bytes of the centre crops of an input (read below SRC) and its output (below DST), or None when either
    cannot be read (a report never fails a run)."""
    source, target = _relative(input_uri, src), _relative(output_uri, dst)
    if source is None or target is None:
        return None
    try:
        before = _crop(read_bytes(src.fs, src.path(source)))
        after = _crop(read_bytes(dst.fs, dst.path(target)))
    except Exception as e:  # a file gone since, or unreadable: leave it out of the sample
        log.warning("report: no crops for %s (%s)", input_uri, e)
        return None
    if before.size != after.size:
        after = after.resize(before.size)
    return _png(before), _png(after)
