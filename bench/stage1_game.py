"""Stage 1's job: does the discriminator tell an image's CI features from its JPEG's, and does the encoder learn to
fool it?

Runs stage 1 (``dagn.training.CIStage``) in one process on random patches of the training images (the validation
hold-out of ``dagn train`` left out) and prints, per window of steps, the discriminator's accuracy (the fraction of
feature cells where it ranks the original above its JPEG; 0.5 is chance), its loss, the encoder's adversarial loss
and the reconstruction L1. The game shows as accuracy rising well above 0.5 while only the discriminator plays
(``discriminator_warmup_steps``), then falling back towards 0.5 as the encoder's adversarial term aligns the features.

python bench/stage1_game.py ../shared/datasets/train --steps 800 --adversarial-weight 1e-2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dagn import jpeg
from dagn.checkpoint import load_model
from dagn.degradation import DegradationConfig, degrade
from dagn.precision import autocast_dtype
from dagn.training import CIStage, OptimConfig, batch_from_numpy, new_model
from pipeline.storage import resolve
from pipeline.train.data import list_images, split_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="training images, e.g. ../shared/datasets/train")
    parser.add_argument("--weights", type=Path, default=None, help="start from this model (default: a new `small`)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--every", type=int, default=100, help="steps per printed window")
    defaults = OptimConfig()
    parser.add_argument("--adversarial-weight", type=float, default=defaults.adversarial_weight)
    parser.add_argument("--discriminator-lr", type=float, default=defaults.discriminator_lr)
    parser.add_argument("--warmup", type=int, default=defaults.discriminator_warmup_steps, help="discriminator warm-up")
    parser.add_argument("--images", type=int, default=200, help="training images loaded (memory)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, held_out = split_images(list_images(resolve(str(args.data))), 8)  # dagn train's own hold-out
    images = [np.asarray(Image.open(args.data / n).convert("RGB")) for n in train[: args.images]]
    optim = OptimConfig(
        adversarial_weight=args.adversarial_weight,
        discriminator_lr=args.discriminator_lr,
        discriminator_warmup_steps=args.warmup,
    )
    model = load_model(args.weights) if args.weights else new_model("small")
    stage = CIStage(model, total_steps=args.steps, optim=optim, autocast_dtype=autocast_dtype("cpu"))
    cfg = DegradationConfig(patch_size=args.patch)
    print(
        f"stage 1, {len(images)} images, batch {args.batch} x {args.patch} px, adversarial weight "
        f"{args.adversarial_weight} after {args.warmup} steps, discriminator lr {args.discriminator_lr}"
    )
    print("| steps | discriminator accuracy | discriminator loss | encoder's adversarial loss | L1 |")
    print("|---|---:|---:|---:|---:|")
    window: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        pairs = [degrade(images[rng.integers(len(images))], rng, cfg) for _ in range(args.batch)]
        batch = batch_from_numpy(
            {"clean": np.stack([p.clean for p in pairs]), "jpeg": np.stack([p.jpeg for p in pairs])}
        )
        window.append(stage.step(batch))
        if step % args.every == 0:
            mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
            print(
                f"| {step - args.every + 1}-{step} | {mean['discriminator_accuracy']:.3f} | "
                f"{mean['discriminator']:.3f} | {mean['adversarial']:.3f} | {mean['l1']:.4f} |",
                flush=True,
            )
            window = []
    print(f"{args.steps} steps in {time.perf_counter() - start:.0f} s")
    print_sensitivity(model.ci_encoder, [np.asarray(Image.open(args.data / n).convert("RGB")) for n in held_out])


@torch.no_grad()
def print_sensitivity(encoder: torch.nn.Module, images: list[np.ndarray], size: int = 256) -> None:
    """How far the CI features of an image move when it is JPEG-compressed, relative to their size, on centre crops
    of the held-out images (0: perfectly compression-insensitive)."""
    encoder.eval()
    crops = []
    for im in images:
        top, left = max(0, (im.shape[0] - size) // 2), max(0, (im.shape[1] - size) // 2)
        crops.append(np.ascontiguousarray(im[top : top + size, left : left + size]))
    clean = batch_from_numpy({"clean": np.stack(crops)})["clean"]
    f_clean = encoder(clean)
    cells = []
    for q in (10, 40, 90):
        jpegs = batch_from_numpy({"jpeg": np.stack([jpeg.roundtrip(c, q) for c in crops])})["jpeg"]
        moved = (encoder(jpegs) - f_clean).flatten(1).norm(dim=1) / f_clean.flatten(1).norm(dim=1)
        cells.append(f"QF {q}: {float(moved.mean()):.3f}")
    print(f"CI features, |f(JPEG) - f(original)| / |f(original)| on {len(crops)} held-out crops: " + ", ".join(cells))


if __name__ == "__main__":
    main()
