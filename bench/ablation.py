"""Does every part of DAGN change the restoration? Stage-3 ablation on a benchmark set, in dB.

The model restores each image (Pillow JPEG at each QF, the Restorer's defaults) as trained, then with one part
switched off at a time:

* CI guidance: the CI guider reads the training-set mean of the pooled CI features instead of this image's;
* CS guidance: the same for the CS guider (the compression cue becomes "an average JPEG");
* CFF: the cross-feature fusion passes the bottleneck through unchanged (its attention output zeroed).

The training-set means come from ``--mean-images`` random crops of the training images (their patch size, QFs from
the training recipe's set). A part whose row equals the full model's is inert: a training bug, not a result.

python bench/ablation.py ../shared/datasets/eval/live1_color --train ../shared/datasets/train
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dagn
from dagn import jpeg, metrics
from dagn.inference import training_patch_size

_QUALITY_SET = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)


def _images(folder: Path, limit: int | None) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))[:limit]
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


@torch.inference_mode()
def _training_means(restorer: dagn.Restorer, folder: Path, count: int, patch: int) -> dict[str, torch.Tensor]:
    """Mean pooled CI and CS encoder features over ``count`` JPEG crops of the training images."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rng = random.Random(0)
    model, sums = restorer.model, {"ci": 0.0, "cs": 0.0}
    for _ in range(count):
        image = np.asarray(Image.open(rng.choice(files)).convert("RGB"))
        y, x = rng.randrange(image.shape[0] - patch + 1), rng.randrange(image.shape[1] - patch + 1)
        crop = jpeg.roundtrip(np.ascontiguousarray(image[y : y + patch, x : x + patch]), rng.choice(_QUALITY_SET))
        t = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).to(restorer.device)
        sums["ci"] = sums["ci"] + model.ci_encoder(t).float().mean(dim=(2, 3))
        sums["cs"] = sums["cs"] + model.cs_encoder(t).float().mean(dim=(2, 3))
    return {k: v / count for k, v in sums.items()}


def _constant_input(mean: torch.Tensor):
    """Forward pre-hook: the guider sees the constant ``mean`` as every image's pooled feature."""

    def hook(module, args):
        features = args[0]
        return (mean.to(features.dtype).expand(features.shape[0], -1)[:, :, None, None],)

    return hook


def _identity_output(module, args, output):
    return args[0]


def _gains(restorer: dagn.Restorer, images: list[np.ndarray], qualities: list[int]) -> dict[int, float]:
    out = {}
    for q in qualities:
        gains = []
        for truth in images:
            compressed = jpeg.roundtrip(truth, q)
            gains.append(metrics.psnr(restorer(compressed), truth) - metrics.psnr(compressed, truth))
        out[q] = float(np.mean(gains))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="ground-truth images, e.g. ../shared/datasets/eval/live1_color")
    parser.add_argument("--train", type=Path, required=True, help="training images, for the feature means")
    parser.add_argument("--weights", type=Path, default=None, help="model file (default: the shipped weights)")
    parser.add_argument("--qf", default="10,20,30,40")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--mean-images", type=int, default=256, help="training crops averaged for the means")
    args = parser.parse_args()

    restorer = dagn.Restorer(args.weights)
    qualities = [int(q) for q in args.qf.split(",")]
    images = _images(args.data, args.limit)
    patch = training_patch_size(restorer.weights) or 128
    means = _training_means(restorer, args.train, args.mean_images, patch)
    model = restorer.model
    conditions = {
        "full model": [],
        "CI guidance -> training mean": [(model.ci_guider, "pre", _constant_input(means["ci"]))],
        "CS guidance -> training mean": [(model.cs_guider, "pre", _constant_input(means["cs"]))],
        "both guidances -> training mean": [
            (model.ci_guider, "pre", _constant_input(means["ci"])),
            (model.cs_guider, "pre", _constant_input(means["cs"])),
        ],
        "CFF zeroed": [(model.fusion, "post", _identity_output)],
    }
    print(f"{restorer.weights}, {args.data.name} ({len(images)} images), precision {restorer.autocast_dtype}")
    rows = {}
    for name, hooks in conditions.items():
        handles = [
            module.register_forward_pre_hook(fn) if kind == "pre" else module.register_forward_hook(fn)
            for module, kind, fn in hooks
        ]
        try:
            rows[name] = _gains(restorer, images, qualities)
        finally:
            for h in handles:
                h.remove()
        print(f"  {name}: {rows[name]}", flush=True)
    full = rows["full model"]
    print("\n| restoration | " + " | ".join(f"QF {q}" for q in qualities) + " | mean | vs full |")
    print("|---|" + "---:|" * (len(qualities) + 2))
    for name, row in rows.items():
        mean = np.mean(list(row.values()))
        delta = mean - np.mean(list(full.values()))
        cells = " | ".join(f"{row[q]:+.2f}" for q in qualities)
        print(f"| {name} | {cells} | {mean:+.3f} | {delta:+.3f} |")


if __name__ == "__main__":
    main()
