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

__all__ = ["TimingSettings", "Measurement", "measure", "median_ci", "latency_stats"]


@dataclass(frozen=True)
class TimingSettings:
    """How hard to try per grid point."""

    budget_s: float = 1.0
    """Wall-clock budget for the measured repetitions of one point (warm-up excluded)."""
    target_ci: float = 0.02
    """Stop once the 95% CI of the median is within ± this fraction of the median."""
    min_samples: int = 10
    max_samples: int = 1000
    warmup_s: float = 0.1
    """At least this long (and at least 3 calls) of warm-up before timing."""
    max_warmup_s: float = 120.0
    """Warm-up stops here even if times still fall (compilation can take this long)."""


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
) -> Measurement:
    """Time ``run`` (seconds per call) with warm-up and calibrated repetitions.

    ``run`` may return its own duration (GPU code timed with CUDA events); if it returns
    ``None`` the wall-clock time around the call is used. ``reset`` runs untimed after
    every call (e.g. to crop a KV cache back to its length).
    """

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
            if len(warm) >= 3 and elapsed >= settings.warmup_s:
                recent = warm[-3:]
                if max(recent) <= 1.5 * min(recent):
                    break
        samples: list[float] = []
        m0 = clock()
        next_check = settings.min_samples
        ci = math.inf
        while len(samples) < settings.max_samples:
            samples.append(once())
            if len(samples) >= next_check:
                ci = _ci_rel(np.asarray(samples))
                if ci <= settings.target_ci:
                    break
                next_check = len(samples) + max(1, len(samples) // 4)
            if clock() - m0 >= settings.budget_s and len(samples) >= settings.min_samples:
                break
        if len(samples) < next_check or not math.isfinite(ci):
            ci = _ci_rel(np.asarray(samples))
    finally:
        if was_enabled:
            gc.enable()
    stable, why = _stability(np.asarray(samples), ci, settings, clock() - m0)
    return Measurement(samples, ci, stable, why, len(warm), clock() - start)


def _stability(x: np.ndarray, ci: float, s: TimingSettings, spent_s: float) -> tuple[bool, str | None]:
    reasons: list[str] = []
    if ci > s.target_ci:
        reasons.append(
            f"the 95% CI of the median is ±{ci:.1%} after {len(x)} samples in {spent_s:.2f} s (target ±{s.target_ci:.0%})"
        )
    if len(x) >= 20:
        half = len(x) // 2
        a, b = float(np.median(x[:half])), float(np.median(x[half:]))
        drift = abs(b - a) / min(a, b) if min(a, b) > 0 else 0.0
        if drift > 0.10:
            reasons.append(f"the median moved {drift:.0%} between the first and second half of the run")
    if not reasons:
        return True, None
    return False, (
        "; ".join(reasons)
        + ". Other load on the machine or frequency scaling is the usual cause: close other programs, "
        "raise --budget-s, or pin --threads below the core count, then profile again"
    )
