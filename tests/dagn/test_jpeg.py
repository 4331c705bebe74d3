import io
import itertools

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dagn import jpeg

ANNEX_K_LUMA_ROW0 = [16, 11, 10, 16, 24, 40, 51, 61]
ANNEX_K_LUMA_COL0 = [16, 12, 14, 14, 18, 24, 49, 72]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return data.astronaut()[::4, ::4].copy()  # 128 x 128 x 3, keeps the 100-quality sweeps fast


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return data.camera()[::4, ::4].copy()  # 128 x 128


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_tables_are_natural_order_annex_k_at_q50(rgb):
    tables = jpeg.quantization_tables(jpeg.compress(rgb, 50))
    assert tables is not None and len(tables) == 2
    luma, chroma = tables
    assert luma.shape == (8, 8) and luma.dtype == np.uint16
    # zigzag order would start 16, 11, 12, 14, 12, ...; natural order is the Annex K table row by row
    assert luma[0].tolist() == ANNEX_K_LUMA_ROW0
    assert luma[:, 0].tolist() == ANNEX_K_LUMA_COL0
    assert chroma[0, :4].tolist() == [17, 18, 24, 47]
    np.testing.assert_array_equal(tables[0], jpeg.ijg_tables(50)[0])
    np.testing.assert_array_equal(tables[1], jpeg.ijg_tables(50)[1])


def test_gray_file_has_one_table(gray):
    tables = jpeg.quantization_tables(jpeg.compress(gray, 75))
    assert tables is not None and len(tables) == 1
    np.testing.assert_array_equal(tables[0], jpeg.ijg_tables(75)[0])


@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_estimate_quality_exact_for_every_quality(kind, request):
    image = request.getfixturevalue(kind)
    estimates = [jpeg.estimate_quality(jpeg.compress(image, q)) for q in range(1, 101)]
    assert estimates == list(range(1, 101))


def test_ijg_tables_distinct_per_quality():
    lumas = {jpeg.ijg_tables(q)[0].tobytes() for q in range(1, 101)}
    assert len(lumas) == 100


def _save_with_qtables(image: np.ndarray, qtables: list[np.ndarray]) -> bytes:
    tables = [np.asarray(t, dtype=int).reshape(64).tolist() for t in qtables]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", qtables=tables)
    return buffer.getvalue()


def test_estimate_quality_non_standard_tables(rgb):
    # IJG tables scaled by 8 %: between the neighbouring qualities, close to the original one
    for q, low, high in [(20, 17, 20), (60, 55, 60), (90, 88, 90)]:
        scaled = [np.clip(np.round(t * 1.08), 1, 255) for t in jpeg.ijg_tables(q)]
        assert low <= jpeg.estimate_quality(_save_with_qtables(rgb, scaled)) <= high
    # flat tables: coarser steps never give a higher quality, and the extremes land at the ends
    estimates = [
        jpeg.estimate_quality(_save_with_qtables(rgb, [np.full((8, 8), v), np.full((8, 8), v)]))
        for v in (1, 2, 8, 30, 120, 255)
    ]
    assert estimates == sorted(estimates, reverse=True)
    assert estimates[0] == 100 and estimates[1] >= 95 and estimates[-2] <= 15 and estimates[-1] == 1


def test_custom_qtables_read_back_unchanged(rgb):
    tables = [np.arange(1, 65).reshape(8, 8), np.arange(64, 0, -1).reshape(8, 8)]
    read = jpeg.quantization_tables(_save_with_qtables(rgb, tables))
    assert [t.tolist() for t in read] == [t.tolist() for t in tables]


def test_estimate_quality_none_on_non_jpeg(rgb):
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    good = jpeg.compress(rgb, 50)
    for payload in [b"", b"garbage" * 10, png.getvalue(), b"\xff\xd8\xff", good[:2], bytes(range(256))]:
        assert jpeg.estimate_quality(payload) is None
        assert jpeg.quantization_tables(payload) is None
    assert jpeg.estimate_quality("not bytes") is None  # type: ignore[arg-type]


def test_estimate_quality_survives_truncated_scan(rgb):
    data_ = jpeg.compress(rgb, 37)
    assert jpeg.estimate_quality(data_[: len(data_) // 2]) == 37


@pytest.mark.parametrize("quality", [0, 101, -5])
def test_compress_rejects_quality_out_of_range(rgb, quality):
    with pytest.raises(ValueError, match=r"quality must be in 1\.\.100"):
        jpeg.compress(rgb, quality)


@pytest.mark.parametrize("quality", [50.0, True, "50", None])
def test_compress_rejects_non_integer_quality(rgb, quality):
    with pytest.raises(TypeError, match="quality must be an integer"):
        jpeg.compress(rgb, quality)


def test_compress_accepts_numpy_integer(rgb):
    assert jpeg.estimate_quality(jpeg.compress(rgb, np.int64(42))) == 42


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8, 3), np.uint8)],
)
def test_compress_rejects_bad_arrays(bad):
    with pytest.raises(ValueError):
        jpeg.compress(bad, 50)


def test_compress_rejects_unsupported_pil_mode():
    with pytest.raises(ValueError, match="mode"):
        jpeg.compress(Image.new("RGBA", (8, 8)), 50)


def test_psnr_increases_with_quality(rgb):
    scores = [psnr(rgb, jpeg.roundtrip(rgb, q)) for q in (5, 10, 20, 40, 60, 80, 95)]
    assert all(b > a for a, b in itertools.pairwise(scores)), scores
    assert scores[0] < 25 and scores[-1] > 30


def test_roundtrip_keeps_mode_and_shape(rgb, gray):
    out_rgb = jpeg.roundtrip(rgb[:37, :53], 50)
    assert out_rgb.shape == (37, 53, 3) and out_rgb.dtype == np.uint8
    out_gray = jpeg.roundtrip(gray[:37, :53], 50)
    assert out_gray.shape == (37, 53) and out_gray.dtype == np.uint8
    out_pil = jpeg.roundtrip(Image.fromarray(rgb), 50)
    np.testing.assert_array_equal(out_pil, jpeg.roundtrip(rgb, 50))


def test_compress_uses_pillow_defaults(rgb):
    """Same bytes as a plain Pillow save: the published JPEG rows depend on these exact settings."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=30)
    assert jpeg.compress(rgb, 30) == buffer.getvalue()
    # 4:2:0 chroma subsampling: the luma component samples 2 x 2
    with Image.open(io.BytesIO(jpeg.compress(rgb, 30))) as pil:
        assert pil.layer[0][1:3] == (2, 2)
