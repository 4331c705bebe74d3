"""Stage-1 parts of the compression-insensitive (CI) branch: the auto-encoder's decoder and a feature discriminator.

The CI encoder (a :class:`~dagn.models.resnet.FeatureEncoder`, owned by :class:`~dagn.models.dagn.DAGN`) is trained as
an auto-encoder that reconstructs its (compressed) input, while a small conv discriminator tries to tell the features
of a compressed image from those of its original; the encoder is pushed to fool it, so its features stop depending on
the compression. The release leaves the decoder and discriminator open; ours are the smallest that do the job.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from dagn.models.config import DAGNConfig
from dagn.models.dagn import ResBlock
from dagn.models.resnet import FeatureEncoder

__all__ = ["CIAutoEncoder", "CIDecoder", "FeatureDiscriminator"]


class CIDecoder(nn.Module):
    """1/16-resolution CI features -> image: 1x1 projection, four (2x up, ResBlock) steps, 3x3 conv to RGB."""

    def __init__(self, config: DAGNConfig) -> None:
        super().__init__()
        w = config.widths
        chans = [w[min(i, len(w) - 1)] for i in (3, 2, 1, 0, 0)]  # 1/16 ... full resolution
        layers: list[nn.Module] = [nn.Conv2d(config.ci_encoder.out_channels, chans[0], 1), nn.ReLU(inplace=True)]
        for c_in, c_out in itertools.pairwise(chans):
            layers += [nn.ConvTranspose2d(c_in, c_out, 2, 2), ResBlock(c_out)]
        layers.append(nn.Conv2d(chans[-1], config.in_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class CIAutoEncoder(nn.Module):
    """CI encoder + decoder; ``forward`` reconstructs the input, :meth:`features` gives the CI features."""

    def __init__(self, encoder: FeatureEncoder, decoder: CIDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class FeatureDiscriminator(nn.Module):
    """Patch discriminator on CI feature maps: one logit per 2x2 feature cell (original = 1, compressed = 0)."""

    def __init__(self, config: DAGNConfig) -> None:
        super().__init__()
        d = config.discriminator_dim
        self.layers = nn.Sequential(
            nn.Conv2d(config.ci_encoder.out_channels, d, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(d, d // 2, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(d // 2, 1, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
