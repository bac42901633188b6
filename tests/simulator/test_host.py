"""CPU contention on a shared local host (``Deployment.host``), against queueing theory
and hand-computed schedules.

Processor sharing is work conserving: replicas of one thread on a one-core host serve,
together, like one server at full speed whenever any of them is busy — with exponential
services that is the M/M/1 queue whatever the balancer, mean response 1 / (mu − lambda).
And processor sharing is insensitive: M/G/1-PS has mean response E[S] / (1 − rho) for
any service law, deterministic included (where FIFO gives 1 + rho / (2 (1 − rho))).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from servewise.config import Deployment, parse_deployment
from servewise.errors import ConfigError
from servewise.simulator import simulate
from servewise.trace import Trace, poisson


def deployment(**fields: Any) -> Deployment:
    doc: dict[str, Any] = {"replicas": 1, "service_time": {"distribution": "deterministic", "mean_s": 1.0}}
    doc.update(fields)
    if "pools" in fields:
        doc.pop("replicas")
    return parse_deployment(doc)


def at(*arrival_s: float) -> Trace:
    n = len(arrival_s)
    return Trace(arrival_s=np.asarray(arrival_s, dtype=float), input_tokens=np.ones(n, dtype=np.int64),
                 output_tokens=np.ones(n, dtype=np.int64), source="test")  # fmt: skip


def latency(dep: Deployment, trace: Trace) -> np.ndarray:
    return simulate(dep, trace, seed=0).requests["latency_s"].to_numpy()


@pytest.mark.parametrize("balancer", ["round_robin", "random", "least_outstanding"])
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_one_core_shared_by_replicas_is_the_mm1_queue(balancer: str, rho: float) -> None:
    dep = deployment(replicas=2, service_time={"distribution": "exponential", "mean_s": 1.0},
                     balancer={"policy": balancer}, host={"cores": 1, "threads": 1})  # fmt: skip
    lat = latency(dep, poisson(rate_rps=rho, n_requests=120_000, seed=3))
    assert np.mean(lat) == pytest.approx(1.0 / (1.0 - rho), rel=0.05)
    # without the host, two replicas are two servers: far less waiting (M/M/2)
    free = latency(deployment(replicas=2, service_time={"distribution": "exponential", "mean_s": 1.0},
                              balancer={"policy": balancer}), poisson(rate_rps=rho, n_requests=120_000, seed=3))  # fmt: skip
    assert np.mean(free) < 0.8 * np.mean(lat)


def test_processor_sharing_is_insensitive_to_the_service_law() -> None:
    """M/D/1-PS (one replica, many slots, one core) has mean response 1 / (1 − rho), not FIFO's M/D/1 value."""
    rho = 0.6
    tr = poisson(rate_rps=rho, n_requests=120_000, seed=5)
    ps = latency(deployment(concurrency=40, host={"cores": 1, "threads": 1}), tr)
    assert np.mean(ps) == pytest.approx(1.0 / (1.0 - rho), rel=0.04)
    fifo = latency(deployment(), tr)  # the M/D/1 queue, FIFO
    assert np.mean(fifo) == pytest.approx(1.0 + rho / (2 * (1 - rho)), rel=0.04)


def test_enough_cores_change_nothing() -> None:
    """Two one-thread replicas on two cores never contend: the very same schedule as without a host."""
    tr = poisson(rate_rps=1.5, n_requests=3000, seed=2)
    kw: dict[str, Any] = {"replicas": 2, "service_time": {"distribution": "lognormal", "mean_s": 1.0, "cv": 0.5},
                          "balancer": {"policy": "p2c"}}  # fmt: skip
    a = simulate(deployment(**kw), tr, seed=1).requests
    b = simulate(deployment(**kw, host={"cores": 2, "threads": 1}), tr, seed=1).requests
    np.testing.assert_allclose(b["latency_s"], a["latency_s"], rtol=1e-12)
    np.testing.assert_array_equal(b["replica"], a["replica"])


def test_threads_oversubscribe_the_cores() -> None:
    """2 replicas × 2 threads on 2 cores: alone a service runs at full speed, two at once at half."""
    dep = deployment(replicas=2, balancer={"policy": "round_robin"}, host={"cores": 2, "threads": 2})
    np.testing.assert_allclose(latency(dep, at(0.0)), [1.0])
    np.testing.assert_allclose(latency(dep, at(0.0, 0.0)), [2.0, 2.0])
    # the second starts at 0.5: until then the first ran alone (0.5 done); both at half speed
    # until the first ends at 0.5 + 0.5 / 0.5 = 1.5; the second has 0.5 left, alone: ends at 2.0
    np.testing.assert_allclose(latency(dep, at(0.0, 0.5)), [1.5, 1.5])


def test_default_threads_fit_the_cores() -> None:
    assert deployment(replicas=2, host={"cores": 4}).host_threads() == 2
    assert deployment(replicas=3, host={"cores": 2}).host_threads() == 1
    dep = deployment(replicas=2, host={"cores": 2})
    np.testing.assert_allclose(latency(dep, at(0.0, 0.0)), [1.0, 1.0])


def test_a_queued_request_starts_when_the_host_ends_the_one_before() -> None:
    """One replica, one slot, two one-thread replicas on one core: FIFO within a replica, sharing across them."""
    dep = deployment(replicas=2, balancer={"policy": "round_robin"}, host={"cores": 1, "threads": 1})
    # requests 0, 2 go to replica 0 and 1 to replica 1; 0 and 1 share the core from t=0 (end at 2);
    # 2 waits behind 0, then runs alone: 2 → 3
    lat = latency(dep, at(0.0, 0.0, 0.0))
    np.testing.assert_allclose(lat, [2.0, 2.0, 3.0])


def test_router_and_load_generator_cpu_comes_first() -> None:
    """1 core, 0.1 CPU s per request, an arrival every 0.5 s: the replica gets 1 − 0.1 × (arrivals in the last second)."""
    dep = deployment(service_time={"distribution": "deterministic", "mean_s": 0.2},
                     host={"cores": 1, "threads": 1, "cpu_per_request_s": 0.1})  # fmt: skip
    lat = latency(dep, at(0.0, 0.5, 1.0, 1.5, 2.0))
    left = np.array([0.9, 0.8, 0.7, 0.7, 0.7])  # [t − 1, t] holds 1, 2, then 3 arrivals
    np.testing.assert_allclose(lat, 0.2 / left, rtol=1e-12)


def test_background_cores_are_taken_whatever_the_traffic() -> None:
    """Half of one core taken by the router's idle loop: a lone service runs at half speed;
    on two cores the one replica still has a whole core."""
    one = deployment(host={"cores": 1, "threads": 1, "background_cores": 0.5})
    np.testing.assert_allclose(latency(one, at(0.0, 10.0)), [2.0, 2.0])
    two = deployment(host={"cores": 2, "threads": 1, "background_cores": 0.5})
    np.testing.assert_allclose(latency(two, at(0.0, 10.0)), [1.0, 1.0])


def test_batches_share_the_host() -> None:
    dep = deployment(replicas=2, balancer={"policy": "round_robin"}, host={"cores": 1, "threads": 1},
                     batching={"max_batch_size": 4, "max_wait_s": 0.0}, queue={"capacity": 8})  # fmt: skip
    np.testing.assert_allclose(latency(dep, at(0.0, 0.0)), [2.0, 2.0])
    # the third request queues at replica 0 behind its running batch, then runs alone
    np.testing.assert_allclose(latency(dep, at(0.0, 0.0, 0.0)), [2.0, 2.0, 3.0])


def test_a_batch_that_waits_after_the_last_arrival_still_runs() -> None:
    """The last request queues behind a running batch and, when it ends, waits for its batch
    to fill (0.5 s): the run must drain the host's ends and that timer, not leave it pending."""
    kw: dict[str, Any] = {"batching": {"max_batch_size": 4, "max_wait_s": 0.5}, "queue": {"capacity": 8}}
    shared = simulate(deployment(**kw, host={"cores": 1, "threads": 1}), at(0.0, 1.3), seed=0).requests
    assert list(shared["status"]) == ["completed", "completed"]
    # the first waits 0.5 s and runs to 1.5; the second waits from 1.3 to 1.8, runs to 2.8
    np.testing.assert_allclose(shared["latency_s"], [1.5, 1.5])
    alone = simulate(deployment(**kw), at(0.0, 1.3), seed=0).requests
    np.testing.assert_allclose(shared["latency_s"], alone["latency_s"])


def test_only_local_pools_share_the_host() -> None:
    pools = [{"name": "here", "instance_type": "local", "replicas": 1},
             {"name": "cloud", "instance_type": "c7i.xlarge", "replicas": 1}]  # fmt: skip
    dep = deployment(pools=pools, balancer={"policy": "round_robin"}, host={"cores": 1, "threads": 1})
    np.testing.assert_allclose(latency(dep, at(0.0, 0.0)), [1.0, 1.0])
    both = [{**p, "instance_type": "local"} for p in pools]
    dep = deployment(pools=both, balancer={"policy": "round_robin"}, host={"cores": 1, "threads": 1})
    np.testing.assert_allclose(latency(dep, at(0.0, 0.0)), [2.0, 2.0])


def test_queue_capacity_on_the_host() -> None:
    dep = deployment(host={"cores": 1, "threads": 1}, queue={"capacity": 1})
    res = simulate(dep, at(0.0, 0.1, 0.2), seed=0)
    assert list(res.requests["status"]) == ["completed", "completed", "rejected"]
    assert res.to_doc()["rejections"] == {"queue_full": 1}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"instance_type": "c7i.xlarge"}, "no pool runs on instance_type 'local'"),
        ({"scaling": {"mode": "autoscale", "min_replicas": 1, "max_replicas": 2, "target_in_flight": 1}},
         "not modelled with scaling mode 'autoscale'"),
        ({"faults": {"mtbf_s": 10, "mttr_s": 1}}, "not modelled with faults"),
        ({"host": {"cores": 0}}, "host.cores"),
    ],
)  # fmt: skip
def test_host_errors_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        deployment(**{"host": {"cores": 2}, **fields})
