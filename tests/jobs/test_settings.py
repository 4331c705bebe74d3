from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel, ConfigDict, Field

from jobs.settings import load_settings


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = None
    region: str = "r0"


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=1)
    name: str = "x"
    inner: Inner = Field(default_factory=Inner)


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


def test_dotted_flags_set_one_nested_value_and_keep_the_files_siblings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  region: from-file\n")
    assert load_settings(Opts, f, **{"inner.url": "http://s3"}).inner == Inner(url="http://s3", region="from-file")
    assert load_settings(Opts, f, **{"inner.url": None}).inner == Inner(region="from-file")
    assert load_settings(Opts, None, **{"inner.url": "u"}).inner == Inner(url="u")
    with pytest.raises(typer.BadParameter, match=r"inner\.wrong"):
        load_settings(Opts, None, **{"inner.wrong": 1})


def test_s3_endpoint_flag_reaches_every_job_config(tmp_path):
    from pipeline.clean import CleanConfig
    from pipeline.restore import RestoreConfig
    from pipeline.train import TrainConfig

    f = tmp_path / "c.yaml"
    f.write_text("s3:\n  region: eu-west-1\n")
    restore = load_settings(RestoreConfig, f, src="a", dst="b", **{"s3.endpoint_url": "http://127.0.0.1:1"})
    train = load_settings(TrainConfig, f, data="s3://b/d", out="s3://b/o", **{"s3.endpoint_url": "http://127.0.0.1:1"})
    clean = load_settings(
        CleanConfig, f, src="s3://b/in", dst="s3://b/out", **{"s3.endpoint_url": "http://127.0.0.1:1"}
    )
    for s3 in (restore.s3, train.s3, clean.s3, clean.restore_config("list.txt").s3):
        assert (s3.endpoint_url, s3.resolved_region()) == ("http://127.0.0.1:1", "eu-west-1")
