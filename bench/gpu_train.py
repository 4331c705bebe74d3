"""Continue training the shipped weights on one GPU within a time budget, evaluate LIVE1, write new weights.

For the day a GPU machine is lent (one H100/H200, 16 cores, torch, Pillow, safetensors, pyarrow, numpy; no Ray,
no pydantic, no network). Only torch and dagn are used here: dagn needs pydantic, so bring its wheels along
(``pip download pydantic -d wheels`` here, ``pip install --no-index --find-links wheels pydantic`` there).

What one call does, in order:

1. loads ``--weights`` (default: the shipped model) and holds ``--val-images`` training images out (the same
   SHA-1 split as ``dagn train``), which also score the starting model;
2. trains stage 3 (encoders frozen) with the project's :class:`dagn.training.RestorationStage`: bf16 autocast,
   channels_last, batch ``--batch-size``, a flat peak learning rate and a cosine decay over the last
   ``--decay-fraction`` of the steps, EMA of the weights. The number of steps is set from the speed of the first
   ``--probe-steps`` so that training ends ``--minutes`` after it began;
3. patches come from ``--loader-workers`` processes: each crop is JPEG-compressed once and its 8 dihedral
   copies (flips and rotations of both the clean and the JPEG patch) go into the batch together, so one JPEG
   encode and decode serves 8 samples;
4. scores the exported (EMA) model on the held-out images and, restored whole on the GPU, on ``--eval`` (LIVE1);
5. writes ``--out`` (safetensors with lineage metadata) and prints the command that ships it.

GPU:  python bench/gpu_train.py --data ../shared/datasets/train --eval ../shared/datasets/eval/live1_color \
          --out out/gpu/model.safetensors --minutes 6
CPU check (a few steps): python bench/gpu_train.py --device cpu --steps 3 --batch-size 8 --patch-size 32 ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dagn import jpeg, metrics
from dagn.checkpoint import load_model, read_metadata, save_model, shipped_weights
from dagn.degradation import DegradationConfig, degrade
from dagn.evaluation import evaluate
from dagn.inference import Restorer
from dagn.precision import autocast_dtype
from dagn.training import OptimConfig, RestorationStage

_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # its own: this script runs where only torch and dagn are installed
_DIHEDRAL = 8


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES)


def split(files: list[Path], root: Path, held_out: int) -> tuple[list[Path], list[Path]]:
    """(train, validation): validation = the ``held_out`` relative names with the smallest SHA-1 (as dagn train)."""
    names = {f.relative_to(root).as_posix(): f for f in files}
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    val = set(ranked[:held_out])
    return [names[n] for n in sorted(names) if n not in val], [names[n] for n in sorted(val)]


def _dihedral_copies(image: np.ndarray) -> list[np.ndarray]:
    rotations = [np.rot90(image, k, axes=(0, 1)) for k in range(4)]
    return [np.ascontiguousarray(a) for a in rotations + [r[:, ::-1] for r in rotations]]


class PatchStream(IterableDataset):
    """Endless (clean, JPEG) patch pairs, 8 dihedral copies of each crop in a row; one stream per loader worker."""

    def __init__(self, files: list[Path], cfg: DegradationConfig, seed: int, cache_images: int = 64) -> None:
        self.files, self.cfg, self.seed, self.cache_images = files, cfg, seed, cache_images

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        cache: dict[int, np.ndarray] = {}
        while True:
            index = int(rng.integers(len(self.files)))
            if index not in cache:
                if len(cache) >= self.cache_images:
                    cache.pop(next(iter(cache)))
                with Image.open(self.files[index]) as im:
                    cache[index] = np.asarray(im.convert("RGB"))
            pair = degrade(cache[index], rng, self.cfg)
            for clean, compressed in zip(_dihedral_copies(pair.clean), _dihedral_copies(pair.jpeg), strict=True):
                yield torch.from_numpy(clean), torch.from_numpy(compressed)


def _to_batch(clean: torch.Tensor, compressed: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    def convert(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return t.contiguous(memory_format=torch.channels_last)

    return {"clean": convert(clean), "jpeg": convert(compressed)}


def held_out_gain(restorer: Restorer, files: list[Path], qualities: tuple[int, ...]) -> float:
    """Mean PSNR gain over JPEG on whole held-out images (cropped to multiples of 16) at ``qualities``."""
    gains = []
    for f in files:
        with Image.open(f) as im:
            clean = np.asarray(im.convert("RGB"))
        clean = np.ascontiguousarray(clean[: clean.shape[0] // 16 * 16, : clean.shape[1] // 16 * 16])
        for q in qualities:
            compressed = jpeg.roundtrip(clean, q)
            gains.append(metrics.psnr(restorer(compressed), clean) - metrics.psnr(compressed, clean))
    return float(np.mean(gains))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="model to continue (default: shipped)")
    parser.add_argument("--data", type=Path, required=True, help="training images (folder)")
    parser.add_argument("--eval", type=Path, default=None, help="benchmark ground truth, e.g. LIVE1 (report only)")
    parser.add_argument("--out", type=Path, required=True, help="new model file")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=None, help="fixed number of steps instead of the budget")
    parser.add_argument("--probe-steps", type=int, default=30, help="steps timed to size the run")
    parser.add_argument("--batch-size", type=int, default=64, help="patches per step (a multiple of 8)")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--decay-fraction", type=float, default=0.3)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--loader-workers", type=int, default=12)
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.batch_size % _DIHEDRAL:
        parser.error("--batch-size must be a multiple of 8 (8 dihedral copies per crop)")
    return args


def _degradation(patch_size: int) -> DegradationConfig:
    return DegradationConfig(
        patch_size=patch_size,
        p_uniform_quality=0.4,
        uniform_quality_range=(8, 95),
        quality_set=(10, 10, 20, 20, 30, 30, 40, 40, 50, 60, 70, 80, 85, 90, 95),
        p_misaligned=0.25,
        flip_rotate=False,  # the 8 dihedral copies replace the random transform
    )


def _train(args, model, train_files, degradation, device, dtype) -> tuple[RestorationStage, float]:
    """Train until the time budget (sized from the first ``probe_steps``) or ``--steps``; the stage and seconds."""
    planned = args.steps or 10**9
    optim = OptimConfig(
        lr=args.lr,
        warmup_steps=min(100, planned // 10),
        decay_steps=max(1, int(planned * args.decay_fraction)),
        ema_decay=args.ema_decay,
        pixel_loss="relative_l1",
    )
    model.train()
    stage = RestorationStage(model, total_steps=planned, optim=optim, device=device, autocast_dtype=dtype)
    loader = DataLoader(
        PatchStream(train_files, degradation, args.seed),
        batch_size=args.batch_size,
        num_workers=args.loader_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.loader_workers > 0,
        prefetch_factor=4 if args.loader_workers > 0 else None,
    )
    t_train = time.monotonic()
    losses: list[float] = []
    for clean, compressed in loader:
        if args.steps is None and stage.step_count == args.probe_steps:
            per_step = (time.monotonic() - t_train) / args.probe_steps
            planned = max(args.probe_steps + 1, int(args.minutes * 60 / per_step))
            optim = optim.model_copy(update={"decay_steps": max(1, int(planned * args.decay_fraction))})
            stage.total_steps, stage.optim = planned, optim
            print(f"{per_step * 1e3:.0f} ms per step: {planned} steps in {args.minutes} min", flush=True)
        losses.append(stage.step(_to_batch(clean, compressed, device))["loss"])
        if stage.step_count % 100 == 0:
            print(f"step {stage.step_count}/{planned} loss {np.mean(losses[-100:]):.4f} lr {stage.lr():.2e}")
        if stage.step_count >= planned:
            break
    return stage, time.monotonic() - t_train


def _benchmark_gains(restorer: Restorer, folder: Path | None) -> dict:
    """PSNR gain over JPEG per QF on a benchmark folder (empty without one)."""
    if folder is None:
        return {}
    truths = []
    for f in _images(folder):
        with Image.open(f) as im:
            truths.append((f.name, np.asarray(im.convert("RGB"))))
    result = evaluate(restorer, truths, [10, 20, 30, 40], dataset=folder.name)
    report = {q: round(v["psnr"] - v["jpeg_psnr"], 3) for q, v in result.summary.items()}
    print(f"{folder.name}: PSNR gain per QF {report}, mean {np.mean(list(report.values())):+.3f} dB")
    return report


def _metadata(args, parent, weights, degradation, stage, device, train_seconds, after, report) -> dict[str, str]:
    steps = json.loads(parent.get("stage_steps", "{}"))
    steps["3"] = int(steps.get("3", 0)) + stage.step_count
    return {
        **{k: parent[k] for k in ("variant", "data") if k in parent},
        "degradation": degradation.model_copy(update={"flip_rotate": True}).model_dump_json(),
        "stage_steps": json.dumps(steps),
        "init_from": str(weights),
        "batch_size": str(args.batch_size),
        "gpu_train": json.dumps(
            {
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "steps": stage.step_count,
                "seconds": round(train_seconds),
                "lr": args.lr,
                "patch_size": args.patch_size,
                "held_out_gain": after,
                "eval_gain": report,
            }
        ),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    args = _arguments()
    started = time.monotonic()
    device = torch.device(args.device)
    weights = args.weights or shipped_weights()
    model = load_model(weights)
    parent = read_metadata(weights)
    train_files, val_files = split(_images(args.data), args.data, args.val_images)
    dtype = autocast_dtype(device)
    print(f"{weights}: {len(train_files)} training / {len(val_files)} held-out images, {device}, autocast {dtype}")
    degradation = _degradation(args.patch_size)
    val_qualities = (10, 30, 50, 80)
    before = held_out_gain(Restorer(model=model, device=str(device)), val_files, val_qualities) if val_files else None

    stage, train_seconds = _train(args, model, train_files, degradation, device, dtype)
    print(f"trained {stage.step_count} steps, {stage.step_count * args.batch_size} samples in {train_seconds:.0f} s")

    exported = stage.export_model().eval()
    restorer = Restorer(model=exported, device=str(device))
    after = held_out_gain(restorer, val_files, val_qualities) if val_files else None
    if before is not None:
        print(f"held-out gain over JPEG (QF {val_qualities}): {before:+.3f} dB before, {after:+.3f} dB after")
    report = _benchmark_gains(restorer, args.eval)
    metadata = _metadata(args, parent, weights, degradation, stage, device, train_seconds, after, report)
    save_model(exported, args.out, metadata)
    print(f"wrote {args.out} ({math.ceil(time.monotonic() - started)} s in all)")
    print("to ship it, name it by its content hash in dagn/weights/ (see dagn.checkpoint) and update default.json")


if __name__ == "__main__":
    main()
