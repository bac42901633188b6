"""``policies.from_config``: the one place a deployment's policy objects are built."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from servewise.config import Deployment, parse_deployment
from servewise.policies import (
    DynamicBatching,
    LRUCache,
    PowerOfDChoices,
    RoundRobin,
    TargetInFlight,
    TTLCache,
    batching_from_config,
    from_config,
)
from servewise.simulator._engine import Engine
from servewise.trace import Trace


def deployment(**fields: Any) -> Deployment:
    doc: dict[str, Any] = {"replicas": 2, "service_time": {"distribution": "deterministic", "mean_s": 0.1}}
    doc.update(fields)
    return parse_deployment(doc)


FULL = {
    "balancer": {"policy": "p2c", "d": 3},
    "cache": {"policy": "ttl", "capacity": 50, "ttl_s": 2.0},
    "batching": {"max_batch_size": 4, "max_wait_s": 0.01},
    "queue": {"capacity": 8},
    "scaling": {
        "mode": "autoscale", "min_replicas": 1, "max_replicas": 4, "target_in_flight": 2.0, "interval_s": 1.0,
        "scale_down_stabilization_s": 30.0, "tolerance": 0.2,
    },
}  # fmt: skip


def test_every_family_is_built_with_the_deployments_parameters():
    p = from_config(deployment(**FULL), rng=np.random.default_rng(0))
    assert isinstance(p.balancer, PowerOfDChoices) and p.balancer.d == 3
    assert isinstance(p.cache, TTLCache) and p.cache.capacity == 50 and p.cache.ttl_s == 2.0
    assert isinstance(p.batching, DynamicBatching) and (p.batching.max_batch_size, p.batching.max_wait_s) == (4, 0.01)
    assert isinstance(p.scaling, TargetInFlight)
    assert (p.scaling.target, p.scaling.min_replicas, p.scaling.max_replicas) == (2.0, 1, 4)
    assert (p.scaling.scale_down_stabilization_s, p.scaling.tolerance) == (30.0, 0.2)
    assert p.configs["balancer"] == ("p2c", {"d": 3})
    assert p.configs["cache"] == ("ttl", {"capacity": 50, "ttl_s": 2.0})


def test_what_a_deployment_leaves_out_is_none():
    p = from_config(deployment(batching={"max_batch_size": 1, "max_wait_s": 0.0}), rng=np.random.default_rng(0))
    assert isinstance(p.balancer, RoundRobin)
    assert p.cache is None and p.batching is None and p.scaling is None  # batch of 1 without a wait: no batching
    assert p.configs == {"balancer": ("round_robin", {}), "cache": None, "batching": None, "scaling": None}
    lru = from_config(deployment(cache={"capacity": 3}), rng=np.random.default_rng(0)).cache
    assert isinstance(lru, LRUCache) and lru.capacity == 3


def test_batching_from_config_is_the_factorys_rule():
    dep = deployment(**FULL)
    rule = batching_from_config(dep.batching)
    assert isinstance(rule, DynamicBatching) and rule.max_batch_size == 4
    assert batching_from_config(None) is None


def test_the_simulator_builds_its_policies_with_the_factory():
    dep = deployment(**FULL)
    trace = Trace(
        arrival_s=np.array([0.0, 0.5]),
        input_tokens=np.ones(2, dtype=np.int64),
        output_tokens=np.ones(2, dtype=np.int64),
        key=np.array([1, 2], dtype=np.int64),
        source="test",
    )
    engine = Engine(dep, trace, seed=0)
    assert engine.policies.configs == from_config(dep, rng=np.random.default_rng(0)).configs
    assert engine.lb is engine.policies.balancer and engine.cache is engine.policies.cache
    assert engine.batcher is engine.policies.batching


@pytest.mark.parametrize("policy", ["round_robin", "random", "least_outstanding", "p2c", "consistent_hash", "weighted"])
def test_each_balancer_comes_from_its_registry_name(policy):
    p = from_config(deployment(balancer={"policy": policy}), rng=np.random.default_rng(0))
    assert type(p.balancer).name == policy  # type: ignore[attr-defined]
