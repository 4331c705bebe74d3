from __future__ import annotations

import json

import numpy as np
from PIL import Image
from skimage import data
from typer.testing import CliRunner

import dagn
from dagn.checkpoint import save_model
from jobs.cli import app


def test_evaluate_writes_a_full_report(tmp_path):
    truth = tmp_path / "live1_color"
    truth.mkdir()
    Image.fromarray(data.astronaut()[:96, :80]).save(truth / "a.png")
    Image.fromarray(data.chelsea()[:64, :72]).save(truth / "b.png")
    weights = save_model(dagn.build_model("tiny").eval(), tmp_path / "tiny.safetensors")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["evaluate", str(truth), "--weights", str(weights), "--qf", "10,90", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    folder = out / "live1"  # known set name -> published anchors label
    report = json.loads((folder / "results.json").read_text())
    assert set(report["summary"]) == {"10", "90"} and len(report["images"]) == 4
    assert all(np.isfinite(row["psnr"]) for row in report["images"])
    assert "| 10 |" in (folder / "results.md").read_text()
    assert (folder / "psnr_vs_qf.png").stat().st_size > 1000
    page = (folder / "index.html").read_text()
    assert "crops/a_q10_restored.png" in page and (folder / "crops" / "a_q10_restored.png").exists()


def test_evaluate_rejects_bad_quality(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--qf", "0,200"])
    assert result.exit_code != 0
    assert "qualities" in result.output
