"""dagn: JPEG compression-artifact removal with DAGN (arXiv 2405.09291). Pure PyTorch; no Ray in this package.

The public names below are imported on first use (PEP 562), so that ``import dagn.jpeg`` (numpy and Pillow only)
does not load torch: the restore pipeline's read and write workers decode, estimate quality and encode without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagn.inference import Restorer, restore_image
    from dagn.models import DAGN, DAGNConfig, build_model, get_config, list_variants

__all__ = ["DAGN", "DAGNConfig", "Restorer", "build_model", "get_config", "list_variants", "restore_image"]

_HOMES = {
    "DAGN": "dagn.models",
    "DAGNConfig": "dagn.models",
    "build_model": "dagn.models",
    "get_config": "dagn.models",
    "list_variants": "dagn.models",
    "Restorer": "dagn.inference",
    "restore_image": "dagn.inference",
}


def __getattr__(name: str) -> object:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # a submodule used as an attribute (``dagn.checkpoint.load_model``), as when everything was imported eagerly
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'dagn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
