"""The inference API: Restorer on arrays, restore_image on PIL images, and the image <-> tensor converters."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import dagn
from dagn.checkpoint import save_model
from dagn.io import UnsupportedModeError, merge_alpha, split_alpha, to_array, to_arrays, to_tensor


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = dagn.build_model("tiny")
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 48, 48))  # BatchNorm statistics away from their init
    return save_model(model.eval(), tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="module")
def restorer(weights):
    return dagn.Restorer(weights, device="cpu")


def _image(h: int, w: int, seed: int = 0, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)


def test_converters_round_trip():
    rgb, gray = _image(5, 7), _image(5, 7, gray=True)
    t = to_tensor(rgb)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    np.testing.assert_array_equal(to_array(t), rgb)
    np.testing.assert_array_equal(to_array(to_tensor(gray)), gray)
    assert [a.shape for a in to_arrays(to_tensor([rgb, rgb]))] == [(5, 7, 3)] * 2
    with pytest.raises(ValueError, match="share a shape"):
        to_tensor([rgb, _image(6, 7)])
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        to_tensor(np.zeros((4, 4, 4), np.uint8))


def test_restorer_keeps_shape_and_dtype(restorer):
    for image in (_image(37, 53), _image(37, 53, gray=True)):
        out = restorer(image)
        assert out.shape == image.shape and out.dtype == np.uint8
    assert restorer.device.type == "cpu" and not restorer.model.training


def test_gray_is_the_mean_of_the_replicated_rgb_result(restorer):
    gray = _image(32, 48, seed=3, gray=True)
    rgb = restorer(np.repeat(gray[:, :, None], 3, axis=2))
    expected = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
    assert np.abs(restorer(gray).astype(int) - expected.astype(int)).max() <= 1  # rounding of the float mean


def test_batches_give_the_same_results_in_input_order(weights):
    images = [_image(32, 48, 1), _image(40, 40, 2), _image(32, 48, 3, gray=True), _image(32, 48, 4)]
    single = dagn.Restorer(weights, batch_size=1)
    batched = dagn.Restorer(weights, batch_size=3)
    for one, many in zip([single(im) for im in images], batched.restore_batch(images), strict=True):
        assert one.shape == many.shape
        assert np.abs(one.astype(int) - many.astype(int)).max() <= 1  # float summation order differs by batch


def test_model_and_tiling_options(weights):
    model = dagn.checkpoint.load_model(weights)
    image = _image(70, 90)
    whole = dagn.Restorer(model=model)(image)
    tiled = dagn.Restorer(model=model, tile=48, tile_overlap=16, batch_size=4)(image)
    assert tiled.shape == whole.shape
    with pytest.raises(ValueError, match="not both"):
        dagn.Restorer(weights, model=model)
    with pytest.raises(ValueError, match="tile_overlap"):
        dagn.Restorer(model=model, tile=32, tile_overlap=32)
    with pytest.raises(ValueError, match="uint8"):
        dagn.Restorer(model=model)(image.astype(np.float32))


def test_context_is_the_training_patch_size_from_the_model_file(weights, tmp_path):
    """A file that records its training patches runs in tiles of that size (a quarter overlap), unless told not to;
    files without the record, and plain models, run as before."""
    trained = save_model(
        dagn.checkpoint.load_model(weights), tmp_path / "m.safetensors", {"degradation": '{"patch_size": 32}'}
    )
    image = _image(70, 90)
    auto = dagn.Restorer(trained, tile=1024, tile_overlap=32)
    assert (auto.context, auto.tile, auto.tile_overlap) == (32, 32, 8)
    by_hand = dagn.Restorer(weights, tile=32, tile_overlap=8, batch_size=16, context=None)
    np.testing.assert_array_equal(auto(image), by_hand(image))
    assert dagn.Restorer(trained, context=None).tile is None
    assert dagn.Restorer(trained, tile=16, tile_overlap=4).tile == 16  # a smaller memory tile still wins
    large = save_model(
        dagn.checkpoint.load_model(weights), tmp_path / "l.safetensors", {"degradation": '{"patch_size": 128}'}
    )
    assert dagn.Restorer(large).context is None and dagn.Restorer(large).tile is None  # trained large: whole
    assert dagn.Restorer(weights).context is None
    assert dagn.Restorer(model=dagn.checkpoint.load_model(trained)).context is None
    with pytest.raises(ValueError, match="context"):
        dagn.Restorer(weights, context=8)


def test_restore_image_modes_alpha_and_metadata(weights):
    rgb = Image.fromarray(_image(24, 40))
    exif = Image.Exif()
    exif[0x010F] = "dagn-test-camera"  # Make
    rgb.info["exif"] = exif.tobytes()
    rgb.info["icc_profile"] = b"fake-icc"
    out = dagn.restore_image(rgb, weights=weights)
    assert out.mode == "RGB" and out.size == rgb.size
    assert out.info["exif"] == rgb.info["exif"] and out.info["icc_profile"] == b"fake-icc"

    assert dagn.restore_image(rgb.convert("L"), weights=weights).mode == "L"
    rgba = rgb.copy()
    alpha = Image.fromarray(_image(24, 40, seed=9, gray=True))
    rgba.putalpha(alpha)
    out = dagn.restore_image(rgba, weights=weights)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out.getchannel("A")), np.asarray(alpha))  # passed through untouched
    assert dagn.restore_image(rgb.convert("CMYK"), weights=weights).mode == "RGB"
    assert dagn.restore_image(rgb.convert("P"), weights=weights).mode == "RGB"
    with pytest.raises(UnsupportedModeError, match="I;16"):
        dagn.restore_image(Image.new("I;16", (8, 8)), weights=weights)


def test_split_and_merge_alpha():
    la = Image.new("LA", (6, 4), (100, 30))
    colour, alpha = split_alpha(la)
    assert colour.shape == (4, 6) and alpha is not None and (alpha == 30).all()
    assert merge_alpha(colour, alpha).mode == "LA"
    buffer = io.BytesIO()
    Image.new("P", (5, 5)).save(buffer, format="PNG", transparency=0)
    colour, alpha = split_alpha(Image.open(io.BytesIO(buffer.getvalue())))
    assert colour.shape == (5, 5, 3) and alpha is not None and (alpha == 0).all()
