"""Run reports: the record stays bounded however long the run, and a real restore's page renders in headless
Chromium with the run's counts and every image loading."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import dagn
from dagn.checkpoint import save_model
from jobs.cli import app
from pipeline.report import RunRecord


def _rows(n: int, start: int = 0) -> pa.Table:
    status = ["ok" if i % 3 else "failed" for i in range(start, start + n)]
    return pa.table(
        {
            "input": [f"s3://b/in/{i}.jpg" for i in range(start, start + n)],
            "output": [f"s3://b/out/{i}.jpg" for i in range(start, start + n)],
            "status": status,
            "reason": [None] * n,
            "error": [None if s == "ok" else f"corrupt data: detail {i}" for i, s in enumerate(status)],
            "qf": [(i % 100) + 1 for i in range(start, start + n)],
            "width": [100] * n,
            "height": [50] * n,
        }
    )


def test_the_record_stays_bounded_over_a_long_run():
    record = RunRecord(run_id="r", started=0.0)
    for k in range(200):  # 200 batches of 100 rows over ~3 hours
        record.add(_rows(100, start=100 * k), now=60.0 * k)
    assert record.total == 20_000 and record.counts["failed"] == 6_667
    assert sum(record.qf_found) == 20_000 and sum(record.qf_restored) == record.counts["ok"]
    assert len(record.restored_per_bucket) <= record.series_points
    assert sum(record.restored_per_bucket) == record.counts["ok"]
    assert len(record.failures) == 20 and len(record.sample) == 6
    assert record.reasons["failed"] == {"corrupt data": 6_667}  # one reason, not one per message
    indices = sorted(int(re.search(r"(\d+)\.jpg", path).group(1)) for path, _ in record.sample)
    assert indices[-1] > 1000  # the sample is drawn from the whole run, not its first rows
    assert len(record.model_dump_json()) < 20_000


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed when missing (the test machines run as root on a fresh image)."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            check=True,
            capture_output=True,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        found = shutil.which("chromium")
    assert found, "chromium did not install"
    return found


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=15)
    return buffer.getvalue()


def test_a_restore_writes_a_report_that_renders_in_chromium(ray_local, tmp_path, chromium):
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    for name, seed in (("a.jpg", 1), ("sub/b.jpg", 2), ("c.jpg", 3)):
        (src / name).write_bytes(_jpeg(seed))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    torch.manual_seed(0)
    weights = save_model(dagn.build_model("tiny").eval(), tmp_path / "tiny.safetensors")
    runner = CliRunner()
    result = runner.invoke(app, ["restore", str(src), str(dst), "--weights", str(weights), "--tile", "0"])
    assert result.exit_code == 1, result.output  # the broken input failed
    (page,) = dst.glob("_reports/*/index.html")
    assert (page.parent / "report.json").is_file() and len(list(page.parent.glob("crops/*.png"))) == 6

    listed = runner.invoke(app, ["report", str(dst), "--no-open"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert page.parent.name in listed.output and str(page) in listed.output

    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', dom))
    assert counts == {"ok": "3", "failed": "1", "total": "4"}
    images = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', dom)
    assert images and images.group(1) == images.group(2) == "6"  # three before/after pairs, all loaded
    assert "broken.jpg" in dom  # the failure is listed
