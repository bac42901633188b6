"""Calibrated repetitions, like pyperf: warm up, then repeat until the median is known.

``measure`` runs a callable until the 95% confidence interval of the median is within
``target_ci`` of the median, or the time budget ends. The interval is distribution-free
(binomial order statistics), so skewed timings are handled honestly. A point that ends
unstable says why and what to do.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TimingSettings", "Measurement", "measure", "stability", "median_ci", "latency_stats"]


class TimingSettings(BaseModel):
    """How hard to try per grid point (validated on creation; frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_s: float = Field(default=1.0, gt=0)
    """Wall-clock budget for the timed repetitions of one point, all rounds together (warm-up excluded)."""
    target_ci: float = Field(default=0.02, gt=0, lt=1)
    """Stop once the 95% CI of the median is within ± this fraction of the median."""
    min_time_s: float = Field(default=0.3, ge=0)
    """Time at least this long per point (all rounds together), even once the CI target is met."""
    rounds: int = Field(default=3, ge=1)
    """Passes over the grid; each point's samples are spread over them, so a slow drift of
    the machine (other load, frequency) averages out instead of biasing some points."""
    processes: int = Field(default=3, ge=1)
    """Fresh worker processes the rounds are spread over (at most ``rounds``), so that
    what differs between processes (memory layout, thread placement) averages out like
    pyperf's. Variants that compile every shape (int8, TensorRT) use one process."""
    min_samples: int = Field(default=10, ge=1)
    max_samples: int = Field(default=1000, ge=1)
    warmup_s: float = Field(default=0.1, ge=0)
    """At least this long (and at least 3 calls) of warm-up before timing."""
    max_warmup_s: float = Field(default=120.0, ge=0)
    """Warm-up stops here even if times still fall (compilation can take this long)."""

    def with_(self, **changes: object) -> TimingSettings:
        """A validated copy with ``changes``."""
        return TimingSettings.model_validate({**self.model_dump(), **changes})

    def round(self) -> TimingSettings:
        """The settings of one of ``rounds`` passes (budgets split evenly)."""
        k = max(self.rounds, 1)
        return self.with_(
            budget_s=self.budget_s / k,
            min_time_s=self.min_time_s / k,
            min_samples=max(1, -(-self.min_samples // k)),
            max_samples=max(1, -(-self.max_samples // k)),
        )


@dataclass
class Measurement:
    samples_s: list[float]
    ci_rel: float
    stable: bool
    instability: str | None
    warmup_calls: int
    wall_s: float
    extra: dict[str, float] = field(default_factory=dict)


def median_ci(samples: np.ndarray) -> tuple[float, float]:
    """95% distribution-free confidence interval of the median (order statistics)."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n < 6:
        return float(x[0]), float(x[-1])
    half = 1.959964 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    return float(x[lo]), float(x[hi])


def _ci_rel(samples: np.ndarray) -> float:
    lo, hi = median_ci(samples)
    med = float(np.median(samples))
    return (hi - lo) / 2 / med if med > 0 else math.inf


def latency_stats(samples_s: list[float], ci_rel: float) -> dict[str, float]:
    """Exact statistics of raw samples (the ``LatencyStats`` fields)."""
    x = np.asarray(samples_s, dtype=float)
    q25, p50, q75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    mean = float(x.mean())
    return {
        "mean": mean,
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(x.min()),
        "max": float(x.max()),
        "iqr": float(q75 - q25),
        "cv": float(x.std(ddof=1) / mean) if len(x) > 1 and mean > 0 else 0.0,
        "n": len(x),
        "ci_rel": float(ci_rel),
    }


def measure(
    run: Callable[[], float | None],
    settings: TimingSettings,
    *,
    reset: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    prior: list[float] | None = None,
    warmup_min_calls: int = 3,
) -> Measurement:
    """Time ``run`` (seconds per call) with warm-up and calibrated repetitions.

    ``run`` may return its own duration (GPU code timed with CUDA events); if it returns
    ``None`` the wall-clock time around the call is used. ``reset`` runs untimed after
    every call (e.g. to crop a KV cache back to its length). ``prior`` holds the samples
    of earlier rounds: the CI that decides when to stop covers them too. The returned
    ``samples_s`` are this call's only; ``ci_rel`` and stability cover prior + new.
    """
    prior = list(prior or [])

    def once() -> float:
        t0 = clock()
        own = run()
        t1 = clock()
        if reset is not None:
            reset()
        return float(own) if own is not None else t1 - t0

    start = clock()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        # Warm-up: at least 3 calls and warmup_s; keep going while calls still get much
        # faster (lazy compilation, allocator growth), up to max_warmup_s.
        warm: list[float] = []
        w0 = clock()
        while True:
            warm.append(once())
            elapsed = clock() - w0
            if elapsed >= settings.max_warmup_s:
                break
            if len(warm) >= warmup_min_calls and elapsed >= settings.warmup_s:
                recent = warm[-3:]
                if max(recent) <= 1.5 * min(recent):
                    break
        samples: list[float] = []
        m0 = clock()
        next_check = settings.min_samples
        while len(samples) < settings.max_samples:
            samples.append(once())
            spent = clock() - m0
            if len(samples) >= next_check and spent >= settings.min_time_s:
                if _ci_rel(np.asarray(prior + samples)) <= settings.target_ci:
                    break
                next_check = len(samples) + max(1, len(samples) // 4)
            if spent >= settings.budget_s and len(samples) >= settings.min_samples:
                break
    finally:
        if was_enabled:
            gc.enable()
    ci, stable, why = stability(prior + samples, [], settings.target_ci)
    return Measurement(samples, ci, stable, why, len(warm), clock() - start)


def stability(samples: list[float], round_medians: list[float], target_ci: float) -> tuple[float, bool, str | None]:
    """CI of the median and stability of a point: (ci_rel, stable, why).

    Unstable when the CI misses ``target_ci``, or when the median moved more than 10%:
    between rounds when there were several, else between the two halves of the samples.
    """
    x = np.asarray(samples)
    ci = _ci_rel(x)
    reasons = []
    if ci > target_ci:
        reasons.append(f"the 95% CI of the median is ±{ci:.1%} after {len(x)} samples (target ±{target_ci:.0%})")
    if len(round_medians) >= 2:
        if min(round_medians) > 0:
            spread = max(round_medians) / min(round_medians) - 1
            if spread > 0.10:
                reasons.append(f"the median moved {spread:.0%} between rounds over the grid")
    elif len(x) >= 20:
        half = len(x) // 2
        lo, hi = float(np.median(x[:half])), float(np.median(x[half:]))
        drift = abs(hi - lo) / min(lo, hi) if min(lo, hi) > 0 else 0.0
        if drift > 0.10:
            reasons.append(f"the median moved {drift:.0%} between the first and second half of the run")
    if not reasons:
        return ci, True, None
    return ci, False, "; ".join(reasons) + _REMEDY


_REMEDY = (
    ". Other load on the machine or frequency scaling is the usual cause: close other programs, "
    "raise --budget-s, or pin --threads below the core count, then profile again"
)
