"""Compression-sensitive (CS) encoder: a ResNet encoder trained in stage 2 to predict the JPEG quality factor.

The quality head regresses ``(100 - QF) / 100`` from globally pooled features (L1 loss in training); only the
encoder's features are used by DAGN, the head is kept so a trained model can also estimate QF.
"""

from __future__ import annotations

import torch
from torch import nn

from dagn.models.config import DAGNConfig
from dagn.models.resnet import FeatureEncoder

__all__ = ["CSEncoder"]


class CSEncoder(nn.Module):
    """ResNet feature encoder plus a pooled MLP head for the quality factor."""

    def __init__(self, config: DAGNConfig) -> None:
        super().__init__()
        enc = config.cs_encoder
        self.encoder = FeatureEncoder(in_channels=config.in_channels, width=enc.width, depths=enc.depths)
        self.quality_head = nn.Sequential(
            nn.Linear(enc.out_channels, config.quality_head_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.quality_head_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W), H and W multiples of 16 -> features (B, C_out, H/16, W/16)."""
        return self.encoder(x)

    def compression_level(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head output (B,), trained towards ``(100 - QF) / 100``; the stage-2 loss is applied to this."""
        return self.quality_head(self.encoder(x).mean(dim=(2, 3))).squeeze(1)

    def predict_quality(self, x: torch.Tensor) -> torch.Tensor:
        """Estimated quality factor (B,), clamped to 0..100."""
        return (100.0 * (1.0 - self.compression_level(x))).clamp(0.0, 100.0)
