"""The server's Prometheus metrics, named and labelled by :mod:`servewise.telemetry`.

One :class:`Metrics` per server, on its own ``CollectorRegistry`` (several servers can
live in one test process). The emitted dashboards and alerts query these names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from servewise import telemetry as t

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _bare(name: str) -> str:
    """prometheus-client adds ``_total`` to counters itself."""
    return name[: -len("_total")] if name.endswith("_total") else name


class Metrics:
    """Every metric of :data:`servewise.telemetry.METRICS`, with the SLO limits as extra buckets."""

    def __init__(self, slo_latency_s: tuple[float, ...] = (), slo_ttft_s: tuple[float, ...] = ()) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        m = t.METRICS
        self.request_duration = Histogram(
            t.REQUEST_DURATION,
            m[t.REQUEST_DURATION].help,
            [t.STATUS],
            buckets=t.buckets_with(t.LATENCY_BUCKETS_S, slo_latency_s),
            registry=reg,
        )
        self.ttft = Histogram(
            t.TTFT, m[t.TTFT].help, [t.POOL], buckets=t.buckets_with(t.TTFT_BUCKETS_S, slo_ttft_s), registry=reg
        )
        self.tpot = Histogram(t.TPOT, m[t.TPOT].help, [t.POOL], buckets=t.TPOT_BUCKETS_S, registry=reg)
        self.requests = Counter(_bare(t.REQUESTS), m[t.REQUESTS].help, [t.STATUS], registry=reg)
        self.goodput = Counter(_bare(t.GOODPUT), m[t.GOODPUT].help, registry=reg)
        self.in_flight = Gauge(t.IN_FLIGHT, m[t.IN_FLIGHT].help, [t.POOL, t.REPLICA], registry=reg)
        self.queue_depth = Gauge(t.QUEUE_DEPTH, m[t.QUEUE_DEPTH].help, [t.POOL, t.REPLICA], registry=reg)
        self.cache_hits = Counter(_bare(t.CACHE_HITS), m[t.CACHE_HITS].help, registry=reg)
        self.replicas = Gauge(t.REPLICAS, m[t.REPLICAS].help, [t.POOL], registry=reg)
        self.replicas_ready = Gauge(t.REPLICAS_READY, m[t.REPLICAS_READY].help, [t.POOL], registry=reg)
        self.cold_starts = Counter(_bare(t.COLD_STARTS), m[t.COLD_STARTS].help, [t.POOL], registry=reg)
        self.errors = Counter(_bare(t.ERRORS), m[t.ERRORS].help, [t.REASON], registry=reg)
        for status in t.STATUSES:  # export zeros from the start: rate() needs the series to exist
            self.requests.labels(status)

    def init_pools(self, pools: list[str]) -> None:
        """Create every per-pool series at zero (a dashboard query needs the series to exist)."""
        for pool in pools:
            self.ttft.labels(pool)
            self.tpot.labels(pool)
            self.replicas.labels(pool)
            self.replicas_ready.labels(pool)
            self.cold_starts.labels(pool)
        for reason in ("replica_failed", "timeout", "upstream", "internal"):
            self.errors.labels(reason)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def forget_replica(self, pool: str, replica: str) -> None:
        """Drop a stopped replica's gauges (a stale series would read as a live replica)."""
        for g in (self.in_flight, self.queue_depth):
            try:
                g.remove(pool, replica)
            except KeyError:
                pass
