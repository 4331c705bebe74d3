"""Which floating-point precision DAGN computes in: bfloat16 autocast where the hardware runs it natively, else fp32.

bfloat16 keeps fp32's exponent range, so DAGN needs no loss scaling and its outputs stay within a rounding step of
the fp32 ones, while convolutions run on the CPU's bf16 dot-product units (AMX tiles or AVX512-BF16) at several
times the fp32 rate. CPUs without those units emulate bf16 and are slower than fp32, so "auto" turns it on only
where /proc/cpuinfo names one; on CUDA, where the GPU has bf16 (else fp16). Outputs are always returned as fp32.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Literal

import torch

__all__ = ["Precision", "autocast", "autocast_dtype", "cpu_has_bf16"]

Precision = Literal["auto", "bf16", "fp32"]

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AMX or AVX512-BF16), read from /proc/cpuinfo (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in _BF16_CPU_FLAGS)
    return False


def autocast_dtype(device: torch.device | str, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    "bf16" forces bfloat16 (fp16 on a GPU without bf16), "fp32" forces fp32, "auto" picks bf16 on CUDA and on CPUs
    with native bf16 (:func:`cpu_has_bf16`), fp32 elsewhere.
    """
    device = torch.device(device)
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (precision == "bf16" or cpu_has_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
