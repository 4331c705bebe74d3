import numpy as np
import pydantic
import pytest
from skimage import data

from dagn.degradation import DegradationConfig, DegradedPatch, degrade, sample_quality

CFG = DegradationConfig()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def coordinate_image(height: int, width: int) -> np.ndarray:
    """RGB image whose pixel (r, c) stores r in red and c in green, so a patch tells where it came from."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_defaults_match_released_recipe():
    assert CFG.patch_size == 96 and CFG.crop_margin == 8 and CFG.crop_size == 104
    assert CFG.p_uniform_quality == 0.25 and CFG.uniform_quality_range == (8, 96)
    assert CFG.quality_set == (10, 20, 30, 40, 50, 60)
    assert CFG.p_misaligned == 0.5 and CFG.flip_rotate is True


def test_config_is_frozen_and_strict():
    with pytest.raises(pydantic.ValidationError):
        CFG.patch_size = 64
    with pytest.raises(pydantic.ValidationError):
        DegradationConfig(patch_sise=64)
    with pytest.raises(pydantic.ValidationError):
        DegradationConfig(uniform_quality_range=(50, 10))
    with pytest.raises(pydantic.ValidationError):
        DegradationConfig(quality_set=(0, 10))
    with pytest.raises(pydantic.ValidationError):
        DegradationConfig(p_misaligned=1.5)


def test_shapes_and_dtype_rgb(astronaut):
    patch = degrade(astronaut, np.random.default_rng(0), CFG)
    assert isinstance(patch, DegradedPatch)
    assert patch.clean.shape == patch.jpeg.shape == (96, 96, 3)
    assert patch.clean.dtype == patch.jpeg.dtype == np.uint8
    assert 8 <= patch.quality <= 96


def test_grayscale():
    patch = degrade(data.camera(), np.random.default_rng(0), CFG, quality=30)
    assert patch.clean.shape == patch.jpeg.shape == (96, 96)
    assert patch.quality == 30


def test_deterministic_given_seed(astronaut):
    first = [degrade(astronaut, np.random.default_rng(7), CFG) for _ in range(2)]
    assert all(np.array_equal(first[0].clean, p.clean) for p in first)
    assert all(np.array_equal(first[0].jpeg, p.jpeg) for p in first)
    assert first[0].quality == first[1].quality and first[0].offset == first[1].offset
    rng = np.random.default_rng(7)
    other = [degrade(astronaut, rng, CFG) for _ in range(2)]
    assert not np.array_equal(other[0].clean, other[1].clean)


def test_quality_distribution():
    rng = np.random.default_rng(1)
    qualities = np.array([sample_quality(rng, CFG) for _ in range(4000)])
    assert qualities.min() >= 8 and qualities.max() <= 96
    # 75 % from the set plus the uniform draws that land on a set value (6 of 89 values)
    in_set = np.isin(qualities, CFG.quality_set).mean()
    expected = 0.75 + 0.25 * 6 / 89
    assert abs(in_set - expected) < 0.03
    off_set = qualities[~np.isin(qualities, CFG.quality_set)]
    assert off_set.min() < 15 and off_set.max() > 90  # the uniform draw spans the range
    for q in CFG.quality_set:
        assert abs(np.mean(qualities == q) - (0.75 / 6 + 0.25 / 89)) < 0.025


def test_quality_set_only():
    cfg = DegradationConfig(p_uniform_quality=0.0, quality_set=(33,))
    rng = np.random.default_rng(0)
    assert {sample_quality(rng, cfg) for _ in range(50)} == {33}


def test_misaligned_rate():
    image = coordinate_image(120, 120)
    rng = np.random.default_rng(3)
    offsets = [degrade(image, rng, CFG, quality=90).offset for _ in range(1000)]
    shifted = np.mean([o != (0, 0) for o in offsets])
    # a misaligned draw lands on (0, 0) with probability 1 / 81
    assert abs(shifted - 0.5 * 80 / 81) < 0.05
    assert {dy for dy, _ in offsets} == set(range(9)) and {dx for _, dx in offsets} == set(range(9))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_misaligned_extremes(p):
    cfg = DegradationConfig(p_misaligned=p)
    rng = np.random.default_rng(0)
    offsets = [degrade(coordinate_image(104, 104), rng, cfg, quality=90).offset for _ in range(40)]
    if p == 0.0:
        assert set(offsets) == {(0, 0)}
    else:
        assert len(set(offsets)) > 20


def test_clean_patch_is_a_transformed_crop():
    """Without flips, the clean patch is a plain crop; with them, all 8 dihedral transforms occur."""
    image = coordinate_image(200, 180)
    rng = np.random.default_rng(5)
    plain = DegradationConfig(flip_rotate=False)
    for _ in range(20):
        patch = degrade(image, rng, plain, quality=90)
        top, left = int(patch.clean[0, 0, 0]), int(patch.clean[0, 0, 1])
        np.testing.assert_array_equal(patch.clean, image[top : top + 96, left : left + 96])
    seen = set()
    for _ in range(200):
        clean = degrade(image, rng, CFG, quality=90).clean.astype(int)
        row_step = (clean[1, 0, 0] - clean[0, 0, 0], clean[1, 0, 1] - clean[0, 0, 1])
        col_step = (clean[0, 1, 0] - clean[0, 0, 0], clean[0, 1, 1] - clean[0, 0, 1])
        seen.add((row_step, col_step))
    assert len(seen) == 8


def test_jpeg_patch_aligned_with_clean(astronaut):
    rng = np.random.default_rng(11)
    for _ in range(10):
        patch = degrade(astronaut, rng, CFG, quality=50)
        aligned = psnr(patch.clean, patch.jpeg)
        assert aligned > 20
        # shifting either patch by a pixel must not fit better than the true alignment
        shifted = psnr(patch.clean[1:, 1:], patch.jpeg[:-1, :-1])
        assert aligned > shifted


def test_small_image_is_padded_by_reflection():
    image = coordinate_image(50, 40)
    patch = degrade(image, np.random.default_rng(0), CFG, quality=80)
    assert patch.clean.shape == patch.jpeg.shape == (96, 96, 3)
    assert patch.clean[..., 0].max() < 50 and patch.clean[..., 1].max() < 40
    gray = degrade(np.full((5, 200), 77, np.uint8), np.random.default_rng(0), CFG, quality=80)
    assert gray.clean.shape == (96, 96) and np.all(gray.clean == 77)


@pytest.mark.parametrize(
    "bad", [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 4), np.uint8), np.zeros((0, 64), np.uint8)]
)
def test_rejects_bad_images(bad):
    with pytest.raises(ValueError):
        degrade(bad, np.random.default_rng(0), CFG)
