"""``dagn train`` parses flags and YAML into one TrainConfig and fails early, naming the bad option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import pipeline.train
from jobs.cli import app
from pipeline.train import StageResult, TrainConfig

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch):
    """Replace the training library call; record the config it gets and report every stage finished."""
    seen: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig) -> list[StageResult]:
        seen.append(cfg)
        return [
            StageResult(stage=n, step=cfg.stage_steps(n), total_steps=cfg.stage_steps(n), finished=True)
            for n in cfg.stages()
        ]

    monkeypatch.setattr(pipeline.train, "train", fake_train)
    return seen


def test_help_lists_the_options():
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--variant", "--data", "--out", "--stage", "--steps", "--workers", "--gpus-per-worker", "--config"):
        assert option in result.output


def test_flags_build_the_config(captured, tmp_path):
    args = ["train", "--variant", "tiny", "--data", "s3://bucket/images", "--out", str(tmp_path / "run")]
    args += ["--stage", "2", "--steps", "7", "--workers", "2", "--batch-size", "4", "--lr", "3e-4"]
    args += ["--patch-size", "48", "--stage3-steps", "99"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (cfg,) = captured
    assert (cfg.variant, cfg.data, cfg.out, cfg.stage) == ("tiny", "s3://bucket/images", str(tmp_path / "run"), "2")
    assert (cfg.steps, cfg.workers, cfg.batch_size, cfg.stage3_steps) == (7, 2, 4, 99)
    assert cfg.optim.lr == 3e-4 and cfg.data_config.degradation.patch_size == 48
    assert "stage 2: finished at step 2000/2000" in result.output


def test_yaml_gives_options_and_flags_override(captured, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "variant: tiny\ndata: data\nout: out\nworkers: 2\noptim:\n  lr: 0.001\n"
        "data_config:\n  val_images: 3\n  degradation:\n    patch_size: 32\n"
    )
    result = runner.invoke(app, ["train", "--config", str(config), "--workers", "1"])
    assert result.exit_code == 0, result.output
    (cfg,) = captured
    assert cfg.workers == 1 and cfg.optim.lr == 1e-3 and cfg.data_config.val_images == 3
    assert cfg.data_config.degradation.patch_size == 32
    assert cfg.out.startswith("/") and cfg.out.endswith("/out")  # local paths made absolute for the workers
    assert "model: " in result.output


@pytest.mark.parametrize(
    ("args", "yaml_text", "message"),
    [
        (["--workers", "0"], None, "workers"),
        (["--variant", "huge"], None, "unknown variant"),
        (["--stage", "4"], None, "stage"),
        (["--patch-size", "40"], None, "multiple of 16"),
        ([], "wrokers: 2\n", "wrokers"),
        ([], "optim:\n  lr: -1\n", "optim.lr"),
        ([], "- not a mapping\n", "mapping"),
    ],
)
def test_invalid_options_fail_before_training(captured, tmp_path, args, yaml_text, message):
    base = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    if yaml_text is not None:
        config = tmp_path / "bad.yaml"
        config.write_text(yaml_text)
        base += ["--config", str(config)]
    result = runner.invoke(app, base + args, terminal_width=200)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert captured == []


def test_data_and_out_are_required(captured):
    result = runner.invoke(app, ["train", "--variant", "tiny"], terminal_width=200)
    assert result.exit_code == 2 and "data" in result.output and "out" in result.output
    assert captured == []
