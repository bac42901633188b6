"""The statistics of the gate: a one-sided Mann–Whitney U test, a bootstrap confidence
interval of the ratio of two medians, and Holm's step-down adjustment.

The bootstrap is exact in its resampling step: for a sorted sample ``x₍₁₎ ≤ … ≤ x₍ₙ₎``
the median of a resample of odd size ``N`` is the order statistic ``x₍K₎`` with
``P(K ≤ k) = P(Binomial(N, k/n) ≥ (N+1)/2)`` — the bootstrap distribution of the median,
computed rather than simulated, in O(n). ``N`` is ``n`` for odd ``n`` and ``n − 1`` for
even ``n`` (an odd resample has a single middle value; the interval is a hair wider).
Only the ratio of two independent medians is then drawn (10 000 draws, seeded), so a
point with 1 000 samples, or a load test with 100 000 latencies, costs about a millisecond.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["BOOTSTRAP_DRAWS", "MIN_SAMPLES", "MIN_CALIBRATION", "rounds_halfwidth", "rng_for", "median_draws", "ratio_ci", "one_sided_p", "holm"]

BOOTSTRAP_DRAWS = 10_000
"""Draws of the bootstrap distribution of the median ratio."""

MIN_SAMPLES = 5
"""Fewer samples than this on either side: the point cannot be tested (status ``missing``)."""

MIN_CALIBRATION = 3
"""Fewer calibration timings than this on either side: the point is compared on raw timings."""


def rng_for(seed: int, name: str) -> np.random.Generator:
    """A generator for one check, from the gate's seed and the check's name.

    A check's interval then depends on its own data only, not on which other checks ran.
    """
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def median_draws(sample: np.ndarray, rng: np.random.Generator, draws: int = BOOTSTRAP_DRAWS) -> np.ndarray:
    """``draws`` values from the bootstrap distribution of the sample median (see the module)."""
    x = np.sort(np.asarray(sample, dtype=float))
    n = len(x)
    size = n if n % 2 else n - 1
    middle = (size + 1) // 2
    cdf = stats.binom.sf(middle - 1, size, np.arange(1, n + 1) / n)
    cdf[-1] = 1.0
    k = np.searchsorted(cdf, rng.random(draws), side="right")
    return x[np.minimum(k, n - 1)]


def ratio_ci(
    current: np.ndarray,
    baseline: np.ndarray,
    rng: np.random.Generator,
    confidence: float,
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median(current) / median(baseline)``.

    With ``calibration = (current_cal, baseline_cal)`` the ratio is speed-adjusted,
    ``median(current) / median(baseline) × median(baseline_cal) / median(current_cal)``,
    and all four medians are drawn from their bootstrap distributions, so the
    calibration's own noise widens the interval.
    """
    r = median_draws(current, rng) / median_draws(baseline, rng)
    if calibration is not None:
        cal_c, cal_b = calibration
        r = r * median_draws(cal_b, rng) / median_draws(cal_c, rng)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(r, [tail, 1.0 - tail])
    return float(lo), float(hi)


def rounds_halfwidth(baseline_rounds: np.ndarray, current_rounds: np.ndarray, confidence: float) -> float | None:
    """Half-width, in log space, of the t-interval of the log ratio of two runs' round medians.

    Each round of a profile runs in a fresh process at another time, so its median is a
    replicate of the run: the pooled variance of the log round medians (both sides)
    says how far a point's median moves between runs, which the samples of one run
    cannot. ``t(confidence, R_b + R_c - 2) * s * sqrt(1/R_b + 1/R_c)``; None with fewer
    than 2 rounds on a side.
    """
    b = np.log(np.asarray(baseline_rounds, dtype=float))
    c = np.log(np.asarray(current_rounds, dtype=float))
    if len(b) < 2 or len(c) < 2 or not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        return None
    df = len(b) + len(c) - 2
    s2 = (float(np.sum((b - b.mean()) ** 2)) + float(np.sum((c - c.mean()) ** 2))) / df
    t = float(stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, df))
    return t * float(np.sqrt(s2 * (1.0 / len(b) + 1.0 / len(c))))


def one_sided_p(current: np.ndarray, baseline: np.ndarray, better: str) -> float:
    """Mann–Whitney U p-value that ``current`` is worse: larger when lower is better, else smaller."""
    alternative = "greater" if better == "lower" else "less"
    return float(stats.mannwhitneyu(current, baseline, alternative=alternative).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]
