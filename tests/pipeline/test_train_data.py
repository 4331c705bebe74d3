"""The training-data plan and the patch-making UDF, without Ray: deterministic, shaped as the trainers expect."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from dagn.degradation import DegradationConfig
from pipeline.storage import resolve
from pipeline.train.data import (
    TRAINING_DEGRADATION,
    DataConfig,
    PatchMaker,
    load_validation_set,
    make_patches,
    plan_rows,
    readable_images,
    split_images,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for name, image in (("a/astronaut.png", skdata.astronaut()), ("coffee.jpg", skdata.coffee())):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)
    return root


def test_validation_split_is_fixed_and_disjoint(caplog):
    images = [f"dir/img{i:03d}.png" for i in range(50)]
    train, val = split_images(images, 5)
    assert len(val) == 5 and len(train) == 45 and not set(train) & set(val)
    assert split_images(list(reversed(images)), 5)[1] == val  # independent of listing order
    assert set(split_images([*images, "dir/new.png"], 5)[1]) & set(val)  # one more image barely moves it
    assert split_images(images, 0) == (images, [])
    train, val = split_images(images[:8], 8)  # too few to hold 8 out: a quarter is held out instead
    assert len(val) == 2 and len(train) == 6 and not set(train) & set(val)
    assert "holding out 2 for validation instead of 8" in caplog.text and "--val-images" in caplog.text
    assert split_images(images[:3], 8) == (images[:3], [])


def test_plan_visits_every_image_each_epoch_deterministically():
    images = ["a", "b", "c", "d"]
    rows = plan_rows(images, 10, seed=1)
    assert rows == plan_rows(images, 10, seed=1) and rows != plan_rows(images, 10, seed=2)
    assert sorted(r["path"] for r in rows[:4]) == images and sorted(r["path"] for r in rows[4:8]) == images
    assert len({r["seed"] for r in rows}) == 10


def test_make_patches_from_a_folder(folder):
    cfg = TRAINING_DEGRADATION.model_copy(update={"patch_size": 32})
    batch = {"path": np.array(["a/astronaut.png", "coffee.jpg"]), "seed": np.array([1, 2])}
    kwargs = {"location": resolve(str(folder)), "cfg": cfg, "patches_per_image": 3}
    out = make_patches(batch, **kwargs)
    assert out["clean"].shape == out["jpeg"].shape == (6, 32, 32, 3)
    assert out["clean"].dtype == np.uint8 and out["quality"].shape == (6,)
    assert all(8 <= q <= 95 for q in out["quality"])
    again = make_patches(batch, **kwargs)
    assert all(np.array_equal(out[k], again[k]) for k in out)


def test_training_degradation_widens_the_quality_range():
    assert TRAINING_DEGRADATION.uniform_quality_range[1] >= 95
    assert max(TRAINING_DEGRADATION.quality_set) >= 90
    assert DegradationConfig().uniform_quality_range == (8, 96)  # the released defaults stay untouched


def test_validation_set_is_centre_crops_with_jpegs(folder):
    cfg = DataConfig(val_size=100, val_qualities=(10, 50))
    items = load_validation_set(resolve(str(folder)), ["coffee.jpg"], cfg)
    (item,) = items
    assert item.clean.shape == (96, 96, 3)
    assert set(item.jpegs) == {10, 50} and item.jpegs[10].shape == (96, 96, 3)
    assert not np.array_equal(item.jpegs[10], item.clean)
    raw = np.asarray(Image.open(io.BytesIO((folder / "coffee.jpg").read_bytes())).convert("RGB"))
    assert np.array_equal(item.clean, raw[152:248, 252:348])


@pytest.fixture
def damaged_folder(tmp_path, folder):
    """The good images plus the bad ones of the fault-injection pass (one used to end `dagn train`, unnamed)."""
    root = tmp_path / "mixed"
    for path in folder.rglob("*.*"):
        (root / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
        (root / path.relative_to(folder)).write_bytes(path.read_bytes())
    (root / "empty.png").write_bytes(b"")
    (root / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    whole = (folder / "coffee.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 3])  # a good header: caught where patches are made
    return root


def test_unreadable_training_images_are_skipped_by_name(damaged_folder, caplog):
    location = resolve(str(damaged_folder))
    names = sorted(p.relative_to(damaged_folder).as_posix() for p in damaged_folder.rglob("*.*"))
    with caplog.at_level("WARNING"):
        readable = readable_images(location, names, need=2)
    assert readable == ["a/astronaut.png", "coffee.jpg", "truncated.jpg"]
    assert "empty.png" in caplog.text and "random.jpg" in caplog.text and "2 of 5 training images" in caplog.text

    cfg = TRAINING_DEGRADATION.model_copy(update={"patch_size": 32})
    batch = {"path": np.array(["truncated.jpg", "coffee.jpg", "truncated.jpg"]), "seed": np.array([1, 2, 3])}
    maker = PatchMaker(
        data_uri=str(damaged_folder), s3_json="{}", degradation_json=cfg.model_dump_json(), patches_per_image=2
    )  # as the Ray Data actor makes them
    with caplog.at_level("WARNING"):
        out = maker(batch)
    assert out["clean"].shape == (6, 32, 32, 3)  # the bad image's rows come from the good one: no patches lost
    assert "skipping unreadable training image" in caplog.text and "truncated.jpg" in caplog.text


def test_too_few_readable_images_stop_with_one_line(damaged_folder):
    location = resolve(str(damaged_folder))
    with pytest.raises(ValueError, match=r"only 0 of 2 images under .* are readable, 9 needed \(e.g. empty.png") as e:
        readable_images(location, ["empty.png", "random.jpg"], need=9)
    assert "\n" not in str(e.value)
