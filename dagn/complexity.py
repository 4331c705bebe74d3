"""Count parameters and FLOPs of a model (never hand-written): FLOPs are counted by running it on the meta device."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_parameters", "gflops_per_megapixel"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, height: int, width: int, channels: int = 3) -> int:
    """FLOPs (multiply and add counted separately) of one forward pass on a 1 x C x H x W input.

    Convolutions, matmuls and attention are counted (normalisation and activations are not, as is customary).
    The model is copied to the meta device so even the 110 M-parameter variant costs no real compute.
    """
    meta = _to_meta(model).eval()
    x = torch.zeros(1, channels, height, width, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops()


def gflops_per_megapixel(model: nn.Module, height: int = 512, width: int = 512) -> float:
    return count_flops(model, height, width) / 1e9 / (height * width / 1e6)


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("meta")
