"""The cleaning job: header scan, QF histogram report, restore of what is below the threshold, incremental re-runs."""

from __future__ import annotations

import io
import json
import re

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.clean import histogram, probe
from pipeline.manifest import read_state
from pipeline.storage import resolve


def _image(seed: int, size=(40, 56), gray: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    if gray:
        return Image.fromarray((rng.random(size) * 255).astype("uint8"), "L")
    return Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8"))


def _jpeg(seed: int, quality: int, **save) -> bytes:
    buf = io.BytesIO()
    _image(seed, gray=save.pop("gray", False)).save(buf, format="JPEG", quality=quality, **save)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    _image(seed).save(buf, format="PNG")
    return buf.getvalue()


def test_probe_kinds(tmp_path):
    big_icc = bytes(200_000)  # a 200 kB ICC profile pushes the quantization tables far beyond the first read
    files = {
        "q10.jpg": _jpeg(0, 10),
        "gray35.jpg": _jpeg(1, 35, gray=True),
        "q80-icc.jpg": _jpeg(2, 80, icc_profile=big_icc),
        "png.jpg": _png(3),
        "empty.jpg": b"",
        "junk.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "cut.jpg": _jpeg(4, 50)[:20],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    location = resolve(str(tmp_path))
    found = {name: probe(location, name, len(data), header_bytes=4096) for name, data in files.items()}

    assert (found["q10.jpg"]["kind"], found["q10.jpg"]["qf"]) == ("jpeg", 10)
    assert (found["q10.jpg"]["width"], found["q10.jpg"]["height"]) == (56, 40)
    assert (found["gray35.jpg"]["kind"], found["gray35.jpg"]["qf"]) == ("jpeg", 35)
    assert (found["q80-icc.jpg"]["kind"], found["q80-icc.jpg"]["qf"]) == ("jpeg", 80)
    assert found["png.jpg"]["kind"] == "not-jpeg"
    assert found["empty.jpg"]["kind"] == "empty"
    assert found["junk.jpg"]["kind"] == "unreadable"
    assert found["cut.jpg"]["kind"] == "unreadable"
    assert all(found[n].get("error") for n in ("png.jpg", "empty.jpg", "junk.jpg", "cut.jpg"))
    missing = probe(location, "gone.jpg", 100)
    assert missing["kind"] == "unreadable"
    assert "cannot read" in missing["error"]


def test_histogram_bins():
    bins = histogram([1, 10, 11, 50, 99, 100])
    assert [b["range"] for b in bins][:2] == ["1-10", "11-20"]
    assert bins[-1]["range"] == "91-100"
    assert [b["count"] for b in bins] == [2, 1, 0, 0, 1, 0, 0, 0, 0, 2]


@pytest.mark.slow
def test_clean_on_s3_then_incremental(ray_local, s3_server, s3_bucket, tmp_path):
    from dagn import build_model
    from dagn.checkpoint import save_model

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    archive = {
        "2024/q15.jpg": _jpeg(0, 15),
        "2024/deep/q30.jpeg": _jpeg(1, 30),
        "2024/q90.jpg": _jpeg(2, 90),
        "gray20.jpg": _jpeg(3, 20, gray=True),
        "fake.jpg": _png(4),
        "empty.jpg": b"",
        "notes.txt": b"not scanned",
    }
    for key, data in archive.items():
        s3.put_object(Bucket=s3_bucket, Key=f"archive/{key}", Body=data)
    weights = save_model(build_model("tiny"), tmp_path / "tiny.safetensors")
    src, dst = f"s3://{s3_bucket}/archive", f"s3://{s3_bucket}/clean"
    args = ["clean", src, dst, "--threshold", "50", "--weights", str(weights), "--workers", "1", "--batch-size", "2"]

    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    restored = {"2024/q15.jpg", "2024/deep/q30.jpeg", "gray20.jpg"}
    outputs = _keys(s3, s3_bucket, "clean/")
    assert {k for k in outputs if not k.startswith("_")} == restored
    report = _latest_report(s3, s3_bucket, outputs)
    summary = json.loads(_get(s3, s3_bucket, f"clean/{report}/summary.json"))
    assert summary["counts"] == {
        "files": 6,
        "bytes": sum(len(v) for k, v in archive.items() if k != "notes.txt"),
        "jpeg": 4,
        "not_jpeg": 1,
        "unreadable": 0,
        "empty": 1,
        "below_threshold": 3,
        "below_threshold_bytes": sum(len(archive[k]) for k in restored),
    }
    assert [b["count"] for b in summary["qf_histogram"]] == [0, 2, 1, 0, 0, 0, 0, 0, 1, 0]
    assert (summary["restore"]["ok"], summary["restore"]["failed"]) == (3, 0)
    assert summary["scan"] == {**summary["scan"], "read": 6, "reused": 0}
    markdown = _get(s3, s3_bucket, f"clean/{report}/summary.md").decode()
    assert "| 11-20 | 2 |" in markdown
    # The run's page: the scan's findings and histogram, and what the restore did, with before/after crops.
    assert summary["page"] == f"{dst}/{report}/index.html"
    record = json.loads(_get(s3, s3_bucket, f"clean/{report}/report.json"))
    assert (record["command"], record["counts"], record["qf_found"]) == (
        "clean",
        {"ok": 3},
        [0, 2, 1, 0, 0, 0, 0, 0, 1, 0],
    )
    assert record["reasons"]["scan"] == {
        "JPEG, quality below 50": 3, "JPEG, quality 50 or more": 1, "not a JPEG": 1, "unreadable": 0, "empty": 1
    }  # fmt: skip
    assert sum(record["qf_restored"]) == 3 and len(record["sample"]) == 3
    page = _get(s3, s3_bucket, f"clean/{report}/index.html").decode()
    crops = [k for k in outputs if k.startswith(f"{report}/crops/")]
    assert len(crops) == 6 and all(k.split("/", 2)[2] in page for k in crops)
    # The report is written per shard (here the top level and 2024/), as are the restore lists.
    shard_reports = sorted(k for k in outputs if k.startswith(f"{report}/scan/"))
    assert len(shard_reports) == 2
    rows = {r["key"]: r for key in shard_reports for r in _parquet(s3, s3_bucket, f"clean/{key}")}
    assert set(rows) == set(archive) - {"notes.txt"}
    assert (
        rows["2024/q15.jpg"] | {"qf": 15, "action": "restore", "input": f"{src}/2024/q15.jpg"} == rows["2024/q15.jpg"]
    )
    assert rows["2024/q90.jpg"]["action"] == "keep"
    assert (rows["fake.jpg"]["kind"], rows["fake.jpg"]["action"]) == ("not-jpeg", "ignore")
    lists = [k for k in outputs if k.startswith(f"{report}/restore-list/")]
    assert sorted(line for k in lists for line in _get(s3, s3_bucket, f"clean/{k}").decode().split()) == sorted(
        restored
    )
    state = {r["key"]: r for r in read_state(resolve(dst)).to_pylist()}  # what the restore did, per file
    assert {k for k, r in state.items() if r["status"] == "ok"} == restored

    # Nightly re-run after one new upload: the old files are not read again, only the new one is restored.
    s3.put_object(Bucket=s3_bucket, Key="archive/2025/new-q25.jpg", Body=_jpeg(5, 25))
    second = CliRunner().invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    outputs = _keys(s3, s3_bucket, "clean/")
    report = _latest_report(s3, s3_bucket, outputs)
    summary = json.loads(_get(s3, s3_bucket, f"clean/{report}/summary.json"))
    assert summary["scan"] == {**summary["scan"], "read": 1, "reused": 6}
    assert (summary["restore"]["ok"], summary["restore"]["skipped"]) == (1, 3)
    assert "2025/new-q25.jpg" in outputs


@pytest.mark.slow
def test_scan_only_run(ray_local, s3_server, s3_bucket, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key="in/a.jpg", Body=_jpeg(0, 10))
    s3.put_object(Bucket=s3_bucket, Key="in/b.jpg", Body=_jpeg(1, 95))
    result = CliRunner().invoke(
        app, ["clean", f"s3://{s3_bucket}/in", "--reports", str(tmp_path / "reports")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "reports").glob("clean-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dry_run"] is True
    assert summary["restore"] is None
    assert summary["counts"]["below_threshold"] == 1
    assert [p.read_text().split() for p in (folder / "restore-list").iterdir()] == [["a.jpg"]]
    assert summary["page"] == str(folder / "index.html")
    assert "JPEG, quality below 50" in (folder / "index.html").read_text()
    record = json.loads((folder / "report.json").read_text())
    assert record["reasons"]["scan"]["JPEG, quality below 50"] == 1 and sum(record["qf_found"]) == 2
    assert _keys(s3, s3_bucket, "in/") == {"a.jpg", "b.jpg"}  # nothing written next to the source

    dry = CliRunner().invoke(app, ["clean", f"s3://{s3_bucket}/in", f"s3://{s3_bucket}/dst", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "nothing written" in dry.output
    assert re.search(r"│\s*2\s*│\s*2\s*│\s*1\s*│", dry.output)  # files, JPEGs, below the threshold
    assert _keys(s3, s3_bucket, "dst/") == set()  # no report, no scan state, no lease


def _keys(s3, bucket: str, prefix: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}


def _latest_report(s3, bucket: str, outputs: set[str]) -> str:
    return sorted({"/".join(k.split("/")[:2]) for k in outputs if k.startswith("_reports/clean-")})[-1]


def _get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _parquet(s3, bucket: str, key: str) -> list[dict]:
    return pq.read_table(io.BytesIO(_get(s3, bucket, key))).to_pylist()
