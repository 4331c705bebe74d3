"""Untrusted keys never lead outside SRC or DST: from a list file, from S3 keys with '..' or '//', in clean and train;
and a key that a list file or an S3 Inventory names more than once is planned once.

Built from the fault-injection repro: a list-file line ``../outside/secret.jpg`` used to be read and overwritten with
its restored version (status ok), and ``archive//etc/x.jpg`` joined to an absolute path.
"""

from __future__ import annotations

import datetime as dt
import io

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dagn import build_model
from dagn.checkpoint import save_model
from pipeline.codec import OutputFormat
from pipeline.keys import UnsafeKeyError, check_key, contain, key_paths
from pipeline.manifest import read_state
from pipeline.restore import RestoreConfig, run_restore
from pipeline.storage import S3Settings, resolve

BAD_KEYS = ["../outside/secret.jpg", "a/../../../x.jpg", "archive//etc/x.jpg", "/etc/x.jpg", "./a.jpg", "a/./b.jpg",
            "a/b/", "", "a\\..\\b.jpg", "a\x00.jpg", "..", "a/.."]  # fmt: skip


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_by_name(key, tmp_path):
    with pytest.raises(UnsafeKeyError, match="refused key"):
        check_key(key)
    src, dst = resolve(str(tmp_path / "src")), resolve(str(tmp_path / "dst"))
    with pytest.raises(UnsafeKeyError):
        key_paths(key, src, dst, OutputFormat.same)
    if key:
        with pytest.raises(UnsafeKeyError):
            src.path(key)


def test_safe_keys_map_below_both_roots(tmp_path):
    src, dst = resolve(str(tmp_path / "src")), resolve("s3://bucket/out", S3Settings(region="us-east-1"))  # no lookup
    paths = key_paths("a b/..c/x..y.JPG", src, dst, OutputFormat.png)
    assert paths.source == f"{tmp_path}/src/a b/..c/x..y.JPG"
    assert (paths.out_key, paths.output) == ("a b/..c/x..y.png", "bucket/out/a b/..c/x..y.png")
    assert contain("bucket/out", "") == "bucket/out"
    with pytest.raises(UnsafeKeyError, match="outside"):
        contain("bucket/out", "../out2/x.jpg")  # a sibling that shares the root's name as a prefix


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=20)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(build_model("tiny"), tmp_path_factory.mktemp("w") / "tiny.safetensors"))


@pytest.mark.slow
def test_list_file_cannot_read_or_write_outside(ray_local, tmp_path, weights):
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.jpg"
    secret.write_bytes(_jpeg(1))
    before = secret.read_bytes()
    src = tmp_path / "work" / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "good.jpg").write_bytes(_jpeg(2))
    listing = tmp_path / "list.txt"
    listing.write_text("a/good.jpg\n../outside/secret.jpg\na/../../../x.jpg\n/etc/hostname\n")
    dst = tmp_path / "work" / "dst"

    summary = run_restore(RestoreConfig(src=str(src), dst=str(dst), list_file=str(listing), weights=weights))

    assert (summary.ok, summary.failed) == (1, 3)
    assert secret.read_bytes() == before and not (tmp_path / "x.jpg").exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")) == [
        "outside/secret.jpg",
        "work/dst/a/good.jpg",
        "work/src/a/good.jpg",
    ]
    rows = {r["input"]: r for r in read_state(resolve(str(dst))).to_pylist()}
    for key in ("../outside/secret.jpg", "a/../../../x.jpg", "/etc/hostname"):
        row = rows[f"{src}/{key}"]
        assert row["status"] == "failed" and repr(key) in row["error"] and row["output"] is None


@pytest.mark.slow
def test_list_file_does_not_lift_the_overlap_check(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\n")
    cfg = RestoreConfig(src=str(tmp_path), dst=str(tmp_path / "out"), list_file=str(listing))
    with pytest.raises(ValueError, match="inside"):
        run_restore(cfg)


@pytest.mark.slow
def test_s3_keys_with_dot_dot_and_empty_segments_stay_out_of_a_local_dst(ray_local, s3_bucket, tmp_path, weights):
    """SeaweedFS refuses to store keys with '..' segments (InvalidRequest) and folds '//' into '/', so it cannot list
    such keys (AWS S3 can); here they reach the same plan through a list file on S3 naming keys of an S3 SRC."""
    client = boto3.client("s3")
    for key in ("archive/ok.jpg", "x.jpg", "etc/x.jpg"):  # ok.jpg, and what the bad keys below point at
        client.put_object(Bucket=s3_bucket, Key=key, Body=_jpeg(len(key)))
    bad = ["../x.jpg", "a//etc/x.jpg", "/etc/x.jpg", "a/../../etc/x.jpg"]
    client.put_object(Bucket=s3_bucket, Key="lists/todo.txt", Body="\n".join(["ok.jpg", *bad]).encode())
    dst = tmp_path / "deep" / "dst"

    summary = run_restore(
        RestoreConfig(
            src=f"s3://{s3_bucket}/archive",
            dst=str(dst),
            list_file=f"s3://{s3_bucket}/lists/todo.txt",
            weights=weights,
        )
    )

    assert (summary.ok, summary.failed) == (1, len(bad))
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")] == ["deep/dst/ok.jpg"]
    assert not (tmp_path.parent / "etc").exists()
    failed = {r["input"]: r["error"] for r in read_state(resolve(str(dst))).to_pylist() if r["status"] == "failed"}
    assert sorted(failed) == sorted(f"s3://{s3_bucket}/archive/{k}" for k in bad)
    assert all(e.startswith("refused key") for e in failed.values())


def test_clean_scan_refuses_unsafe_keys_unread(tmp_path):
    from pipeline.clean import probe

    (tmp_path / "x.jpg").write_bytes(_jpeg(0))
    row = probe(resolve(str(tmp_path / "src")), "../x.jpg", size=100)
    assert row["kind"] == "unreadable" and row["error"].startswith("refused key '../x.jpg'") and "qf" not in row


def test_inputs_whose_outputs_would_land_in_dst_own_folders_are_refused(tmp_path):
    """SRC an earlier DST: its _reports/ crops would be restored over this run's reports, its _manifest/ likewise."""
    from pipeline.listing import Shard
    from pipeline.restore.plan import PlanOptions, plan_shard

    for key in ("_reports/run/crops/0-before.png", "_manifest/x.jpg", "a.jpg", "sub/_reports/b.jpg"):
        (tmp_path / "src" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / key).write_bytes(_jpeg(0))
    opts = PlanOptions(
        str(tmp_path / "src"), str(tmp_path / "dst"), S3Settings(), OutputFormat.same, (".jpg", ".png"),
        False, None, None, "run", dry_run=True,
    )  # fmt: skip
    rows = [r for block in plan_shard(Shard("", True), opts) for r in block if r.get("key")]
    assert sorted(r["key"] for r in rows if r["status"] == "pending") == ["a.jpg", "sub/_reports/b.jpg"]
    failed = {r["key"]: r["error"] for r in rows if r["status"] == "failed"}
    assert set(failed) == {"_reports/run/crops/0-before.png", "_manifest/x.jpg"}
    assert all("dagn's own folder" in error for error in failed.values())


@pytest.mark.slow
def test_repeated_keys_are_restored_once(ray_local, s3_bucket, weights):
    """A key listed three times (text) or twice (inventory, where a repeat used to fail as its own name clash)."""
    client = boto3.client("s3")
    for key in ("archive/a/1.jpg", "archive/a/2.jpg", "other/3.jpg"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=_jpeg(len(key)))
    client.put_object(Bucket=s3_bucket, Key="lists/todo.txt", Body=b"a/1.jpg\na/2.jpg\na/1.jpg\n\n# note\na/1.jpg\n")
    stat = {o["Key"]: o for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    keys = ["archive/a/1.jpg", "archive/a/2.jpg", "archive/a/1.jpg", "other/3.jpg"]  # other/: outside SRC
    inventory = pa.table(
        {
            "bucket": [s3_bucket] * len(keys),
            "key": keys,
            "size": [stat[k]["Size"] for k in keys],
            "last_modified_date": [stat[k]["LastModified"].astimezone(dt.timezone.utc) for k in keys],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(inventory, buffer)
    client.put_object(Bucket=s3_bucket, Key="lists/inventory.parquet", Body=buffer.getvalue())

    for name in ("todo.txt", "inventory.parquet"):
        dst = f"s3://{s3_bucket}/out-{name}"
        cfg = RestoreConfig(
            src=f"s3://{s3_bucket}/archive", dst=dst, list_file=f"s3://{s3_bucket}/lists/{name}", weights=weights
        )
        summary = run_restore(cfg)

        assert (summary.ok, summary.failed, summary.total) == (2, 0, 2), (name, summary.failures)
        assert sorted(r["key"] for r in read_state(resolve(dst)).to_pylist()) == ["a/1.jpg", "a/2.jpg"]
