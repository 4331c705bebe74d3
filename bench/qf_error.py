"""Stage 2's job: how well the CS encoder estimates the JPEG quality factor, per QF, on a benchmark set.

Each ground-truth image is compressed with Pillow at each QF and the model's CS encoder predicts the QF of the whole
image (``DAGN.predict_quality``); printed are the mean absolute error and the mean prediction per QF.

python bench/qf_error.py ../shared/datasets/eval/live1_color
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dagn import jpeg
from dagn.checkpoint import load_model
from dagn.io import to_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="ground-truth images, e.g. ../shared/datasets/eval/live1_color")
    parser.add_argument("--weights", type=Path, default=None, help="model file (default: the shipped weights)")
    parser.add_argument("--qf", default="10,20,30,40,50,60,70,80,90")
    args = parser.parse_args()

    model = load_model(args.weights)
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    print(f"{args.weights or 'shipped weights'}, {args.data.name} ({len(images)} images)")
    print("| QF | mean abs. error | mean prediction |\n|---:|---:|---:|")
    errors = []
    for q in (int(v) for v in args.qf.split(",")):
        with torch.inference_mode():
            predicted = [float(model.predict_quality(to_tensor(jpeg.roundtrip(im, q)))) for im in images]
        error = float(np.mean(np.abs(np.array(predicted) - q)))
        errors.append(error)
        print(f"| {q} | {error:.1f} | {np.mean(predicted):.1f} |", flush=True)
    print(f"| all | {np.mean(errors):.1f} | |")


if __name__ == "__main__":
    main()
