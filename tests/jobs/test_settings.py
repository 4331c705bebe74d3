from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel, ConfigDict, Field

from jobs.settings import load_settings


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=1)
    name: str = "x"


def test_yaml_then_flags_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 3\nname: from-file\n")
    assert load_settings(Opts, f, name=None) == Opts(workers=3, name="from-file")
    assert load_settings(Opts, f, workers=5) == Opts(workers=5, name="from-file")


def test_errors_name_the_field(tmp_path):
    with pytest.raises(typer.BadParameter, match="workers"):
        load_settings(Opts, None, workers=0)
    f = tmp_path / "c.yaml"
    f.write_text("wrokers: 2\n")
    with pytest.raises(typer.BadParameter, match="wrokers"):
        load_settings(Opts, f)
    f.write_text("- a list\n")
    with pytest.raises(typer.BadParameter, match="mapping"):
        load_settings(Opts, f)
