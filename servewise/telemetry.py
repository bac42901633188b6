"""Runtime metric names: the one list the live server exports and the emitted dashboards read.

``servewise serve`` (the ``serving`` stage) exports these Prometheus metrics; the
advisor's ``deploy/`` files (``prometheus-alerts.yaml``, ``grafana-dashboard.json``,
the HPA and KServe autoscaling targets) query them by these names. Keep both sides on
these constants: a renamed metric then breaks a test rather than a dashboard.

Counters end in ``_total``; histograms are exported as ``<name>_bucket``,
``<name>_sum`` and ``<name>_count`` (:func:`series_names`). Times are seconds.
This module imports nothing from the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "REQUEST_DURATION",
    "TTFT",
    "TPOT",
    "REQUESTS",
    "GOODPUT",
    "IN_FLIGHT",
    "QUEUE_DEPTH",
    "CACHE_HITS",
    "REPLICAS",
    "REPLICAS_READY",
    "COLD_STARTS",
    "ERRORS",
    "STATUS",
    "STATUSES",
    "SERVED_STATUSES",
    "POOL",
    "REPLICA",
    "REASON",
    "LATENCY_BUCKETS_S",
    "TTFT_BUCKETS_S",
    "TPOT_BUCKETS_S",
    "Metric",
    "METRICS",
    "series_names",
    "all_series_names",
    "buckets_with",
]

# --------------------------------------------------------------------------- label names

STATUS = "status"
"""Label of a request's outcome: one of :data:`STATUSES`."""
STATUSES = ("completed", "cache_hit", "rejected", "failed")
"""Request outcomes, as the simulator counts them (``result.json`` summary)."""
SERVED_STATUSES = ("completed", "cache_hit")
"""Outcomes that answered the request: the latency percentiles are over these."""
POOL = "pool"
"""Label of the replica pool (``Pool.name``; ``default`` for the single-pool shorthand)."""
REPLICA = "replica"
"""Label of a replica within its pool (``0``, ``1``, ...)."""
REASON = "reason"
"""Label of an error's cause (``replica_failed``, ``timeout``, ``upstream``, ``internal``, ``client``: a 4xx
answered to the client other than 429, a replica's passed through included)."""

# --------------------------------------------------------------------------- metric names

REQUEST_DURATION = "servewise_request_duration_seconds"
TTFT = "servewise_ttft_seconds"
TPOT = "servewise_tpot_seconds"
REQUESTS = "servewise_requests_total"
GOODPUT = "servewise_goodput_requests_total"
IN_FLIGHT = "servewise_in_flight"
QUEUE_DEPTH = "servewise_queue_depth"
CACHE_HITS = "servewise_cache_hits_total"
REPLICAS = "servewise_replicas"
REPLICAS_READY = "servewise_replicas_ready"
COLD_STARTS = "servewise_cold_starts_total"
ERRORS = "servewise_errors_total"

# --------------------------------------------------------------------------- histogram buckets

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Request latency bucket boundaries (seconds), 5 ms to 5 min (``+Inf`` is implicit)."""
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0,
)  # fmt: skip
"""Time-to-first-token bucket boundaries (seconds)."""
TPOT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip
"""Time-per-output-token bucket boundaries (seconds)."""


def buckets_with(base: tuple[float, ...], extra: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """``base`` plus the boundaries in ``extra`` (e.g. the SLO limits), sorted and unique.

    ``histogram_quantile`` interpolates inside a bucket; a boundary at the SLO limit makes
    "is the p95 above the limit" exact rather than interpolated.
    """
    return tuple(sorted({float(b) for b in (*base, *extra) if b > 0}))


# --------------------------------------------------------------------------- the metrics


@dataclass(frozen=True)
class Metric:
    """One exported metric: its name, Prometheus type, help text and label names."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...]
    buckets_s: tuple[float, ...] | None = None


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            REQUEST_DURATION,
            "histogram",
            "Request latency from arrival at the router to the last byte of the answer, seconds.",
            (STATUS,),
            LATENCY_BUCKETS_S,
        ),
        Metric(
            TTFT, "histogram", "LLM: time from arrival to the first generated token, seconds.", (POOL,), TTFT_BUCKETS_S
        ),
        Metric(
            TPOT,
            "histogram",
            "LLM: time per output token after the first ((end - first token) / (tokens - 1)), seconds.",
            (POOL,),
            TPOT_BUCKETS_S,
        ),
        Metric(
            REQUESTS, "counter", "Requests finished, by outcome (completed, cache_hit, rejected, failed).", (STATUS,)
        ),
        Metric(
            GOODPUT,
            "counter",
            "LLM: completed requests within the SLO's ttft_target_s and tpot_target_s (goodput).",
            (),
        ),
        Metric(
            IN_FLIGHT,
            "gauge",
            "Requests on a replica: queued plus in service (the autoscaling signal).",
            (POOL, REPLICA),
        ),
        Metric(QUEUE_DEPTH, "gauge", "Requests waiting in a replica's queue (not yet in service).", (POOL, REPLICA)),
        Metric(CACHE_HITS, "counter", "Requests answered by the exact-match response cache.", ()),
        Metric(REPLICAS, "gauge", "Replicas launched and not stopped (starting, serving or down).", (POOL,)),
        Metric(REPLICAS_READY, "gauge", "Replicas ready to serve (loaded and passing health checks).", (POOL,)),
        Metric(COLD_STARTS, "counter", "Replica starts after time 0 (scale-up, serverless start, repair).", (POOL,)),
        Metric(ERRORS, "counter", "Errors by cause (replica_failed, timeout, upstream, internal, client).", (REASON,)),
    )
}
"""Every runtime metric, by name."""


def series_names(metric: Metric) -> tuple[str, ...]:
    """The series Prometheus stores for ``metric`` (a histogram has three)."""
    if metric.type == "histogram":
        return (f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count")
    return (metric.name,)


def all_series_names() -> frozenset[str]:
    """Every series name a query may use."""
    return frozenset(s for m in METRICS.values() for s in series_names(m))
