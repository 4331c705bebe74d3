"""Precision choice: bf16 autocast only where the CPU runs it natively (or when forced), fp32 otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dagn
from dagn.precision import autocast_dtype, cpu_has_bf16


def test_forced_and_automatic_choices():
    assert autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16
    assert autocast_dtype("cpu") is (torch.bfloat16 if cpu_has_bf16() else None)
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        autocast_dtype("cpu", "fp16")  # type: ignore[arg-type]


def test_restorer_in_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    model = dagn.build_model("tiny").eval()
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    fp32 = dagn.Restorer(model=model, precision="fp32")
    bf16 = dagn.Restorer(model=model, precision="bf16")
    assert fp32.autocast_dtype is None and bf16.autocast_dtype is torch.bfloat16
    a, b = fp32(image).astype(int), bf16(image).astype(int)
    assert b.dtype == a.dtype and b.shape == a.shape
    difference = np.abs(a - b)
    assert 0 < difference.max() <= 8 and difference.mean() < 1.0  # bf16 really ran, and rounds only slightly
