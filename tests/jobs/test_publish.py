from __future__ import annotations

import json

from typer.testing import CliRunner

import dagn
from dagn.checkpoint import content_hash, load_model, save_model
from jobs.cli import app


def test_publish_names_by_hash_and_writes_card_and_log(tmp_path):
    model_file = save_model(dagn.build_model("tiny").eval(), tmp_path / "model.safetensors", {"variant": "tiny"})
    eval_dir = tmp_path / "eval" / "live1"
    eval_dir.mkdir(parents=True)
    (eval_dir / "results.md").write_text("| QF | x |\n|---|---|\n| 10 | 1 |\n")
    log = tmp_path / "train.log"
    log.write_text(
        "(RayTrainWorker pid=1) stage 3 step 100/200 (run ends at 200) loss 0.1\n"
        "(RayTrainWorker pid=1) stage 3 step 110/200 (run ends at 200) loss 0.1\nnoise\n"
    )
    out = tmp_path / "weights"
    result = CliRunner().invoke(
        app,
        [
            "publish",
            str(model_file),
            "--eval-dir",
            str(tmp_path / "eval"),
            "--log",
            str(log),
            "--weights-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    name = json.loads((out / "default.json").read_text())["file"]
    assert name == f"dagn-tiny-{content_hash(model_file)}.safetensors"
    assert load_model(out / name).config == dagn.get_config("tiny")
    card = (out / "MODEL_CARD.md").read_text()
    assert "| 10 | 1 |" in card and "0.14 M parameters" in card
    assert (out / "training-log.txt").read_text().splitlines() == [
        f"# {name}: `dagn train` progress lines",
        "stage 3 step 100/200 (run ends at 200) loss 0.1",
    ]

    # A model trained further from the shipped one: its card says so, and the log keeps the earlier run above.
    first = out / name
    model_file = save_model(
        dagn.build_model("tiny").eval(), tmp_path / "model2.safetensors", {"variant": "tiny", "init_from": str(first)}
    )
    log.write_text("(RayTrainWorker pid=2) stage 3 step 300/400 (run ends at 400) loss 0.05\n")
    result = CliRunner().invoke(app, ["publish", str(model_file), "--log", str(log), "--weights-dir", str(out)])
    assert result.exit_code == 0, result.output
    second = json.loads((out / "default.json").read_text())["file"]
    assert second != name
    assert f"| continued from | `{first}` |" in (out / "MODEL_CARD.md").read_text()
    assert (out / "training-log.txt").read_text().splitlines() == [
        f"# {name}: `dagn train` progress lines",
        "stage 3 step 100/200 (run ends at 200) loss 0.1",
        "",
        f"# {second}: `dagn train` progress lines",
        "stage 3 step 300/400 (run ends at 400) loss 0.05",
    ]
