"""The engine's behaviour: against the plain one-process-per-request reference model,
against hand-computed schedules on deterministic service, and scenario by scenario
(pools, autoscaling, serverless, faults, cache, warm-up, determinism, SLO).

Times in the hand-computed cases are exact up to float rounding of the sums involved,
so they are compared with ``rel=1e-12``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from servewise.config import Deployment, parse_deployment
from servewise.errors import ConfigError
from servewise.policies import autoscale_rules
from servewise.simulator import SimResult, simulate
from servewise.simulator._engine import Engine
from servewise.simulator.reference import reference_simulate
from servewise.trace import Trace, poisson

GIB = 2**30


# --------------------------------------------------------------------------- helpers


def deployment(**fields: Any) -> Deployment:
    """A deployment: one replica, deterministic 1 s service, unless overridden."""
    doc: dict[str, Any] = {"replicas": 1, "service_time": {"distribution": "deterministic", "mean_s": 1.0}}
    doc.update(fields)
    if "pools" in fields:
        doc.pop("replicas")
    return parse_deployment(doc)


def make_trace(arrival_s, *, keys=None, input_tokens=None, output_tokens=None) -> Trace:
    n = len(arrival_s)
    return Trace(
        arrival_s=np.asarray(arrival_s, dtype=float),
        input_tokens=np.ones(n, dtype=np.int64) if input_tokens is None else np.asarray(input_tokens),
        output_tokens=np.ones(n, dtype=np.int64) if output_tokens is None else np.asarray(output_tokens),
        key=None if keys is None else np.asarray(keys, dtype=np.int64),
        source="test",
    )


def col(res: SimResult, name: str) -> np.ndarray:
    return res.requests[name].to_numpy()


def replicas_col(res: SimResult) -> list[int | None]:
    return [None if pd.isna(v) else int(v) for v in res.requests["replica"]]


def exact(values) -> Any:
    return pytest.approx(list(values), rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- A1: reference model


CROSS_CASES = [
    # (replicas, concurrency, balancer, service_time, rho, n, seed)
    (1, 1, "round_robin", {"distribution": "exponential", "mean_s": 1.0}, 0.9, 3000, 1),
    (1, 4, "random", {"distribution": "lognormal", "mean_s": 0.5, "cv": 2.0}, 0.8, 3000, 2),
    (2, 1, "round_robin", {"distribution": "lognormal", "mean_s": 1.0, "cv": 0.5}, 0.95, 3000, 3),
    (3, 2, "random", {"distribution": "exponential", "mean_s": 0.2}, 0.7, 3000, 4),
    (4, 1, "least_outstanding", {"distribution": "exponential", "mean_s": 1.0}, 0.9, 3000, 5),
    (5, 3, "least_outstanding", {"distribution": "lognormal", "mean_s": 2.0, "cv": 1.5}, 0.95, 2500, 6),
    (6, 1, "p2c", {"distribution": "exponential", "mean_s": 0.3}, 0.95, 3000, 7),
    (8, 4, "p2c", {"distribution": "lognormal", "mean_s": 1.0, "cv": 1.0}, 0.85, 3000, 8),
    (8, 1, "random", {"distribution": "exponential", "mean_s": 1.0}, 0.6, 2000, 9),
    (7, 2, "round_robin", {"distribution": "exponential", "mean_s": 0.05}, 0.9, 3000, 10),
    (4, 3, "weighted", {"distribution": "lognormal", "mean_s": 1.0, "cv": 3.0}, 0.75, 2000, 11),
    (5, 1, "consistent_hash", {"distribution": "exponential", "mean_s": 1.0}, 0.5, 2000, 12),
]


@pytest.mark.parametrize(("replicas", "conc", "policy", "service", "rho", "n", "seed"), CROSS_CASES)
def test_engine_matches_the_reference_model_request_by_request(replicas, conc, policy, service, rho, n, seed):
    dep = parse_deployment(
        {"replicas": replicas, "concurrency": conc, "service_time": service, "balancer": {"policy": policy}}
    )
    rate = rho * replicas * conc / service["mean_s"]
    trace = poisson(rate_rps=rate, n_requests=n, seed=100 + seed)
    ref = reference_simulate(dep, trace, seed=seed)
    res = simulate(dep, trace, seed=seed)
    assert (col(res, "status") == "completed").all()
    np.testing.assert_array_equal(col(res, "replica").astype(np.int64), ref.replica)
    np.testing.assert_allclose(col(res, "start_s"), ref.start_s, rtol=1e-12)
    np.testing.assert_allclose(col(res, "end_s"), ref.end_s, rtol=1e-12)
    # the case is not trivial: requests really queued
    assert (col(res, "start_s") > col(res, "arrival_s") + 1e-9).sum() > n // 50


def test_reference_model_refuses_what_it_does_not_model():
    with pytest.raises(ConfigError, match="reference model supports"):
        reference_simulate(deployment(queue={"capacity": 1}), make_trace([0.0]), seed=0)


# --------------------------------------------------------------------------- A2: hand-computed


def test_fifo_one_replica_deterministic_schedule():
    res = simulate(deployment(), make_trace([0.0, 0.5, 0.7]), seed=0)
    assert list(col(res, "status")) == ["completed"] * 3
    assert replicas_col(res) == [0, 0, 0]
    assert col(res, "dispatch_s").tolist() == exact([0.0, 0.5, 0.7])
    assert col(res, "start_s").tolist() == exact([0.0, 1.0, 2.0])
    assert col(res, "end_s").tolist() == exact([1.0, 2.0, 3.0])
    assert col(res, "latency_s").tolist() == exact([1.0, 1.5, 2.3])
    assert col(res, "queue_s").tolist() == exact([0.0, 0.5, 1.3])
    assert col(res, "batch_size").tolist() == [1, 1, 1]
    s = res.summary
    assert s.latency_s.max == pytest.approx(2.3)
    assert s.latency_s.mean == pytest.approx((1.0 + 1.5 + 2.3) / 3)
    assert s.utilisation == pytest.approx(1.0)  # busy 3 s out of 3 s


def test_concurrency_two_runs_two_at_once():
    res = simulate(deployment(concurrency=2), make_trace([0.0, 0.5, 0.7, 0.8]), seed=0)
    assert col(res, "start_s").tolist() == exact([0.0, 0.5, 1.0, 1.5])
    assert col(res, "end_s").tolist() == exact([1.0, 1.5, 2.0, 2.5])


def test_queue_capacity_one_rejects_the_third_of_three():
    res = simulate(deployment(queue={"capacity": 1}), make_trace([0.0, 0.1, 0.2, 1.5]), seed=0)
    # r0 runs at once, r1 waits (queue holds 1), r2 finds the queue full; at 1.5 r1 has
    # started, so r3 may wait.
    assert list(col(res, "status")) == ["completed", "completed", "rejected", "completed"]
    assert col(res, "start_s")[[0, 1, 3]].tolist() == exact([0.0, 1.0, 2.0])
    assert col(res, "end_s")[[0, 1, 3]].tolist() == exact([1.0, 2.0, 3.0])
    assert res.summary.rejected == 1
    assert res.summary.rejection_ratio == pytest.approx(0.25)


def test_queue_capacity_zero_is_a_loss_system():
    res = simulate(deployment(concurrency=2, queue={"capacity": 0}), make_trace([0.0, 0.1, 0.2, 1.05]), seed=0)
    assert list(col(res, "status")) == ["completed", "completed", "rejected", "completed"]
    assert col(res, "queue_s")[[0, 1, 3]].tolist() == exact([0.0, 0.0, 0.0])


BATCH = {"max_batch_size": 4, "max_wait_s": 0.1, "batch_cost_factor": 0.25}


def test_batch_of_four_dispatches_at_the_fourth_arrival():
    res = simulate(deployment(batching=BATCH), make_trace([0.0, 0.003, 0.006, 0.009]), seed=0)
    assert col(res, "batch_size").tolist() == [4, 4, 4, 4]
    assert col(res, "start_s").tolist() == exact([0.009] * 4)
    # deterministic draw 1 s × (1 + 0.25 × 3)
    assert col(res, "end_s").tolist() == exact([0.009 + 1.75] * 4)
    assert col(res, "queue_s").tolist() == exact([0.009, 0.006, 0.003, 0.0])


def test_a_lone_request_waits_exactly_max_wait():
    res = simulate(deployment(batching=BATCH), make_trace([2.0]), seed=0)
    assert col(res, "start_s").tolist() == exact([2.1])
    assert col(res, "end_s").tolist() == exact([3.1])
    assert col(res, "batch_size").tolist() == [1]


def test_requests_waiting_for_a_busy_slot_go_together_with_linear_batch_time():
    linear = {"distribution": "linear", "base_s": 0.2, "per_item_s": 0.1}
    arrivals = [0.0, 0.15, 0.2, 0.25, 0.3, 0.35]
    res = simulate(deployment(service_time=linear, batching=BATCH), make_trace(arrivals), seed=0)
    # r0 alone: waits 0.1, runs 0.2 + 0.1·1 on [0.1, 0.4]. r1..r5 arrive while it runs;
    # at 0.4 the oldest has waited past max_wait: r1..r4 go (0.2 + 0.1·4 = 0.6) on
    # [0.4, 1.0]; r5 then goes alone on [1.0, 1.3].
    assert col(res, "batch_size").tolist() == [1, 4, 4, 4, 4, 1]
    assert col(res, "start_s").tolist() == exact([0.1, 0.4, 0.4, 0.4, 0.4, 1.0])
    assert col(res, "end_s").tolist() == exact([0.4, 1.0, 1.0, 1.0, 1.0, 1.3])


def test_linear_batch_time_adds_token_terms_of_its_members():
    linear = {
        "distribution": "linear",
        "base_s": 0.1,
        "per_item_s": 0.01,
        "per_input_token_s": 0.001,
        "per_output_token_s": 0.01,
    }
    trace = make_trace([0.0, 0.0, 0.05], input_tokens=[100, 200, 300], output_tokens=[10, 20, 30])
    res = simulate(deployment(service_time=linear, batching={"max_batch_size": 3, "max_wait_s": 0.1}), trace, seed=0)
    # one batch of 3 at the third arrival: 0.1 + 0.01·3 + 0.001·600 + 0.01·60 = 1.33
    assert col(res, "batch_size").tolist() == [3, 3, 3]
    assert col(res, "end_s").tolist() == exact([0.05 + 1.33] * 3)


def test_without_batching_linear_time_is_base_plus_one_item():
    linear = {"distribution": "linear", "base_s": 0.2, "per_item_s": 0.1, "per_output_token_s": 0.001}
    res = simulate(deployment(service_time=linear), make_trace([0.0], output_tokens=[50]), seed=0)
    assert col(res, "end_s").tolist() == exact([0.35])


# --------------------------------------------------------------------------- A3: pools


def test_pool_with_speed_factor_two_serves_in_half_the_time():
    pools = [
        {"name": "fast", "replicas": 1, "speed_factor": 2.0, "price_per_hour_usd": 3.0},
        {"name": "slow", "replicas": 1, "speed_factor": 1.0, "price_per_hour_usd": 1.0},
    ]
    arrivals = np.arange(300) * 2.0
    res = simulate(deployment(pools=pools, balancer={"policy": "weighted"}), make_trace(arrivals), seed=0)
    pool = col(res, "pool")
    service = col(res, "end_s") - col(res, "start_s")
    np.testing.assert_allclose(service[pool == "fast"], 0.5, rtol=1e-12)
    np.testing.assert_allclose(service[pool == "slow"], 1.0, rtol=1e-12)
    # smooth weighted round-robin, weights speed × concurrency = 2 : 1, is exact per cycle
    assert (pool == "fast").sum() == 200
    assert (pool == "slow").sum() == 100
    by_name = {p.name: p for p in res.pools}
    assert by_name["fast"].requests == 200 and by_name["slow"].requests == 100
    # cost = price per hour × replica-hours; fixed replicas live from 0 to the horizon
    horizon = max(col(res, "end_s").max(), arrivals[-1])
    assert by_name["fast"].cost_usd == pytest.approx(3.0 * horizon / 3600, rel=1e-12)
    assert by_name["slow"].cost_usd == pytest.approx(1.0 * horizon / 3600, rel=1e-12)
    assert res.summary.cost_usd == pytest.approx(4.0 * horizon / 3600, rel=1e-12)
    assert by_name["fast"].replica_seconds == pytest.approx(horizon)


def test_weighted_balancer_uses_speed_times_concurrency():
    pools = [
        {"name": "a", "replicas": 1, "speed_factor": 2.0},
        {"name": "b", "replicas": 1, "speed_factor": 1.0, "concurrency": 3},
    ]
    res = simulate(deployment(pools=pools, balancer={"policy": "weighted"}), make_trace(np.arange(300) * 5.0), seed=0)
    pool = col(res, "pool")
    assert ((pool == "a").sum(), (pool == "b").sum()) == (120, 180)


def test_weighted_balancer_uses_explicit_pool_weights():
    pools = [
        {"name": "a", "replicas": 1, "speed_factor": 2.0, "weight": 1.0},
        {"name": "b", "replicas": 2, "speed_factor": 1.0, "weight": 1.5},
    ]
    res = simulate(deployment(pools=pools, balancer={"policy": "weighted"}), make_trace(np.arange(400) * 5.0), seed=0)
    pool = col(res, "pool")
    assert ((pool == "a").sum(), (pool == "b").sum()) == (100, 300)
    reps = col(res, "replica")[pool == "b"].astype(int)
    assert sorted(np.bincount(reps)[1:].tolist()) == [150, 150]


def test_cost_scales_with_replicas_and_price():
    res = simulate(deployment(replicas=3, price_per_hour_usd=2.5), make_trace([0.0, 3599.0]), seed=0)
    # horizon = last completion = 3600 s: 3 replica-hours at 2.5 $/h
    assert res.summary.cost_usd == pytest.approx(7.5, rel=1e-12)
    assert res.summary.cost_per_million_requests_usd == pytest.approx(7.5 / 2 * 1e6, rel=1e-12)


# --------------------------------------------------------------------------- A4: autoscale


def _step_trace() -> Trace:
    rng = np.random.default_rng(7)
    parts = []
    for lo, hi, rate in [(0.0, 60.0, 2.0), (60.0, 120.0, 40.0), (120.0, 300.0, 2.0)]:
        k = rng.poisson(rate * (hi - lo))
        parts.append(np.sort(rng.uniform(lo, hi, k)))
    return make_trace(np.concatenate(parts))


AUTOSCALE = {
    "mode": "autoscale",
    "min_replicas": 1,
    "max_replicas": 6,
    "target_in_flight": 2,
    "interval_s": 5.0,
    "cold_start_s": 10.0,
    "scale_down_stabilization_s": 30.0,
}


def _launches(res: SimResult) -> list[float]:
    """Launch time of each replica id (ids are given in launch order)."""
    t = res.timeline.t_s
    n = res.timeline.replicas
    out: list[float] = []
    prev = 0
    for ti, ni in zip(t, n, strict=True):
        if ni > prev:
            out.extend([ti] * (ni - prev))
        prev = ni
    return out


def test_autoscale_follows_a_step_in_load():
    dep = deployment(
        service_time={"distribution": "deterministic", "mean_s": 0.1},
        balancer={"policy": "least_outstanding"},
        scaling=AUTOSCALE,
    )
    trace = _step_trace()
    res = simulate(dep, trace, seed=3)
    assert (col(res, "status") == "completed").all()
    t = res.timeline.t_s
    n = res.timeline.replicas
    assert t[0] == 0.0 and n[0] == 1
    horizon = t[-1]
    assert n[-1] == 0  # everything closed at the horizon
    inner = [(ti, ni) for ti, ni in zip(t, n, strict=True) if ti < horizon]
    assert all(1 <= ni <= 6 for _, ni in inner), inner
    assert max(ni for _, ni in inner) == 6  # the step drove it to max
    assert res.summary.max_replicas == 6

    ups = [ti for k, (ti, ni) in enumerate(inner) if k > 0 and ni > inner[k - 1][1]]
    downs = [ti for k, (ti, ni) in enumerate(inner) if k > 0 and ni < inner[k - 1][1]]
    assert ups and downs
    # a rise happens at an evaluation tick, and not before the load rose
    for ti in ups:
        assert ti / 5.0 == pytest.approx(round(ti / 5.0), abs=1e-9), ti
    assert ups[0] >= 60.0
    # a fall comes at least the stabilisation window after the last rise before it
    for td in downs:
        last_up = max(tu for tu in ups if tu <= td)
        assert td >= last_up + 30.0 - 1e-9, (td, last_up)
    # once the load falls the count comes back down
    assert inner[-1][1] < 6

    # launches == cold starts; a new replica takes no request before it is ready
    launches = _launches(res)
    assert launches[0] == 0.0
    assert res.summary.cold_starts == len(launches) - 1
    assert res.pools[0].replicas_launched == len(launches)
    reps = col(res, "replica").astype(int)
    dispatch, start = col(res, "dispatch_s"), col(res, "start_s")
    for rid in range(1, len(launches)):
        mine = reps == rid
        if mine.any():
            ready = launches[rid] + 10.0
            assert dispatch[mine].min() >= ready - 1e-9, rid
            assert start[mine].min() >= ready - 1e-9, rid
    assert (col(res, "cold_start_s") == 0.0).all()
    assert res.summary.mean_replicas > 1.0

    # Replay the HPA rule on the ticks from the request table: in flight at a tick are
    # the requests dispatched before it and not finished by it (a tick goes before an
    # arrival at the same instant). Up to the first fall the engine must decide alike.
    end = col(res, "end_s")
    sc = dep.scaling
    rule = autoscale_rules.get("target_in_flight")(
        target=sc.target_in_flight,
        min_replicas=sc.min_replicas,
        max_replicas=sc.max_replicas,
        scale_down_stabilization_s=sc.scale_down_stabilization_s,
        **{k: getattr(sc, k) for k in ("scale_up_stabilization_s", "tolerance") if hasattr(sc, k)},
    )
    current, changes = 1, []
    for k in range(1, int(horizon // 5.0) + 1):
        tick = 5.0 * k
        in_flight = int(((dispatch < tick) & (end > tick)).sum())
        wanted = rule.desired(tick, current, in_flight)
        if wanted != current:
            changes.append((tick, wanted))
            falls, current = wanted < current, wanted
            if falls:
                break
    *rises, (t_down, n_down) = changes
    got = inner[1:]
    assert rises == [g for g in got if g[0] < t_down]
    # the fall is decided at that tick; removed replicas finish their work (< 1 s here)
    after = [(ti, ni) for ti, ni in got if t_down <= ti < t_down + 1.0]
    assert after and after[-1][1] == n_down, (changes, got)


def test_autoscale_without_load_change_stays_at_min():
    dep = deployment(scaling=AUTOSCALE, service_time={"distribution": "deterministic", "mean_s": 0.01})
    res = simulate(dep, make_trace(np.arange(100) * 1.0), seed=0)
    assert res.timeline.replicas[:-1] == [1]
    assert res.summary.cold_starts == 0


def test_a_replica_removed_before_it_is_ready_adds_no_up_time():
    """Replica 1 is launched at 0.2 (ready at 3.2) and removed at 1.0, before it was
    ever ready: only replica 0 was up (0..2 s, busy all the time), so utilisation is 1."""
    dep = deployment(
        scaling={
            "mode": "autoscale",
            "min_replicas": 1,
            "max_replicas": 2,
            "target_in_flight": 1,
            "interval_s": 0.2,
            "cold_start_s": 3.0,
            "scale_down_stabilization_s": 0.0,
        }
    )
    res = simulate(dep, make_trace([0.0, 0.0]), seed=0)
    assert res.timeline.model_dump() == {"t_s": [0.0, 0.2, 1.0, 2.0], "replicas": [1, 2, 1, 0]}
    assert col(res, "end_s").tolist() == exact([1.0, 2.0])
    pool = res.pools[0]
    assert pool.replica_seconds == pytest.approx(2.8)
    assert pool.busy_slot_seconds == pytest.approx(2.0)
    assert pool.utilisation == pytest.approx(1.0)
    assert res.summary.utilisation == pytest.approx(1.0)
    assert res.summary.availability == pytest.approx(1.0)


# --------------------------------------------------------------------------- A5: serverless


def serverless(**overrides: Any) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "mode": "serverless",
        "max_replicas": 5,
        "keep_alive_s": 10.0,
        "cold_start_s": 1.0,
        "memory_bytes": 2 * GIB,
        "price_per_gb_second_usd": 0.001,
        "price_per_request_usd": 0.01,
    }
    sc.update(overrides)
    return sc


def test_serverless_cold_then_warm_then_cold_again():
    dep = deployment(replicas=0, service_time={"distribution": "deterministic", "mean_s": 0.5}, scaling=serverless())
    res = simulate(dep, make_trace([0.0, 2.0, 20.0]), seed=0)
    # r0 starts an instance (ready at 1); r1 arrives within keep-alive of r0's end (1.5);
    # r2 arrives 17.5 s after the last end > keep-alive 10 s: a new cold instance.
    assert replicas_col(res) == [0, 0, 1]
    assert col(res, "cold_start_s").tolist() == exact([1.0, 0.0, 1.0])
    assert col(res, "start_s").tolist() == exact([1.0, 2.0, 21.0])
    assert col(res, "latency_s").tolist() == exact([1.5, 0.5, 1.5])
    assert res.summary.cold_starts == 2
    assert res.summary.cold_start_requests == 2
    # busy billing: instance 0 busy [0, 1.5] ∪ [2, 2.5] = 2 s, instance 1 [20, 21.5] = 1.5 s
    sl = res.serverless
    assert sl.billing == "busy"
    assert sl.billed_seconds == pytest.approx(3.5, rel=1e-12)
    assert sl.gb_seconds == pytest.approx(7.0, rel=1e-12)
    assert sl.billed_requests == 3
    assert sl.cost_usd == pytest.approx(7.0 * 0.001 + 3 * 0.01, rel=1e-12)
    assert res.summary.cost_usd == pytest.approx(7.0 * 0.001 + 3 * 0.01, rel=1e-12)


def test_serverless_instance_billing_includes_keep_alive():
    dep = deployment(
        replicas=0,
        service_time={"distribution": "deterministic", "mean_s": 0.5},
        scaling=serverless(billing="instance"),
    )
    res = simulate(dep, make_trace([0.0, 2.0, 20.0]), seed=0)
    # instance 0 lives [0, 2.5 + 10], instance 1 [20, 21.5 + 10]: 12.5 + 11.5 = 24 s
    sl = res.serverless
    assert sl.billed_seconds == pytest.approx(24.0, rel=1e-12)
    assert sl.gb_seconds == pytest.approx(48.0, rel=1e-12)
    assert sl.cost_usd == pytest.approx(48.0 * 0.001 + 3 * 0.01, rel=1e-12)


def test_serverless_gap_equal_to_keep_alive_is_not_warm_but_just_under_is():
    dep = deployment(
        replicas=0, service_time={"distribution": "deterministic", "mean_s": 1.0}, scaling=serverless(cold_start_s=2.0)
    )
    res = simulate(dep, make_trace([0.0, 12.999, 50.0, 63.0]), seed=0)
    # r0 ends at 3; r1 at 12.999 < 3 + 10 is warm; it ends at 13.999. r2 at 50: cold,
    # ends at 53; r3 at 63 = 53 + 10: the instance has just stopped.
    assert col(res, "cold_start_s").tolist() == exact([2.0, 0.0, 2.0, 2.0])
    assert replicas_col(res) == [0, 0, 1, 2]


def test_serverless_concurrency_shares_an_instance_then_starts_another():
    dep = deployment(
        replicas=0,
        concurrency=3,
        service_time={"distribution": "deterministic", "mean_s": 1.0},
        scaling=serverless(),
    )
    res = simulate(dep, make_trace([0.0, 0.0, 0.0, 0.0, 0.5]), seed=0)
    # three share instance 0 (all wait its cold start), the fourth starts instance 1,
    # the fifth (at 0.5) fits in instance 1
    assert replicas_col(res) == [0, 0, 0, 1, 1]
    assert col(res, "start_s").tolist() == exact([1.0, 1.0, 1.0, 1.0, 1.0])
    assert col(res, "cold_start_s").tolist() == exact([1.0, 1.0, 1.0, 1.0, 0.5])
    assert res.summary.cold_starts == 2


def test_serverless_max_replicas_caps_instances_and_queues_the_rest():
    dep = deployment(
        replicas=0,
        service_time={"distribution": "deterministic", "mean_s": 1.0},
        scaling=serverless(max_replicas=2),
    )
    res = simulate(dep, make_trace([0.0, 0.0, 0.0, 0.0]), seed=0)
    reps = replicas_col(res)
    assert set(reps) == {0, 1}
    assert res.summary.cold_starts == 2
    assert res.summary.max_replicas == 2
    assert sorted(col(res, "end_s").tolist()) == exact([2.0, 2.0, 3.0, 3.0])


def test_serverless_request_that_starts_an_instance_waits_for_it_even_with_no_queue():
    """Scaling docs: "instances start on demand (the triggering request waits the cold
    start)". A queue limit bounds requests waiting for a busy instance; the request an
    instance is started for is not turned away by it (that instance would idle, billed)."""
    dep = deployment(
        replicas=0,
        queue={"capacity": 0},
        service_time={"distribution": "deterministic", "mean_s": 1.0},
        scaling=serverless(cold_start_s=2.0, max_replicas=3, keep_alive_s=5.0),
    )
    res = simulate(dep, make_trace([0.0, 20.0]), seed=0)
    assert list(col(res, "status")) == ["completed", "completed"]
    assert col(res, "cold_start_s").tolist() == exact([2.0, 2.0])
    assert col(res, "end_s").tolist() == exact([3.0, 23.0])


def test_serverless_starts_from_configured_warm_instances():
    dep = deployment(replicas=1, service_time={"distribution": "deterministic", "mean_s": 1.0}, scaling=serverless())
    res = simulate(dep, make_trace([5.0]), seed=0)
    assert col(res, "cold_start_s").tolist() == [0.0]
    assert col(res, "end_s").tolist() == exact([6.0])
    assert res.summary.cold_starts == 0


# --------------------------------------------------------------------------- A6: faults


def _spy_failures(monkeypatch) -> list[tuple[int, float, list[int]]]:
    """Record (replica id, time, requests on it) at every replica failure."""
    seen: list[tuple[int, float, list[int]]] = []
    original = Engine._fail

    def spy(self, r, now):
        self._sync(now)
        seen.append((r.id, now, sorted(r.active)))
        original(self, r, now)

    monkeypatch.setattr(Engine, "_fail", spy)
    return seen


def _faulty(on_failure: str) -> Deployment:
    return deployment(
        replicas=3,
        service_time={"distribution": "exponential", "mean_s": 0.5},
        balancer={"policy": "least_outstanding"},
        faults={"mtbf_s": 60.0, "mttr_s": 5.0, "repair": "deterministic", "on_failure": on_failure, "max_retries": 3},
    )


def test_failed_replica_fails_its_requests(monkeypatch):
    failures = _spy_failures(monkeypatch)
    trace = poisson(rate_rps=4.8, n_requests=2000, seed=21)
    res = simulate(_faulty("fail"), trace, seed=4)
    assert len(failures) >= 3
    status, end = col(res, "status"), col(res, "end_s")
    victims = sorted(i for _, _, v in failures for i in v)
    assert victims, "no request was in flight at any failure"
    assert sorted(np.flatnonzero(status == "failed").tolist()) == victims
    for _rid, t, ids in failures:
        for i in ids:
            assert end[i] == t
    assert res.requests.loc[status == "failed", "replica"].isna().all()
    assert res.summary.failed == len(victims)
    assert res.summary.retries == 0
    # availability: each failure takes its replica down for exactly mttr_s (deterministic)
    horizon = max(end[status == "completed"].max(), col(res, "arrival_s")[-1])
    down = sum(min(t + 5.0, horizon) - t for _, t, _ in failures if t < horizon)
    assert res.summary.availability == pytest.approx(1.0 - down / (3 * horizon), rel=1e-9)
    assert res.summary.availability < 1.0
    assert res.summary.restarts == sum(1 for _, t, _ in failures if t + 5.0 <= horizon)
    reps, dispatch, start = col(res, "replica"), col(res, "dispatch_s"), col(res, "start_s")
    done = status == "completed"
    for rid, t, _ in failures:
        on = done & (reps == rid)
        # nothing finished on it was still running at the failure, nothing came during repair
        assert not ((start[on] < t) & (end[on] > t)).any()
        assert not ((dispatch[on] >= t) & (dispatch[on] < t + 5.0)).any()


def test_retried_requests_complete_elsewhere_and_keep_their_arrival(monkeypatch):
    failures = _spy_failures(monkeypatch)
    trace = poisson(rate_rps=4.8, n_requests=2000, seed=21)
    res = simulate(_faulty("retry"), trace, seed=4)
    status, retries = col(res, "status"), col(res, "retries")
    reps, dispatch, start, end = col(res, "replica"), col(res, "dispatch_s"), col(res, "start_s"), col(res, "end_s")
    arrival, latency = col(res, "arrival_s"), col(res, "latency_s")
    victims = [i for _, _, v in failures for i in v]
    assert victims
    assert res.summary.retries == int(retries.sum()) == len(victims)
    checked = 0
    for rid, t, ids in failures:
        for i in ids:
            if retries[i] == 1 and status[i] == "completed":
                assert reps[i] != rid
                assert dispatch[i] == t
                assert start[i] >= t
                assert latency[i] == end[i] - arrival[i]
                assert latency[i] > end[i] - t or arrival[i] == t
                checked += 1
    assert checked > 0
    assert (status[retries > 0] != "rejected").all()
    assert res.summary.availability < 1.0
    assert res.summary.completed + res.summary.failed == len(trace)


def test_max_retries_zero_fails_at_once(monkeypatch):
    failures = _spy_failures(monkeypatch)
    dep = _faulty("retry").model_copy(update={"faults": _faulty("retry").faults.model_copy(update={"max_retries": 0})})
    res = simulate(dep, poisson(rate_rps=4.8, n_requests=1000, seed=21), seed=4)
    victims = sorted(i for _, _, v in failures for i in v)
    assert sorted(np.flatnonzero(col(res, "status") == "failed").tolist()) == victims
    assert res.summary.retries == 0


def test_a_replica_that_fails_during_its_cold_start_does_not_serve_before_it_is_ready(monkeypatch):
    """Autoscaled replicas fail while starting; after the repair a replica is still not
    ready before launch + cold_start_s, so nothing may start on it earlier."""
    ready_at: dict[int, float] = {}
    original = Engine._launch

    def spy(self, *args, **kwargs):
        r = original(self, *args, **kwargs)
        ready_at[r.id] = r.ready_at
        return r

    monkeypatch.setattr(Engine, "_launch", spy)
    dep = deployment(
        service_time={"distribution": "exponential", "mean_s": 0.5},
        scaling={
            "mode": "autoscale",
            "min_replicas": 1,
            "max_replicas": 3,
            "target_in_flight": 1,
            "interval_s": 1.0,
            "cold_start_s": 3.0,
            "scale_down_stabilization_s": 2.0,
        },
        faults={"mtbf_s": 1.5, "mttr_s": 0.3, "repair": "deterministic", "on_failure": "retry", "max_retries": 3},
    )
    early = []
    for seed in range(5):
        ready_at.clear()
        res = simulate(dep, poisson(rate_rps=4.0, n_requests=60, seed=seed), seed=seed)
        done = res.requests[res.requests["status"] == "completed"]
        for row in done.itertuples():
            if (
                row.start_s < ready_at[int(row.replica)] - 1e-9
                or row.start_s - row.dispatch_s < row.cold_start_s - 1e-9
            ):
                early.append(
                    (seed, row.id, int(row.replica), row.start_s, ready_at[int(row.replica)], row.cold_start_s)
                )
        assert res.summary.utilisation <= 1.0 + 1e-9, (seed, res.summary.utilisation)
        assert 0.0 <= res.summary.availability <= 1.0
    assert not early, f"(seed, request, replica, start_s, replica ready_at, cold_start_s): {early[:5]}"


def test_requests_aborted_by_a_failure_do_not_extend_the_run(monkeypatch):
    """The run ends at its last arrival or last request end: the service that the failed
    requests would have had is not a completion and must not stretch the horizon."""
    failures = _spy_failures(monkeypatch)
    dep = deployment(
        service_time={"distribution": "deterministic", "mean_s": 0.5},
        faults={"mtbf_s": 0.5, "mttr_s": 5.0, "repair": "deterministic", "on_failure": "fail"},
    )
    for seed in range(20):
        failures.clear()
        res = simulate(dep, make_trace([0.0, 0.0, 0.0]), seed=seed)
        if any(v for _, _, v in failures):
            break
    else:
        pytest.fail("no seed gave a failure with requests in flight")
    end = col(res, "end_s")
    assert (col(res, "status") == "failed").any()
    assert res.summary.duration_s == pytest.approx(end.max(), rel=1e-12)
    assert res.timeline.t_s[-1] == pytest.approx(end.max(), rel=1e-12)
    assert res.pools[0].replica_seconds == pytest.approx(end.max(), rel=1e-12)


def test_a_failure_gives_back_the_unrun_time_of_every_batch_in_service(monkeypatch):
    """Two batches of 2 run on the two slots of one replica, both on [0, 1.25]; the
    replica fails at f < 1.25. Each slot was busy for f: busy slot-time is 2·f, not
    1.25 + f (the two batches have the same times but are not the same batch)."""
    failures = _spy_failures(monkeypatch)
    dep = deployment(
        concurrency=2,
        batching={"max_batch_size": 2, "max_wait_s": 0.1, "batch_cost_factor": 0.25},
        faults={"mtbf_s": 0.5, "mttr_s": 100.0, "repair": "deterministic", "on_failure": "fail"},
    )
    for seed in range(20):
        failures.clear()
        res = simulate(dep, make_trace([0.0, 0.0, 0.0, 0.0]), seed=seed)
        if failures and failures[0][1] < 1.25:
            break
    else:
        pytest.fail("no seed failed the replica while its batches ran")
    f = failures[0][1]
    assert failures[0][2] == [0, 1, 2, 3]
    assert (col(res, "status") == "failed").all()
    pool = res.pools[0]
    assert pool.busy_slot_seconds == pytest.approx(2 * f, rel=1e-9)
    assert res.summary.utilisation == pytest.approx(1.0, rel=1e-9)


# --------------------------------------------------------------------------- A7: cache


def test_repeated_keys_hit_the_cache():
    dep = deployment(cache={"policy": "lru", "capacity": 10, "hit_latency_s": 0.01})
    res = simulate(dep, make_trace([0.0, 0.5, 2.0, 2.5, 3.0], keys=[7, 7, 7, 8, 7]), seed=0)
    # r0 fills key 7 when it completes (t=1); r1 arrived before that: a miss
    assert list(col(res, "status")) == ["completed", "completed", "cache_hit", "completed", "cache_hit"]
    hit = col(res, "status") == "cache_hit"
    assert col(res, "latency_s")[hit].tolist() == exact([0.01, 0.01])
    assert col(res, "start_s")[hit].tolist() == exact([2.0, 3.0])
    assert res.requests.loc[hit, "replica"].isna().all()
    assert res.summary.cache_hits == 2
    assert res.summary.cache_hit_ratio == pytest.approx(2 / 5)
    assert res.summary.latency_s.max == pytest.approx(1.5)  # r1 queued behind r0


def test_ttl_expiry_makes_a_later_request_miss():
    dep = deployment(cache={"policy": "ttl", "capacity": 10, "ttl_s": 5.0})
    res = simulate(dep, make_trace([0.0, 3.0, 5.9, 6.0, 6.5], keys=[1, 1, 1, 1, 1]), seed=0)
    # key 1 put at 1.0 (r0 done), live while t < 6.0; r3 at 6.0 misses and refills at 7.0;
    # r4 at 6.5 misses too (r3 not finished)
    assert list(col(res, "status")) == ["completed", "cache_hit", "cache_hit", "completed", "completed"]
    assert col(res, "latency_s")[1:3].tolist() == exact([0.0, 0.0])


def test_lru_with_capacity_one_evicts():
    dep = deployment(cache={"policy": "lru", "capacity": 1})
    res = simulate(dep, make_trace([0.0, 2.0, 4.0, 6.0, 6.5], keys=[1, 2, 1, 1, 2]), seed=0)
    # 1 cached at 1; 2 replaces it at 3; 1 misses at 4 and replaces 2 at 5; 1 hits; 2 misses
    assert list(col(res, "status")) == ["completed", "completed", "completed", "cache_hit", "completed"]


def test_cache_without_trace_keys_is_a_config_error():
    dep = deployment(cache={"policy": "lru", "capacity": 10})
    with pytest.raises(ConfigError, match="no request keys") as err:
        simulate(dep, make_trace([0.0, 1.0]), seed=0)
    assert "cache" in str(err.value)


def test_zipf_keys_give_hits_on_a_generated_trace():
    trace = poisson(rate_rps=5.0, n_requests=2000, seed=1).with_zipf_keys(50, 1.2, seed=2)
    dep = deployment(replicas=2, concurrency=4, cache={"policy": "lru", "capacity": 20})
    res = simulate(dep, trace, seed=0)
    s = res.summary
    assert 0.3 < s.cache_hit_ratio < 1.0
    assert s.cache_hits == (col(res, "status") == "cache_hit").sum()


# --------------------------------------------------------------------------- A8: warm-up


def test_warmup_requests_are_simulated_but_not_summarised():
    trace = make_trace(np.arange(100) * 1.0 + 0.25)
    dep = deployment(service_time={"distribution": "exponential", "mean_s": 0.8})
    res = simulate(dep, trace, seed=5, warmup_s=30.0)
    warm = col(res, "warmup")
    assert warm.tolist() == (col(res, "arrival_s") < 30.0).tolist()
    assert warm.sum() == 30
    s = res.summary
    assert s.requests == 70
    assert s.completed == 70
    assert s.warmup_s == 30.0
    lat = col(res, "latency_s")[~warm]
    assert s.latency_s.mean == pytest.approx(lat.mean(), rel=1e-12)
    assert s.latency_s.p95 == pytest.approx(np.percentile(lat, 95), rel=1e-12)
    assert s.latency_s.max == pytest.approx(lat.max(), rel=1e-12)
    # the warm-up requests still occupy the replica: same schedule as without warm-up
    full = simulate(dep, trace, seed=5)
    np.testing.assert_array_equal(col(full, "end_s"), col(res, "end_s"))
    assert full.summary.requests == 100


def test_warmup_past_the_last_arrival_leaves_nothing_and_every_slo_check_fails():
    dep = deployment(slo={"p95_latency_s": 5.0, "max_rejection_ratio": 0.1})
    res = simulate(dep, make_trace([0.0, 1.0]), seed=0, warmup_s=10.0)
    s = res.summary
    assert (s.requests, s.completed) == (0, 0)
    assert s.latency_s.p95 is None and s.rejection_ratio is None
    # an unknown value is never a pass
    assert res.slo.passed is False
    assert all(c.passed is False and c.value is None for c in res.slo.checks.values())


def test_negative_warmup_is_refused():
    with pytest.raises(ConfigError, match="warmup_s"):
        simulate(deployment(), make_trace([0.0]), seed=0, warmup_s=-1.0)


# --------------------------------------------------------------------------- A9: determinism


def _busy_deployment() -> Deployment:
    return parse_deployment(
        {
            "replicas": 3,
            "concurrency": 2,
            "service_time": {"distribution": "lognormal", "mean_s": 0.4, "cv": 1.5},
            "balancer": {"policy": "p2c"},
            "cache": {"policy": "lru", "capacity": 20},
            "queue": {"capacity": 8},
            "faults": {"mtbf_s": 50.0, "mttr_s": 3.0},
        }
    )


def test_same_inputs_and_seed_give_byte_identical_files(tmp_path):
    trace = poisson(rate_rps=12.0, n_requests=1500, seed=3).with_zipf_keys(200, 1.0, seed=4)
    dep = _busy_deployment()
    a = simulate(dep, trace, seed=11)
    b = simulate(dep, trace, seed=11)
    ja, ca = a.write(tmp_path / "a")
    jb, cb = b.write(tmp_path / "b")
    assert ja.name == "result.json" and ca.name == "requests.csv"
    assert ja.read_bytes() == jb.read_bytes()
    assert ca.read_bytes() == cb.read_bytes()
    c = simulate(dep, trace, seed=12)
    jc, cc = c.write(tmp_path / "c")
    assert cc.read_bytes() != ca.read_bytes()
    assert jc.read_bytes() != ja.read_bytes()


def test_written_csv_has_one_row_per_request(tmp_path):
    trace = poisson(rate_rps=5.0, n_requests=200, seed=3)
    res = simulate(deployment(replicas=2, service_time={"distribution": "exponential", "mean_s": 0.3}), trace, seed=1)
    _, csv_path = res.write(tmp_path)
    back = pd.read_csv(csv_path)
    assert back["id"].tolist() == list(range(200))
    np.testing.assert_allclose(back["end_s"].to_numpy(), col(res, "end_s"), rtol=1e-15)


# --------------------------------------------------------------------------- A10: SLO


def test_slo_block_passes_above_and_fails_below_the_simulated_p95():
    trace = poisson(rate_rps=3.0, n_requests=1000, seed=8)
    doc = {"replicas": 2, "service_time": {"distribution": "exponential", "mean_s": 0.5}}
    p95 = simulate(parse_deployment(doc), trace, seed=2).summary.latency_s.p95
    assert p95 > 0
    ok = simulate(parse_deployment({**doc, "slo": {"p95_latency_s": p95 * 1.01}}), trace, seed=2)
    bad = simulate(parse_deployment({**doc, "slo": {"p95_latency_s": p95 * 0.99}}), trace, seed=2)
    assert ok.slo.passed is True
    assert bad.slo.passed is False
    check = bad.slo.checks["p95_latency_s"]
    assert check.model_dump(by_alias=True) == {
        "limit": p95 * 0.99,
        "value": pytest.approx(p95, rel=1e-12),
        "pass": False,
    }
    assert ok.summary.latency_s.p95 == pytest.approx(p95, rel=1e-12)


def test_slo_on_rejections_and_availability():
    doc = {
        "replicas": 1,
        "service_time": {"distribution": "deterministic", "mean_s": 1.0},
        "queue": {"capacity": 0},
        "slo": {"max_rejection_ratio": 0.2, "min_availability": 0.99},
    }
    res = simulate(parse_deployment(doc), make_trace([0.0, 0.5, 2.0, 2.5]), seed=0)
    checks = res.slo.checks
    assert checks["max_rejection_ratio"].value == pytest.approx(0.5)
    assert checks["max_rejection_ratio"].passed is False
    assert checks["min_availability"].passed is True
    assert res.slo.passed is False


def test_no_slo_gives_null():
    assert simulate(deployment(), make_trace([0.0]), seed=0).slo is None


# --------------------------------------------------------------------------- misc


def test_empty_trace_is_a_config_error():
    with pytest.raises(ConfigError, match="no requests"):
        simulate(deployment(), make_trace([]), seed=0)


def test_result_document_shape():
    res = simulate(deployment(), make_trace([0.0, 1.0]), seed=9)
    d = res.to_doc()
    assert d["kind"] == "sim_result" and d["schema_version"] == 1
    assert d["metadata"]["seed"] == 9 and d["metadata"]["trace_requests"] == 2
    assert set(d) >= {"summary", "pools", "serverless", "timeline", "slo", "metadata"}
    assert list(res.requests.columns) == [
        "id", "arrival_s", "status", "reason", "pool", "replica", "dispatch_s", "start_s", "end_s", "latency_s",
        "queue_s", "cold_start_s", "retries", "batch_size", "input_tokens", "output_tokens", "traffic_class", "warmup",
    ]  # fmt: skip
    assert math.isclose(d["summary"]["throughput_rps"], 2 / 2.0)
    assert "rejections" not in d and list(res.requests["reason"]) == ["", ""]  # none rejected
