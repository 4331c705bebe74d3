"""What the benches read from /proc (Linux): CPU time of processes, and the machine line every report starts with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None if it is gone)."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def pids() -> list[int]:
    """Every process on the machine now."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def title(pid: int) -> str | None:
    """The process's first command-line word (Ray workers set it to e.g. ``ray::RayTrainWorker``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None


def machine_line(cuda: bool = False) -> str:
    """CPU model and cores, torch version and threads, and the GPUs when ``cuda``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = f"CPU: {cpu}, {os.cpu_count()} logical cores; torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if cuda and torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    return line
