"""DAGN: Dual Awareness Guidance Network for JPEG compression-artifact reduction.

Ma, Zhao, Peng, Tian, "Sensitivity Decouple Learning for Image Compression Artifacts Reduction", arXiv 2405.09291.
Written from the description of the authors' released architecture in ../shared/notes/dagn.md:

* a restoration U-Net (ResBlocks with BatchNorm, 2x2 strided down/up convolutions, additive skips);
* a compression-insensitive (CI) encoder whose features enter the bottleneck through cross-feature fusion (CFF) and,
  pooled and mapped by a guider MLP, modulate the decoder;
* a compression-sensitive (CS) encoder (trained to predict the quality factor) whose pooled features modulate the
  decoder the same way. A guided block is ``y = x + gamma * R(x) + beta`` with per-channel gamma, beta.

Deviations are opt-in through :class:`~dagn.models.config.DAGNConfig` and off in the ``paper`` variant: a
pixel-unshuffle head (``unshuffle``) that runs the whole U-Net at reduced resolution, and ``global_residual``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dagn.models.config import DAGNConfig
from dagn.models.cs import CSEncoder
from dagn.models.resnet import FeatureEncoder

__all__ = ["DAGN", "CrossFeatureFusion", "GuidedBlock", "Guider", "ResBlock"]


class ResBlock(nn.Module):
    """Conv3x3 -> BatchNorm -> ReLU -> Conv3x3, plus identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GuidedBlock(nn.Module):
    """Dual-awareness guided block (DAGB): ``x + gamma * R(x) + beta`` with R a ResBlock branch.

    gamma and beta are (B, C, 1, 1) modulations computed once per decoder scale by the guider heads.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = ResBlock(channels).body

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return x + gamma * self.branch(x) + beta


class Guider(nn.Module):
    """Global-average-pooled encoder features -> MLP -> per-scale (gamma, beta) for the guided blocks."""

    def __init__(self, *, in_channels: int, dim: int, scale_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim), nn.ReLU())
        self.gamma = nn.ModuleList(nn.Linear(dim, c) for c in scale_channels)
        self.beta = nn.ModuleList(nn.Linear(dim, c) for c in scale_channels)

    def forward(self, features: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = self.mlp(features.mean(dim=(2, 3)))
        return [
            (torch.sigmoid(gl(g))[:, :, None, None], torch.tanh(bl(g))[:, :, None, None])
            for gl, bl in zip(self.gamma, self.beta, strict=True)
        ]


class CrossFeatureFusion(nn.Module):
    """CFF: bottleneck tokens attend to multi-grid pooled CI features; zero-initialised output (starts as identity).

    Keys and values are pooled onto 1x1, 2x2, 4x4 and 8x8 grids (85 tokens), so the cost is linear in image size.
    """

    def __init__(self, *, channels: int, context_channels: int, dim: int, grids: tuple[int, ...]) -> None:
        super().__init__()
        self.grids = grids
        self.query = nn.Sequential(nn.Conv2d(channels, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.key = nn.Sequential(nn.Conv2d(context_channels, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.value = nn.Conv2d(context_channels, dim, 1)
        self.out = nn.Conv2d(dim, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, sum(g*g), D) pooled onto every grid."""
        return torch.cat([F.adaptive_avg_pool2d(x, g).flatten(2) for g in self.grids], dim=2).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, D)
        k = self._tokens(self.key(context))
        v = self._tokens(self.value(context))
        attended = F.scaled_dot_product_attention(q, k, v)  # softmax(QK^T / sqrt(D)) V
        return x + self.out(attended.transpose(1, 2).reshape(b, -1, h, w))


class DAGN(nn.Module):
    """The DAGN restoration network with its CI and CS encoders.

    ``model(x)`` maps a float batch (B, 3, H, W) in [0, 1] of any size to the restored batch of the same shape
    (replicate padding to :attr:`DAGNConfig.size_multiple`, output cropped). Use :meth:`predict_quality` for the
    CS encoder's quality-factor estimate.

    Args:
        config: architecture hyper-parameters (see :mod:`dagn.models.registry` for the named variants).
    """

    def __init__(self, config: DAGNConfig) -> None:
        super().__init__()
        self.config = config
        c, w, r = config.in_channels, config.widths, config.unshuffle
        self.ci_encoder = FeatureEncoder(in_channels=c, width=config.ci_encoder.width, depths=config.ci_encoder.depths)
        self.cs_encoder = CSEncoder(config)
        self.encoders_frozen = False

        self.head = nn.Sequential(nn.PixelUnshuffle(r), nn.Conv2d(c * r * r, w[0], 3, padding=1))
        self.down = nn.ModuleList(
            nn.Sequential(*(ResBlock(w[i]) for _ in range(config.encoder_blocks)), nn.Conv2d(w[i], w[i + 1], 2, 2))
            for i in range(len(w) - 1)
        )
        self.body_in = nn.Sequential(*(ResBlock(w[-1]) for _ in range(config.bottleneck_blocks)))
        self.fusion = CrossFeatureFusion(
            channels=w[-1],
            context_channels=config.ci_encoder.out_channels,
            dim=config.fusion_dim,
            grids=config.fusion_grids,
        )
        self.body_out = nn.Sequential(*(ResBlock(w[-1]) for _ in range(config.bottleneck_blocks)))
        decoder_widths = tuple(reversed(w[:-1]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, 2) for i in reversed(range(len(w) - 1)))
        self.cs_blocks = nn.ModuleList(
            nn.ModuleList(GuidedBlock(ch) for _ in range(config.decoder_blocks)) for ch in decoder_widths
        )
        self.ci_blocks = nn.ModuleList(
            nn.ModuleList(GuidedBlock(ch) for _ in range(config.decoder_blocks)) for ch in decoder_widths
        )
        self.cs_guider = Guider(
            in_channels=config.cs_encoder.out_channels, dim=config.guide_dim, scale_channels=decoder_widths
        )
        self.ci_guider = Guider(
            in_channels=config.ci_encoder.out_channels, dim=config.guide_dim, scale_channels=decoder_widths
        )
        self.tail = nn.Sequential(nn.Conv2d(w[0], c * r * r, 3, padding=1), nn.PixelShuffle(r))

    # -- training helpers -------------------------------------------------------------------------------------------

    def freeze_encoders(self, frozen: bool = True) -> DAGN:
        """Stage 3: stop gradients into both encoders and keep their BatchNorm statistics fixed (eval mode)."""
        self.encoders_frozen = frozen
        for p in [*self.ci_encoder.parameters(), *self.cs_encoder.parameters()]:
            p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> DAGN:
        super().train(mode)
        if self.encoders_frozen:
            self.ci_encoder.eval()
            self.cs_encoder.eval()
        return self

    def restoration_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in stage 3 (everything except the two encoders and the stage-2 quality head)."""
        encoder_ids = {id(p) for p in [*self.ci_encoder.parameters(), *self.cs_encoder.parameters()]}
        return [p for p in self.parameters() if id(p) not in encoder_ids]

    # -- inference --------------------------------------------------------------------------------------------------

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected a (B, {self.config.in_channels}, H, W) tensor, got shape {tuple(x.shape)}")
        m = self.config.size_multiple
        pad_h, pad_w = -x.shape[2] % m, -x.shape[3] % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def predict_quality(self, x: torch.Tensor) -> torch.Tensor:
        """CS encoder's estimate of the JPEG quality factor (B,), in 0..100."""
        return self.cs_encoder.predict_quality(self._pad(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self._pad(x)
        ci = self.ci_encoder(x)
        cs = self.cs_encoder(x)

        feat = self.head(x)
        skips = []
        for down in self.down:
            skips.append(feat)
            feat = down(feat)
        feat = self.body_out(self.fusion(self.body_in(feat), ci))

        guides = zip(self.cs_guider(cs), self.ci_guider(ci), strict=True)
        for up, cs_blocks, ci_blocks, skip, (cs_mod, ci_mod) in zip(
            self.up, self.cs_blocks, self.ci_blocks, reversed(skips), guides, strict=True
        ):
            feat = up(feat)
            for block in cs_blocks:
                feat = block(feat, *cs_mod)
            for block in ci_blocks:
                feat = block(feat, *ci_mod)
            feat = feat + skip
        out = self.tail(feat)
        if self.config.global_residual:
            out = out + x
        return out[..., :h, :w]
