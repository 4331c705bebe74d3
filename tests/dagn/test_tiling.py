"""Tiling: exact for callables that commute with cropping, and seamless with a real (briefly trained) DAGN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dagn
from dagn.jpeg import roundtrip
from dagn.metrics import psnr
from dagn.tiling import tile_origins, tiled_apply


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "align"),
    [(100, 48, 16, 8), (100, 48, 40, 1), (513, 128, 32, 16), (64, 64, 32, 16), (30, 64, 8, 16), (257, 96, 32, 16)],
)
def test_origins_cover_the_axis_on_the_grid(size, tile, overlap, align):
    origins, length = tile_origins(size, tile, overlap, align)
    assert origins[0] == 0 and all(o % align == 0 for o in origins)
    assert origins[-1] + length >= size and length <= max(tile, size if size <= tile else tile)
    gaps = np.diff(origins)
    assert all(length - g >= overlap for g in gaps)  # never less overlap than asked for
    assert origins[-1] + length - size < align * len(origins)  # padding stays small


@pytest.mark.parametrize(("tile", "overlap", "align"), [(48, 16, 8), (48, 40, 1), (64, 0, 16), (256, 32, 16)])
def test_pointwise_callable_is_reproduced_exactly(tile, overlap, align):
    x = torch.rand(2, 3, 100, 131)
    y = tiled_apply(lambda t: t * 2 - 0.5, x, tile=tile, overlap=overlap, align=align, batch_size=3)
    torch.testing.assert_close(y, x * 2 - 0.5, atol=1e-6, rtol=0)


def test_channel_count_may_change():
    x = torch.rand(1, 3, 90, 70)
    y = tiled_apply(lambda t: t.mean(dim=1, keepdim=True), x, tile=32, overlap=8, align=8)
    torch.testing.assert_close(y, x.mean(dim=1, keepdim=True), atol=1e-6, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no stride"):
        tile_origins(100, 32, 30, 16)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tiled_apply(lambda t: t, torch.rand(3, 8, 8), tile=4)


@pytest.fixture(scope="module")
def natural_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # 512 x 512 RGB, public domain (NASA)


@pytest.fixture(scope="module")
def trained_tiny(natural_image):
    """The tiny DAGN after a few dozen Adam steps on JPEG crops (batches of 8, so BatchNorm statistics mean something).

    A randomly initialised network maps images to noise, so "agrees within 0.05 dB" would say nothing about a
    restorer; after these steps the model's output is close to the input and its global guidance is meaningful.
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    clean = natural_image
    degraded = roundtrip(clean, 10)
    gt = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255
    x = torch.from_numpy(degraded).permute(2, 0, 1)[None].float() / 255
    model = dagn.build_model("tiny")
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(40):
        corners = [(rng.integers(0, clean.shape[0] - 64), rng.integers(0, clean.shape[1] - 64)) for _ in range(8)]
        xb = torch.cat([x[..., i : i + 64, j : j + 64] for i, j in corners])
        gb = torch.cat([gt[..., i : i + 64, j : j + 64] for i, j in corners])
        loss = (model(xb) - gb).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("tile", [128, 256])
def test_tiled_dagn_matches_untiled_within_0_05_db(trained_tiny, natural_image, tile):
    degraded = roundtrip(natural_image, 10)
    whole = dagn.Restorer(model=trained_tiny)(degraded)
    tiled = dagn.Restorer(model=trained_tiny, tile=tile, tile_overlap=32, batch_size=4)(degraded)
    assert abs(psnr(tiled, natural_image) - psnr(whole, natural_image)) < 0.05
    assert psnr(tiled, whole) > 35  # and the two images are close pixel by pixel, not just in the mean
