"""Model files: safetensors weights with the architecture config and provenance in the header metadata.

One self-contained file per model, so a checkpoint reloads without guessing hyper-parameters from tensor shapes,
and no pickle is ever executed on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load, save

from dagn.models import DAGN, DAGNConfig

__all__ = [
    "CONTENT_HASH_KEY",
    "ModelFileError",
    "content_hash",
    "load_model",
    "read_metadata",
    "save_model",
    "shipped_weights",
    "verify_model_file",
]

_FORMAT = "dagn-v1"
CONTENT_HASH_KEY = "tensors_sha256"  # SHA-256 of the tensor data (everything after the header), written by save_model
_MAX_HEADER = 16 * 2**20  # a dagn header (names, shapes, offsets, metadata) is a few tens of kB
_MAX_MAGNITUDE = 1e6  # far above any trained weight or BatchNorm statistic; random bytes give ~1e38
_WEIGHTS_DIR = Path(__file__).parent / "weights"


class ModelFileError(ValueError):
    """A model file that is not a complete, consistent dagn model: refused before any of it is used."""


def _data_offset(blob: bytes) -> int:
    return 8 + int.from_bytes(blob[:8], "little")


def save_model(model: DAGN, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (weights, BatchNorm statistics, config) to a safetensors file; returns the path.

    The header records the SHA-256 of the tensor data, so a file damaged later is refused on load instead of
    silently restoring garbage.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {**{k: str(v) for k, v in (metadata or {}).items() if k != CONTENT_HASH_KEY}, "format": _FORMAT}
    header["config"] = model.config.model_dump_json()
    unhashed = save(tensors, metadata=header)  # the data section does not depend on the metadata
    header[CONTENT_HASH_KEY] = hashlib.sha256(unhashed[_data_offset(unhashed) :]).hexdigest()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=header))
    tmp.replace(path)  # atomic: a reader never sees a half-written model
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _check_layout(path: Path) -> bytes:
    """The file's bytes, once it is known to be a safetensors file whose header fits inside it."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror or e}") from None
    if not blob:
        raise ModelFileError(f"model file {path} is empty")
    header = _data_offset(blob) - 8 if len(blob) >= 8 else None
    if header is None or header > _MAX_HEADER or 8 + header > len(blob):
        # judged only once the header is known to be bad: a safetensors header of length 0x..80 or 0x..4b50 starts
        # with the same bytes as a pickle or a zip
        if blob[:1] == b"\x80" or blob[:2] == b"PK":
            raise ModelFileError(f"model file {path} is a pickle (torch.save); only safetensors files are loaded")
        if header is None:
            raise ModelFileError(f"model file {path} is truncated ({len(blob)} bytes)")
        raise ModelFileError(
            f"model file {path} is truncated or not safetensors: its header claims {header} bytes, "
            f"the file has {len(blob)}"
        )
    return blob


def _verified(path: Path) -> tuple[dict[str, str], DAGNConfig, dict[str, torch.Tensor]]:
    blob = _check_layout(path)
    try:
        meta = dict(json.loads(blob[8 : _data_offset(blob)]).get("__metadata__") or {})
        tensors = load(blob)
    except Exception as e:  # safetensors reports bad JSON, offsets or lengths as several exception types
        raise ModelFileError(f"model file {path} is not a readable safetensors file: {e}") from None
    if meta.get("format") != _FORMAT or "config" not in meta:
        raise ModelFileError(f"{path} is not a dagn model file (no '{_FORMAT}' metadata)")
    try:
        config = DAGNConfig.model_validate_json(meta["config"])
    except ValidationError as e:
        raise ModelFileError(f"{path} has an invalid model config: {e.errors()[0]['msg']}") from None
    recorded = meta.get(CONTENT_HASH_KEY)
    if recorded is not None and hashlib.sha256(blob[_data_offset(blob) :]).hexdigest() != recorded:
        raise ModelFileError(f"{path}: the tensor data does not match the content hash in its header (corrupt)")
    expected = _expected_tensors(config)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path} does not hold the model its config describes: "
            f"{len(missing)} tensors missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise ModelFileError(
                f"{path}: tensor {name} is {tensor.dtype} {tuple(tensor.shape)}, "
                f"the config needs {want.dtype} {tuple(want.shape)}"
            )
        if tensor.is_floating_point() and tensor.numel() and not _plausible(tensor):
            raise ModelFileError(f"{path}: tensor {name} holds non-finite or implausibly large values (corrupt)")
    return meta, config, tensors


def _plausible(tensor: torch.Tensor) -> bool:
    low, high = torch.aminmax(tensor)  # NaN propagates and fails both comparisons
    return bool(low >= -_MAX_MAGNITUDE) and bool(high <= _MAX_MAGNITUDE)


def _expected_tensors(config: DAGNConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):  # shapes and dtypes only: nothing is allocated or initialised for real
        return DAGN(config).state_dict()


def verify_model_file(path: str | Path) -> dict[str, str]:
    """Check a model file as far as it can be checked without running it; returns its metadata.

    Checked: the safetensors header (present, inside the file, parseable), the dagn metadata and config, every tensor
    name, shape and dtype against the model the config builds, finite values of plausible magnitude, and the
    content hash of the tensor data when the file records one (every file :func:`save_model` writes does).

    Raises:
        ModelFileError: one line saying what is wrong with which file.
    """
    return _verified(Path(path))[0]


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> DAGN:
    """Load a model file written by :func:`save_model` (default: the shipped weights), in eval mode.

    Raises:
        ModelFileError: when :func:`verify_model_file` refuses the file.
    """
    _, config, tensors = _verified(Path(path) if path is not None else shipped_weights())
    model = DAGN(config)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def content_hash(path: str | Path, length: int = 12) -> str:
    """Short SHA-256 of a file's bytes; shipped weights are named with it so a name always means the same model."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]


def shipped_weights() -> Path:
    """Path of the default weights that ship inside the package (named in dagn/weights/default.json)."""
    index = _WEIGHTS_DIR / "default.json"
    if not index.exists():
        raise FileNotFoundError(f"no shipped weights: {index} is missing")
    return _WEIGHTS_DIR / json.loads(index.read_text())["file"]
