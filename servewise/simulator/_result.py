"""Building a :class:`~servewise.results.SimResult` from an engine run: the summary, timeline and per-request table."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servewise import __version__
from servewise.config import Deployment, dump_deployment
from servewise.results import SLO_FIELDS, SimResult, Summary, check_slo, load_artifact
from servewise.stats import summarize

from ._arrivals import rejections
from ._engine import CACHE_HIT, COMPLETED, FAILED, REJECTED, STATUS_NAMES, RawResult, Replica

__all__ = ["SimResult", "SCHEMA_VERSION", "SLO_FIELDS", "build_result", "load_result"]

SCHEMA_VERSION = SimResult.SCHEMA_VERSION
KIND = SimResult.KIND
_GIB = float(2**30)


def load_result(path: str | Path) -> SimResult:
    """Read a ``result.json`` (or the folder holding it); anything else is one :class:`ArtifactError` line."""
    return load_artifact(path, "sim_result")


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def _ended(r: Replica) -> float:
    assert r.ended_at is not None, "the engine closes every replica before summarising"
    return r.ended_at


def _alive_integral(timeline: list[tuple[float, int]], t0: float, t1: float) -> tuple[float, int]:
    """(∫ replicas dt over [t0, t1], max replicas) of a step timeline."""
    total = 0.0
    peak = 0
    for k, (t, n) in enumerate(timeline):
        nxt = timeline[k + 1][0] if k + 1 < len(timeline) else math.inf
        a, b = max(t, t0), min(nxt, t1)
        if b > a:
            total += n * (b - a)
        if t <= t1:
            peak = max(peak, n)
    return total, peak


@dataclass
class _Fleet:
    """Replica-time, busy time, availability and cost over every pool (and serverless billing)."""

    pools: list[dict[str, Any]] = field(default_factory=list)
    serverless: dict[str, Any] | None = None
    cost: float = 0.0
    up_s: float = 0.0
    down_s: float = 0.0
    busy_s: float = 0.0
    capacity_s: float = 0.0
    """Up time × concurrency: the slot-seconds that could have been busy."""


def _fleet(raw: RawResult) -> _Fleet:
    dep = raw.deployment
    horizon = raw.horizon_s
    out = _Fleet()
    for pi, pool in enumerate(dep.resolved_pools()):
        reps = [r for r in raw.replicas if r.pool == pi]
        # the engine closes every replica: ended_at is set (a serverless one may end after the horizon)
        ends = [min(_ended(r), horizon) for r in reps]
        alive_s = max(sum(e - r.launched_at for r, e in zip(reps, ends, strict=True)), 0.0)
        # a cold start still running when the replica ended (or at the horizon) counts up to then
        starting_s = sum(r.starting_s - max(0.0, r.ready_at - e) for r, e in zip(reps, ends, strict=True))
        down_s = sum(r.down_s for r in reps)
        up_s = max(alive_s - starting_s - down_s, 0.0)
        busy_s = sum(max(r.busy_s, 0.0) for r in reps)  # failures subtract unrun work: clamp round-off
        conc = pool.concurrency if pool.concurrency is not None else dep.concurrency
        billed_s = sum(_ended(r) - r.launched_at for r in reps)
        cost = pool.price_per_hour_usd * billed_s / 3600.0
        out.cost += cost
        out.up_s += up_s
        out.down_s += down_s
        out.busy_s += busy_s
        out.capacity_s += up_s * conc
        out.pools.append(
            {
                "name": pool.name,
                "instance_type": pool.instance_type,
                "speed_factor": pool.speed_factor,
                "replicas_launched": len(reps),
                "replica_seconds": alive_s,
                "busy_slot_seconds": busy_s,
                "utilisation": _ratio(busy_s, up_s * conc),
                "requests": int(((raw.pool == pi) & (raw.status == COMPLETED)).sum()),
                "cost_usd": cost,
            }
        )
    sc = dep.scaling
    if sc.mode == "serverless":
        lifetime_s = sum(_ended(r) - r.launched_at for r in raw.replicas)
        billed_seconds = raw.serverless_busy_s if sc.billing == "busy" else lifetime_s
        gb = (sc.memory_bytes or 0) / _GIB
        gb_s = billed_seconds * gb
        billed_requests = int((raw.status == COMPLETED).sum())  # requests an instance served (no faults here)
        cost = gb_s * sc.price_per_gb_second_usd + billed_requests * sc.price_per_request_usd
        out.cost += cost
        out.serverless = {
            "billing": sc.billing,
            "billed_seconds": billed_seconds,
            "gb_seconds": gb_s,
            "billed_requests": billed_requests,
            "cost_usd": cost,
        }
    return out


def _summary(raw: RawResult, counted: np.ndarray, warmup_s: float, fleet: _Fleet) -> Summary:
    """The summary over the counted requests (those arriving at or after ``warmup_s``)."""
    dep = raw.deployment
    arrival = raw.trace.arrival_s
    st = raw.status[counted]
    served = (st == COMPLETED) | (st == CACHE_HIT)
    n_req = int(counted.sum())
    n_completed = int(served.sum())
    n_hits = int((st == CACHE_HIT).sum())
    n_rejected = int((st == REJECTED).sum())
    n_failed = int((st == FAILED).sum())
    on_replica = st == COMPLETED
    queue = np.maximum((raw.start_s - raw.dispatch_s - raw.cold_start_s)[counted][on_replica], 0.0)
    t0 = float(arrival[counted][0]) if n_req else float(warmup_s)
    horizon = raw.horizon_s
    duration = max(horizon - t0, 0.0)
    mean_replicas_int, max_replicas = _alive_integral(raw.timeline, 0.0, horizon)
    summary: dict[str, Any] = {
        "requests": n_req,
        "completed": n_completed,
        "cache_hits": n_hits,
        "rejected": n_rejected,
        "failed": n_failed,
        "rejection_ratio": _ratio(n_rejected, n_req),
        "failure_ratio": _ratio(n_failed, n_req),
        "latency_s": summarize((raw.end_s - arrival)[counted][served]),
        "queue_s": summarize(queue),
        "cold_start_s": summarize(raw.cold_start_s[counted][on_replica]),
        "cold_start_requests": int((raw.cold_start_s[counted] > 0).sum()),
        "throughput_rps": _ratio(n_completed, duration),
        # every request looks the cache up once, on arrival (retries do not)
        "cache_hit_ratio": _ratio(n_hits, n_req) if dep.cache is not None else None,
        "cold_starts": raw.cold_starts,
        "restarts": raw.restarts,
        "retries": int(raw.retries[counted].sum()),
        "mean_replicas": mean_replicas_int / horizon if horizon > 0 else float(max_replicas),
        "max_replicas": max_replicas,
        "utilisation": _ratio(fleet.busy_s, fleet.capacity_s),
        "availability": _ratio(fleet.up_s, fleet.up_s + fleet.down_s),
        "duration_s": duration,
        "cost_usd": fleet.cost,
        "cost_per_million_requests_usd": _ratio(fleet.cost * 1e6, n_completed),
        "cost_per_hour_usd": _ratio(fleet.cost * 3600.0, horizon),
        "accuracy_drift": dep.model.resolved.accuracy_drift if dep.model is not None and dep.model.resolved else None,
        "warmup_s": warmup_s,
    }
    summary.update(_llm_summary(raw, counted, duration))
    return Summary.model_validate(summary)


def _reasons(raw: RawResult) -> np.ndarray:
    """Each request's rejection cause ("" when it was not rejected)."""
    out = np.full(len(raw.status), "", dtype=object)
    for i, why in raw.reject_reason.items():
        out[i] = why
    return out


def _requests_table(raw: RawResult, counted: np.ndarray) -> pd.DataFrame:
    """One row per request of the trace (``requests.csv``), warm-up included and marked."""
    trace = raw.trace
    arrival = trace.arrival_s
    pools = raw.deployment.resolved_pools()
    queue_all = np.where(np.isnan(raw.start_s), np.nan, np.maximum(raw.start_s - raw.dispatch_s - raw.cold_start_s, 0.0))
    table = pd.DataFrame(
        {
            "id": np.arange(len(trace)),
            "arrival_s": arrival,
            "status": np.asarray(STATUS_NAMES, dtype=object)[raw.status],
            "reason": _reasons(raw),
            "pool": np.where(raw.pool >= 0, np.asarray([p.name for p in pools] + [""], dtype=object)[raw.pool], ""),
            "replica": np.where(raw.replica >= 0, raw.replica, -1),
            "dispatch_s": raw.dispatch_s,
            "start_s": raw.start_s,
            "end_s": raw.end_s,
            "latency_s": raw.end_s - arrival,
            "queue_s": queue_all,
            "cold_start_s": raw.cold_start_s,
            "retries": raw.retries,
            "batch_size": raw.batch_size,
            "input_tokens": trace.input_tokens,
            "output_tokens": trace.output_tokens,
            "traffic_class": np.asarray(trace.class_names, dtype=object)[trace.traffic_class],
            "warmup": ~counted,
        }
    )
    if raw.overhead_s is not None:
        table.insert(list(table.columns).index("latency_s") + 1, "overhead_s", raw.overhead_s)
    if raw.served_input_tokens is not None:
        table.insert(list(table.columns).index("input_tokens") + 1, "served_input_tokens", raw.served_input_tokens)
    if raw.llm is not None:
        llm = raw.llm
        gen = llm.generated
        table["first_token_s"] = llm.first_token_s
        table["ttft_s"] = llm.first_token_s - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            table["tpot_s"] = np.where(gen > 1, (raw.end_s - llm.first_token_s) / np.maximum(gen - 1, 1), np.nan)
        table["itl_max_s"] = llm.itl_max_s
        table["generated_tokens"] = gen
        table["cached_tokens"] = llm.cached_tokens
        table["prefilled_tokens"] = llm.prefilled_tokens
        table["preemptions"] = llm.preemptions
    table.loc[table["replica"] < 0, "replica"] = pd.NA
    table["replica"] = table["replica"].astype("Int64")
    return table


def build_result(raw: RawResult, *, warmup_s: float = 0.0) -> SimResult:
    """Summarise an engine run. Requests arriving before ``warmup_s`` are left out of the summary."""
    trace = raw.trace
    dep = raw.deployment
    counted = trace.arrival_s >= warmup_s
    fleet = _fleet(raw)
    summary = _summary(raw, counted, warmup_s, fleet)
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "metadata": {
            "tool": "servewise",
            "version": __version__,
            "seed": raw.seed,
            "deployment_name": dep.name,
            "deployment_sha256": hashlib.sha256(dump_deployment(dep).encode()).hexdigest(),
            "trace_source": trace.source,
            "trace_sha256": trace.content_hash(),
            "trace_requests": len(trace),
            **_model_provenance(dep),
        },
        "summary": summary,
        "pools": fleet.pools,
        "serverless": fleet.serverless,
        "timeline": {"t_s": [t for t, _ in raw.timeline], "replicas": [n for _, n in raw.timeline]},
        "slo": check_slo(dep.slo, summary) if dep.slo is not None else None,
        "rejections": dict(sorted(rejections(raw.reject_reason).items())),
    }
    if raw.llm is not None:
        data["engine"] = {
            "kind": "continuous",
            "pools": raw.pool_kv,
            "replicas": raw.llm.kv,
            "iterations": raw.llm.iterations,
            "fast_forward_spans": raw.llm.spans,
            "rejections": raw.llm.rejections,
        }
    return SimResult.from_doc(data, f"simulation of {dep.name}").with_requests(_requests_table(raw, counted))


def _llm_summary(raw: RawResult, counted: np.ndarray, duration: float) -> dict[str, Any]:
    """TTFT, TPOT, inter-token latency, goodput, KV and prefix-cache figures (None without an LLM engine)."""
    keys = ("ttft_s", "tpot_s", "itl_s")
    llm = raw.llm
    if llm is None:
        return {
            **{k: summarize([]) for k in keys},
            "output_tokens_per_s": None,
            "goodput_rps": None,
            "prefix_hit_ratio": None,
            "prefill_tokens_saved": None,
            "preemptions": None,
            "kv_utilisation": None,
        }
    trace = raw.trace
    dep = raw.deployment
    done = counted & (raw.status == COMPLETED)
    first = llm.first_token_s[done]
    end = raw.end_s[done]
    gen = llm.generated[done]
    ttft = first - trace.arrival_s[done]
    multi = gen > 1
    tpot = (end[multi] - first[multi]) / (gen[multi] - 1)
    goodput = None
    slo = dep.slo
    if slo is not None and (slo.ttft_target_s is not None or slo.tpot_target_s is not None):
        ok = np.ones(len(ttft), dtype=bool)
        if slo.ttft_target_s is not None:
            ok &= ttft <= slo.ttft_target_s
        if slo.tpot_target_s is not None:
            per = np.zeros(len(ttft))  # one output token: no TPOT to miss
            per[multi] = tpot
            ok &= per <= slo.tpot_target_s
        goodput = _ratio(float(ok.sum()), duration)
    eng = dep.engine
    assert eng is not None
    prefix_on = eng.prefix_caching and trace.prefix_blocks is not None
    admitted = counted & ~np.isnan(raw.start_s) & (raw.status != CACHE_HIT)
    prompt = np.maximum(trace.input_tokens, 1)[admitted]
    saved = int(llm.cached_tokens[admitted].sum())
    blocks = sum(r["kv_blocks"] for r in llm.kv)
    return {
        "ttft_s": summarize(ttft),
        "tpot_s": summarize(tpot),
        "itl_s": summarize(llm.itl_s),
        "output_tokens_per_s": _ratio(float(gen.sum()), duration),
        "goodput_rps": goodput,
        "prefix_hit_ratio": _ratio(saved, float(prompt.sum())) if prefix_on else None,
        "prefill_tokens_saved": saved if prefix_on else None,
        "preemptions": int(llm.preemptions[counted].sum()),
        "kv_utilisation": {
            "mean": _ratio(sum(r["kv_used_block_seconds"] for r in llm.kv), blocks * raw.horizon_s),
            "max": max(r["kv_held_peak_blocks"] / r["kv_blocks"] for r in llm.kv),
        },
    }


def _model_provenance(dep: Deployment) -> dict[str, Any]:
    """With a profiled ``model``: which variant, and a hash of its content (the YAML holds only a path)."""
    if dep.model is None or dep.model.resolved is None:
        return {}
    v = dep.model.loaded()
    return {
        "model_variant": v.label,
        "model_variant_sha256": hashlib.sha256(v.model_dump_json().encode()).hexdigest(),
        "model_estimated": v.estimated,
    }

