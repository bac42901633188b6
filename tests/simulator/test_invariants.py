"""Invariants of every simulation, over every registered balancer, cache policy and
scaling mode, on random small traces (simultaneous arrivals included), queue limits,
batching and faults: each request is accounted for exactly once, times are ordered,
and no replica ever serves more than its capacity at once."""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servewise.config import Deployment, parse_deployment
from servewise.policies import cache_policies, lb_policies
from servewise.simulator import SimResult, simulate
from servewise.trace import Trace

BALANCERS = [b for b in lb_policies.names() if b not in ("least_kv", "prefix_affinity")]  # LLM engine: test_llm.py
CACHES = cache_policies.names()
MODES = ["fixed", "autoscale", "serverless"]
FINAL = {"completed", "cache_hit", "rejected", "failed"}
EPS = 1e-9

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- strategies

pos = st.floats(0.05, 2.0)
gaps = st.one_of(st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.3, 1.0, 4.0]), st.floats(0.0, 3.0))

service_times = st.one_of(
    st.builds(lambda m: {"distribution": "deterministic", "mean_s": m}, pos),
    st.builds(lambda m: {"distribution": "exponential", "mean_s": m}, pos),
    st.builds(lambda m, cv: {"distribution": "lognormal", "mean_s": m, "cv": cv}, pos, st.floats(0.1, 3.0)),
    st.builds(lambda m, cv: {"distribution": "hyperexponential", "mean_s": m, "cv": cv}, pos, st.floats(1.0, 3.0)),
    st.builds(
        lambda lo, w: {"distribution": "uniform", "low_s": lo, "high_s": lo + w},
        st.floats(0.0, 1.0),
        st.floats(0.01, 1.0),
    ),
    st.builds(
        lambda s: {"distribution": "empirical", "samples_s": s},
        st.lists(st.floats(0.01, 2.0), min_size=1, max_size=5),
    ),
    st.builds(
        lambda b, i, t, cv: {
            "distribution": "linear",
            "base_s": b,
            "per_item_s": i,
            "per_output_token_s": t,
            "noise_cv": cv,
        },
        st.floats(0.01, 0.5),
        st.floats(0.0, 0.2),
        st.sampled_from([0.0, 0.001]),
        st.sampled_from([0.0, 0.3]),
    ),
)


def balancer_doc(draw, policy: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"policy": policy}
    if policy == "p2c":
        doc["d"] = draw(st.integers(1, 3))
    if policy == "consistent_hash":
        doc["virtual_nodes"] = draw(st.integers(1, 20))
        lb = draw(st.one_of(st.none(), st.floats(1.05, 3.0)))
        if lb is not None:
            doc["load_bound"] = lb
    return doc


def cache_doc(draw, policy: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "policy": policy,
        "capacity": draw(st.integers(1, 5)),
        "hit_latency_s": draw(st.sampled_from([0.0, 0.01, 0.2])),
    }
    if policy == "ttl" or (policy == "lru" and draw(st.booleans())):
        doc["ttl_s"] = draw(st.floats(0.1, 10.0))
    return doc


@st.composite
def scenarios(draw, *, mode: str, balancer: str | None = None, cache: str | None | bool = False):
    """(deployment document, trace) for ``mode``; balancer/cache drawn when not given.

    ``cache=False``: drawn (possibly none); ``None``: no cache; a name: that policy.
    """
    n = draw(st.integers(1, 40))
    start = draw(st.sampled_from([0.0, 0.0, 0.5, 3.0]))
    arrival = start + np.cumsum([0.0] + draw(st.lists(gaps, min_size=n - 1, max_size=n - 1)))
    keys = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    out_tokens = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))

    if balancer is None:
        balancer = draw(st.sampled_from(BALANCERS))
    if cache is False:
        cache = draw(st.one_of(st.none(), st.sampled_from(CACHES)))

    doc: dict[str, Any] = {
        "service_time": draw(service_times),
        "concurrency": draw(st.integers(1, 3)),
        "balancer": balancer_doc(draw, balancer),
        "price_per_hour_usd": draw(st.sampled_from([0.0, 3.6])),
    }
    if mode == "fixed":
        if draw(st.booleans()):
            doc["replicas"] = draw(st.integers(1, 4))
        else:
            k = draw(st.integers(1, 3))
            pools = []
            for j in range(k):
                p: dict[str, Any] = {
                    "name": f"p{j}",
                    "replicas": draw(st.integers(0, 2)),
                    "speed_factor": draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
                }
                c = draw(st.one_of(st.none(), st.integers(1, 3)))
                if c is not None:
                    p["concurrency"] = c
                w = draw(st.one_of(st.none(), st.floats(0.5, 3.0)))
                if w is not None:
                    p["weight"] = w
                pools.append(p)
            if sum(p["replicas"] for p in pools) == 0:
                pools[0]["replicas"] = 1
            doc["pools"] = pools
    elif mode == "autoscale":
        lo = draw(st.integers(1, 2))
        hi = draw(st.integers(lo, 4))
        doc["replicas"] = draw(st.integers(lo, hi))
        doc["scaling"] = {
            "mode": "autoscale",
            "min_replicas": lo,
            "max_replicas": hi,
            "target_in_flight": draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
            "interval_s": draw(st.sampled_from([0.2, 1.0, 2.5, 5.0])),
            "cold_start_s": draw(st.sampled_from([0.0, 0.5, 3.0])),
            "scale_down_stabilization_s": draw(st.sampled_from([0.0, 1.0, 5.0])),
        }
    else:
        hi = draw(st.integers(1, 4))
        doc["replicas"] = draw(st.integers(0, min(hi, 2)))
        doc["scaling"] = {
            "mode": "serverless",
            "max_replicas": hi,
            "keep_alive_s": draw(st.sampled_from([0.0, 0.5, 2.0, 10.0])),
            "cold_start_s": draw(st.sampled_from([0.0, 0.3, 2.0])),
            "memory_bytes": 2**30,
            "price_per_gb_second_usd": 1e-5,
            "price_per_request_usd": 1e-6,
            "billing": draw(st.sampled_from(["busy", "instance"])),
        }

    batching = None
    if draw(st.booleans()):
        batching = {
            "max_batch_size": draw(st.integers(1, 4)),
            "max_wait_s": draw(st.sampled_from([0.0, 0.05, 0.3])),
            "batch_cost_factor": draw(st.sampled_from([0.0, 0.25, 1.0])),
        }
        doc["batching"] = batching
    capacity = draw(st.one_of(st.none(), st.integers(0, 4)))
    if capacity is not None:
        if batching is not None:
            capacity += batching["max_batch_size"]  # the engine requires capacity >= batch size
        doc["queue"] = {"capacity": capacity}
    if cache is not None:
        doc["cache"] = cache_doc(draw, cache)
    if mode != "serverless" and draw(st.booleans()):
        doc["faults"] = {
            "mtbf_s": draw(st.sampled_from([0.5, 2.0, 10.0, 50.0])),
            "mttr_s": draw(st.sampled_from([0.1, 1.0, 5.0])),
            "repair": draw(st.sampled_from(["exponential", "deterministic"])),
            "on_failure": draw(st.sampled_from(["retry", "fail"])),
            "max_retries": draw(st.integers(0, 3)),
        }
    trace = Trace(
        arrival_s=arrival,
        input_tokens=np.full(n, 10, dtype=np.int64),
        output_tokens=np.asarray(out_tokens, dtype=np.int64),
        key=np.asarray(keys, dtype=np.int64),
        source="hypothesis",
    )
    return doc, trace, draw(st.integers(0, 2**16))


# --------------------------------------------------------------------------- checks


def max_overlap(starts: np.ndarray, ends: np.ndarray) -> int:
    """Most half-open intervals [start, end) open at once."""
    events = sorted([(e, 0) for e in ends] + [(s, 1) for s in starts])  # ends first at a tie
    now = peak = 0
    for _, kind in events:
        now += 1 if kind else -1
        peak = max(peak, now)
    return peak


def check_invariants(dep: Deployment, trace: Trace, res: SimResult) -> None:
    n = len(trace)
    rq = res.requests
    assert len(rq) == n
    assert rq["id"].tolist() == list(range(n))  # every id exactly once, in order
    np.testing.assert_array_equal(rq["arrival_s"].to_numpy(), trace.arrival_s)
    status = rq["status"].to_numpy()
    assert set(status) <= FINAL, set(status) - FINAL

    counts = {s: int((status == s).sum()) for s in FINAL}
    assert sum(counts.values()) == n
    s = res.summary
    assert s.requests == n
    assert s.completed == counts["completed"] + counts["cache_hit"]  # served, hits included
    assert s.cache_hits == counts["cache_hit"]
    assert s.rejected == counts["rejected"]
    assert s.failed == counts["failed"]
    assert s.completed + s.rejected + s.failed == s.requests

    if dep.queue.capacity is None:
        assert counts["rejected"] == 0
    if dep.faults is None:
        assert counts["failed"] == 0
        assert (rq["retries"] == 0).all()
    else:
        assert (rq["retries"] <= dep.faults.max_retries).all()
    if dep.cache is None:
        assert counts["cache_hit"] == 0

    arrival = rq["arrival_s"].to_numpy()
    dispatch = rq["dispatch_s"].to_numpy()
    start = rq["start_s"].to_numpy()
    end = rq["end_s"].to_numpy()
    latency = rq["latency_s"].to_numpy()
    cold = rq["cold_start_s"].to_numpy()

    done = status == "completed"
    d = np.flatnonzero(done)
    assert not np.isnan(start[d]).any() and not np.isnan(end[d]).any()
    assert (arrival[d] <= dispatch[d]).all()
    assert (dispatch[d] <= start[d]).all()
    assert (start[d] <= end[d]).all()
    assert (latency[d] == end[d] - arrival[d]).all()
    assert (cold[d] >= 0).all()
    # a request that waited for a cold start did not start before the replica was ready
    assert (start[d] - dispatch[d] >= cold[d] - EPS).all(), rq.loc[done & (start - dispatch < cold - EPS)]
    assert (rq["queue_s"].to_numpy()[d] >= 0).all()
    assert rq.loc[done, "replica"].notna().all()
    assert (rq.loc[done, "pool"] != "").all()

    hits = status == "cache_hit"
    if hits.any():
        assert dep.cache is not None
        assert (dispatch[hits] == arrival[hits]).all() and (start[hits] == arrival[hits]).all()
        np.testing.assert_allclose(latency[hits], dep.cache.hit_latency_s, atol=1e-12)

    # capacity: per replica, at most concurrency (× max batch size) requests in service
    bat = dep.batching
    per_slot = bat.max_batch_size if bat is not None else 1
    bsize = rq["batch_size"].to_numpy()
    assert ((bsize[d] >= 1) & (bsize[d] <= per_slot)).all()
    conc_of = {p.name: (p.concurrency or dep.concurrency) for p in dep.resolved_pools()}
    sub = rq.loc[done, ["pool", "replica", "start_s", "end_s", "batch_size"]]
    for (pool, _rid), g in sub.groupby(["pool", "replica"]):
        cap = conc_of[pool] * per_slot
        peak = max_overlap(g["start_s"].to_numpy(), g["end_s"].to_numpy())
        assert peak <= cap, (pool, _rid, peak, cap, g.sort_values("start_s").to_string())
        # members of one batch share (start, end) on their replica
        same = g.groupby(["start_s", "end_s"])["batch_size"]
        assert (same.transform("size") >= g["batch_size"]).all(), g.to_string()

    # FIFO without batching or faults is work-conserving: replaying each replica's
    # admitted requests in dispatch order through `concurrency` slots (free from the
    # replica's ready time) gives back every start time exactly
    batching_on = bat is not None and (bat.max_batch_size > 1 or bat.max_wait_s > 0)
    if not batching_on and dep.faults is None:
        table = rq.loc[done, ["id", "pool", "replica", "dispatch_s", "start_s", "end_s", "cold_start_s"]]
        for (pool, _rid), g in table.groupby(["pool", "replica"]):
            g = g.sort_values(["dispatch_s", "id"])
            waited = g["cold_start_s"] > 0
            ready = float((g["dispatch_s"] + g["cold_start_s"])[waited].max()) if waited.any() else -np.inf
            slots = [ready] * conc_of[pool]
            for row in g.itertuples():
                expected = max(row.dispatch_s, slots[0])
                # the ready time is rebuilt as dispatch + cold-start wait: equal up to rounding
                assert abs(row.start_s - expected) <= EPS, (pool, _rid, row, slots, g.to_string())
                heapq.heapreplace(slots, row.end_s)

    assert not rq["warmup"].any()
    # ratios are ratios; busy slot-time never exceeds the slot-time replicas were up
    for u in [s.utilisation, *(p.utilisation for p in res.pools)]:
        assert u is None or 0.0 <= u <= 1.0 + EPS, u
    assert s.availability is None or 0.0 <= s.availability <= 1.0
    assert s.cost_usd >= 0.0
    # the run ends with its last arrival or the last request's end, whichever is later
    # (a cache hit's end excepted: it takes no replica)
    last = max(arrival[-1], np.nanmax(end[~hits], initial=arrival[-1]))
    assert s.duration_s == pytest.approx(last - arrival[0], rel=1e-12, abs=1e-12)
    reps = res.timeline.replicas
    assert min(reps) >= 0
    if dep.scaling.mode == "fixed" and dep.faults is None:
        total = sum(p.replicas for p in dep.resolved_pools())
        assert reps[:-1] == [total] * (len(reps) - 1) and reps[-1] == 0

    # replica-seconds and cost follow the timeline (a step function of replicas alive)
    t = res.timeline.t_s
    replica_s = float(np.sum(np.diff(t) * np.asarray(reps[:-1], dtype=float))) if len(t) > 1 else 0.0
    assert reps[-1] == 0
    if dep.scaling.mode != "serverless":
        assert t[-1] == pytest.approx(last, rel=1e-12, abs=1e-12)  # everything closes at the horizon
        assert sum(p.replica_seconds for p in res.pools) == pytest.approx(replica_s, rel=1e-9, abs=1e-9)
        if dep.pools is None:
            assert s.cost_usd == pytest.approx(dep.price_per_hour_usd * replica_s / 3600, rel=1e-9, abs=1e-12)
    else:
        sl = res.serverless
        assert sl is not None and sl.billing == dep.scaling.billing
        assert sl.billed_requests == counts["completed"]
        if dep.scaling.billing == "instance":
            assert sl.billed_seconds == pytest.approx(replica_s, rel=1e-9, abs=1e-9)
        else:
            assert 0.0 <= sl.billed_seconds <= replica_s + 1e-9
        gb = (dep.scaling.memory_bytes or 0) / 2**30
        assert sl.gb_seconds == pytest.approx(sl.billed_seconds * gb, rel=1e-12)
        expected = (
            sl.gb_seconds * dep.scaling.price_per_gb_second_usd + sl.billed_requests * dep.scaling.price_per_request_usd
        )
        assert sl.cost_usd == pytest.approx(expected, rel=1e-12)
        assert s.cost_usd == pytest.approx(sl.cost_usd + dep.price_per_hour_usd * replica_s / 3600, rel=1e-9)


def run_and_check(doc: dict[str, Any], trace: Trace, seed: int) -> None:
    dep = parse_deployment(doc)
    res = simulate(dep, trace, seed=seed)
    check_invariants(dep, trace, res)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("balancer", BALANCERS)
@SETTINGS
@given(data=st.data())
def test_invariants_for_every_balancer_and_scaling_mode(balancer, mode, data):
    doc, trace, seed = data.draw(scenarios(mode=mode, balancer=balancer))
    run_and_check(doc, trace, seed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cache", CACHES)
@SETTINGS
@given(data=st.data())
def test_invariants_for_every_cache_policy_and_scaling_mode(cache, mode, data):
    doc, trace, seed = data.draw(scenarios(mode=mode, cache=cache))
    run_and_check(doc, trace, seed)


def test_registries_are_covered():
    # the parametrisations above must follow the registries
    assert set(BALANCERS) >= {"round_robin", "random", "least_outstanding", "p2c", "consistent_hash", "weighted"}
    assert set(CACHES) >= {"lru", "ttl", "fifo"}


def test_simultaneous_arrivals_are_all_accounted_for():
    doc = {
        "replicas": 2,
        "service_time": {"distribution": "exponential", "mean_s": 1.0},
        "queue": {"capacity": 2},
        "balancer": {"policy": "least_outstanding"},
    }
    trace = Trace(arrival_s=np.zeros(20), input_tokens=np.ones(20), output_tokens=np.ones(20), source="burst")
    res = simulate(parse_deployment(doc), trace, seed=1)
    check_invariants(parse_deployment(doc), trace, res)
    # 1 in service + 2 waiting on each replica; the other 14 are turned away
    assert res.summary.rejected == 14
    assert res.requests["replica"].value_counts().to_dict() == {0: 3, 1: 3}
