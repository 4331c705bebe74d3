"""Restore time of a 1-megapixel image with the shipped weights at the Restorer's defaults, fp32 and bf16 side by side.

Each precision restores the same uint8 image ``--runs`` times (after one warm-up call) through ``dagn.Restorer``
exactly as users get it (the model file's own context and tiling), and the medians are printed with their ratio.
The cost as run counts the pixels the model really processes (tiles overlap) times the counted GFLOP per megapixel.
Then, for reference, the plain network of each ``--variants`` entry on a random tensor (counted cost and fp32 time).

python bench/bench_model.py                      # shipped weights, 1024 x 1024, median of 5
python bench/bench_model.py --weights FILE --variants small tiny
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import dagn
from dagn.complexity import count_parameters, gflops_per_megapixel
from dagn.precision import autocast, autocast_dtype, cpu_has_bf16
from dagn.tiling import tile_origins


def _median_seconds(fn, runs: int) -> tuple[float, float, float]:
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i:  # the first call warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def _processed_pixels(restorer: dagn.Restorer, height: int, width: int) -> int:
    """Pixels the model runs on for one image: the whole (padded) image, or every tile."""
    if restorer.tile is None or (height <= restorer.tile and width <= restorer.tile):
        m = restorer.model.config.size_multiple
        return (-(-height // m) * m) * (-(-width // m) * m)
    ys, th = tile_origins(height, restorer.tile, restorer.tile_overlap, 16)
    xs, tw = tile_origins(width, restorer.tile, restorer.tile_overlap, 16)
    return len(ys) * len(xs) * th * tw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="model file (default: the shipped weights)")
    parser.add_argument("--variants", nargs="*", default=["small"], help="plain networks to time as well")
    parser.add_argument("--size", type=int, default=1024, help="square input side (1024 = 1.05 MP)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"native bf16 on this CPU: {cpu_has_bf16()}, precision 'auto' -> {autocast_dtype(device) or torch.float32}"
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    print(f"input: {args.size} x {args.size} uint8 RGB ({args.size**2 / 1e6:.2f} MP)")

    medians = {}
    for precision in ("fp32", "bf16"):
        restorer = dagn.Restorer(args.weights, device=args.device, precision=precision)
        median, low, high = _median_seconds(lambda r=restorer: r(image), args.runs)
        medians[precision] = median
        gflop = gflops_per_megapixel(restorer.model) * _processed_pixels(restorer, args.size, args.size) / 1e6
        print(
            f"Restorer {precision}: median {median:.3f} s over {args.runs} (min {low:.3f}, max {high:.3f}); "
            f"context {restorer.context or 'whole image'}, tile {restorer.tile}; "
            f"{gflop / (args.size**2 / 1e6):.1f} GFLOP/MP as run"
        )
    print(f"bf16 / fp32 speed-up: {medians['fp32'] / medians['bf16']:.2f}x  ({restorer.weights})")

    for variant in args.variants:
        model = dagn.build_model(variant).eval().to(device).to(memory_format=torch.channels_last)
        x = torch.rand(1, 3, args.size, args.size, device=device).to(memory_format=torch.channels_last)
        row = []
        for precision in ("fp32", "bf16"):
            dtype = autocast_dtype(device, precision)
            with torch.inference_mode(), autocast(device, dtype):
                row.append(_median_seconds(lambda m=model, t=x: m(t), args.runs)[0])
        print(
            f"network {variant:>6}: {count_parameters(model) / 1e6:6.2f} M params, "
            f"{gflops_per_megapixel(model):7.1f} GFLOP/MP, fp32 {row[0]:.3f} s, bf16 {row[1]:.3f} s "
            f"({row[0] / row[1]:.2f}x)"
        )


if __name__ == "__main__":
    main()
