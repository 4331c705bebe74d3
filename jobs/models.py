"""``dagn models``: the registered variants with their counted (not hand-written) size and cost."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dagn import build_model, list_variants
from dagn.complexity import count_parameters, gflops_per_megapixel


def models(
    size: Annotated[
        int, typer.Option(help="Square input side used to count FLOPs (any size gives the same per-MP cost).")
    ] = 512,
) -> None:
    """List the DAGN variants: parameters and GFLOP per megapixel of input, counted on the meta device."""
    import torch

    table = Table("variant", "parameters (M)", "CI / CS encoder (M)", "GFLOP per MP", "pad to multiple of")
    for name in list_variants():
        with torch.device("meta"):
            model = build_model(name)
        table.add_row(
            name,
            f"{count_parameters(model) / 1e6:.2f}",
            f"{count_parameters(model.ci_encoder) / 1e6:.2f} / {count_parameters(model.cs_encoder) / 1e6:.2f}",
            f"{gflops_per_megapixel(model, size, size):.1f}",
            str(model.config.size_multiple),
        )
    Console().print(table)
