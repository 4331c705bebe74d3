"""``dagn <command> --help`` shows, for every flag made from a config field, the default that config really has."""

from __future__ import annotations

import functools
import re
from enum import Enum

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli import app
from jobs.options import ConfigArgument, config_parameters, shown_default

runner = CliRunner()


def _commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()):
    for command in typer_app.registered_commands:
        yield (*prefix, command.name or command.callback.__name__.replace("_", "-")), command.callback
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name))


COMMANDS = list(_commands(app))


def test_every_command_is_checked():
    names = {" ".join(name) for name, _ in COMMANDS}
    assert {"restore", "clean", "train", "evaluate", "submit", "jobs list", "dev s3"} <= names


def _config_default(model, path: str, decls: tuple[str, ...]) -> str | None:
    """The default as the config itself holds it (defaults filled in, nothing validated), written as help shows it."""
    value = functools.reduce(lambda obj, name: getattr(obj, name, None), path.split("."), model.model_construct())
    if value is None:  # also a required field: there is no default to show
        return None
    if isinstance(value, bool) and decls and "/" in decls[0]:
        return decls[0].split("/")[0 if value else 1]
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


@pytest.mark.parametrize(("name", "callback"), COMMANDS, ids=[" ".join(n) for n, _ in COMMANDS])
def test_help_defaults_equal_the_config(name, callback):
    result = runner.invoke(app, [*name, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for parameter, info in config_parameters(callback).items():
        if isinstance(info, ConfigArgument):
            continue
        flag = info.param_decls[0].split("/")[0] if info.param_decls else "--" + parameter.replace("_", "-")
        (line,) = [line for line in lines if re.match(rf"^[│\s]*{re.escape(flag)}(?![\w-])", line)]
        shown = re.search(r"\[default: ([^\]]*)\]", line)
        expected = _config_default(info.model, info.path, info.param_decls or ())
        assert (shown.group(1) if shown else None) == expected, f"{' '.join(name)} {flag}: {line.strip()}"


def test_a_nested_flag_shows_the_default_its_parent_config_holds():
    """TrainConfig's data_config holds a degradation of its own (64 px patches), not DegradationConfig's (96)."""
    from dagn.degradation import DegradationConfig
    from pipeline.train import TrainConfig

    assert DegradationConfig.model_fields["patch_size"].default == 96
    line = [ln for ln in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"}).output.splitlines()
            if "--patch-size" in ln]  # fmt: skip
    assert "[default: 64]" in line[0] and shown_default(TrainConfig, "data_config.degradation.patch_size") == "64"
