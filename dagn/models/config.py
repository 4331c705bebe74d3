"""Typed, frozen configuration of a DAGN network; a variant is a named instance of :class:`DAGNConfig`."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DAGNConfig", "EncoderConfig"]


class EncoderConfig(BaseModel):
    """A ResNet-style CI or CS encoder (ResNet-50 in the released model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(64, ge=4, description="Stem channels; stage i uses width * 2**i mid channels.")
    depths: tuple[int, int, int, int] = Field((3, 4, 6, 3), description="Bottleneck blocks per stage.")

    @property
    def out_channels(self) -> int:
        return self.width * 8 * 4


class DAGNConfig(BaseModel):
    """Hyper-parameters of the restoration U-Net, its two encoders and the stage-1/2 heads.

    Defaults are the released ("paper") architecture; see dagn/models/dagn.py for what each part does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    in_channels: int = Field(3, description="Image channels (RGB).")
    unshuffle: int = Field(
        1,
        ge=1,
        description="Pixel-unshuffle factor in front of the U-Net head (1 = full-resolution head, as released).",
    )
    widths: tuple[int, ...] = Field((64, 128, 256, 512), description="U-Net channels per scale, finest first.")
    encoder_blocks: int = Field(4, ge=0, description="ResBlocks per U-Net encoder scale.")
    bottleneck_blocks: int = Field(4, ge=0, description="ResBlocks before and after the CFF module.")
    decoder_blocks: int = Field(4, ge=1, description="Guided blocks per decoder scale and per guider (CS, then CI).")
    guide_dim: int = Field(512, ge=1, description="Width of the guider MLPs.")
    fusion_dim: int = Field(256, ge=1, description="Query/key/value width of the cross-feature fusion.")
    fusion_grids: tuple[int, ...] = Field((1, 2, 4, 8), description="Pooling grids that form the CFF key tokens.")
    global_residual: bool = Field(
        False, description="Predict a correction added to the input instead of the image itself (not in the release)."
    )
    cs_highpass: bool = Field(
        False,
        description="Feed the CS encoder the image minus its 3x3 local mean (not in the release): compression cues "
        "live in high frequencies, and a small encoder learns the QF from this input several times faster.",
    )
    ci_encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Compression-insensitive encoder.")
    cs_encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Compression-sensitive encoder.")
    discriminator_dim: int = Field(256, ge=1, description="Width of the stage-1 feature discriminator.")
    quality_head_dim: int = Field(256, ge=1, description="Hidden width of the stage-2 quality-factor head.")

    @model_validator(mode="after")
    def _check(self) -> DAGNConfig:
        if len(self.widths) < 2:
            raise ValueError("widths needs at least two scales")
        return self

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to a multiple of this: U-Net downsamplings and the encoders' output stride 16."""
        return math.lcm(self.unshuffle * 2 ** (len(self.widths) - 1), 16)
