"""CPU/GPU inference time of each DAGN variant on one image (median of several runs), with its counted cost.

python bench/bench_model.py --variants small tiny --size 1024 --runs 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import dagn
from dagn.complexity import count_parameters, gflops_per_megapixel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["small"])
    parser.add_argument("--size", type=int, default=1024, help="square input side (1024 = 1.05 MP)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument(
        "--contiguous", action="store_true", help="NCHW-contiguous tensors instead of channels_last (what dagn uses)"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    layout = "contiguous" if args.contiguous else "channels_last"
    print(f"input: 1 x 3 x {args.size} x {args.size} ({args.size**2 / 1e6:.2f} MP), bf16={args.bf16}, {layout}")
    for variant in args.variants:
        model = dagn.build_model(variant).eval().to(device)
        x = torch.rand(1, 3, args.size, args.size, device=device)
        if not args.contiguous:
            model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        times = []
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            for i in range(args.runs + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first run warms up allocators and kernels
                    times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(
            f"{variant:>6}: {count_parameters(model) / 1e6:6.2f} M params, "
            f"{gflops_per_megapixel(model):7.1f} GFLOP/MP, median {median * 1e3:8.1f} ms over {args.runs} runs "
            f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})"
        )


if __name__ == "__main__":
    main()
