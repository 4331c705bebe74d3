"""Training data with Ray Data: images from a folder or S3 -> degraded (clean, JPEG) patches streamed to the trainers.

The plan is made on the driver and is deterministic: the image list (sorted keys), a fixed validation split (the
``val_images`` keys with the smallest SHA-1 of their name, so adding images rarely moves it), and a sequence of
(image, seed) rows, each visiting one training image in a shuffled order, epoch after epoch. The CPU work runs in
a pool of Ray Data actors with fractional ``num_cpus`` (a 2-core machine would otherwise hang with every core held by
trainers): read the bytes through :mod:`pipeline.storage`, decode with :mod:`pipeline.codec` (the restore path's
checks, EXIF orientation applied), and cut
``patches_per_image`` pairs with :func:`dagn.degradation.degrade`, seeded by the row, so a run is reproducible. The
trainers read their share with ``ray.train.get_dataset_shard`` and a local shuffle buffer mixes patches of
different images within a batch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from dagn import jpeg
from dagn.degradation import DegradationConfig, degrade
from pipeline.codec import MAX_PIXELS, decode_rgb
from pipeline.extensions import IMAGE_EXTENSIONS
from pipeline.keys import key_problem
from pipeline.ray_tweaks import with_idle_backoff
from pipeline.storage import Location, S3Settings, list_files, read_bytes, resolve

__all__ = [
    "IMAGE_EXTENSIONS",
    "TRAINING_DEGRADATION",
    "DataConfig",
    "PatchMaker",
    "ValidationImage",
    "build_train_dataset",
    "load_validation_set",
    "make_patches",
    "plan_rows",
    "readable_images",
    "split_images",
]

log = logging.getLogger(__name__)


# Our recipe widens the released QF sampling: a blind model that rarely sees QF 70-95 learns to "restore" good images
# as if they were bad ones (and the small variant's global residual makes that visible). Half the draws are uniform
# over 8..95, the rest from 10, 20, ..., 90, so about 55% of patches stay at QF <= 50 where the benchmarks are.
TRAINING_DEGRADATION = DegradationConfig(
    patch_size=64,
    p_uniform_quality=0.5,
    uniform_quality_range=(8, 95),
    quality_set=(10, 20, 30, 40, 50, 60, 70, 80, 90),
)


class DataConfig(BaseModel):
    """What the trainers are fed and how the CPU side makes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    degradation: DegradationConfig = Field(
        TRAINING_DEGRADATION, description="Patch degradation (patch size, QF sampling, grid misalignment)."
    )
    patches_per_image: int = Field(8, ge=1, description="Patches cut from one decoded image (decoding is shared).")
    shuffle_buffer: int = Field(256, ge=0, description="Trainer-side local shuffle buffer, in patches (0: off).")
    val_images: int = Field(8, ge=0, description="Images held out from training for validation.")
    val_size: int = Field(192, ge=16, description="Side of the centre crop validated per image (multiple of 16).")
    val_qualities: tuple[int, ...] = Field((10, 30, 50, 80), description="JPEG qualities of the validation set.")
    num_cpus: float = Field(0.25, gt=0, description="CPUs requested by each patch-making actor (fractional).")
    actors: int | None = Field(
        None,
        ge=1,
        description="Patch-making actors (default: one per whole CPU the trainers leave, at least 2). Actors, not "
        "tasks: as tasks, Ray starts a fresh worker process for nearly every batch (it keeps few idle workers), "
        "whose start-up costs far more CPU than the batch.",
    )
    rows_per_task: int = Field(
        16,
        ge=1,
        description="Images per patch-making batch: blocks big enough that Ray's per-block overhead stays small "
        "beside the patch making, small enough to stream.",
    )


class ValidationImage(BaseModel):
    """A held-out image: clean centre crop and its JPEGs (uint8 H x W x 3 arrays)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    clean: np.ndarray
    jpegs: dict[int, np.ndarray]


def list_images(location: Location) -> list[str]:
    """The training images below ``location``; keys that could lead outside it are left out with a warning."""
    images, refused = [], []
    for key in list_files(location, IMAGE_EXTENSIONS):
        problem = key_problem(key)
        (refused if problem else images).append(problem or key)
    if refused:
        log.warning("%d training image keys refused, e.g. %s", len(refused), "; ".join(refused[:3]))
    if not images:
        raise ValueError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) under {location.uri}: check --data")
    return images


def readable_images(location: Location, images: list[str], need: int, head_bytes: int = 65536) -> list[str]:
    """The ``images`` whose first bytes open as an image; each one that does not is named in a warning.

    An unreadable file used to end the whole run with ~240 lines of worker tracebacks that never named it. Only
    headers are read here (a few ms each); damage further in is caught where patches are made.

    Raises:
        ValueError: one line, when fewer than ``need`` images are left.
    """
    from concurrent.futures import ThreadPoolExecutor

    def problem(name: str) -> str | None:
        try:
            with location.fs.open_input_stream(location.path(name)) as f:
                head = f.read(head_bytes)
            with Image.open(io.BytesIO(head)) as im:
                width, height = im.size
            return None if width and height else "zero-sized image"
        except Exception as e:
            return str(e).splitlines()[0] if str(e) else type(e).__name__

    with ThreadPoolExecutor(max_workers=16) as pool:
        problems = list(pool.map(problem, images))
    bad = [(name, p) for name, p in zip(images, problems, strict=True) if p]
    for name, p in bad[:20]:
        log.warning("skipping unreadable training image %s: %s", location.uri_of(name), p)
    if len(bad) > 20:
        log.warning("... and %d more unreadable training images", len(bad) - 20)
    good = [name for name, p in zip(images, problems, strict=True) if not p]
    if bad:
        log.warning("%d of %d training images are unreadable and skipped", len(bad), len(images))
    if len(good) < need:
        raise ValueError(
            f"only {len(good)} of {len(images)} images under {location.uri} are readable, {need} needed"
            + (f" (e.g. {bad[0][0]}: {bad[0][1]})" if bad else "")
        )
    return good


def split_images(images: list[str], val_images: int) -> tuple[list[str], list[str]]:
    """(train, validation): validation = the ``val_images`` names with the smallest SHA-1, both lists sorted.

    A folder too small to spare ``val_images`` holds out a quarter of its images instead (none of one to three),
    so a first try on a few photos trains rather than stops.
    """
    if val_images and len(images) <= val_images:
        fewer = len(images) // 4
        log.warning(
            "only %d images: holding out %d for validation instead of %d (set it with --val-images)",
            len(images), fewer, val_images,
        )  # fmt: skip
        val_images = fewer
    ranked = sorted(images, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    val = set(ranked[:val_images])
    return [i for i in images if i not in val], sorted(val)


def plan_rows(images: list[str], n_rows: int, seed: int) -> list[dict[str, object]]:
    """``n_rows`` rows {path, seed}: the images in a fresh shuffled order per epoch, each row with its own seed."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    while len(rows) < n_rows:
        for i in rng.permutation(len(images)):
            rows.append({"path": images[i], "seed": int(rng.integers(2**63 - 1))})
            if len(rows) == n_rows:
                break
    return rows


def _decode_or_none(location: Location, path: str) -> np.ndarray | None:
    try:
        return decode_rgb(read_bytes(location.fs, location.path(path)), max_pixels=MAX_PIXELS)
    except Exception as e:  # damage past the header, which readable_images checked
        log.warning("skipping unreadable training image %s: %s", location.uri_of(path), e)
        return None


def make_patches(
    batch: dict[str, np.ndarray], *, location: Location, cfg: DegradationConfig, patches_per_image: int
) -> dict[str, np.ndarray]:
    """Rows {path, seed} -> ``patches_per_image`` rows {clean, jpeg, quality} per input row."""
    clean, jpegs, qualities = [], [], []
    decoded = {path: _decode_or_none(location, path) for path in dict.fromkeys(str(p) for p in batch["path"])}
    images = {path: image for path, image in decoded.items() if image is not None}
    readable = list(images)  # an unreadable image's rows are cut from the batch's other images
    for i, (path, seed) in enumerate(zip(batch["path"], batch["seed"], strict=True)):
        if not readable:
            break
        image = images[str(path)] if str(path) in images else images[readable[i % len(readable)]]
        rng = np.random.default_rng(int(seed))
        for _ in range(patches_per_image):
            pair = degrade(image, rng, cfg)
            clean.append(pair.clean)
            jpegs.append(pair.jpeg)
            qualities.append(pair.quality)
    if not clean:  # no image of the batch was readable
        empty = np.zeros((0, cfg.patch_size, cfg.patch_size, 3), np.uint8)
        return {"clean": empty, "jpeg": empty, "quality": np.zeros(0, np.int16)}
    return {"clean": np.stack(clean), "jpeg": np.stack(jpegs), "quality": np.asarray(qualities, dtype=np.int16)}


class PatchMaker:
    """Ray Data actor running :func:`make_patches`: its process, imports and storage client live for the whole run."""

    def __init__(self, *, data_uri: str, s3_json: str, degradation_json: str, patches_per_image: int) -> None:
        self.location = resolve(data_uri, S3Settings.model_validate_json(s3_json))
        self.cfg = DegradationConfig.model_validate_json(degradation_json)
        self.patches_per_image = patches_per_image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return make_patches(batch, location=self.location, cfg=self.cfg, patches_per_image=self.patches_per_image)


def build_train_dataset(
    data_uri: str,
    images: list[str],
    *,
    n_samples: int,
    seed: int,
    cfg: DataConfig,
    free_cpus: float,
    s3: S3Settings | None = None,
):
    """A Ray Dataset of at least ``n_samples`` degraded patches from ``images`` (paths relative to ``data_uri``).

    ``free_cpus``: the cluster's CPUs the trainers leave, which size the actor pool unless ``cfg.actors`` is set."""
    import ray.data

    n_rows = math.ceil(n_samples / cfg.patches_per_image)
    rows = plan_rows(images, n_rows, seed)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(n_rows / cfg.rows_per_task)))
    return with_idle_backoff(ds).map_batches(
        PatchMaker,
        batch_size=cfg.rows_per_task,
        num_cpus=cfg.num_cpus,
        compute=ray.data.ActorPoolStrategy(size=cfg.actors or max(2, int(free_cpus))),
        fn_constructor_kwargs={
            "data_uri": data_uri,
            "s3_json": (s3 or S3Settings()).model_dump_json(),
            "degradation_json": cfg.degradation.model_dump_json(),
            "patches_per_image": cfg.patches_per_image,
        },
    )


def load_validation_set(location: Location, images: list[str], cfg: DataConfig) -> list[ValidationImage]:
    """The held-out images as centre crops (side ``val_size``, or the largest multiple of 16 that fits)."""
    out = []
    for name in images:
        image = decode_rgb(read_bytes(location.fs, location.path(name)), max_pixels=MAX_PIXELS)
        h, w = image.shape[:2]
        side_h = min(cfg.val_size, h) // 16 * 16
        side_w = min(cfg.val_size, w) // 16 * 16
        if side_h == 0 or side_w == 0:
            continue
        top, left = (h - side_h) // 2, (w - side_w) // 2
        crop = np.ascontiguousarray(image[top : top + side_h, left : left + side_w])
        out.append(
            ValidationImage(name=name, clean=crop, jpegs={q: jpeg.roundtrip(crop, q) for q in cfg.val_qualities})
        )
    return out
