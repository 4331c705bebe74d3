"""ResNet feature encoder used by DAGN's compression-insensitive (CI) and compression-sensitive (CS) branches.

The released DAGN reads the compressed image with two ResNet-50 encoders (bottleneck blocks 3/4/6/3) whose last stage
keeps stride 1, so features come out at 1/16 resolution with ``32 * width`` channels (2048 for width 64). Width and
depths are configurable so that the small variants keep the topology at a fraction of the cost.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Bottleneck", "FeatureEncoder"]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand, identity or projected shortcut."""

    expansion = 4

    def __init__(self, *, in_channels: int, mid_channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = mid_channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act(y + self.shortcut(x))


class FeatureEncoder(nn.Module):
    """ResNet-50-style encoder with output stride 16 (the last stage is not strided).

    Args:
        in_channels: image channels.
        width: channels of the stem; stage ``i`` uses ``width * 2**i`` mid channels (64 in ResNet-50).
        depths: bottleneck blocks per stage (3, 4, 6, 3 in ResNet-50).
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64, depths: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"FeatureEncoder needs 4 stage depths, got {depths}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        strides = (1, 2, 2, 1)  # 1/4, 1/8, 1/16, 1/16
        stages = []
        channels = width
        for i, (depth, stride) in enumerate(zip(depths, strides, strict=True)):
            mid = width * 2**i
            blocks = [Bottleneck(in_channels=channels, mid_channels=mid, stride=stride)]
            channels = mid * Bottleneck.expansion
            blocks += [Bottleneck(in_channels=channels, mid_channels=mid) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels
        self.init_weights()

    def init_weights(self) -> None:
        """He init for convs; zero the last BN of each residual branch so every block starts as identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) with H, W multiples of 16 -> features (B, out_channels, H/16, W/16)."""
        return self.stages(self.stem(x))
