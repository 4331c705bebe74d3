"""Command-line options, one source each: flags of a config field are made from the pydantic field, and options
several commands share are defined once here.

A flag made by :func:`config_option` takes its help from the field's description and shows the default the config
really has, so the two cannot drift; it remembers the dotted field it sets, and :func:`build_config` turns the flags
a user gave into the config (over a YAML file, if any). A flag's Python default is ``None``, meaning "not given":
a value from the YAML file then stays.
"""

from __future__ import annotations

import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from typer.models import ArgumentInfo, OptionInfo

from jobs.settings import load_settings

__all__ = [
    "ConfigFile",
    "Debug",
    "JobApiAddress",
    "RayAddress",
    "S3Endpoint",
    "TokenFile",
    "build_config",
    "config_argument",
    "config_option",
    "config_parameters",
    "shown_default",
]

T = TypeVar("T", bound=BaseModel)

RayAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        show_envvar=True,
        help="Ray cluster to join (a Ray job sets RAY_ADDRESS); default: a local Ray that ends with the command.",
    ),
]
JobApiAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"],
        show_envvar=True,
        help="Ray job API URL, http://HEAD:8265.",
    ),
]
S3Endpoint = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint",
        envvar="AWS_ENDPOINT_URL",
        show_envvar=True,
        help="S3-compatible endpoint URL; keys come from the usual AWS_* variables.",
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(help="File with the cluster token. Default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray."),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", dir_okay=False, help="YAML file with any option of the command; flags win."),
]
Debug = Annotated[
    bool,
    typer.Option("--debug", envvar="DAGN_DEBUG", help="Show the full traceback when something fails."),
]


class ConfigOption(OptionInfo):
    """A typer option made from field ``path`` of ``model``; it sets ``sets`` (by default ``path``) of the
    command's config."""

    def __init__(self, model: type[BaseModel], path: str, sets: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.path, self.sets = model, path, sets or path


class ConfigArgument(ArgumentInfo):
    """A typer argument made from field ``path`` of ``model``, setting that field of the command's config."""

    def __init__(self, model: type[BaseModel], path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.path, self.sets = model, path, path


def _field(model: type[BaseModel], path: str) -> tuple[Any, str | None]:
    """The default the config has at ``path`` (a dotted field name; ``...`` if required) and its description.

    Nested defaults are read from the parent's default instance, which may differ from the nested class's own.
    """
    *parents, leaf = path.split(".")
    owner: Any = model
    instance: Any = None
    for name in parents:
        info = owner.model_fields[name]
        instance = info.get_default(call_default_factory=True) if instance is None else getattr(instance, name)
        owner = type(instance)
    info = owner.model_fields[leaf]
    if instance is not None:
        return getattr(instance, leaf), info.description
    return (... if info.is_required() else info.get_default(call_default_factory=True)), info.description


def shown_default(model: type[BaseModel], path: str, decls: tuple[str, ...] = ()) -> str | None:
    """How the help shows the default of ``path`` (None: nothing to show, the description says what happens)."""
    default, _ = _field(model, path)
    if default is None or default is ...:
        return None
    if isinstance(default, bool) and decls and "/" in decls[0]:
        on, off = decls[0].split("/")
        return on if default else off
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, (list, tuple)):
        return ",".join(str(v) for v in default)
    return str(default)


def _help(model: type[BaseModel], path: str, decls: tuple[str, ...], extra: str | None) -> str:
    _, description = _field(model, path)
    text = " ".join(part for part in (description, extra) if part)
    shown = shown_default(model, path, decls)
    # Typer renders help as rich markup, where "[default: x]" would be read as a style tag: escape the bracket.
    return f"{text} \\[default: {shown}]" if shown is not None else text


def config_option(
    model: type[BaseModel],
    path: str,
    *decls: str,
    sets: str | None = None,
    extra_help: str | None = None,
    **kwargs: Any,
):
    """A flag for field ``path`` of ``model``: help from the field, the real default shown (use ``None`` as the
    parameter's default). ``sets``: where the value goes in the command's config when that is not ``path`` of
    ``model`` (e.g. a restore option of ``dagn clean``); ``extra_help`` adds what only the flag needs saying."""
    return ConfigOption(
        model,
        path,
        sets,
        default=...,
        param_decls=decls or None,
        help=_help(model, path, decls, extra_help),
        show_default=False,
        **kwargs,
    )


def config_argument(model: type[BaseModel], path: str, **kwargs: Any):
    """A positional argument for field ``path`` of ``model``, with the field's description as its help."""
    _, description = _field(model, path)
    return ConfigArgument(model, path, default=..., help=description, show_default=False, **kwargs)


def config_parameters(command: Any) -> dict[str, ConfigOption | ConfigArgument]:
    """The parameters of a command function that set config fields, by parameter name."""
    hints = typing.get_type_hints(command, include_extras=True)
    found = {}
    for name in inspect.signature(command).parameters:
        for meta in getattr(hints.get(name), "__metadata__", ()):
            if isinstance(meta, (ConfigOption, ConfigArgument)):
                found[name] = meta
    return found


def build_config(command: Any, ctx: typer.Context, model: type[T], config_file: Path | None = None, **extra: Any) -> T:
    """``model`` from the YAML file, then every config flag of ``command`` (the command function) that was given;
    ``extra``: values the command computes or shared options (dotted names like the flags')."""
    values = {info.sets: ctx.params.get(name) for name, info in config_parameters(command).items()}
    return load_settings(model, config_file, **values, **extra)
