"""``servewise gate``: a CI verdict on an artifact, against a baseline, SLO expressions or both.

What is compared (baseline and current must be of the same kind):

- **profile vs profile**: every grid point measured in the baseline, per (model, variant,
  phase, batch size, sequence length). A one-sided Mann–Whitney U test on the raw
  ``samples_s`` (is the current slower?), Holm-adjusted over all the gate's points, and
  a bootstrap confidence interval of the ratio of medians (current / baseline). A point
  **regresses only when it is significant (Holm p < alpha) and the interval's lower
  bound is above 1 + max_regression**: the gate must be sure the slowdown exceeds the
  threshold, not only that there is one (see :data:`RULE`). Where both profiles timed
  the calibration kernel (``Point.calibration_samples_s``, pooled over the variant's
  points), the machine's speed ratio between the runs is divided out first: the test runs on the
  current samples over that ratio, and the interval is of the speed-adjusted ratio with
  the calibration's own noise bootstrapped in. A shared machine drifts by several
  percent between runs of the same build (other tenants, frequency); the kernel moves
  with it, so the adjusted ratio keeps what the build changed. Where both profiles
  recorded each round's median (``Point.round_medians_s``; rounds run in fresh
  processes), the interval is widened to at least the t-interval of the log ratio of
  round medians: a point whose median moved between rounds cannot be sure of a change
  of that size between runs either. Profiles from other hardware
  or library versions (:data:`HARDWARE_FIELDS`) are refused naming the field, as are
  estimated (transferred) profiles: an estimate is not a measurement.
- **benchmark vs benchmark** (``kind: benchmark``): the same test per case; ``better:
  higher`` cases regress when the interval's upper bound is below 1 − max_regression.
- **measured vs measured**: the same test on the raw latencies of ``requests.csv``
  (served requests), TTFT too for streamed runs; throughput (relative) and rejection and
  failure ratios (absolute increase) from the summaries.
- **sim_result vs sim_result** and **plan vs plan** (the winners' metrics): simulations
  are deterministic for a seed, so p50/p95/p99 latency (TTFT, TPOT when present), cost
  per hour and throughput are compared with the threshold directly (relative), and
  rejection and failure ratios by absolute increase. Another seed, trace or warm-up is
  refused.
- **SLO expressions** (:mod:`reports._slo`) on a sim result, a measurement, a
  validation (its measured side; ``predicted.`` for the other) or a plan's winner. A
  validation also gets a ``verdict`` check (alone, with neither baseline nor SLOs, a
  validation is judged by its verdict); an ``invalid`` one is unusable input.

Missing data is never a pass: a baseline point, variant or case the current artifact
lacks, failed or skipped, a point with fewer than :data:`MIN_SAMPLES` samples, or an SLO
metric that is null is a check with status ``missing``, which fails the gate (exit 1).
Inputs that cannot be judged raise :class:`~servewise.errors.GateError` or
:class:`~servewise.errors.ArtifactError` (exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from servewise.errors import GateError
from servewise.reports._artifacts import Artifact, load_artifact
from servewise.reports._gate_compare import COMPARE, HARDWARE_FIELDS, check_same_hardware, valid_measurement, winner
from servewise.reports._gate_result import Check, GateResult
from servewise.reports._gate_tested import Settings, fmt_value
from servewise.reports._slo import SloExpr, metric_value, parse_slo
from servewise.results import Summary

__all__ = ["Check", "GateResult", "run_gate", "HARDWARE_FIELDS", "RULE", "check_same_hardware"]

RULE = "holm p < alpha and CI beyond threshold"
"""The regression rule, as written into every result (see the module docstring)."""


def _settings(max_regression: float, alpha: float, confidence: float, seed: int, calibrate: bool) -> Settings:
    if not (isinstance(max_regression, (int, float)) and math.isfinite(max_regression) and max_regression >= 0):
        raise GateError(f"max_regression must be a number >= 0 (0.05 for 5%), got {max_regression!r}")
    if not (0 < alpha < 1):
        raise GateError(f"alpha must be in (0, 1), got {alpha!r}")
    if not (0 < confidence < 1):
        raise GateError(f"confidence must be in (0, 1), got {confidence!r}")
    return Settings(float(max_regression), float(alpha), float(confidence), int(seed), bool(calibrate))


def run_gate(
    *,
    current: str | Path,
    baseline: str | Path | None = None,
    max_regression: float = 0.05,
    slos: Sequence[str] = (),
    alpha: float = 0.01,
    confidence: float = 0.95,
    seed: int = 0,
    calibrate: bool = True,
) -> GateResult:
    """Judge ``current`` against ``baseline`` and/or SLO expressions (see the module docstring).

    ``max_regression`` is a fraction (0.05: 5% slower, or for an absolute metric such as
    ``rejection_ratio`` 0.05 more). ``alpha`` is the family-wise significance level of the
    gate's tests (Holm), ``confidence`` the level of each ratio interval, ``seed`` seeds
    the bootstrap. ``calibrate`` (default) compares profile points speed-adjusted where
    both runs timed the calibration kernel. Raises :class:`GateError` /
    :class:`ArtifactError` for inputs that cannot be judged.
    """
    ctx = _settings(max_regression, alpha, confidence, seed, calibrate)
    exprs = [parse_slo(s) for s in slos]
    cur = load_artifact(current)
    if baseline is None and not exprs and cur.kind != "validation":
        raise GateError(
            f"gate needs a baseline to compare {cur.path} with, SLO expressions to check, or both (--baseline, --slo); "
            "only a validation is judged alone (by its verdict)"
        )
    base = load_artifact(baseline) if baseline is not None else None
    checks: list[Check] = []
    if base is not None:
        if base.kind != cur.kind:
            raise GateError(
                f"baseline and current are different kinds: baseline {base.path} is a {base.kind}, "
                f"current {cur.path} is a {cur.kind}"
            )
        checks += COMPARE[cur.kind](base, cur, ctx)
    if exprs or cur.kind == "validation":
        checks += _slo_checks(cur, exprs)
    return GateResult(
        checks=checks,
        current=str(cur.path),
        baseline=str(base.path) if base is not None else None,
        artifact_kind=cur.kind,
        settings={
            "max_regression": ctx.max_regression,
            "alpha": ctx.alpha,
            "confidence": ctx.confidence,
            "seed": ctx.seed,
            "calibrate": ctx.calibrate,
            "rule": RULE,
            "slos": [e.text for e in exprs],
        },
    )


# ----------------------------------------------------------------------------- SLO expressions


def _validation_source(a: Artifact) -> tuple[list[Check], dict[str, Summary | None], str]:
    v = a.validation
    if v.verdict == "invalid":
        reasons = "; ".join(v.invalid_reasons) or "no reason recorded"
        raise GateError(f"validation {a.path} is invalid ({reasons}): its measurement cannot be judged")
    msg = "the live deployment matched the prediction" if v.verdict == "pass" else (
        f"the live deployment missed the prediction on {', '.join(v.missed()) or 'some metric'}"
    )
    check = Check(name="validation verdict", kind="verdict", status=v.verdict, message=msg)
    return [check], {"measured": v.measured, "predicted": v.predicted}, ""


def _slo_source(a: Artifact, exprs: list[SloExpr]) -> tuple[list[Check], dict[str, Summary | None], str]:
    """Verdict checks, the summaries the expressions read (by side) and why a side may be null."""
    if a.kind in ("profile", "benchmark"):
        raise GateError(
            f"{a.path} is a {a.kind}: SLO expressions apply to a sim result, a measurement, a validation or a plan; "
            "gate a profile or benchmark against a --baseline"
        )
    sided = [e.text for e in exprs if e.side is not None]
    if sided and a.kind != "validation":
        raise GateError(f"SLO {sided[0]!r}: 'measured.' / 'predicted.' apply to validation artifacts only, not a {a.kind}")
    if a.kind == "validation":
        return _validation_source(a)
    if a.kind == "measured":
        valid_measurement(a.measured, a, "current")
        return [], {"measured": a.measured.summary}, ""
    if a.kind == "plan":
        w = winner(a)
        if w is None:
            return [
                Check(name="plan winner", kind="verdict", status="fail",
                      message="no candidate meets the plan's SLOs, so the plan has no winner")
            ], {"measured": None}, "the plan has no winner"  # fmt: skip
        head = Check(name="plan winner", kind="verdict", status="pass", message=f"winner {w.label}")
        return [head], {"measured": w.metrics}, ""
    return [], {"measured": a.sim.summary}, ""


def _slo_checks(a: Artifact, exprs: list[SloExpr]) -> list[Check]:
    checks, sources, why_null = _slo_source(a, exprs)
    for e in exprs:
        side = e.side or "measured"
        value = metric_value(sources.get(side), e.path)
        unit = e.unit or None
        common: dict[str, Any] = dict(name=f"slo {e.text}", kind="slo", metric=e.metric, unit=unit, threshold=e.limit)
        if value is None:
            where = f"the {side} side of the validation" if a.kind == "validation" else f"this {a.kind}"
            checks.append(
                Check(status="missing", current=None, message=why_null or f"{e.metric} is null or absent in {where}", **common)
            )
            continue
        ok = e.holds(value)
        msg = f"{e.metric} = {fmt_value(value, unit)}, {'meets' if ok else 'violates'} {e.op} {fmt_value(e.limit, unit)}"
        checks.append(Check(status="pass" if ok else "fail", current=value, message=msg, **common))
    return checks
