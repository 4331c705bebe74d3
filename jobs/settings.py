"""Job options come from one pydantic model; a YAML file may supply them and command-line flags override it.

Validation happens here, before any work starts, and errors name the offending field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["load_settings"]

T = TypeVar("T", bound=BaseModel)


def load_settings(model: type[T], config_file: Path | None = None, **overrides: Any) -> T:
    """Build ``model`` from an optional YAML mapping plus flag values (``None`` means "not given on the command line").

    A dotted override name sets one nested value and keeps its siblings from the file: ``**{"s3.endpoint_url": url}``.
    Raises ``typer.BadParameter`` with every invalid field named, so a CLI fails before doing anything.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise typer.BadParameter(f"cannot read config file {config_file}: {e}") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"config file {config_file} must hold a mapping of option names to values")
        values.update(loaded)
    for name, value in overrides.items():
        if value is not None:
            _set_nested(values, name.split("."), value)
    try:
        return model.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors())
        raise typer.BadParameter(f"invalid {model.__name__}: {problems}") from None


def _set_nested(values: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        child = values.get(key)
        values[key] = child = dict(child) if isinstance(child, dict) else {}
        values = child
    values[path[-1]] = value
