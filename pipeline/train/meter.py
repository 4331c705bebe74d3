"""Training throughput and time left, as one object the worker loop ticks once per step.

Three rates: of the last log window (what the progress line shows), of the whole run, and of its steady part (the
run after ``warmup`` steps, leaving out start-up and the data pipeline's ramp), which benches compare.
"""

from __future__ import annotations

import math
import time

__all__ = ["ThroughputMeter", "format_eta"]


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ThroughputMeter:
    """Samples per second of a run that goes from step ``start`` to step ``end``."""

    def __init__(self, *, start: int, end: int, samples_per_step: int, warmup: int) -> None:
        self.start, self.end, self.samples_per_step, self.warmup = start, end, samples_per_step, warmup
        self.t_start = self.t_window = self.t_steady = time.monotonic()
        self.window_steps = 0

    def step(self, step: int) -> None:
        """Count one finished step (``step`` is the step count after it)."""
        self.window_steps += 1
        if step - self.start == self.warmup:
            self.t_steady = time.monotonic()

    def new_window(self) -> None:
        self.window_steps, self.t_window = 0, time.monotonic()

    def window_rate(self) -> float:
        return self.window_steps * self.samples_per_step / max(time.monotonic() - self.t_window, 1e-9)

    def eta(self, step: int) -> str:
        overall = (step - self.start) * self.samples_per_step / max(time.monotonic() - self.t_start, 1e-9)
        return format_eta((self.end - step) * self.samples_per_step / overall if overall > 0 else float("inf"))

    def rates(self, step: int) -> dict[str, float]:
        """The run's rate so far, and once past the warm-up its steady rate with the steady window's wall-clock
        bounds (so a profiler outside Ray can line its samples up with it)."""
        now = time.monotonic()
        rates = {"samples_per_s": (step - self.start) * self.samples_per_step / (now - self.t_start)}
        if step - self.start > self.warmup:
            rates["steady_samples_per_s"] = (
                (step - self.start - self.warmup) * self.samples_per_step / (now - self.t_steady)
            )
            wall = time.time()
            rates["steady_from_unix"] = wall - (now - self.t_steady)
            rates["steady_to_unix"] = wall
        return rates
