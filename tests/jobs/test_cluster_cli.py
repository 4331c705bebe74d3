"""Options of submit / clean / jobs fail before any work, naming the field; token and address handling. No Ray here."""

from __future__ import annotations

import shlex

import pytest
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from jobs.cli import app
from jobs.ray_client import ClusterError, find_token, normalise_address, scrub
from jobs.submit import DEFAULT_EXCLUDES, SubmitSettings, check_command, entrypoint_for, parse_env, runtime_env_for


def run(*args: str, **env: str):
    return CliRunner().invoke(app, list(args), env=env or None)


def flat(output: str) -> str:
    """The output with rich's panel borders and line wrapping removed."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)


# -- dagn clean --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "yaml_text", "expected"),
    [
        (["--threshold", "0"], None, "threshold"),
        (["--workers", "0"], None, "restore.workers"),
        ([], "restore:\n  workers: 0\n", "restore.workers"),
        ([], "restore:\n  tile_overlap: 600\n  tile: 512\n", "tile_overlap"),
        ([], "thresold: 40\n", "thresold"),
        ([], "restore:\n  src: s3://elsewhere\n", "set by the cleaning job"),
        ([], "header_bytes: 10\n", "header_bytes"),
    ],
)
def test_clean_config_errors_name_the_field(tmp_path, args, yaml_text, expected):
    extra = []
    if yaml_text is not None:
        (tmp_path / "clean.yaml").write_text(yaml_text)
        extra = ["--config", str(tmp_path / "clean.yaml")]
    result = run("clean", str(tmp_path / "in"), str(tmp_path / "out"), *args, *extra)
    assert result.exit_code == 2
    assert expected in result.output


def test_clean_refuses_a_destination_inside_the_source(tmp_path):
    for src, dst in ((str(tmp_path), str(tmp_path / "restored")), ("s3://b/photos/", "s3://b/photos/clean")):
        result = run("clean", src, dst)
        assert result.exit_code == 2
        assert "must not be the source or lie inside it" in flat(result.output)
    from pipeline.clean import CleanConfig

    assert CleanConfig(src="s3://b/photos", dst="s3://b/photos-clean").dst == "s3://b/photos-clean"


def test_clean_without_dst_needs_a_report_location(tmp_path):
    result = run("clean", str(tmp_path))
    assert result.exit_code == 2
    assert "reports" in result.output


def test_clean_yaml_and_flags_merge(tmp_path):
    from jobs.settings import load_settings
    from pipeline.clean import CleanConfig

    (tmp_path / "c.yaml").write_text("threshold: 40\nrestore:\n  workers: 3\n  batch_size: 8\n")
    flags = {"restore.workers": 5, "restore.weights": None}
    cfg = load_settings(CleanConfig, tmp_path / "c.yaml", src="in", dst="out", **flags)
    assert cfg.threshold == 40
    assert cfg.restore == {"workers": 5, "batch_size": 8}
    restore = cfg.restore_config("list.txt")
    assert (restore.max_qf, restore.workers, restore.batch_size, restore.list_file) == (39, 5, 8, "list.txt")


# -- dagn submit ---------------------------------------------------------------------------------------------------


def test_submit_checks_the_command_before_contacting_anything(no_cluster_env):
    unknown = run("submit", "--address", "http://127.0.0.1:1", "restor", "a", "b")
    assert unknown.exit_code == 2
    assert "cannot be submitted" in unknown.output
    assert "restore" in unknown.output
    typo = run("submit", "--address", "http://127.0.0.1:1", "restore", "a", "b", "--wrokers", "2")
    assert typo.exit_code == 2
    assert "--wrokers" in typo.output
    wrong_type = run("submit", "--address", "http://127.0.0.1:1", "restore", "a", "b", "--workers", "many")
    assert wrong_type.exit_code == 2
    assert "--workers" in wrong_type.output
    nested = run("submit", "jobs", "list")
    assert nested.exit_code == 2
    assert "cannot be submitted" in nested.output


def test_submit_needs_an_address(no_cluster_env):
    result = run("submit", "models")
    assert result.exit_code == 2
    assert "RAY_ADDRESS" in result.output
    unreachable = run("submit", "models", RAY_ADDRESS="http://127.0.0.1:1")
    assert unreachable.exit_code == 2
    assert "cannot reach" in unreachable.output


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("num_cpus: -1\n", "num_cpus"),
        ("submission_id: 'has spaces'\n", "submission_id"),
        ("working_dir: /\n", "working_dir"),
        ("env:\n  1BAD: x\n", "env"),
        ("adress: http://x:8265\n", "adress"),
    ],
)
def test_submit_config_errors_name_the_field(tmp_path, no_cluster_env, yaml_text, expected):
    (tmp_path / "submit.yaml").write_text(yaml_text)
    result = run("submit", "--config", str(tmp_path / "submit.yaml"), "models")
    assert result.exit_code == 2
    assert expected in result.output


def test_submit_options_stop_at_the_command_name():
    """Options after the command name are the command's, even when submit has one of the same name."""
    group = typer.main.get_command(app)
    check_command(group, "clean", ["s3://a/in", "s3://a/out", "--config", "clean.yaml", "--address", "x"])
    with pytest.raises(typer.BadParameter, match="--help"):
        check_command(group, "restore", ["--help"])


def test_entrypoint_and_runtime_env(tmp_path, monkeypatch):
    entry = entrypoint_for("restore", ["s3://in/a b", "s3://out", "--quality", "90"])
    assert shlex.split(entry) == ["python", "-m", "jobs.cli", "restore", "s3://in/a b", "s3://out", "--quality", "90"]
    monkeypatch.setenv("DAGN_TEST_SECRET", "s3cr3t-value")
    settings = SubmitSettings(env=parse_env(["DAGN_TEST_SECRET", "A=1"]), excludes=("big/",), pip=("rich",))
    env = runtime_env_for(settings)
    assert env["env_vars"] == {"DAGN_TEST_SECRET": "s3cr3t-value", "A": "1"}
    assert {".venv", "runs", "out", ".git"} <= set(env["excludes"])
    assert env["excludes"][-1] == "big/"
    assert env["pip"] == ["rich"]
    assert (settings.working_dir / "jobs" / "cli.py").is_file()
    assert set(DEFAULT_EXCLUDES) <= set(env["excludes"])
    monkeypatch.delenv("DAGN_NOT_SET", raising=False)
    with pytest.raises(typer.BadParameter, match="DAGN_NOT_SET"):
        parse_env(["DAGN_NOT_SET"])


# -- address and token -----------------------------------------------------------------------------------------------


def test_normalise_address():
    assert normalise_address("http://head:8265/") == "http://head:8265"
    assert normalise_address("head:8265") == "http://head:8265"
    assert normalise_address("https://ray.example.com") == "https://ray.example.com"
    for bad in (None, "", "ray://head:10001", "auto", "ftp://head"):
        with pytest.raises(ClusterError):
            normalise_address(bad)


def test_token_sources_in_order(tmp_path, monkeypatch, no_cluster_env):
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ray/auth_token of this test only
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert find_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert find_token().get_secret_value() == "from-home"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert find_token() is None  # the default file is not sent to clusters without token auth
    path = tmp_path / "token"
    path.write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert find_token().get_secret_value() == "from-file"  # an explicit file is always used
    assert find_token(tmp_path / ".ray" / "auth_token").get_secret_value() == "from-home"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    token = find_token()
    assert token.get_secret_value() == "from-env"
    assert "from-env" not in repr(token) and "from-env" not in str(token)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match="cannot read the Ray token file"):
        find_token()


def test_scrub_removes_token_and_aws_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-1234")
    text = "token tok-5678 and key aws-secret-1234 in an error"
    assert scrub(text, SecretStr("tok-5678")) == "token *** and key *** in an error"


def test_jobs_commands_need_an_address(no_cluster_env):
    for args in (["jobs", "list"], ["jobs", "status", "x"], ["jobs", "logs", "x"], ["jobs", "stop", "x"]):
        result = run(*args)
        assert result.exit_code == 2, args
        assert "RAY_ADDRESS" in result.output


def test_uploaded_package_holds_the_project_and_nothing_heavy(tmp_path):
    """Package the working dir exactly as Ray's job upload does, with our excludes, and look inside the zip."""
    import zipfile

    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import create_package

    env = runtime_env_for(SubmitSettings())
    target = tmp_path / "pkg.zip"
    excludes = ray_constants.get_runtime_env_default_excludes() + env["excludes"]
    create_package(env["working_dir"], target, include_gitignore=True, excludes=excludes)
    names = zipfile.ZipFile(target).namelist()
    assert {"jobs/cli.py", "dagn/__init__.py", "pipeline/restore/run.py", "pyproject.toml"} <= set(names)
    top = {n.split("/", 1)[0] for n in names}
    assert not top & {".venv", ".git", "runs", "out", "data", "build"}
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert target.stat().st_size < 50 * 2**20
