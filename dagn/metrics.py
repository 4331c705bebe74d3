"""Full-reference quality metrics for JPEG artifact removal: PSNR, SSIM and PSNR-B.

The definitions reproduce the evaluation script of FBCNN, whose per-image published values bench/check_metrics.py
recomputes, so that numbers computed here can be compared with the published JPEG-restoration tables:

- every metric takes ``uint8`` images (``H x W x 3`` RGB, or ``H x W`` / ``H x W x 1`` gray) and works in float64 on
  the 0..255 scale; restored float outputs must be quantised to ``uint8`` first, as the published numbers were;
- PSNR is pooled over all pixels and channels;
- SSIM is the MATLAB/Wang et al. formulation: 11x11 Gaussian window with sigma 1.5, ``C1 = (0.01 * 255)**2``,
  ``C2 = (0.03 * 255)**2``, only windows lying entirely inside the image ("valid"), computed per channel and averaged;
- PSNR-B (Yim & Bovik, "Quality assessment of deblocked images", IEEE TIP 2011) adds a blocking effect factor (BEF)
  to the MSE. As in the script that produced the FBCNN reference log, the MSE is pooled over RGB while the BEF is
  measured on the BT.601 luma (:func:`rgb_to_y`, rounded) of the image under test only.

All functions are pure: no I/O, no logging, inputs are never modified.
"""

import numpy as np

__all__ = ["psnr", "psnr_b", "psnr_b_y", "psnr_y", "rgb_to_y", "ssim", "ssim_y"]

_PEAK = 255.0
_BLOCK = 8  # JPEG block size: where the block boundaries of PSNR-B lie
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # 11x11 window
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2
# ITU-R BT.601 luma weights for RGB on 0..255, as MATLAB's rgb2ycbcr: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])


def _as_image(img: np.ndarray, name: str) -> np.ndarray:
    """Validate one image and return it as ``uint8`` ``H x W x C`` with C in (1, 3)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 image with values 0..255, got dtype {img.dtype}")
    if img.ndim == 2:
        return img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"{name} must have shape H x W, H x W x 1 or H x W x 3, got {img.shape}")
    return img


def _as_pair(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (image under test, ground truth) pair and return both as float64 ``C x H x W``."""
    x, ref = _as_image(x, "x"), _as_image(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got {x.shape} and {ref.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"images must not be empty, got shape {x.shape}")
    return (np.moveaxis(x, 2, 0).astype(np.float64), np.moveaxis(ref, 2, 0).astype(np.float64))


def _psnr_from_mse(mse: float) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(_PEAK**2 / mse))


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255^2 / MSE)``, with the MSE pooled over all channels.

    Args:
        x: image under test, ``uint8`` (0..255), ``H x W x 3`` RGB or ``H x W`` / ``H x W x 1`` gray.
        ref: ground truth, same shape and dtype as ``x``.

    Returns:
        PSNR in dB; ``inf`` for identical images.
    """
    x, ref = _as_pair(x, ref)
    return _psnr_from_mse(float(np.mean((x - ref) ** 2)))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-(offsets**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of the last two axes with ``outer(k, k)``, keeping only full windows."""
    n = k.size
    h, w = a.shape[-2] - n + 1, a.shape[-1] - n + 1
    rows = sum(k[i] * a[..., i : i + h, :] for i in range(n))
    return sum(k[i] * rows[..., :, i : i + w] for i in range(n))


def ssim(x: np.ndarray, ref: np.ndarray) -> float:
    """Structural similarity, MATLAB-style, computed per channel and averaged over channels.

    Gaussian 11x11 window (sigma 1.5), constants ``C1 = (0.01 * 255)^2`` and ``C2 = (0.03 * 255)^2``, population
    (not sample) local variances. Only windows lying entirely inside the image are used, so the SSIM map covers the
    image minus a 5-pixel border; this is what MATLAB's ``ssim_index`` and the published results compute.

    Args:
        x: image under test, ``uint8`` (0..255), ``H x W x 3`` RGB or ``H x W`` / ``H x W x 1`` gray, H and W >= 11.
        ref: ground truth, same shape and dtype as ``x``.

    Returns:
        Mean SSIM in [-1, 1]; 1.0 for identical images.
    """
    x, ref = _as_pair(x, ref)
    if min(x.shape[1:]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"ssim needs images of at least 11 x 11 pixels, got {x.shape[1]} x {x.shape[2]}")
    k = _gaussian_window()
    mu_x, mu_r = _filter_valid(x, k), _filter_valid(ref, k)
    var_x = _filter_valid(x * x, k) - mu_x**2
    var_r = _filter_valid(ref * ref, k) - mu_r**2
    cov = _filter_valid(x * ref, k) - mu_x * mu_r
    ssim_map = ((2.0 * mu_x * mu_r + _SSIM_C1) * (2.0 * cov + _SSIM_C2)) / (
        (mu_x**2 + mu_r**2 + _SSIM_C1) * (var_x + var_r + _SSIM_C2)
    )
    return float(ssim_map.mean(axis=(1, 2)).mean())


def _blocking_effect_factor(img: np.ndarray) -> float:
    """BEF of one float64 ``H x W`` channel: how much more the 8x8 block edges step than the other pixel pairs.

    ``BEF = log2(8) / log2(min(H, W)) * (D_B - D_BC)`` when positive, else 0, where D_B is the mean squared
    difference across neighbouring pixel pairs that straddle a block boundary (between columns/rows 7|8, 15|16, ...)
    and D_BC the same over all other neighbouring pairs. The pair counts are the paper's ``N_HB = H (W / 8 - 1)``
    and ``N_VB = W (H / 8 - 1)`` with true division, as the reference implementation has it, even when W or H is
    not a multiple of 8.
    """
    h, w = img.shape
    dx2 = np.diff(img, axis=1) ** 2  # column j holds the pair (j, j + 1)
    dy2 = np.diff(img, axis=0) ** 2
    on_x = np.zeros(w - 1, dtype=bool)
    on_x[_BLOCK - 1 :: _BLOCK] = True
    on_y = np.zeros(h - 1, dtype=bool)
    on_y[_BLOCK - 1 :: _BLOCK] = True
    n_boundary = h * (w / _BLOCK - 1) + w * (h / _BLOCK - 1)
    n_other = h * (w - 1) + w * (h - 1) - n_boundary
    if n_boundary <= 0 or n_other <= 0:  # smaller than two blocks: no boundary to measure
        return 0.0
    d_boundary = (dx2[:, on_x].sum() + dy2[on_y].sum()) / n_boundary
    d_other = (dx2[:, ~on_x].sum() + dy2[~on_y].sum()) / n_other
    if d_boundary <= d_other:
        return 0.0
    return float(np.log2(_BLOCK) / np.log2(min(h, w)) * (d_boundary - d_other))


def psnr_b(x: np.ndarray, ref: np.ndarray) -> float:
    """PSNR-B in dB, ``10 log10(255^2 / (MSE + BEF))``: PSNR penalised for blocking artifacts in ``x``.

    The MSE is pooled over all channels as in :func:`psnr`. The blocking effect factor is measured on ``x`` alone
    (the ground truth has no blocks to penalise): on the gray channel, or for RGB on its rounded BT.601 luma
    (:func:`rgb_to_y`), because that is how the published reference values were computed. Block boundaries follow
    the 8x8 JPEG grid anchored at the top-left pixel. Hence ``psnr_b(x, ref) <= psnr(x, ref)`` always.

    Args:
        x: image under test, ``uint8`` (0..255), ``H x W x 3`` RGB or ``H x W`` / ``H x W x 1`` gray.
        ref: ground truth, same shape and dtype as ``x``.

    Returns:
        PSNR-B in dB; ``inf`` only when the images are identical and ``x`` shows no blocking.
    """
    xf, ref_f = _as_pair(x, ref)
    luma = xf[0] if xf.shape[0] == 1 else rgb_to_y(np.asarray(x)).astype(np.float64)
    return _psnr_from_mse(float(np.mean((xf - ref_f) ** 2)) + _blocking_effect_factor(luma))


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image, as MATLAB's ``rgb2ycbcr`` gives it: ``16 + (65.481 R + 128.553 G + 24.966 B)/255``.

    Input and output are ``uint8``: RGB on 0..255 in, Y on 16..235 out, rounded half to even, because the
    grayscale ("Y channel") benchmarks and the BEF of :func:`psnr_b` are defined on that rounded image.

    Args:
        img: ``uint8`` ``H x W x 3`` RGB image.

    Returns:
        ``uint8`` ``H x W`` luma.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"img must be a uint8 RGB image with values 0..255, got dtype {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"img must have shape H x W x 3 (RGB), got {img.shape}")
    y = img.astype(np.float64) @ _Y_WEIGHTS / 255.0 + 16.0
    return np.round(y).astype(np.uint8)


def psnr_y(x: np.ndarray, ref: np.ndarray) -> float:
    """:func:`psnr` on the luma (:func:`rgb_to_y`) of two ``uint8`` RGB images."""
    return psnr(rgb_to_y(x), rgb_to_y(ref))


def ssim_y(x: np.ndarray, ref: np.ndarray) -> float:
    """:func:`ssim` on the luma (:func:`rgb_to_y`) of two ``uint8`` RGB images."""
    return ssim(rgb_to_y(x), rgb_to_y(ref))


def psnr_b_y(x: np.ndarray, ref: np.ndarray) -> float:
    """:func:`psnr_b` on the luma (:func:`rgb_to_y`) of two ``uint8`` RGB images."""
    return psnr_b(rgb_to_y(x), rgb_to_y(ref))
