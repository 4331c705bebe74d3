"""Run any image-to-image callable over overlapping tiles and blend the results without seams.

Large images do not fit a network in one piece (memory grows with the pixel count), so they are cut into tiles of
``tile`` x ``tile`` pixels that overlap by at least ``overlap`` pixels. Three choices keep the result seamless:

* **Grid alignment.** Tile origins are multiples of ``align`` (default 16: the JPEG 8x8 block grid and the 2x2
  chroma subsampling of 4:2:0 files), so every tile sees the compression blocks at the same phase as the whole image.
  The image is replicate-padded on the right/bottom so that all tiles have the same size (they batch), and the
  padding is cropped away.
* **Blending.** In each overlap the outer quarter of either tile (next to its cut edge, where the network saw
  padding instead of context) gets weight 0; the middle half ramps linearly from one tile to the other. Weights of
  neighbouring tiles sum to 1 (and are normalised by their sum where more tiles meet), so a callable that commutes
  with cropping reproduces the untiled result exactly.
* **Batching.** Tiles of all images in the batch are run ``batch_size`` at a time.

Networks with global context (DAGN's guiders pool over the whole input) see less context per tile; with tiles of
a few hundred pixels the difference is far below what is visible (``tests/dagn/test_tiling.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["tile_origins", "tiled_apply"]


def tile_origins(size: int, tile: int, overlap: int, align: int = 1) -> tuple[list[int], int]:
    """Origins of tiles along one axis and the tile length used on it.

    Returns ``(origins, length)``. When ``size <= tile`` there is one tile of the whole axis. Otherwise the stride
    is the largest multiple of ``align`` not above ``tile - overlap`` that still needs no more tiles than
    necessary; the last tile may reach past ``size`` by less than ``align`` per tile (the caller pads).
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f"need tile >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [0], size
    max_stride = (tile - overlap) // align * align
    if max_stride < align:
        raise ValueError(f"tile {tile} leaves no stride after an overlap of {overlap} on a {align}-pixel grid")
    count = math.ceil((size - tile) / max_stride) + 1
    # Spread the tiles evenly: the smallest aligned stride that still reaches the end with ``count`` tiles.
    stride = min(max_stride, math.ceil(math.ceil((size - tile) / (count - 1)) / align) * align)
    return [i * stride for i in range(count)], tile


def _ramp(length: int, origins: list[int], device: torch.device) -> list[torch.Tensor]:
    """1-D blend weights for each tile along one axis; neighbouring weights sum to 1 over each overlap."""
    weights = []
    for i, start in enumerate(origins):
        w = torch.ones(length, device=device)
        for side, neighbour in ((0, i - 1), (1, i + 1)):
            if not 0 <= neighbour < len(origins):
                continue
            overlap = length - abs(origins[neighbour] - start)
            if overlap <= 0:
                continue
            margin = overlap // 4
            ramp_len = overlap - 2 * margin
            k = torch.arange(overlap, device=device, dtype=torch.float32)
            up = ((k - margin + 0.5) / ramp_len).clamp(0.0, 1.0)  # 0 at the cut edge, 1 towards the tile's centre
            if side == 0:
                w[:overlap] *= up
            else:
                w[length - overlap :] *= up.flip(0)
        weights.append(w)
    return weights


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int = 32,
    align: int = 16,
    batch_size: int = 1,
) -> torch.Tensor:
    """``fn(x)`` computed tile by tile.

    Args:
        fn: maps a float (B, C, h, w) batch to (B, C', h, w) (same spatial size; channels may change).
        x: input batch (N, C, H, W).
        tile: tile side in pixels; an image no larger than this along both axes is passed to ``fn`` whole.
        overlap: minimum overlap between neighbouring tiles (the blend uses its middle half).
        align: tile origins are multiples of this (16 keeps JPEG blocks and 4:2:0 chroma in phase).
        batch_size: tiles per call of ``fn``.

    Returns:
        (N, C', H, W) float32 on ``x``'s device.
    """
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, _, height, width = x.shape
    if height <= tile and width <= tile:
        return torch.cat([fn(x[i : i + batch_size]).float() for i in range(0, n, batch_size)])

    ys, tile_h = tile_origins(height, tile, overlap, align)
    xs, tile_w = tile_origins(width, tile, overlap, align)
    pad_h, pad_w = ys[-1] + tile_h - height, xs[-1] + tile_w - width
    padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
    wy = _ramp(tile_h, ys, x.device)
    wx = _ramp(tile_w, xs, x.device)
    # The weights already sum to 1 wherever at most two tiles overlap along an axis; dividing by their sum keeps the
    # blend exact for any overlap (e.g. an overlap above half the tile, where three tiles meet).
    norm = torch.zeros(padded.shape[2:], device=x.device)
    for i, j in ((i, j) for i in range(len(ys)) for j in range(len(xs))):
        norm[ys[i] : ys[i] + tile_h, xs[j] : xs[j] + tile_w] += wy[i][:, None] * wx[j][None, :]

    jobs = [(b, i, j) for b in range(n) for i in range(len(ys)) for j in range(len(xs))]
    out: torch.Tensor | None = None
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        tiles = torch.stack([padded[b, :, ys[i] : ys[i] + tile_h, xs[j] : xs[j] + tile_w] for b, i, j in chunk])
        result = fn(tiles).float()
        if out is None:
            out = torch.zeros((n, result.shape[1], *padded.shape[2:]), device=x.device, dtype=torch.float32)
        for (b, i, j), r in zip(chunk, result, strict=True):
            weight = wy[i][:, None] * wx[j][None, :]
            out[b, :, ys[i] : ys[i] + tile_h, xs[j] : xs[j] + tile_w] += r * weight
    assert out is not None
    return (out / norm.clamp_min(1e-6))[:, :, :height, :width]
