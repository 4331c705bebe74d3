"""The restore pipeline end to end on a real SeaweedFS S3 server and a real local Ray.

The model is the tiny DAGN with its last convolution zeroed: with its global residual it then returns its input
exactly, so every geometric and colour property of an output (size, orientation, mode, alpha, ICC) can be checked
against the input pixel for pixel, while every stage of the real pipeline runs.
"""

from __future__ import annotations

import io
import os

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

import dagn
from dagn.checkpoint import save_model
from pipeline.manifest import MANIFEST_DIR, read_state
from pipeline.restore import RestoreConfig, actor_resources, run_restore
from pipeline.storage import resolve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def identity_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = dagn.build_model("tiny")
    for p in model.tail.parameters():
        torch.nn.init.zeros_(p)  # global residual + zero correction = identity
    return str(save_model(model.eval(), tmp_path_factory.mktemp("w") / "identity.safetensors"))


def _gradient(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    base = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def mixed_inputs() -> tuple[dict[str, bytes], dict[str, str]]:
    """(key -> bytes of every file under the prefix, key -> expected error for the bad ones)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgba = _gradient(40, 24, 5).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (24, 1))))
    good_jpeg = _encode(_gradient(64, 64), quality=20)
    bomb = bytearray(good_jpeg)
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    files = {
        "good/small.jpg": _encode(_gradient(48, 32, 1), quality=20),
        "good/wide.JPG": _encode(_gradient(200, 40, 2), quality=10),
        "good/deeper/large.jpeg": _encode(_gradient(300, 260, 3), quality=30),  # above the tile size: tiled
        "gray.jpg": _encode(_gradient(70, 50, 4).convert("L"), quality=15),
        "rotated.jpg": _encode(_gradient(60, 40, 6), quality=25, exif=exif.tobytes()),
        "icc.jpg": _encode(_gradient(32, 32, 7), quality=25, icc_profile=SRGB),
        "cmyk.jpg": _encode(_gradient(32, 24, 8).convert("CMYK"), quality=40),
        "alpha.png": _encode(rgba, "PNG"),
        "bad/empty.jpg": b"",
        "bad/truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "bad/random.jpg": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "bad/bomb.jpg": bytes(bomb),
        "bad/deep.png": _encode(Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)), "PNG"),
        "notes.txt": b"not an input: filtered out by extension",
    }
    errors = {
        "bad/empty.jpg": "empty file",
        "bad/truncated.jpg": "truncated",
        "bad/random.jpg": "not an image",
        "bad/bomb.jpg": "decompression bomb guard",
        "bad/deep.png": "unsupported image mode",
    }
    return files, errors


def _upload(bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    s3 = boto3.client("s3")
    for key, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)


def _keys(bucket: str, prefix: str) -> dict[str, str]:
    """key below prefix -> ETag, from one listing."""
    s3 = boto3.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        found.update({o["Key"][len(prefix) + 1 :]: o["ETag"] for o in page.get("Contents", [])})
    return found


def _get(bucket: str, key: str) -> Image.Image:
    return Image.open(io.BytesIO(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_mixed_prefix_on_s3(ray_local, s3_bucket, identity_weights):
    files, errors = mixed_inputs()
    _upload(s3_bucket, "in", files)
    cfg = RestoreConfig(
        src=f"s3://{s3_bucket}/in", dst=f"s3://{s3_bucket}/out", weights=identity_weights, tile=128, batch_size=2
    )
    summary = run_restore(cfg)

    inputs = [k for k in files if k != "notes.txt"]
    good = [k for k in inputs if k not in errors]
    assert (summary.total, summary.ok, summary.skipped, summary.failed) == (len(inputs), len(good), 0, len(errors))

    # Every good input has its output, with the right size, orientation and mode; nothing else was written.
    written = _keys(s3_bucket, "out")
    assert sorted(k for k in written if not k.startswith(MANIFEST_DIR + "/")) == sorted(good)
    for key in good:
        original = Image.open(io.BytesIO(files[key]))
        upright = ImageOps.exif_transpose(original)
        out = _get(s3_bucket, f"out/{key}")
        assert out.format == original.format and out.size == upright.size, key
        expected_mode = {"CMYK": "RGB"}.get(original.mode, original.mode)
        assert out.mode == expected_mode, key
        if out.mode in ("RGB", "L"):  # identity model: the output is the upright input, re-encoded at quality 95
            diff = np.abs(np.asarray(out, np.int16) - np.asarray(upright.convert(out.mode), np.int16))
            assert diff.mean() < 3, key
    assert _get(s3_bucket, "out/rotated.jpg").size == (40, 60)
    assert 0x0112 not in _get(s3_bucket, "out/rotated.jpg").getexif()
    assert _get(s3_bucket, "out/icc.jpg").info["icc_profile"] == SRGB
    alpha_in = np.asarray(Image.open(io.BytesIO(files["alpha.png"])).getchannel("A"))
    np.testing.assert_array_equal(np.asarray(_get(s3_bucket, "out/alpha.png").getchannel("A")), alpha_in)

    # One state row per input: ok rows carry QF, size, time; every bad input has its error.
    state = read_state(resolve(cfg.dst)).to_pylist()
    rows = {r["key"]: r for r in state}
    assert len(state) == len(rows) == len(inputs)
    for key in good:
        r = rows[key]
        assert r["status"] == "ok" and r["error"] is None and r["output"] == f"s3://{s3_bucket}/out/{key}"
        assert r["width"] > 0 and r["height"] > 0 and r["milliseconds"] > 0 and r["size"] == len(files[key])
        assert (r["qf"] is None) == key.endswith(".png")
    assert rows["good/wide.JPG"]["qf"] == 10 and rows["gray.jpg"]["mode"] == "L"
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (40, 60)
    for key, message in errors.items():
        assert rows[key]["status"] == "failed" and message in rows[key]["error"], (key, rows[key]["error"])
        assert rows[key]["output"] is None

    # The state is plain Parquet that any reader opens, one folder per shard (the top level and 2 folders).
    state_files = [k for k in written if k.startswith(MANIFEST_DIR + "/state/") and k.endswith(".parquet")]
    assert len({k.split("/")[2] for k in state_files}) == 3
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"out/{state_files[0]}")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows > 0

    # Re-run, nothing changed: nothing is read or written but the failed ones, tried again.
    again = run_restore(cfg)
    assert (again.ok, again.skipped, again.failed) == (0, len(good), len(errors))
    assert again.decisions == {"done": len(good), "retry": len(errors) - 1, "empty": 1, "not_image": 1}
    assert {k: v for k, v in _keys(s3_bucket, "out").items() if k in good} == {k: written[k] for k in good}

    # Changed inputs are restored again (here: rewritten with bytes that no longer decode); the rest are not.
    changed = ["gray.jpg", "good/small.jpg"]
    _upload(s3_bucket, "in", {key: b"garbage now" for key in changed})
    third = run_restore(cfg)
    assert (third.ok, third.skipped, third.failed) == (0, len(good) - 2, len(errors) + 2)
    assert third.decisions["changed"] == 2 and third.decisions["done"] == len(good) - 2
    rows = {r["key"]: r for r in read_state(resolve(cfg.dst)).to_pylist()}
    assert all(rows[k]["status"] == "failed" and rows[k]["run_id"] == third.run_id for k in changed)
    assert all(rows[k]["run_id"] != third.run_id for k in good if k not in changed)


def test_quality_range_and_overwrite(ray_local, tmp_path, identity_weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for q in (10, 30, 60, 90):
        (src / f"q{q}.jpg").write_bytes(_encode(_gradient(40, 32, q), quality=q))
    (src / "lossless.png").write_bytes(_encode(_gradient(40, 32), "PNG"))
    base = {"src": str(src), "dst": str(dst), "weights": identity_weights, "batch_size": 4}

    first = run_restore(RestoreConfig(**base, max_qf=35))
    assert (first.ok, first.skipped, first.failed) == (2, 3, 0)
    assert sorted(p.name for p in dst.iterdir() if p.name != MANIFEST_DIR) == ["q10.jpg", "q30.jpg"]
    rows = {r["key"]: r for r in read_state(resolve(str(dst))).to_pylist()}
    assert "above --max-qf 35" in rows["q60.jpg"]["reason"] and rows["q60.jpg"]["qf"] == 60
    assert "not a JPEG" in rows["lossless.png"]["reason"]

    # Inputs skipped for their QF are remembered: while still outside the range they are not read again (q90 is
    # made unreadable with its size and mtime kept, so only reading it would notice).
    q90 = src / "q90.jpg"
    stat = q90.stat()
    q90.write_bytes(b"\xff\xd8 would fail if it were read".ljust(stat.st_size, b"\0"))
    os.utime(q90, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    dry = run_restore(RestoreConfig(**base, max_qf=70, dry_run=True))
    assert dry.decisions == {"qf_again": 1, "qf_range": 2, "done": 2}
    second = run_restore(RestoreConfig(**base, max_qf=70))
    assert (second.ok, second.skipped, second.failed) == (1, 4, 0)  # q60 now in range; q90 skipped unread
    assert second.decisions == dry.decisions  # the dry run counted what the run then did
    assert (dst / "q60.jpg").exists() and not (dst / "q90.jpg").exists()
    rows = {r["key"]: r for r in read_state(resolve(str(dst))).to_pylist()}
    assert rows["q90.jpg"]["run_id"] == first.run_id and rows["q90.jpg"]["qf"] == 90

    # --overwrite redoes what is done and reads everything again (q90's bytes now have no JPEG tables).
    forced = run_restore(RestoreConfig(**base, overwrite=True, max_qf=70))
    assert (forced.ok, forced.skipped, forced.failed) == (3, 2, 0)
    assert not list(dst.rglob("*.tmp"))


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="min_qf"):
        RestoreConfig(src="a", dst="b", min_qf=50, max_qf=10)
    with pytest.raises(ValueError, match="extra"):
        RestoreConfig(src="a", dst="b", colour="red")
    assert RestoreConfig(src="a", dst="b", extensions="JPG, png").extensions == (".jpg", ".png")
    cfg = RestoreConfig(src=str(tmp_path), dst=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="inside"):
        run_restore(cfg)
    elsewhere = cfg.model_copy(update={"dst": str(tmp_path.parent / "out"), "weights": str(tmp_path / "missing.st")})
    with pytest.raises(FileNotFoundError, match="model file not found"):
        run_restore(elsewhere)


def test_actor_resources_grow_with_the_cluster_and_never_overcommit_it():
    def plan(cluster: dict, most: dict | None = None, **kw) -> tuple:
        p = actor_resources(RestoreConfig(src="a", dst="b", **kw), cluster, most)
        return p.min_workers, p.max_workers, p.cpus, p.gpus, p.threads

    two_cpus = {"CPU": 2.0}
    assert plan(two_cpus) == (1, 16, 0.38, 0.0, 1)  # single-threaded actors, one per CPU beside the I/O actors
    assert plan(two_cpus, workers=1) == (1, 1, 0.75, 0.0, 2)
    assert plan({"CPU": 64.0}) == (1, 64, 0.98, 0.0, 1)  # 62.75 CPUs for 64 actors
    assert plan({"CPU": 64.0, "GPU": 8.0}, gpus_per_worker=1) == (1, 8, 1.0, 1.0, 2)
    # An autoscaling cluster with no GPU node yet grows to the GPUs its autoscaler may add.
    assert plan({"CPU": 1.0}, {"CPU": 129.0, "GPU": 16.0}, gpus_per_worker=0.5) == (1, 32, 1.0, 0.5, 2)
    assert plan(two_cpus, max_workers=3, cpus_per_worker=0.5, threads_per_worker=3) == (1, 3, 0.5, 0.0, 3)
    gpu = actor_resources(RestoreConfig(src="a", dst="b", gpus_per_worker=1, max_pixels=10**6), {"GPU": 2.0})
    assert (gpu.io_cpus, gpu.io_workers, gpu.memory, gpu.io_memory) == (1.0, 8, 16 * 10**6, 8 * 10**6)
