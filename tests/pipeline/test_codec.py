"""Decoding and encoding rules of the restore pipeline, on real files made with Pillow (no Ray, no storage)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.codec import DecodeError, EncodeError, OutputFormat, decode_image, encode_image, output_key

LIMIT = 10_000_000


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=30, **options)
    return buffer.getvalue()


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return Image.fromarray(np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8))


def test_exif_orientation_is_applied_and_reset():
    stored = _gradient(60, 40)  # stored landscape; orientation 6 means "rotate 90 degrees clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "dagn-test"
    decoded = decode_image(_jpeg(stored, exif=exif.tobytes()), max_pixels=LIMIT)
    assert decoded.pixels.shape == (60, 40, 3)  # upright: portrait
    kept = Image.Exif()
    kept.load(decoded.exif)
    assert 0x0112 not in kept and kept[0x010F] == "dagn-test"


def test_gray_stays_gray_and_icc_travels():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    gray = decode_image(_jpeg(_gradient(32, 16).convert("L")), max_pixels=LIMIT)
    assert gray.pixels.shape == (16, 32) and gray.alpha is None
    rgb = decode_image(_jpeg(_gradient(32, 16), icc_profile=icc), max_pixels=LIMIT)
    assert rgb.icc_profile == icc and rgb.format == "JPEG"
    data = encode_image(rgb.pixels, alpha=None, fmt="JPEG", quality=90, icc_profile=icc, exif=None)
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == icc


def test_cmyk_becomes_rgb_and_alpha_is_split():
    cmyk = decode_image(_jpeg(_gradient(24, 24).convert("CMYK")), max_pixels=LIMIT)
    assert cmyk.pixels.shape == (24, 24, 3)
    rgba = _gradient(20, 10).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.alpha, np.arange(200, dtype=np.uint8).reshape(10, 20))
    png = encode_image(decoded.pixels, alpha=decoded.alpha, fmt="PNG", quality=95)
    assert Image.open(io.BytesIO(png)).mode == "RGBA"
    with pytest.raises(EncodeError, match="alpha"):
        encode_image(decoded.pixels, alpha=decoded.alpha, fmt="JPEG", quality=95)


def _bomb() -> bytes:
    """A real JPEG whose frame header claims 60000 x 60000 pixels (3.6 gigapixels)."""
    data = bytearray(_jpeg(_gradient(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\x00garbage" * 50, "not an image"),
        (None, "truncated"),
        ("bomb", "decompression bomb guard"),
        ("deep", "unsupported image mode 'I;16'"),
    ],
)
def test_bad_inputs_have_clear_messages(data, message):
    if data is None:
        whole = _jpeg(_gradient(64, 64))
        data = whole[: len(whole) // 2]
    elif data == "bomb":
        data = _bomb()
    elif data == "deep":
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)).save(buffer, format="PNG")
        data = buffer.getvalue()
    with pytest.raises(DecodeError, match=message):
        decode_image(data, max_pixels=LIMIT)


def test_output_names_depend_on_the_name_only():
    assert output_key("a/b.JPG", OutputFormat.same) == "a/b.JPG"
    assert output_key("a/b.tif", OutputFormat.same) == "a/b.png"
    assert output_key("a/b.jpg", OutputFormat.webp) == "a/b.webp"
    assert output_key("a/b.jpeg", OutputFormat.jpeg) == "a/b.jpeg"


def _forged(width: int, height: int, **options) -> bytes:
    """A 16 x 16 JPEG whose frame header claims ``width`` x ``height`` (libjpeg pads the rest with flat gray)."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=50, **options)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc2" if options.get("progressive") else b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("size", "options"), [((1000, 1000), {}), ((8000, 12000), {}), ((1000, 1000), {"progressive": True})]
)
def test_forged_sizes_are_corrupt_not_gray(size, options):
    data = _forged(*size, **options)
    assert len(data) < 1000
    with Image.open(io.BytesIO(data)) as image:  # the trap: Pillow decodes it "fine", as flat gray
        image.load()
        assert image.size == size
    with pytest.raises(DecodeError, match=f"cannot hold the {size[0]} x {size[1]} image"):
        decode_image(data, max_pixels=10**9)


@pytest.mark.parametrize("options", [{}, {"optimize": True}, {"progressive": True, "optimize": True}])
def test_the_flattest_real_jpegs_still_decode(options):
    """A flat image at the lowest quality is the least data a real JPEG of its size has (about 2 bits a block)."""
    for mode in ("L", "RGB"):
        buffer = io.BytesIO()
        Image.new(mode, (1200, 800), 128).save(buffer, "JPEG", quality=1, **options)
        assert decode_image(buffer.getvalue(), max_pixels=10**8).pixels.shape[:2] == (800, 1200)
