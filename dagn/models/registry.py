"""Named DAGN variants: a registry of frozen configs, and the one place models are built from a name.

* ``paper``: the released architecture (110 M parameters, ~7.7 TFLOP per megapixel).
* ``base``: the same topology at ~1/10 the cost, for GPU training.
* ``small``: the shipped CPU-trainable model (<= 8 M parameters, <= 100 GFLOP/MP): the U-Net runs behind a 2x
  pixel-unshuffle, so every scale works at half the resolution with no information thrown away, and it predicts a
  residual on top of its input, which trains far faster from scratch and starts out doing no harm. Its CS encoder
  reads a high-pass of the input (``cs_highpass``), without which it hardly learns the QF in CPU budgets.
* ``tiny``: for tests.
"""

from __future__ import annotations

from dagn.models.config import DAGNConfig, EncoderConfig
from dagn.models.dagn import DAGN

__all__ = ["build_model", "get_config", "list_variants", "register_variant"]

_VARIANTS: dict[str, DAGNConfig] = {}


def register_variant(name: str, config: DAGNConfig) -> DAGNConfig:
    """Add a named variant; names are unique."""
    if name in _VARIANTS:
        raise ValueError(f"DAGN variant {name!r} is already registered")
    _VARIANTS[name] = config
    return config


def list_variants() -> list[str]:
    return list(_VARIANTS)


def get_config(name: str) -> DAGNConfig:
    try:
        return _VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown DAGN variant {name!r}; choose one of {', '.join(_VARIANTS)}") from None


def build_model(variant: str | DAGNConfig = "small") -> DAGN:
    """A randomly initialised DAGN for a variant name or an explicit config (float32, CPU, train mode)."""
    config = variant if isinstance(variant, DAGNConfig) else get_config(variant)
    return DAGN(config)


register_variant("paper", DAGNConfig())
register_variant(
    "base",
    DAGNConfig(
        unshuffle=2,
        widths=(64, 128, 256, 512),
        encoder_blocks=2,
        bottleneck_blocks=2,
        decoder_blocks=2,
        global_residual=True,
        cs_highpass=True,
        ci_encoder=EncoderConfig(width=32, depths=(2, 2, 2, 2)),
        cs_encoder=EncoderConfig(width=32, depths=(2, 2, 2, 2)),
    ),
)
register_variant(
    "small",
    DAGNConfig(
        unshuffle=2,
        widths=(32, 48, 96, 192),
        encoder_blocks=1,
        bottleneck_blocks=1,
        decoder_blocks=1,
        guide_dim=128,
        fusion_dim=64,
        global_residual=True,
        cs_highpass=True,
        ci_encoder=EncoderConfig(width=8, depths=(1, 1, 2, 1)),
        cs_encoder=EncoderConfig(width=8, depths=(1, 1, 2, 1)),
        discriminator_dim=64,
        quality_head_dim=64,
    ),
)
register_variant(
    "tiny",
    DAGNConfig(
        unshuffle=2,
        widths=(8, 16, 32),
        encoder_blocks=1,
        bottleneck_blocks=1,
        decoder_blocks=1,
        guide_dim=16,
        fusion_dim=8,
        fusion_grids=(1, 2),
        global_residual=True,
        cs_highpass=True,
        ci_encoder=EncoderConfig(width=4, depths=(1, 1, 1, 1)),
        cs_encoder=EncoderConfig(width=4, depths=(1, 1, 1, 1)),
        discriminator_dim=8,
        quality_head_dim=8,
    ),
)
