"""``measured.json`` and ``requests.csv``: what a load test saw, in the simulator's terms.

The summary has the keys of the simulator's ``result.json`` summary; what a client cannot
see (utilisation, cost, replicas, ...) is there with the value None, so the two documents
line up key by key. Percentiles are exact, over the raw samples of every process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servewise.results import Measured, load_artifact
from servewise.stats import summarize

__all__ = ["SCHEMA_VERSION", "KIND", "MIN_ACHIEVED_RATIO", "Samples", "build_measured", "load_measured"]

SCHEMA_VERSION = Measured.SCHEMA_VERSION
KIND = Measured.KIND
MIN_ACHIEVED_RATIO = 0.95
"""A run whose achieved send rate is below this fraction of the offered rate is invalid."""
CPU_WARN = 0.9
"""A generator process busier than this fraction of a CPU core gets a warning."""
_TOP_ERRORS = 20


def load_measured(path: str | Path) -> Measured:
    """Read a ``measured.json`` (or the folder holding it); anything else is one :class:`ArtifactError` line."""
    return load_artifact(path, "measured")


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


@dataclass(frozen=True)
class Samples:
    """Every request's record, merged from all generator processes and sorted by id.

    Times are seconds since the shared start; NaN where a request has no such time.
    """

    id: np.ndarray
    due_s: np.ndarray
    sent_s: np.ndarray
    end_s: np.ndarray
    http_status: list[int | None]
    status: np.ndarray
    """Each outcome: "completed", "cache_hit", "rejected" or "failed" (object array)."""
    first_token_s: np.ndarray
    last_token_s: np.ndarray
    tokens: list[int | None]
    itl_max_s: np.ndarray
    replica: list[str | None]
    replica_queue_s: np.ndarray
    """The replica's own queue and service seconds (``x-servewise-timing``); NaN when not sent."""
    replica_service_s: np.ndarray
    replica_idle_s: np.ndarray
    """Seconds the replica had run nothing before the request's batch started; NaN when not sent."""
    batch_size: list[int | None]
    error: list[str | None]
    itl_s: np.ndarray
    """Every inter-token gap of every completed streamed request."""

    @classmethod
    def merge(cls, results: list[dict[str, Any]], itl: list[np.ndarray]) -> Samples:
        """Join the processes' columns (``loadtest._worker.ROW_FIELDS``) and sort by id."""
        cols: dict[str, list[Any]] = {}
        for res in results:
            for name, values in res["columns"].items():
                cols.setdefault(name, []).extend(values)
        order = np.argsort(np.asarray(cols.get("id", []), dtype=np.int64), kind="stable")

        def objects(name: str) -> list[Any]:
            values = cols.get(name, [])
            return [values[k] for k in order.tolist()]

        def floats(name: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in objects(name)], dtype=float)

        return cls(
            id=np.array(objects("id"), dtype=np.int64),
            due_s=floats("due_s"),
            sent_s=floats("sent_s"),
            end_s=floats("end_s"),
            http_status=objects("http_status"),
            status=np.array(objects("status"), dtype=object),
            first_token_s=floats("first_token_s"),
            last_token_s=floats("last_token_s"),
            tokens=objects("tokens"),
            itl_max_s=floats("itl_max_s"),
            replica=objects("replica"),
            replica_queue_s=floats("replica_queue_s"),
            replica_service_s=floats("replica_service_s"),
            replica_idle_s=floats("replica_idle_s"),
            batch_size=objects("batch_size"),
            error=objects("error"),
            itl_s=np.concatenate(itl) if itl else np.zeros(0),
        )


def _summary(s: Samples, *, stream: bool) -> dict[str, Any]:
    """The summary in the simulator's keys; what a client cannot see is None."""
    n = len(s.id)
    st = s.status
    completed = st == "completed"
    hits = st == "cache_hit"
    served = completed | hits
    n_served = int(served.sum())
    n_hits = int(hits.sum())
    n_rejected = int((st == "rejected").sum())
    n_failed = int((st == "failed").sum())
    latency = s.end_s - s.due_s
    duration = float(np.nanmax(s.end_s) - np.nanmin(s.due_s)) if n else 0.0
    duration = max(duration, 0.0)

    tokens = _tokens(s)
    ttft_sel = completed & (tokens >= 1)
    tpot_sel = completed & (tokens > 1)
    ttft = s.first_token_s[ttft_sel] - s.due_s[ttft_sel]
    tpot = (s.last_token_s[tpot_sel] - s.first_token_s[tpot_sel]) / (tokens[tpot_sel] - 1)
    return {
        "requests": n,
        "completed": n_served,
        "cache_hits": n_hits,
        "rejected": n_rejected,
        "failed": n_failed,
        "rejection_ratio": _ratio(n_rejected, n),
        "failure_ratio": _ratio(n_failed, n),
        "latency_s": summarize(latency[served]),
        "queue_s": summarize([]),
        "cold_start_s": summarize([]),
        "cold_start_requests": None,
        "throughput_rps": _ratio(n_served, duration),
        "cache_hit_ratio": _ratio(n_hits, n),
        "cold_starts": None,
        "restarts": None,
        "retries": None,
        "mean_replicas": None,
        "max_replicas": None,
        "utilisation": None,
        "availability": None,
        "duration_s": duration,
        "cost_usd": None,
        "cost_per_million_requests_usd": None,
        "cost_per_hour_usd": None,
        "accuracy_drift": None,
        "warmup_s": 0.0,
        "ttft_s": summarize(ttft),
        "tpot_s": summarize(tpot),
        "itl_s": summarize(s.itl_s),
        "output_tokens_per_s": _ratio(float(tokens[completed].sum()), duration) if stream else None,
        "goodput_rps": None,
        "prefix_hit_ratio": None,
        "prefill_tokens_saved": None,
        "preemptions": None,
        "kv_utilisation": None,
    }


def _tokens(s: Samples) -> np.ndarray:
    return np.array([0 if t is None else t for t in s.tokens], dtype=np.int64)


def _table(s: Samples, input_tokens: np.ndarray, output_tokens: np.ndarray, traffic_class: list[str]) -> Any:
    """The per-request table (``requests.csv``)."""
    import pandas as pd

    tokens = _tokens(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_all = np.where(
            (s.status == "completed") & (tokens > 1),
            (s.last_token_s - s.first_token_s) / np.maximum(tokens - 1, 1),
            np.nan,
        )
    return pd.DataFrame(
        {
            "id": s.id,
            "scheduled_s": s.due_s,
            "sent_s": s.sent_s,
            "send_lag_s": s.sent_s - s.due_s,
            "status": s.status,
            "http_status": pd.array(s.http_status, dtype="Int64"),
            "latency_s": s.end_s - s.due_s,
            "ttft_s": s.first_token_s - s.due_s,
            "tpot_s": tpot_all,
            "itl_max_s": s.itl_max_s,
            "tokens": pd.array(s.tokens, dtype="Int64"),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "replica": pd.array(s.replica, dtype="string"),
            "replica_queue_s": s.replica_queue_s,
            "replica_service_s": s.replica_service_s,
            "replica_idle_s": s.replica_idle_s,
            "batch_size": pd.array(s.batch_size, dtype="Int64"),
            "error": pd.array(s.error, dtype="string"),
            "end_s": s.end_s,
            "traffic_class": traffic_class,
        }
    )


def build_measured(
    s: Samples,
    *,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    traffic_class: list[str],
    stream: bool,
    max_send_lag_s: float,
    processes: list[dict[str, Any]],
    metadata: dict[str, Any],
    source: str | Path = "load-test measurement",
) -> tuple[Measured, Any]:
    """The ``measured.json`` record (valid by construction; ``source`` is the file it is for) and the
    per-request table (a pandas DataFrame)."""
    codes = Counter(c for c in s.http_status if c is not None)
    errors = Counter(e for e in s.error if e)
    replicas = Counter(r for r in s.replica if r is not None)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "summary": _summary(s, stream=stream),
        "generator": _generator(s, max_send_lag_s=max_send_lag_s, processes=processes),
        "status_codes": {str(c): codes[c] for c in sorted(codes)},
        "replicas": dict(sorted(replicas.items())),
        "errors": dict(errors.most_common(_TOP_ERRORS)),
    }
    measured: Measured = Measured.from_doc(doc, source)
    return measured, _table(s, input_tokens, output_tokens, traffic_class)


def _generator(s: Samples, *, max_send_lag_s: float, processes: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the generator kept to its schedule (open loop): send lag, offered and achieved rates."""
    n = len(s.id)
    lag = s.sent_s - s.due_s
    lag_summary = summarize(lag)
    offered = _ratio(n, float(s.due_s.max() - s.due_s.min())) if n else None
    achieved = _ratio(n, float(s.sent_s.max() - s.sent_s.min())) if n else None
    achieved_ratio = achieved / offered if achieved is not None and offered is not None else None

    reasons: list[str] = []
    p99 = lag_summary["p99"]
    if p99 is not None and p99 > max_send_lag_s:
        reasons.append(
            f"send lag p99 {p99 * 1e3:.1f} ms > max_send_lag_s {max_send_lag_s * 1e3:.1f} ms: the generator fell "
            "behind its schedule (use more processes or a smaller time scale)"
        )
    if (
        offered is not None
        and achieved is not None
        and achieved_ratio is not None
        and achieved_ratio < MIN_ACHIEVED_RATIO
    ):
        reasons.append(
            f"achieved rate {achieved:.1f} req/s is {achieved_ratio:.1%} of the offered {offered:.1f} req/s "
            f"(< {MIN_ACHIEVED_RATIO:.0%})"
        )
    warnings: list[str] = []
    for p in processes:
        if p["cpu_utilisation"] is not None and p["cpu_utilisation"] > CPU_WARN:
            warnings.append(
                f"generator process {p['process']} used {p['cpu_utilisation']:.0%} of a CPU core: its timings may "
                "be late; use more processes"
            )
    return {
        "valid": not reasons,
        "invalid_reasons": reasons,
        "warnings": warnings,
        "max_send_lag_s": max_send_lag_s,
        "send_lag_s": lag_summary,
        "offered_rps": offered,
        "achieved_rps": achieved,
        "achieved_ratio": achieved_ratio,
        "min_achieved_ratio": MIN_ACHIEVED_RATIO,
        "cpu_s": sum(p["cpu_user_s"] + p["cpu_system_s"] for p in processes),
        "locust_requests": sum(p["locust_requests"] for p in processes),
        "locust_failures": sum(p["locust_failures"] for p in processes),
        "processes": processes,
    }
