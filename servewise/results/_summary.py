"""What simulated and measured runs share: percentiles, the summary, and the SLO checks.

A :class:`Summary` has the same keys in a ``result.json`` (the simulator's) and a
``measured.json`` (a load test's); what a client cannot see (utilisation, cost, ...) is
null in a measurement. :func:`check_slo` is the one place a deployment's SLO is judged on
a summary, for the simulator, the advisor and ``servewise validate`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from pydantic import Field

from servewise.results._base import Bool, Number, OptCount, OptNonNeg, OptNumber, OptRatio, Record

if TYPE_CHECKING:
    import pandas as pd

    from servewise.config import SLO

__all__ = [
    "STATS",
    "Percentiles",
    "SignedStats",
    "KvUtilisation",
    "Summary",
    "DISTRIBUTIONS",
    "SloCheck",
    "SloResult",
    "SLO_FIELDS",
    "check_slo",
    "slo_margin",
]

STATS: tuple[str, ...] = ("mean", "p50", "p90", "p95", "p99", "max")
"""The statistics a distribution holds, in order."""


class Percentiles(Record):
    """Exact statistics of a distribution of seconds; all null when it has no sample."""

    mean: OptNonNeg
    p50: OptNonNeg
    p90: OptNonNeg
    p95: OptNonNeg
    p99: OptNonNeg
    max: OptNonNeg

    @classmethod
    def empty(cls) -> Percentiles:
        return cls(mean=None, p50=None, p90=None, p95=None, p99=None, max=None)

    @property
    def known(self) -> bool:
        """Whether any statistic is there (the distribution had samples)."""
        return any(getattr(self, s) is not None for s in STATS)


class SignedStats(Record):
    """The same statistics of a quantity that may be negative (a generator's send lag)."""

    mean: OptNumber
    p50: OptNumber
    p90: OptNumber
    p95: OptNumber
    p99: OptNumber
    max: OptNumber


class KvUtilisation(Record):
    """Share of an LLM engine's KV-cache blocks in use: time average and peak."""

    mean: OptNonNeg
    max: OptNonNeg


class Summary(Record):
    """A run's outcome in numbers. Seconds, ratios in [0, 1], rates per second, dollars."""

    requests: OptCount
    completed: OptCount
    """Served requests, cache hits included."""
    cache_hits: OptCount
    rejected: OptCount
    failed: OptCount
    rejection_ratio: OptRatio
    failure_ratio: OptRatio
    latency_s: Percentiles
    """From arrival (a load test: from the scheduled send time) to the end, served requests."""
    queue_s: Percentiles
    cold_start_s: Percentiles
    cold_start_requests: OptCount
    throughput_rps: OptNonNeg
    cache_hit_ratio: OptRatio
    cold_starts: OptCount
    restarts: OptCount
    retries: OptCount
    mean_replicas: OptNonNeg
    max_replicas: OptCount
    utilisation: OptNonNeg
    availability: OptRatio
    duration_s: OptNonNeg
    cost_usd: OptNonNeg
    cost_per_million_requests_usd: OptNonNeg
    cost_per_hour_usd: OptNonNeg
    accuracy_drift: OptNonNeg
    warmup_s: OptNonNeg
    ttft_s: Percentiles
    tpot_s: Percentiles
    itl_s: Percentiles
    output_tokens_per_s: OptNonNeg
    goodput_rps: OptNonNeg
    prefix_hit_ratio: OptNonNeg
    prefill_tokens_saved: OptCount
    preemptions: OptCount
    kv_utilisation: KvUtilisation | None

    @classmethod
    def complete(cls, doc: Any) -> Any:
        """A partial summary (a hand-written ``expected.json``) with every absent key null.

        Anything but a mapping is returned as it is, for validation to refuse.
        """
        if isinstance(doc, Summary) or not isinstance(doc, Mapping):
            return doc
        out: dict[str, Any] = {}
        for key in cls._keys:
            v = doc.get(key)
            if key in DISTRIBUTIONS:
                v = Percentiles.empty() if v is None else ({s: v.get(s) for s in STATS} if isinstance(v, Mapping) else v)
            out[key] = v
        out.update({k: v for k, v in doc.items() if k not in out})  # unknown keys stay, to be refused by name
        return out

    def distribution(self, key: str) -> Percentiles:
        """The :class:`Percentiles` under ``key`` (one of :data:`DISTRIBUTIONS`)."""
        d = getattr(self, key)
        if not isinstance(d, Percentiles):
            raise KeyError(f"{key!r} is not a distribution of a summary; those are {', '.join(DISTRIBUTIONS)}")
        return d

    def metric(self, path: str | tuple[str, ...]) -> float | None:
        """The number at ``path`` (``"latency_s.p95"``, ``("rejection_ratio",)``), or None where null."""
        keys = tuple(path.split(".")) if isinstance(path, str) else path
        v: Any = self
        for k in keys:
            name = v._keys.get(k) if isinstance(v, Record) else None
            if name is None:
                return None
            v = getattr(v, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        return float(v)

    def to_frame(self) -> pd.DataFrame:
        """One row per number, indexed by its path (``latency_s.p95``); nulls as NaN."""
        import pandas as pd

        rows: dict[str, float | None] = {}
        for key, name in self._keys.items():
            v = getattr(self, name)
            if isinstance(v, Record):
                rows.update({f"{key}.{k}": getattr(v, n) for k, n in v._keys.items()})
            elif v is not None or key != "kv_utilisation":
                rows[key] = v
        frame = pd.DataFrame({"value": pd.Series(rows, dtype=float)})
        frame.index.name = "metric"
        return frame


DISTRIBUTIONS: tuple[str, ...] = tuple(
    name for name, f in Summary.model_fields.items() if f.annotation in (Percentiles, "Percentiles")
)
"""Summary keys that hold :class:`Percentiles` (in seconds)."""


# ----------------------------------------------------------------------------- SLO checks


class SloCheck(Record):
    """One SLO on one run: its limit, the value, and whether the value is within the limit."""

    limit: Number
    value: OptNumber
    """None when the run lacks the metric: a failure, never a pass."""
    passed: Bool = Field(alias="pass")


class SloResult(Record):
    """Every SLO the deployment sets, checked; ``pass`` when all pass."""

    passed: Bool = Field(alias="pass")
    checks: dict[str, SloCheck]

    def failed(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c.passed]


SLO_FIELDS: dict[str, tuple[str, str | None, str]] = {
    "p50_latency_s": ("latency_s", "p50", "max"),
    "p90_latency_s": ("latency_s", "p90", "max"),
    "p95_latency_s": ("latency_s", "p95", "max"),
    "p99_latency_s": ("latency_s", "p99", "max"),
    "max_rejection_ratio": ("rejection_ratio", None, "max"),
    "max_failure_ratio": ("failure_ratio", None, "max"),
    "min_availability": ("availability", None, "min"),
    **{f"p{q}_ttft_s": ("ttft_s", f"p{q}", "max") for q in (50, 90, 95, 99)},
    **{f"p{q}_tpot_s": ("tpot_s", f"p{q}", "max") for q in (50, 90, 95, 99)},
    "min_goodput_rps": ("goodput_rps", None, "min"),
    "max_accuracy_drift": ("accuracy_drift", None, "max"),
}
"""Each SLO of :class:`servewise.config.SLO` a summary is checked on: (summary key,
statistic or None, ``max`` for a limit / ``min`` for a floor)."""


def check_slo(slo: SLO, summary: Summary, *, skip_unknown: bool = False) -> SloResult:
    """Each SLO ``slo`` sets: its limit, the summary's value, pass/fail.

    A value the summary lacks (null) fails the SLO, unless ``skip_unknown``: then the SLO
    is left out (a load test cannot see availability or accuracy drift, so it does not
    judge them). ``pass`` is whether every check kept passes.
    """
    checks: dict[str, SloCheck] = {}
    for name, (key, sub, direction) in SLO_FIELDS.items():
        limit = getattr(slo, name)
        if limit is None:
            continue
        value = summary.metric((key,) if sub is None else (key, sub))
        if value is None and skip_unknown:
            continue
        ok = value is not None and (value <= limit if direction == "max" else value >= limit)
        checks[name] = SloCheck.model_validate({"limit": limit, "value": value, "pass": bool(ok)})
    return SloResult.model_validate({"pass": all(c.passed for c in checks.values()), "checks": checks})


@overload
def slo_margin(
    name: str, value: float | None, limit: float | None, *, ranking: Literal[False] = False
) -> float | None: ...
@overload
def slo_margin(name: str, value: float | None, limit: float | None, *, ranking: Literal[True]) -> float: ...


def slo_margin(name: str, value: float | None, limit: float | None, *, ranking: bool = False) -> float | None:
    """How far inside its limit a value is, as a share of the limit (negative: missed by).

    None when either is missing or the limit is 0 (no scale to measure it by). With
    ``ranking`` (the advisor orders candidates by it) the answer is always a number: −inf
    for a missing value (unknown is never a pass), +inf for a zero limit met exactly by 0
    (nothing binds), and a zero limit otherwise measures the excess itself.
    """
    if value is None or limit is None:
        return -math.inf if ranking else None
    if limit == 0:
        if not ranking:
            return None
        if value == 0:
            return math.inf
    scale = abs(limit) if limit != 0 else 1.0
    direction = SLO_FIELDS[name][2] if name in SLO_FIELDS else ("min" if name.startswith("min_") else "max")
    return (limit - value) / scale if direction == "max" else (value - limit) / scale
