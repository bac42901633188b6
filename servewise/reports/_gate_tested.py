"""The gate's tested comparisons: two samples per check, Mann–Whitney U, Holm, a bootstrap
interval of the ratio of medians, the machine's speed divided out (see :mod:`reports._gate`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from servewise.reports._format import seconds
from servewise.reports._gate_result import Check
from servewise.reports._gate_stats import (
    MIN_CALIBRATION,
    MIN_SAMPLES,
    holm,
    one_sided_p,
    ratio_ci,
    rng_for,
    rounds_halfwidth,
)

__all__ = ["Settings", "Pending", "tested", "fmt_value", "fmt_p", "finite"]


@dataclass(frozen=True)
class Settings:
    """How the gate judges: the threshold, the test's level, the interval's, the bootstrap seed."""

    max_regression: float
    alpha: float
    confidence: float
    seed: int
    calibrate: bool = True


@dataclass(frozen=True)
class Pending:
    """Two samples to test, or the reason they cannot be.

    ``calibration`` holds (baseline, current) timings of the calibration kernel from the
    same runs; when both have enough, the comparison is speed-adjusted.
    """

    name: str
    metric: str
    better: str
    baseline: np.ndarray
    current: np.ndarray
    note: str = ""
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    rounds: tuple[np.ndarray, np.ndarray] | None = None
    """(baseline, current) medians of each round, for the between-run part of the interval."""


def _speed(t: Pending, s: Settings) -> tuple[float, str]:
    """The machine's speed ratio between the runs (current / baseline calibration medians;
    1.0 when not used) and a note saying which it was."""
    if t.calibration is None:
        return 1.0, ""
    cb, cc = t.calibration
    if not s.calibrate:
        return 1.0, "; calibration ignored (--no-calibration)"
    if min(len(cb), len(cc)) < MIN_CALIBRATION or not (np.median(cb) > 0 and np.median(cc) > 0):
        return 1.0, "; raw timings (no calibration recorded on both sides)"
    return float(np.median(cc) / np.median(cb)), ""


def _prepare(t: Pending, s: Settings) -> dict[str, Any]:
    """The medians, the speed ratio, and the test's p-value (or why there is none)."""
    nb, nc = len(t.baseline), len(t.current)
    speed, why = _speed(t, s)
    mb = float(np.median(t.baseline)) if nb else math.nan
    mc = float(np.median(t.current)) if nc else math.nan
    row: dict[str, Any] = {"t": t, "nb": nb, "nc": nc, "speed": speed, "why": why, "mb": mb, "mc": mc}
    if min(nb, nc) < MIN_SAMPLES:
        row["missing"] = f"too few samples to test (baseline {nb}, current {nc}; at least {MIN_SAMPLES} each)"
    elif not (mb > 0 and mc > 0):
        row["missing"] = f"a median is not positive (baseline {mb:.6g}, current {mc:.6g}): no ratio"
    else:
        row["p"] = one_sided_p(t.current / speed, t.baseline, t.better)
    return row


def _verdict(worse: str, failed: bool, significant: bool, beyond: bool, s: Settings) -> str:
    if failed:
        return f"{worse} beyond {s.max_regression:.0%} (significant)"
    if significant:
        return f"{worse}, significant, but not surely beyond {s.max_regression:.0%}"
    if beyond:
        return "beyond the threshold but not significant"
    return "no significant regression"


def _judge(r: dict[str, Any], s: Settings) -> Check:
    """One prepared row, its Holm-adjusted p-value set: the interval, the rule, the message."""
    t: Pending = r["t"]
    adjusted = r["speed"] != 1.0
    unit = "s" if t.metric.endswith("_s") else None
    common: dict[str, Any] = dict(
        name=t.name, kind="regression", metric=t.metric, unit=unit, better=t.better, threshold=s.max_regression,
        n_baseline=r["nb"], n_current=r["nc"], baseline=finite(r["mb"]), current=finite(r["mc"]),
        speed_ratio=r["speed"] if adjusted else None,
    )  # fmt: skip
    if "missing" in r:
        return Check(status="missing", message=r["missing"] + t.note, **common)
    raw = r["mc"] / r["mb"]
    ratio = raw / r["speed"]
    cal = (t.calibration[1], t.calibration[0]) if adjusted and t.calibration is not None else None
    lo, hi = ratio_ci(t.current, t.baseline, rng_for(s.seed, t.name), s.confidence, cal)
    between = rounds_halfwidth(t.rounds[0], t.rounds[1], s.confidence) if t.rounds is not None else None
    if between is not None:  # the wider of the two: sampling noise, or movement between runs
        lo, hi = min(lo, ratio * math.exp(-between)), max(hi, ratio * math.exp(between))
    significant = r["p_holm"] < s.alpha
    beyond = lo > 1.0 + s.max_regression if t.better == "lower" else hi < 1.0 - s.max_regression
    failed = significant and beyond
    verdict = _verdict("slower" if t.metric.endswith("_s") else "worse", failed, significant, beyond, s)
    change = f"{raw - 1:+.1%}"
    if adjusted:
        change += f"; machine {r['speed'] - 1:+.1%} by the calibration kernel, adjusted {ratio - 1:+.1%}"
    msg = (
        f"median {fmt_value(r['mb'], unit)} -> {fmt_value(r['mc'], unit)} ({change}; {s.confidence:.0%} CI "
        f"x{lo:.3f}-x{hi:.3f}), p={fmt_p(r['p'])} (Holm {fmt_p(r['p_holm'])}): {verdict}{t.note}{r['why']}"
    )
    return Check(
        status="fail" if failed else "pass", message=msg, ratio=ratio, ci_low=lo, ci_high=hi, p_value=r["p"],
        p_holm=r["p_holm"], raw_ratio=raw if adjusted else None, **common,
    )  # fmt: skip


def tested(pending: list[Pending], s: Settings) -> list[Check]:
    """Mann–Whitney U + Holm + bootstrap interval for every pair of samples.

    Where both runs timed the calibration kernel, the current samples are divided by the
    machine's speed ratio before the test, and the interval is of the speed-adjusted
    ratio (its four medians bootstrapped). Holm's adjustment runs over every tested pair.
    """
    rows = [_prepare(t, s) for t in pending]
    with_p = [r for r in rows if "p" in r]
    for r, adj in zip(with_p, holm([r["p"] for r in with_p]), strict=True):
        r["p_holm"] = adj
    return [_judge(r, s) for r in rows]


def finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def fmt_value(v: float | None, unit: str | None) -> str:
    """A number for a message: seconds in s / ms / µs, ratios as percentages."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if unit == "s":
        return seconds(v)
    if unit == "ratio":
        return f"{v:.4g} ({v:.2%})"
    return f"{v:.6g}" + (f" {unit}" if unit else "")


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
