from __future__ import annotations

import io
import pickle
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dagn
from dagn.checkpoint import (
    CONTENT_HASH_KEY,
    ModelFileError,
    content_hash,
    load_model,
    read_metadata,
    save_model,
    verify_model_file,
)


def test_round_trip_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    model = dagn.build_model("tiny")
    model.train()
    model(torch.rand(4, 3, 32, 32))  # move BatchNorm statistics away from their init
    model.eval()
    path = save_model(model, tmp_path / "m.safetensors", {"steps": "7"})
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    assert read_metadata(path)["steps"] == "7"
    x = torch.rand(1, 3, 37, 21)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    assert len(content_hash(path)) == 12


def test_foreign_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a dagn model file"):
        load_model(tmp_path / "x.safetensors")


# -- damaged and malformed model files (each once loaded without complaint or failed only inside Ray's actors) ------


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return save_model(dagn.build_model("tiny").eval(), tmp_path / "m.safetensors", {"variant": "tiny"})


def _data_start(blob: bytes) -> int:
    return 8 + int.from_bytes(blob[:8], "little")


def _damaged(path, blob: bytes):
    path.write_bytes(blob)
    return path


def test_a_saved_file_records_its_content_hash_and_verifies(model_file):
    meta = verify_model_file(model_file)
    assert len(meta[CONTENT_HASH_KEY]) == 64 and meta["variant"] == "tiny"


def test_random_bytes_inside_the_tensor_data_are_refused(model_file, tmp_path):
    blob = bytearray(model_file.read_bytes())
    start = _data_start(blob) + 4000
    blob[start : start + 256] = np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes()
    with pytest.raises(ModelFileError, match="does not match the content hash"):
        load_model(_damaged(tmp_path / "noisy.safetensors", bytes(blob)))

    # A file from before the hash was recorded: the value check still catches random bytes.
    tensors = load_file(str(model_file))
    old_meta = {k: v for k, v in read_metadata(model_file).items() if k != CONTENT_HASH_KEY}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old_meta)
    verify_model_file(tmp_path / "old.safetensors")
    old = bytearray((tmp_path / "old.safetensors").read_bytes())
    old[_data_start(old) + 4000 : _data_start(old) + 4256] = blob[start : start + 256]
    with pytest.raises(ModelFileError, match="implausibly large"):
        load_model(_damaged(tmp_path / "old-noisy.safetensors", bytes(old)))


def test_malformed_files_are_one_line_errors(model_file, tmp_path):
    blob = model_file.read_bytes()
    huge = (2**40).to_bytes(8, "little") + blob[8:]
    buffer = io.BytesIO()
    torch.save(dagn.build_model("tiny").state_dict(), buffer)
    cases = {
        "empty": (b"", "is empty"),
        "truncated": (blob[: len(blob) // 2], "not a readable safetensors file"),
        "short": (blob[:5], "truncated"),
        "huge-header": (huge, "header claims"),
        "pickle": (buffer.getvalue(), "pickle"),
        "legacy-pickle": (pickle.dumps({"w": 1}), "pickle"),
        "garbage-header": (blob[:8] + b"x" * (_data_start(blob) - 8) + blob[_data_start(blob) :], "not a readable"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(ModelFileError, match=message) as error:
            verify_model_file(_damaged(tmp_path / f"{name}.safetensors", data))
        assert "\n" not in str(error.value) and name in str(error.value), name
    with pytest.raises(ModelFileError, match="not found"):
        verify_model_file(tmp_path / "missing.safetensors")


def test_tensors_that_do_not_fit_the_config_are_refused(model_file, tmp_path):
    tensors = load_file(str(model_file))
    meta = {k: v for k, v in read_metadata(model_file).items() if k != CONTENT_HASH_KEY}
    name = next(k for k, v in tensors.items() if v.ndim == 4)
    shapes = {**tensors, name: torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 2)}
    save_file(shapes, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match=f"tensor {re.escape(name)} is torch.float32"):
        load_model(tmp_path / "shape.safetensors")
    save_file({k: v for k, v in tensors.items() if k != name}, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="1 tensors missing"):
        load_model(tmp_path / "missing.safetensors")
    small = {**meta, "config": dagn.get_config("small").model_dump_json()}
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata=small)
    with pytest.raises(ModelFileError, match="does not hold the model its config describes"):
        load_model(tmp_path / "other.safetensors")


@pytest.mark.parametrize("length", [0x80, 0x4B50])  # its first byte is a pickle's; its first two, a zip's "PK"
def test_a_header_length_that_starts_like_a_pickle_is_still_safetensors(tmp_path, length):
    """The first bytes of a safetensors file are its header's length: some lengths begin like a pickle or a zip."""
    model = dagn.build_model("tiny").eval()

    def header_length(pad: int) -> int:
        path = save_model(model, tmp_path / "m.safetensors", {"pad": "x" * pad})
        return int.from_bytes(path.read_bytes()[:8], "little")

    base = header_length(0)
    target = length + -(-(base - length) // 0x10000) * 0x10000 if base > length else length
    pad = next(p for p in range(max(0, target - base - 16), target - base + 16) if header_length(p) == target)
    path = save_model(model, tmp_path / "m.safetensors", {"pad": "x" * pad})
    assert path.read_bytes()[:1] in (b"\x80", b"P")
    verify_model_file(path)
    assert load_model(path).config == model.config
