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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from servewise.errors import ArtifactError, GateError
from servewise.profile import Hardware, Profile, load_profile
from servewise.reports._artifacts import Artifact, load_artifact
from servewise.reports._format import seconds
from servewise.reports._gate_stats import (
    MIN_CALIBRATION,
    MIN_SAMPLES,
    holm,
    one_sided_p,
    ratio_ci,
    rng_for,
    rounds_halfwidth,
)
from servewise.reports._slo import SloExpr, metric_value, parse_slo

__all__ = ["Check", "GateResult", "run_gate", "HARDWARE_FIELDS", "RULE"]

CheckKind = Literal["regression", "slo", "verdict", "coverage"]
Status = Literal["pass", "fail", "missing"]

HARDWARE_FIELDS: tuple[str, ...] = (
    "cpu_model",
    "cpu_count",
    "threads_used",
    "cpu_flags",
    "gpu_name",
    "gpu_mem_bytes",
    "gpu_driver",
    "cuda_version",
    "platform",
    "python_version",
    "torch_version",
    "onnxruntime_version",
    "tensorrt_version",
)
"""Fingerprint fields two gated profiles must share. ``platform`` is compared by its
operating-system name only (a CI runner's kernel release changes without notice);
``mem_bytes`` is not compared (the total a VM reports jitters between boots)."""

RULE = "holm p < alpha and CI beyond threshold"
"""The regression rule, as written into every result (see the module docstring)."""

_SIM_METRICS: tuple[tuple[str, str, str], ...] = (
    *((f"latency_s.p{q}", "lower", "relative") for q in (50, 95, 99)),
    *((f"ttft_s.p{q}", "lower", "relative") for q in (50, 95, 99)),
    *((f"tpot_s.p{q}", "lower", "relative") for q in (50, 95, 99)),
    ("throughput_rps", "higher", "relative"),
    ("goodput_rps", "higher", "relative"),
    ("cost_per_hour_usd", "lower", "relative"),
    ("rejection_ratio", "lower", "absolute"),
    ("failure_ratio", "lower", "absolute"),
)
"""Deterministic comparisons of sim results and plan winners: (summary path, better, how)."""


@dataclass(frozen=True)
class Check:
    """One judged item: a grid point, a benchmark case, a metric, an SLO or a verdict.

    ``ratio`` is current / baseline (medians for tested checks); ``ci_low`` and
    ``ci_high`` its bootstrap interval; ``p_value`` the one-sided Mann–Whitney U p-value
    (current worse) and ``p_holm`` that p-value after Holm's adjustment over the gate.
    ``threshold`` is the allowed regression (0.05 = 5%) or, for an SLO, its bound.
    Numbers that do not apply are None.
    """

    name: str
    kind: CheckKind
    status: Status
    message: str
    metric: str | None = None
    unit: str | None = None
    """Unit of ``baseline`` and ``current``: ``s``, ``ratio``, ``rps``, ... or None."""
    better: str | None = None
    """``lower`` or ``higher``: which direction is an improvement."""
    baseline: float | None = None
    current: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    raw_ratio: float | None = None
    """Current / baseline medians before the speed adjustment (None when not adjusted)."""
    speed_ratio: float | None = None
    """The machine's speed between the runs: current / baseline calibration-kernel medians
    (above 1: the machine was slower for the current run). ``ratio`` is ``raw_ratio`` over it."""
    threshold: float | None = None
    n_baseline: int | None = None
    n_current: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class GateResult:
    """The gate's checks and verdict. ``exit_code`` is 0 when every check passed, else 1."""

    checks: list[Check]
    current: str
    baseline: str | None
    artifact_kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    """max_regression, alpha, confidence, seed and the rule the checks were judged by."""

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.status == "pass" for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "missing": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def markdown(self) -> str:
        """A CI job summary: the verdict line, then the checks, failing and missing first."""
        from servewise.reports._gate_out import render_markdown

        return render_markdown(self)

    def junit_xml(self) -> str:
        """One testsuite "servewise gate", one testcase per check; fail and missing are failures."""
        from servewise.reports._gate_out import render_junit

        return render_junit(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "kind": "gate_result",
            "verdict": "pass" if self.passed else "fail",
            "exit_code": self.exit_code,
            "current": self.current,
            "baseline": self.baseline,
            "artifact_kind": self.artifact_kind,
            "settings": dict(self.settings),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


# ----------------------------------------------------------------------------- entry point


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
    if not (isinstance(max_regression, (int, float)) and math.isfinite(max_regression) and max_regression >= 0):
        raise GateError(f"max_regression must be a number >= 0 (0.05 for 5%), got {max_regression!r}")
    if not (0 < alpha < 1):
        raise GateError(f"alpha must be in (0, 1), got {alpha!r}")
    if not (0 < confidence < 1):
        raise GateError(f"confidence must be in (0, 1), got {confidence!r}")
    exprs = [parse_slo(s) for s in slos]
    cur = load_artifact(current)
    if baseline is None and not exprs and cur.kind != "validation":
        raise GateError(
            f"gate needs a baseline to compare {cur.path} with, SLO expressions to check, or both (--baseline, --slo); "
            "only a validation is judged alone (by its verdict)"
        )
    base = load_artifact(baseline) if baseline is not None else None
    ctx = _Settings(float(max_regression), float(alpha), float(confidence), int(seed), bool(calibrate))
    checks: list[Check] = []
    if base is not None:
        if base.kind != cur.kind:
            raise GateError(
                f"baseline and current are different kinds: baseline {base.path} is a {base.kind}, "
                f"current {cur.path} is a {cur.kind}"
            )
        checks += _COMPARE[cur.kind](base, cur, ctx)
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


@dataclass(frozen=True)
class _Settings:
    max_regression: float
    alpha: float
    confidence: float
    seed: int
    calibrate: bool = True


@dataclass(frozen=True)
class _Pending:
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


# ----------------------------------------------------------------------------- tested comparisons


def _speed(t: _Pending, s: _Settings) -> tuple[float, str]:
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


def _tested(pending: list[_Pending], s: _Settings) -> list[Check]:
    """Mann–Whitney U + Holm + bootstrap interval for every pair of samples.

    Where both runs timed the calibration kernel, the current samples are divided by the
    machine's speed ratio before the test, and the interval is of the speed-adjusted
    ratio (its four medians bootstrapped).
    """
    rows: list[dict[str, Any]] = []
    for t in pending:
        nb, nc = len(t.baseline), len(t.current)
        speed, why = _speed(t, s)
        row: dict[str, Any] = {"t": t, "nb": nb, "nc": nc, "speed": speed, "why": why}
        mb = float(np.median(t.baseline)) if nb else math.nan
        mc = float(np.median(t.current)) if nc else math.nan
        row.update(mb=mb, mc=mc)
        if min(nb, nc) < MIN_SAMPLES:
            row["missing"] = f"too few samples to test (baseline {nb}, current {nc}; at least {MIN_SAMPLES} each)"
        elif not (mb > 0 and mc > 0):
            row["missing"] = f"a median is not positive (baseline {mb:.6g}, current {mc:.6g}): no ratio"
        else:
            row["p"] = one_sided_p(t.current / speed, t.baseline, t.better)
        rows.append(row)
    tested = [r for r in rows if "p" in r]
    for r, adj in zip(tested, holm([r["p"] for r in tested]), strict=True):
        r["p_holm"] = adj
    out: list[Check] = []
    for r in rows:
        t = r["t"]
        adjusted = r["speed"] != 1.0
        common: dict[str, Any] = dict(
            name=t.name, kind="regression", metric=t.metric, unit="s" if t.metric.endswith("_s") else None,
            better=t.better, threshold=s.max_regression, n_baseline=r["nb"], n_current=r["nc"],
            baseline=_finite(r["mb"]), current=_finite(r["mc"]), speed_ratio=r["speed"] if adjusted else None,
        )  # fmt: skip
        if "missing" in r:
            out.append(Check(status="missing", message=r["missing"] + t.note, **common))
            continue
        raw = r["mc"] / r["mb"]
        ratio = raw / r["speed"]
        rng = rng_for(s.seed, t.name)
        cal = (t.calibration[1], t.calibration[0]) if adjusted and t.calibration is not None else None
        lo, hi = ratio_ci(t.current, t.baseline, rng, s.confidence, cal)
        between = rounds_halfwidth(t.rounds[0], t.rounds[1], s.confidence) if t.rounds is not None else None
        if between is not None:  # the wider of the two: sampling noise, or movement between runs
            lo, hi = min(lo, ratio * math.exp(-between)), max(hi, ratio * math.exp(between))
        significant = r["p_holm"] < s.alpha
        beyond = lo > 1.0 + s.max_regression if t.better == "lower" else hi < 1.0 - s.max_regression
        failed = significant and beyond
        worse = "slower" if t.metric.endswith("_s") else "worse"
        if failed:
            verdict = f"{worse} beyond {s.max_regression:.0%} (significant)"
        elif significant:
            verdict = f"{worse}, significant, but not surely beyond {s.max_regression:.0%}"
        elif beyond:
            verdict = "beyond the threshold but not significant"
        else:
            verdict = "no significant regression"
        unit = common["unit"]
        change = f"{raw - 1:+.1%}"
        if adjusted:
            change += f"; machine {r['speed'] - 1:+.1%} by the calibration kernel, adjusted {ratio - 1:+.1%}"
        msg = (
            f"median {_fmt(r['mb'], unit)} -> {_fmt(r['mc'], unit)} ({change}; {s.confidence:.0%} CI "
            f"x{lo:.3f}-x{hi:.3f}), p={_fmt_p(r['p'])} (Holm {_fmt_p(r['p_holm'])}): {verdict}{t.note}{r['why']}"
        )
        out.append(
            Check(
                status="fail" if failed else "pass", message=msg, ratio=ratio, ci_low=lo, ci_high=hi,
                p_value=r["p"], p_holm=r["p_holm"], raw_ratio=raw if adjusted else None, **common,
            )  # fmt: skip
        )
    return out


# ----------------------------------------------------------------------------- profiles


def _profile(a: Artifact, role: str) -> Profile:
    p = load_profile(a.path)
    est = [v.label for v in p.variants if v.estimated]
    if p.estimated or est:
        target = p.hardware.catalog_name or "catalog hardware"
        what = "is estimated" if p.estimated else f"has estimated variants ({', '.join(est)})"
        raise GateError(
            f"{role} profile {a.path} {what} (transferred to {target}): an estimate is not a measurement; "
            "gate measured profiles"
        )
    return p


def _os_name(platform: str) -> str:
    return platform.split("-", 1)[0]


def check_same_hardware(baseline: Hardware, current: Hardware) -> None:
    """Refuse two fingerprints that differ in a :data:`HARDWARE_FIELDS` field, naming it."""
    for name in HARDWARE_FIELDS:
        b, c = getattr(baseline, name), getattr(current, name)
        if name == "platform":
            same = _os_name(b) == _os_name(c)
        elif name == "cpu_flags":
            same = set(b) == set(c)
            if not same:
                only_b = ", ".join(sorted(set(b) - set(c))) or "none"
                only_c = ", ".join(sorted(set(c) - set(b))) or "none"
                raise GateError(
                    f"hardware.cpu_flags differs: only in baseline {only_b}; only in current {only_c} "
                    "(profiles from different hardware cannot be compared)"
                )
        else:
            same = b == c
        if not same:
            raise GateError(
                f"hardware.{name} differs: baseline {b}, current {c} "
                "(profiles from different hardware or library versions cannot be compared)"
            )


def _pooled_calibration(points: list[Any]) -> np.ndarray:
    """Every calibration timing of a variant's measured points: the run's machine speed.

    Pooled over the variant's points (each point's own 15 or so are too few to judge a
    few percent); the drift it corrects is of the whole run (see the module docstring).
    """
    return np.asarray([x for p in points for x in p.calibration_samples_s], float)


def _compare_profiles(base: Artifact, cur: Artifact, s: _Settings) -> list[Check]:
    b, c = _profile(base, "baseline"), _profile(cur, "current")
    check_same_hardware(b.hardware, c.hardware)
    several = len(b.models()) > 1
    current = {(v.model, v.name): v for v in c.variants}
    checks: list[Check] = []
    pending: list[_Pending] = []
    for bv in b.variants:
        measured = [p for p in bv.points if p.status == "measured"]
        if not measured:
            continue
        other = current.get((bv.model, bv.name))
        cal = (
            _pooled_calibration(measured),
            _pooled_calibration([p for p in other.points if p.status == "measured"] if other is not None else []),
        )
        label = f"{bv.model} {bv.name}" if several else bv.name
        cv = current.get((bv.model, bv.name))
        cpoints = {(p.phase, p.batch_size, p.seq_len): p for p in cv.points} if cv is not None else {}
        if cv is None or not cpoints:
            why = "absent from" if cv is None else f"{cv.status} in"
            reason = (cv.skip_reason or cv.error) if cv is not None else None
            checks.append(
                Check(
                    name=label, kind="coverage", status="missing", metric="variant",
                    message=f"measured in the baseline ({len(measured)} points), {why} the current profile"
                    + (f": {reason}" if reason else ""),
                )  # fmt: skip
            )
            continue
        if cv.status in ("failed", "incomplete") and bv.status == "measured":
            checks.append(
                Check(
                    name=label, kind="coverage", status="missing", metric="variant",
                    message=f"{cv.status} in the current profile" + (f": {cv.error}" if cv.error else ""),
                )  # fmt: skip
            )
        for bp in measured:
            name = f"{label} {bp.phase} b={bp.batch_size} s={bp.seq_len}"
            cp = cpoints.get((bp.phase, bp.batch_size, bp.seq_len))
            if cp is None or cp.status != "measured":
                checks.append(
                    Check(
                        name=name, kind="regression", status="missing", metric="latency_s", unit="s",
                        better="lower", threshold=s.max_regression, n_baseline=len(bp.samples_s),
                        baseline=float(np.median(bp.samples_s)),
                        message="not in the current profile (another grid?)" if cp is None
                        else f"failed in the current profile: {cp.error}",
                    )  # fmt: skip
                )
                continue
            unstable = [side for side, p in (("baseline", bp), ("current", cp)) if not p.stable]
            note = f"; flagged unstable in {' and '.join(unstable)}" if unstable else ""
            rounds = (np.asarray(bp.round_medians_s, float), np.asarray(cp.round_medians_s, float))
            pending.append(
                _Pending(name, "latency_s", "lower", np.asarray(bp.samples_s, float), np.asarray(cp.samples_s, float),
                         note, calibration=cal, rounds=rounds)
            )  # fmt: skip
    if not pending and not checks:
        checks.append(
            Check(
                name="profile", kind="coverage", status="missing",
                message=f"the baseline {base.path} holds no measured grid point: nothing to compare",
            )  # fmt: skip
        )
    return checks + _tested(pending, s)


# ----------------------------------------------------------------------------- benchmarks


def _cases(a: Artifact) -> dict[str, dict[str, Any]]:
    cases = a.data.get("cases")
    if not isinstance(cases, list):
        raise ArtifactError(f"{a.path}: a benchmark needs a list 'cases'")
    out: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(cases):
        where = f"{a.path}: cases[{i}]"
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise ArtifactError(f"{where}: expected an object with a string 'name'")
        if case.get("better", "lower") not in ("lower", "higher"):
            raise ArtifactError(f"{where}: 'better' must be 'lower' or 'higher', got {case.get('better')!r}")
        samples = case.get("samples")
        if not isinstance(samples, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in samples
        ):
            raise ArtifactError(f"{where}: 'samples' must be a list of finite numbers")
        if case["name"] in out:
            raise ArtifactError(f"{where}: case {case['name']!r} appears twice")
        out[case["name"]] = case
    return out


def _compare_benchmarks(base: Artifact, cur: Artifact, s: _Settings) -> list[Check]:
    bn, cn = base.data.get("name"), cur.data.get("name")
    if bn != cn:
        raise GateError(f"benchmark name differs: baseline {bn}, current {cn} (different benchmarks cannot be compared)")
    bh = (base.data.get("metadata") or {}).get("hardware")
    ch = (cur.data.get("metadata") or {}).get("hardware")
    if isinstance(bh, dict) and isinstance(ch, dict):
        for name in HARDWARE_FIELDS:
            if name in bh and name in ch and bh[name] != ch[name] and name != "platform":
                raise GateError(f"metadata.hardware.{name} differs: baseline {bh[name]}, current {ch[name]}")
    bc, cc = _cases(base), _cases(cur)
    checks: list[Check] = []
    pending: list[_Pending] = []
    for name, case in bc.items():
        label = f"case {name}"
        better = case.get("better", "lower")
        unit = case.get("unit", "s")
        other = cc.get(name)
        if other is None:
            checks.append(
                Check(
                    name=label, kind="regression", status="missing", metric=name, better=better,
                    threshold=s.max_regression, message="in the baseline, absent from the current benchmark",
                )  # fmt: skip
            )
            continue
        if other.get("better", "lower") != better or other.get("unit", "s") != unit:
            raise GateError(
                f"benchmark case {name!r}: baseline is {unit} ({better} is better), current is "
                f"{other.get('unit', 's')} ({other.get('better', 'lower')} is better)"
            )
        metric = "time_s" if unit == "s" else name
        pending.append(_Pending(label, metric, better, np.asarray(case["samples"], float), np.asarray(other["samples"], float)))
    if not pending and not checks:
        checks.append(
            Check(name="benchmark", kind="coverage", status="missing", message=f"the baseline {base.path} has no case")
        )
    return checks + _tested(pending, s)


# ----------------------------------------------------------------------------- load-test measurements


def _valid_measurement(a: Artifact, role: str) -> None:
    gen = a.data.get("generator") or {}
    if gen.get("valid") is False:
        reasons = "; ".join(gen.get("invalid_reasons") or []) or "the generator fell behind"
        raise GateError(f"{role} measurement {a.path} is invalid ({reasons}): it cannot be judged")


def _same_metadata(base: Artifact, cur: Artifact, fields: tuple[str, ...], what: str) -> None:
    bm, cm = base.data.get("metadata") or {}, cur.data.get("metadata") or {}
    for f in fields:
        if f in bm and f in cm and bm[f] != cm[f]:
            raise GateError(f"metadata.{f} differs: baseline {bm[f]}, current {cm[f]} ({what})")


def _served(a: Artifact, column: str) -> np.ndarray | None:
    table = a.requests()
    if table is None or column not in table.columns or "status" not in table.columns:
        return None
    rows = table[table["status"].isin(["completed", "cache_hit"])]
    v = rows[column].to_numpy(dtype=float, na_value=np.nan)
    return v[np.isfinite(v)]


def _compare_measured(base: Artifact, cur: Artifact, s: _Settings) -> list[Check]:
    _valid_measurement(base, "baseline")
    _valid_measurement(cur, "current")
    _same_metadata(base, cur, ("replayed_sha256", "time_scale", "api", "stream"), "load tests of another trace or setting")
    checks: list[Check] = []
    pending: list[_Pending] = []
    columns = ["latency_s"]
    if (base.data.get("metadata") or {}).get("stream"):
        columns.append("ttft_s")
    for col in columns:
        b, c = _served(base, col), _served(cur, col)
        name = f"{col} median"
        if b is None or c is None:
            lacking = base if b is None else cur
            checks.append(
                Check(
                    name=name, kind="regression", status="missing", metric=col, unit="s", better="lower",
                    threshold=s.max_regression,
                    message=f"no per-request {col} beside {lacking.path} (requests.csv): the raw samples are needed",
                )  # fmt: skip
            )
            continue
        pending.append(_Pending(name, col, "lower", b, c))
    scalars = [m for m in _SIM_METRICS if m[0] in ("throughput_rps", "rejection_ratio", "failure_ratio")]
    return checks + _tested(pending, s) + _deterministic(base.data.get("summary"), cur.data.get("summary"), scalars, s)


# ----------------------------------------------------------------------------- sim results and plans


def _deterministic(
    base: dict[str, Any] | None, cur: dict[str, Any] | None, metrics: Sequence[tuple[str, str, str]], s: _Settings
) -> list[Check]:
    out: list[Check] = []
    for path, better, how in metrics:
        keys = tuple(path.split("."))
        b = metric_value(base, keys)
        if b is None:
            continue  # not in the baseline (no LLM engine, no SLO target): nothing to hold the current to
        c = metric_value(cur, keys)
        unit = "s" if keys[0].endswith("_s") else ("ratio" if keys[0].endswith("_ratio") else None)
        common: dict[str, Any] = dict(
            name=path, kind="regression", metric=path, unit=unit, better=better, baseline=b, current=c,
            threshold=s.max_regression,
        )  # fmt: skip
        if c is None:
            out.append(Check(status="missing", message=f"{path} is {_fmt(b, unit)} in the baseline, null in the current", **common))
            continue
        ratio = c / b if b != 0 else None
        if how == "absolute":
            worse_by = (c - b) if better == "lower" else (b - c)
            failed = worse_by > s.max_regression
            msg = f"{_fmt(b, unit)} -> {_fmt(c, unit)} ({c - b:+.4g}; allowed +{s.max_regression:.4g})"
        else:
            if b == 0:
                failed = c > 0 if better == "lower" else False
                msg = f"{_fmt(b, unit)} -> {_fmt(c, unit)} (baseline 0)"
            else:
                assert ratio is not None
                failed = ratio > 1 + s.max_regression if better == "lower" else ratio < 1 - s.max_regression
                msg = f"{_fmt(b, unit)} -> {_fmt(c, unit)} ({ratio - 1:+.1%}; allowed {'+' if better == 'lower' else '-'}{s.max_regression:.0%})"
        out.append(Check(status="fail" if failed else "pass", message=msg, ratio=ratio, **common))
    return out


def _compare_sims(base: Artifact, cur: Artifact, s: _Settings) -> list[Check]:
    _same_metadata(base, cur, ("seed", "trace_sha256"), "simulations of another trace or seed are not comparable")
    bs, cs = base.data.get("summary") or {}, cur.data.get("summary") or {}
    if bs.get("warmup_s") != cs.get("warmup_s"):
        raise GateError(f"summary.warmup_s differs: baseline {bs.get('warmup_s')}, current {cs.get('warmup_s')}")
    return _deterministic(bs, cs, _SIM_METRICS, s)


def _winner(a: Artifact) -> dict[str, Any] | None:
    wid = a.data.get("winner")
    for c in a.data.get("candidates") or []:
        if isinstance(c, dict) and c.get("id") == wid and wid is not None:
            return c
    return None


def _compare_plans(base: Artifact, cur: Artifact, s: _Settings) -> list[Check]:
    _same_metadata(base, cur, ("trace_sha256",), "plans for another trace are not comparable")
    bw = _winner(base)
    if bw is None:
        raise GateError(f"baseline plan {base.path} has no winner (no candidate met its SLOs): nothing to compare with")
    cw = _winner(cur)
    label = "plan winner"
    if cw is None:
        return [
            Check(name=label, kind="verdict", status="fail",
                  message=f"the baseline chose {bw.get('label')}; the current plan has no candidate that meets the SLOs")
        ]  # fmt: skip
    head = Check(name=label, kind="verdict", status="pass", message=f"baseline {bw.get('label')}, current {cw.get('label')}")
    return [head, *_deterministic(bw.get("metrics"), cw.get("metrics"), _SIM_METRICS, s)]


def _refuse(what: str) -> Any:
    def refuse(base: Artifact, cur: Artifact, s: _Settings) -> list[Check]:
        raise GateError(what)

    return refuse


_COMPARE = {
    "profile": _compare_profiles,
    "benchmark": _compare_benchmarks,
    "measured": _compare_measured,
    "sim_result": _compare_sims,
    "plan": _compare_plans,
    "validation": _refuse(
        "two validations are not compared with --baseline: check one with --slo (and its verdict), "
        "or gate their measured/ folders against each other"
    ),
}


# ----------------------------------------------------------------------------- SLO expressions


def _slo_source(a: Artifact, exprs: list[SloExpr]) -> tuple[list[Check], dict[str, dict[str, Any] | None], str]:
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
        verdict = a.data.get("verdict")
        if verdict == "invalid":
            reasons = "; ".join(a.data.get("invalid_reasons") or []) or "no reason recorded"
            raise GateError(f"validation {a.path} is invalid ({reasons}): its measurement cannot be judged")
        if verdict not in ("pass", "fail"):
            raise ArtifactError(f"{a.path}: verdict must be pass, fail or invalid, got {verdict!r}")
        bad = [k for k, m in (a.data.get("metrics") or {}).items() if isinstance(m, dict) and not m.get("pass")]
        msg = "the live deployment matched the prediction" if verdict == "pass" else (
            f"the live deployment missed the prediction on {', '.join(bad) or 'some metric'}"
        )
        check = Check(name="validation verdict", kind="verdict", status=verdict, message=msg)
        return [check], {"measured": a.data.get("measured"), "predicted": a.data.get("predicted")}, ""
    if a.kind == "measured":
        _valid_measurement(a, "current")
        return [], {"measured": a.data.get("summary")}, ""
    if a.kind == "plan":
        w = _winner(a)
        if w is None:
            return [
                Check(name="plan winner", kind="verdict", status="fail",
                      message="no candidate meets the plan's SLOs, so the plan has no winner")
            ], {"measured": None}, "the plan has no winner"  # fmt: skip
        head = Check(name="plan winner", kind="verdict", status="pass", message=f"winner {w.get('label')}")
        return [head], {"measured": w.get("metrics")}, ""
    return [], {"measured": a.data.get("summary")}, ""


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
        msg = f"{e.metric} = {_fmt(value, unit)}, {'meets' if ok else 'violates'} {e.op} {_fmt(e.limit, unit)}"
        checks.append(Check(status="pass" if ok else "fail", current=value, message=msg, **common))
    return checks


# ----------------------------------------------------------------------------- formatting


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _fmt(v: float | None, unit: str | None) -> str:
    """A number for a message: seconds in s / ms / µs, ratios as percentages."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if unit == "s":
        return seconds(v)
    if unit == "ratio":
        return f"{v:.4g} ({v:.2%})"
    return f"{v:.6g}" + (f" {unit}" if unit else "")


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
