"""The gate's comparisons of a baseline and a current artifact of the same kind (see :mod:`reports._gate`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from servewise.errors import GateError
from servewise.profile import Hardware, Point, Profile, Variant
from servewise.reports._artifacts import Artifact
from servewise.reports._gate_result import Check
from servewise.reports._gate_tested import Pending, Settings, fmt_value, tested
from servewise.results import Candidate, Measured, Summary, served

__all__ = ["HARDWARE_FIELDS", "SIM_METRICS", "COMPARE", "check_same_hardware", "valid_measurement", "winner"]

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

SIM_METRICS: tuple[tuple[str, str, str], ...] = (
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


# ----------------------------------------------------------------------------- profiles


def _measured_profile(a: Artifact, role: str) -> Profile:
    p = a.profile
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


def _pooled_calibration(points: list[Point]) -> np.ndarray:
    """Every calibration timing of a variant's measured points: the run's machine speed.

    Pooled over the variant's points (each point's own 15 or so are too few to judge a
    few percent); the drift it corrects is of the whole run (see :mod:`reports._gate`).
    """
    return np.asarray([x for p in points for x in p.calibration_samples_s], float)


def _variant_checks(
    label: str, bv: Variant, cv: Variant | None, s: Settings
) -> tuple[list[Check], list[Pending]]:
    """One baseline variant's measured points against the current profile's."""
    measured = [p for p in bv.points if p.status == "measured"]
    cpoints = {(p.phase, p.batch_size, p.seq_len): p for p in cv.points} if cv is not None else {}
    if cv is None or not cpoints:
        why = "absent from" if cv is None else f"{cv.status} in"
        reason = (cv.skip_reason or cv.error) if cv is not None else None
        return [
            Check(
                name=label, kind="coverage", status="missing", metric="variant",
                message=f"measured in the baseline ({len(measured)} points), {why} the current profile"
                + (f": {reason}" if reason else ""),
            )  # fmt: skip
        ], []
    checks: list[Check] = []
    if cv.status in ("failed", "incomplete") and bv.status == "measured":
        checks.append(
            Check(name=label, kind="coverage", status="missing", metric="variant",
                  message=f"{cv.status} in the current profile" + (f": {cv.error}" if cv.error else ""))  # fmt: skip
        )
    cal = (_pooled_calibration(measured), _pooled_calibration([p for p in cv.points if p.status == "measured"]))
    pending: list[Pending] = []
    for bp in measured:
        name = f"{label} {bp.phase} b={bp.batch_size} s={bp.seq_len}"
        cp = cpoints.get((bp.phase, bp.batch_size, bp.seq_len))
        if cp is None or cp.status != "measured":
            checks.append(
                Check(
                    name=name, kind="regression", status="missing", metric="latency_s", unit="s", better="lower",
                    threshold=s.max_regression, n_baseline=len(bp.samples_s), baseline=float(np.median(bp.samples_s)),
                    message="not in the current profile (another grid?)" if cp is None
                    else f"failed in the current profile: {cp.error}",
                )  # fmt: skip
            )
            continue
        unstable = [side for side, p in (("baseline", bp), ("current", cp)) if not p.stable]
        note = f"; flagged unstable in {' and '.join(unstable)}" if unstable else ""
        rounds = (np.asarray(bp.round_medians_s, float), np.asarray(cp.round_medians_s, float))
        pending.append(
            Pending(name, "latency_s", "lower", np.asarray(bp.samples_s, float), np.asarray(cp.samples_s, float),
                    note, calibration=cal, rounds=rounds)
        )  # fmt: skip
    return checks, pending


def _compare_profiles(base: Artifact, cur: Artifact, s: Settings) -> list[Check]:
    b, c = _measured_profile(base, "baseline"), _measured_profile(cur, "current")
    check_same_hardware(b.hardware, c.hardware)
    several = len(b.models()) > 1
    current = {(v.model, v.name): v for v in c.variants}
    checks: list[Check] = []
    pending: list[Pending] = []
    for bv in b.variants:
        if not any(p.status == "measured" for p in bv.points):
            continue
        label = f"{bv.model} {bv.name}" if several else bv.name
        more, tests = _variant_checks(label, bv, current.get((bv.model, bv.name)), s)
        checks += more
        pending += tests
    if not pending and not checks:
        checks.append(
            Check(name="profile", kind="coverage", status="missing",
                  message=f"the baseline {base.path} holds no measured grid point: nothing to compare")  # fmt: skip
        )
    return checks + tested(pending, s)


# ----------------------------------------------------------------------------- benchmarks


def _compare_benchmarks(base: Artifact, cur: Artifact, s: Settings) -> list[Check]:
    bb, cb = base.benchmark, cur.benchmark
    if bb.name != cb.name:
        raise GateError(f"benchmark name differs: baseline {bb.name}, current {cb.name} "
                        "(different benchmarks cannot be compared)")  # fmt: skip
    bh, ch = bb.metadata.get("hardware"), cb.metadata.get("hardware")
    if isinstance(bh, dict) and isinstance(ch, dict):
        for name in HARDWARE_FIELDS:
            if name in bh and name in ch and bh[name] != ch[name] and name != "platform":
                raise GateError(f"metadata.hardware.{name} differs: baseline {bh[name]}, current {ch[name]}")
    current = {c.name: c for c in cb.cases}
    checks: list[Check] = []
    pending: list[Pending] = []
    for case in bb.cases:
        label = f"case {case.name}"
        other = current.get(case.name)
        if other is None:
            checks.append(
                Check(name=label, kind="regression", status="missing", metric=case.name, better=case.better,
                      threshold=s.max_regression, message="in the baseline, absent from the current benchmark")  # fmt: skip
            )
            continue
        if other.better != case.better or other.unit != case.unit:
            raise GateError(
                f"benchmark case {case.name!r}: baseline is {case.unit} ({case.better} is better), current is "
                f"{other.unit} ({other.better} is better)"
            )
        metric = "time_s" if case.unit == "s" else case.name
        pending.append(Pending(label, metric, case.better, np.asarray(case.samples, float),
                               np.asarray(other.samples, float)))  # fmt: skip
    if not pending and not checks:
        checks.append(Check(name="benchmark", kind="coverage", status="missing",
                            message=f"the baseline {base.path} has no case"))  # fmt: skip
    return checks + tested(pending, s)


# ----------------------------------------------------------------------------- load-test measurements


def valid_measurement(m: Measured, a: Artifact, role: str) -> None:
    """Refuse a measurement whose load generator fell behind: it cannot be judged."""
    if not m.generator.valid:
        reasons = "; ".join(m.generator.invalid_reasons) or "the generator fell behind"
        raise GateError(f"{role} measurement {a.path} is invalid ({reasons}): it cannot be judged")


def _same_metadata(base: Any, cur: Any, fields: tuple[str, ...], what: str) -> None:
    for f in fields:
        if f in base and f in cur and base[f] != cur[f]:
            raise GateError(f"metadata.{f} differs: baseline {base[f]}, current {cur[f]} ({what})")


def _compare_measured(base: Artifact, cur: Artifact, s: Settings) -> list[Check]:
    bm, cm = base.measured, cur.measured
    valid_measurement(bm, base, "baseline")
    valid_measurement(cm, cur, "current")
    _same_metadata(bm.metadata, cm.metadata, ("replayed_sha256", "time_scale", "api", "stream"),
                   "load tests of another trace or setting")  # fmt: skip
    checks: list[Check] = []
    pending: list[Pending] = []
    columns = ["latency_s", *(["ttft_s"] if bm.metadata.stream else [])]
    for col in columns:
        tb, tc = base.requests(), cur.requests()
        name = f"{col} median"
        if tb is None or tc is None or col not in tb.columns or col not in tc.columns:
            lacking = base if tb is None or col not in tb.columns else cur
            checks.append(
                Check(name=name, kind="regression", status="missing", metric=col, unit="s", better="lower",
                      threshold=s.max_regression,
                      message=f"no per-request {col} beside {lacking.path} (requests.csv or requests.parquet): the raw samples are needed")  # fmt: skip
            )
            continue
        pending.append(Pending(name, col, "lower", served(tb, col), served(tc, col)))
    scalars = [m for m in SIM_METRICS if m[0] in ("throughput_rps", "rejection_ratio", "failure_ratio")]
    return checks + tested(pending, s) + _deterministic(bm.summary, cm.summary, scalars, s)


# ----------------------------------------------------------------------------- sim results and plans


def _deterministic(
    base: Summary | None, cur: Summary | None, metrics: Sequence[tuple[str, str, str]], s: Settings
) -> list[Check]:
    out: list[Check] = []
    for path, better, how in metrics:
        b = base.metric(path) if base is not None else None
        if b is None:
            continue  # not in the baseline (no LLM engine, no SLO target): nothing to hold the current to
        c = cur.metric(path) if cur is not None else None
        head = path.split(".")[0]
        unit = "s" if head.endswith("_s") else ("ratio" if head.endswith("_ratio") else None)
        common: dict[str, Any] = dict(
            name=path, kind="regression", metric=path, unit=unit, better=better, baseline=b, current=c,
            threshold=s.max_regression,
        )  # fmt: skip
        if c is None:
            out.append(Check(status="missing", message=f"{path} is {fmt_value(b, unit)} in the baseline, null in the current", **common))
            continue
        ratio = c / b if b != 0 else None
        if how == "absolute":
            worse_by = (c - b) if better == "lower" else (b - c)
            failed = worse_by > s.max_regression
            msg = f"{fmt_value(b, unit)} -> {fmt_value(c, unit)} ({c - b:+.4g}; allowed +{s.max_regression:.4g})"
        elif ratio is None:
            failed = c > 0 if better == "lower" else False
            msg = f"{fmt_value(b, unit)} -> {fmt_value(c, unit)} (baseline 0)"
        else:
            failed = ratio > 1 + s.max_regression if better == "lower" else ratio < 1 - s.max_regression
            msg = (f"{fmt_value(b, unit)} -> {fmt_value(c, unit)} ({ratio - 1:+.1%}; allowed "
                   f"{'+' if better == 'lower' else '-'}{s.max_regression:.0%})")  # fmt: skip
        out.append(Check(status="fail" if failed else "pass", message=msg, ratio=ratio, **common))
    return out


def _compare_sims(base: Artifact, cur: Artifact, s: Settings) -> list[Check]:
    b, c = base.sim, cur.sim
    _same_metadata(b.metadata, c.metadata, ("seed", "trace_sha256"),
                   "simulations of another trace or seed are not comparable")  # fmt: skip
    if b.summary.warmup_s != c.summary.warmup_s:
        raise GateError(f"summary.warmup_s differs: baseline {b.summary.warmup_s}, current {c.summary.warmup_s}")
    return _deterministic(b.summary, c.summary, SIM_METRICS, s)


def winner(a: Artifact) -> Candidate | None:
    """The plan's winner; None when it has none (or names a candidate it does not hold)."""
    plan = a.plan
    return plan.by_id.get(plan.winner_id) if plan.winner_id is not None else None


def _compare_plans(base: Artifact, cur: Artifact, s: Settings) -> list[Check]:
    _same_metadata(base.plan.metadata, cur.plan.metadata, ("trace_sha256",), "plans for another trace are not comparable")
    bw = winner(base)
    if bw is None:
        raise GateError(f"baseline plan {base.path} has no winner (no candidate met its SLOs): nothing to compare with")
    cw = winner(cur)
    label = "plan winner"
    if cw is None:
        return [
            Check(name=label, kind="verdict", status="fail",
                  message=f"the baseline chose {bw.label}; the current plan has no candidate that meets the SLOs")
        ]  # fmt: skip
    head = Check(name=label, kind="verdict", status="pass", message=f"baseline {bw.label}, current {cw.label}")
    return [head, *_deterministic(bw.metrics, cw.metrics, SIM_METRICS, s)]


def _refuse(what: str) -> Callable[[Artifact, Artifact, Settings], list[Check]]:
    def refuse(base: Artifact, cur: Artifact, s: Settings) -> list[Check]:
        raise GateError(what)

    return refuse


COMPARE: dict[str, Callable[[Artifact, Artifact, Settings], list[Check]]] = {
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
"""How each kind is compared with its baseline."""
