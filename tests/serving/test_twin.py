"""The live router and the simulator build their policies from a deployment the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servewise.config import parse_deployment
from servewise.serving import ServeSettings
from servewise.serving._router import Router
from servewise.simulator._engine import Engine
from servewise.trace import Trace

DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "p2c, lru, batching": {
        "balancer": {"policy": "p2c", "d": 3},
        "cache": {"policy": "lru", "capacity": 100, "ttl_s": 5.0},
        "batching": {"max_batch_size": 8, "max_wait_s": 0.02},
        "queue": {"capacity": 16},
    },
    "consistent hash, fifo, autoscale": {
        "balancer": {"policy": "consistent_hash", "virtual_nodes": 50, "load_bound": 1.5},
        "cache": {"policy": "fifo", "capacity": 10},
        "scaling": {
            "mode": "autoscale", "min_replicas": 1, "max_replicas": 5, "target_in_flight": 3.0, "interval_s": 2.0,
            "scale_up_stabilization_s": 4.0, "tolerance": 0.05,
        },
    },  # fmt: skip
}


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_router_and_simulator_get_equal_policy_configs_from_one_deployment(name):
    doc = {"replicas": 2, "service_time": {"distribution": "deterministic", "mean_s": 0.1}, **DEPLOYMENTS[name]}
    dep = parse_deployment(doc)
    router = Router(dep, Path("deployment.yaml"), ServeSettings())
    trace = Trace(
        arrival_s=np.array([0.0, 1.0]),
        input_tokens=np.ones(2, dtype=np.int64),
        output_tokens=np.ones(2, dtype=np.int64),
        key=np.array([1, 2], dtype=np.int64),
        source="test",
    )
    engine = Engine(dep, trace, seed=0)
    assert router.policies.configs == engine.policies.configs
    for family in ("balancer", "cache", "batching", "scaling"):
        assert type(getattr(router.policies, family)) is type(getattr(engine.policies, family)), family
    # and the router decides with those very objects
    assert router.dispatcher.lb is router.policies.balancer
    assert (router.answers.policy if router.answers is not None else None) is router.policies.cache
    assert router.fleet.rule is router.policies.scaling
