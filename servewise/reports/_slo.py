"""SLO expressions for ``servewise gate --slo``: ``p95_latency_s<=0.5``, ``rejection_ratio < 1%``.

Grammar (whitespace allowed around the operator)::

    EXPR   := [SIDE "."] METRIC OP NUMBER [UNIT]
    SIDE   := "measured" | "predicted"          (validation artifacts only; default measured)
    METRIC := "p" NN "_" DIST                   p50, p90, p95 or p99 of a distribution
            | DIST "." STAT                     STAT: mean, p50, p90, p95, p99, max
            | "kv_utilisation." ("mean" | "max")
            | SCALAR                            a plain summary key (rejection_ratio, ...)
    OP     := "<=" | "<" | ">=" | ">" | "=="
    UNIT   := "ms" | "s"                        seconds metrics only (ms: × 0.001)
            | "%"                               ratio metrics only (× 0.01)

``DIST`` is a summary key holding percentiles (:data:`DISTRIBUTIONS`). A bare number is
in the metric's own unit: seconds, a ratio in [0, 1], requests per second, dollars. An
unknown metric, a unit that does not fit the metric or a malformed expression is a
:class:`~servewise.errors.GateError` that names the expression and lists what is valid.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from servewise.errors import GateError
from servewise.results import DISTRIBUTIONS, STATS, Summary

__all__ = ["DISTRIBUTIONS", "SCALARS", "STATS", "OPS", "SloExpr", "parse_slo", "metric_value"]

SCALARS: dict[str, str] = {
    "requests": "",
    "completed": "",
    "cache_hits": "",
    "rejected": "",
    "failed": "",
    "rejection_ratio": "ratio",
    "failure_ratio": "ratio",
    "cold_start_requests": "",
    "throughput_rps": "rps",
    "cache_hit_ratio": "ratio",
    "cold_starts": "",
    "restarts": "",
    "retries": "",
    "mean_replicas": "",
    "max_replicas": "",
    "utilisation": "ratio",
    "availability": "ratio",
    "duration_s": "s",
    "cost_usd": "usd",
    "cost_per_million_requests_usd": "usd",
    "cost_per_hour_usd": "usd/h",
    "accuracy_drift": "",
    "output_tokens_per_s": "tokens/s",
    "goodput_rps": "rps",
    "prefix_hit_ratio": "ratio",
    "prefill_tokens_saved": "",
    "preemptions": "",
}
"""Plain summary keys of a ``result.json`` / ``measured.json`` and their unit."""

_NESTED_RATIOS = {"kv_utilisation": ("mean", "max")}

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
"""The comparison operators, longest first (the parser tries them in this order)."""

_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<value>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|%)?\s*$"
)
_PCT = re.compile(r"^p(50|90|95|99)_(.+)$")


@dataclass(frozen=True)
class SloExpr:
    """One parsed SLO expression: ``path`` is where the value lies in a summary."""

    text: str
    """The expression as written, stripped of surrounding whitespace."""
    metric: str
    """The metric as written, without the ``measured.`` / ``predicted.`` side."""
    path: tuple[str, ...]
    """Keys into the summary: ``("latency_s", "p95")`` or ``("rejection_ratio",)``."""
    op: str
    limit: float
    """The bound in the metric's own unit (seconds, a ratio, ...), units converted."""
    unit: str
    """The metric's unit: ``s``, ``ratio``, ``rps``, ``usd``, ... or empty."""
    side: str | None = None
    """``predicted`` or ``measured`` when the expression names one (validation artifacts)."""

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.limit)


def _valid_names() -> str:
    return (
        f"pNN_DIST or DIST.STAT with NN in 50, 90, 95, 99, DIST in {', '.join(DISTRIBUTIONS)} and STAT in "
        f"{', '.join(STATS)}; kv_utilisation.mean, kv_utilisation.max; or one of {', '.join(SCALARS)}"
    )


def _resolve(metric: str, text: str) -> tuple[tuple[str, ...], str]:
    if metric in SCALARS:
        return (metric,), SCALARS[metric]
    m = _PCT.match(metric)
    if m and m.group(2) in DISTRIBUTIONS:
        return (m.group(2), f"p{m.group(1)}"), "s"
    head, _, stat = metric.partition(".")
    if head in DISTRIBUTIONS and stat in STATS:
        return (head, stat), "s"
    if head in _NESTED_RATIOS and stat in _NESTED_RATIOS[head]:
        return (head, stat), "ratio"
    raise GateError(f"SLO {text!r}: unknown metric {metric!r}; valid metrics: {_valid_names()}")


def parse_slo(expr: str) -> SloExpr:
    """Parse ``METRIC OP VALUE[UNIT]``; a :class:`GateError` naming the expression otherwise."""
    text = str(expr).strip()
    m = _EXPR.match(text)
    if m is None:
        raise GateError(
            f"SLO {text!r}: expected METRIC OP VALUE, e.g. 'p95_latency_s<=0.5' or 'rejection_ratio<1%' "
            f"(OP one of {', '.join(OPS)}; VALUE a number, optionally with ms, s or %)"
        )
    metric = m.group("metric")
    side: str | None = None
    first, _, rest = metric.partition(".")
    if first in ("measured", "predicted") and rest:
        side, metric = first, rest
    path, unit = _resolve(metric, text)
    limit = float(m.group("value"))
    suffix = m.group("unit")
    if suffix in ("ms", "s"):
        if unit != "s":
            raise GateError(f"SLO {text!r}: {metric} is not in seconds, so '{suffix}' does not apply")
        limit = limit * 1e-3 if suffix == "ms" else limit
    elif suffix == "%":
        if unit != "ratio":
            raise GateError(f"SLO {text!r}: {metric} is not a ratio, so '%' does not apply")
        limit /= 100.0
    if not math.isfinite(limit):
        raise GateError(f"SLO {text!r}: the bound must be a finite number")
    return SloExpr(text=text, metric=metric, path=path, op=m.group("op"), limit=limit, unit=unit, side=side)


def metric_value(summary: Summary | None, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in ``summary``, or None where it is absent or null."""
    return summary.metric(path) if summary is not None else None
