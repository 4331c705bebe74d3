"""Tests of dagn.metrics against closed-form values and scikit-image; no data outside the package is needed.

The golden test against the published FBCNN per-image values lives in bench/check_metrics.py (it needs the shared
reference data).
"""

import math

import numpy as np
import pytest
from skimage import data
from skimage.metrics import structural_similarity

from dagn.metrics import psnr, psnr_b, psnr_b_y, psnr_y, rgb_to_y, ssim, ssim_y

# Crops with sizes that are not multiples of 8, to exercise partial blocks; small enough to keep the file fast.
ASTRONAUT = data.astronaut()[100:350, 150:451]  # 250 x 301 x 3
CAMERA = data.camera()[50:290, 100:357]  # 240 x 257


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def _blocky(img: np.ndarray, amplitude: int, seed: int = 0) -> np.ndarray:
    """Add one random constant offset per 8x8 block (the same for all channels): pure blocking artifacts."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    offsets = rng.integers(-amplitude, amplitude + 1, size=(-(-h // 8), -(-w // 8)))
    field = np.kron(offsets, np.ones((8, 8), dtype=np.int64))[:h, :w]
    if img.ndim == 3:
        field = field[:, :, None]
    return np.clip(img.astype(np.int64) + field, 0, 255).astype(np.uint8)


# --- PSNR -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [ASTRONAUT, CAMERA], ids=["rgb", "gray"])
def test_psnr_of_constant_offset(ref):
    ref = np.clip(ref, 3, 252)
    signs = np.where(np.random.default_rng(1).random(ref.shape) < 0.5, -3, 3)
    x = (ref.astype(np.int64) + signs).astype(np.uint8)
    assert psnr(x, ref) == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-12)


def test_psnr_matches_direct_formula():
    x = _noisy(ASTRONAUT, 5.0)
    mse = np.mean((x.astype(np.float64) - ASTRONAUT) ** 2)
    assert psnr(x, ASTRONAUT) == pytest.approx(20 * math.log10(255 / math.sqrt(mse)), abs=1e-10)


@pytest.mark.parametrize("img", [ASTRONAUT, CAMERA], ids=["rgb", "gray"])
def test_identical_images(img):
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_psnr_is_symmetric():
    x = _noisy(CAMERA, 8.0)
    assert psnr(x, CAMERA) == psnr(CAMERA, x)


# --- SSIM -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, x",
    [
        (ASTRONAUT, _noisy(ASTRONAUT, 10.0)),
        (CAMERA, _noisy(CAMERA, 20.0)),
        (CAMERA, _blocky(CAMERA, 6)),
    ],
    ids=["rgb-noise", "gray-noise", "gray-blocks"],
)
def test_ssim_matches_skimage(ref, x):
    # scikit-image filters with 'reflect' padding over the whole image but then averages the SSIM map without a
    # border of (win_size - 1) // 2 = 5 pixels (11x11 window for sigma 1.5, truncate 3.5). Every window it keeps
    # lies inside the image, so it averages exactly our 'valid' map: agreement to rounding error, not just closeness.
    expected = structural_similarity(
        x,
        ref,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=2 if ref.ndim == 3 else None,
    )
    assert ssim(x, ref) == pytest.approx(expected, abs=1e-9)


def test_ssim_decreases_with_distortion():
    values = [ssim(_noisy(CAMERA, s), CAMERA) for s in (2.0, 8.0, 32.0)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0


# --- PSNR-B -----------------------------------------------------------------------------------------------------


def test_psnr_b_closed_form_on_checkerboard_blocks():
    # Flat gray reference; x adds +2 / -2 on alternate 8x8 blocks of a 64 x 64 image. MSE = 4. Every one of the
    # 2 * 64 * 7 = 896 pixel pairs across a block edge differs by 4, all other pairs by 0, so D_B = 16, D_BC = 0,
    # and BEF = log2(8) / log2(64) * 16 = 8: PSNR-B = 10 log10(255^2 / 12).
    ref = np.full((64, 64), 128, dtype=np.uint8)
    checker = (np.add.outer(np.arange(64) // 8, np.arange(64) // 8) % 2) * 4 - 2
    x = (ref + checker).astype(np.uint8)
    assert psnr(x, ref) == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-12)
    assert psnr_b(x, ref) == pytest.approx(10 * math.log10(255**2 / 12), abs=1e-12)


def test_psnr_b_equals_psnr_without_block_structure():
    # A horizontal ramp steps by the same amount across every column pair, on block edges or not: BEF = 0.
    ref = np.full((64, 64), 100, dtype=np.uint8)
    x = np.tile((np.arange(64) * 2 + 40).astype(np.uint8), (64, 1))
    assert psnr_b(x, ref) == psnr(x, ref)


@pytest.mark.parametrize("ref", [ASTRONAUT, CAMERA], ids=["rgb", "gray"])
def test_psnr_b_penalises_blocking(ref):
    # BEF is measured on x alone, so natural content contributes too: the camera crop has a JPEG history and is
    # penalised even with only i.i.d. noise added. Compare the BEF implied by PSNR and PSNR-B instead of expecting 0.
    def implied_bef(x):
        return 255**2 * (10 ** (-psnr_b(x, ref) / 10) - 10 ** (-psnr(x, ref) / 10))

    noisy, blocky = _noisy(ref, 3.0), _blocky(ref, 4)
    assert psnr_b(noisy, ref) <= psnr(noisy, ref)
    assert psnr_b(blocky, ref) < psnr(blocky, ref)
    assert implied_bef(blocky) > implied_bef(noisy) + 1.0


def test_psnr_b_measures_blocking_in_x_only():
    # The ground truth's own structure must not count: swapping in a blocky reference leaves BEF(x) = 0 here.
    ramp = np.tile((np.arange(64) * 2 + 40).astype(np.uint8), (64, 1))
    blocky = _blocky(ramp, 6)
    assert psnr_b(ramp, blocky) == psnr(ramp, blocky)
    assert psnr_b(blocky, ramp) < psnr(blocky, ramp)


# --- shapes, luma, errors ---------------------------------------------------------------------------------------


def test_gray_layouts_agree():
    x = _noisy(CAMERA, 6.0)
    for fn in (psnr, ssim, psnr_b):
        assert fn(x[:, :, None], CAMERA[:, :, None]) == fn(x, CAMERA)
    ggg_x, ggg_ref = np.repeat(x[:, :, None], 3, axis=2), np.repeat(CAMERA[:, :, None], 3, axis=2)
    assert psnr(ggg_x, ggg_ref) == pytest.approx(psnr(x, CAMERA), abs=1e-12)
    assert ssim(ggg_x, ggg_ref) == pytest.approx(ssim(x, CAMERA), abs=1e-12)


def test_rgb_to_y_known_values():
    colours = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(colours)
    assert y.dtype == np.uint8 and y.shape == (1, 5)
    # 16 + 219, 16, 16 + 65.481, 16 + 128.553, 16 + 24.966, rounded
    assert y.tolist() == [[235, 16, 81, 145, 41]]


def test_y_helpers_use_luma():
    x = _noisy(ASTRONAUT, 6.0)
    y_x, y_ref = rgb_to_y(x), rgb_to_y(ASTRONAUT)
    assert psnr_y(x, ASTRONAUT) == psnr(y_x, y_ref)
    assert ssim_y(x, ASTRONAUT) == ssim(y_x, y_ref)
    assert psnr_b_y(x, ASTRONAUT) == psnr_b(y_x, y_ref)


@pytest.mark.parametrize("fn", [psnr, ssim, psnr_b])
def test_bad_inputs_raise(fn):
    gray = CAMERA[:64, :64]
    with pytest.raises(ValueError, match="same shape"):
        fn(gray, CAMERA[:64, :63])
    with pytest.raises(ValueError, match="uint8"):
        fn(gray.astype(np.float32), gray)
    with pytest.raises(ValueError, match="uint8"):
        fn(gray, gray.astype(np.uint16))
    with pytest.raises(ValueError, match="shape H x W"):
        fn(gray[None, :, :, None], gray[None, :, :, None])
    with pytest.raises(ValueError, match="shape H x W"):
        fn(gray[0], gray[0])
    with pytest.raises(ValueError, match="shape H x W"):
        fn(np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 4), np.uint8))


def test_ssim_rejects_images_smaller_than_window():
    tiny = np.zeros((10, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match="11 x 11"):
        ssim(tiny, tiny)


def test_rgb_to_y_rejects_bad_input():
    with pytest.raises(ValueError, match="H x W x 3"):
        rgb_to_y(CAMERA)
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_y(ASTRONAUT.astype(np.float64) / 255)
