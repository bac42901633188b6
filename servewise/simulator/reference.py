"""A straightforward SimPy model: one process per request, one ``simpy.Resource`` per replica.

It supports the plain case only (fixed replicas of one pool, FIFO, ``concurrency`` slots,
no batching, cache, queue limit or faults) and exists to cross-check the engine's exact
fast path and to measure how much faster that path is (``bench/bench_simulator.py``).
It draws service times and balancer randomness from the same seeded streams as the
engine, so for the same inputs both give the same per-request times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from servewise.config import Deployment
from servewise.errors import ConfigError
from servewise.policies import lb_policies
from servewise.service import build_service
from servewise.trace import Trace

__all__ = ["reference_simulate", "ReferenceResult"]


@dataclass(frozen=True)
class ReferenceResult:
    replica: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray


class _Rep:
    __slots__ = ("id", "outstanding", "weight", "res")

    def __init__(self, rid: int, env: simpy.Environment, concurrency: int) -> None:
        self.id = rid
        self.outstanding = 0
        self.weight = float(concurrency)
        self.res = simpy.Resource(env, capacity=concurrency)


def reference_simulate(deployment: Deployment, trace: Trace, *, seed: int = 0) -> ReferenceResult:
    """Simulate the plain case with one SimPy process per request."""
    d = deployment
    pools = d.resolved_pools()
    if (
        len(pools) != 1
        or d.scaling.mode != "fixed"
        or d.batching is not None
        or d.cache is not None
        or d.faults is not None
        or d.queue.capacity is not None
        or pools[0].speed_factor != 1.0
    ):
        raise ConfigError("the reference model supports one fixed pool, FIFO, no batching/cache/queue limit/faults")
    streams = np.random.SeedSequence(seed).spawn(5)
    svc = (
        build_service(
            d,
            batch_cost_factor=0.0,
            rng=np.random.default_rng(streams[0]),
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
        )
        .request_times()
        .tolist()
    )
    lb = lb_policies.get(d.balancer.policy)(rng=np.random.default_rng(streams[1]), **d.balancer.params())
    env = simpy.Environment()
    conc = pools[0].concurrency or d.concurrency
    reps = [_Rep(k, env, conc) for k in range(pools[0].replicas)]
    n = len(trace)
    rep_of = np.full(n, -1, dtype=np.int64)
    start = np.full(n, np.nan)
    end = np.full(n, np.nan)

    def request(i: int) -> Any:
        r = reps[lb.choose(reps, trace[i])] if len(reps) > 1 else reps[0]
        r.outstanding += 1
        rep_of[i] = r.id
        with r.res.request() as slot:
            yield slot
            start[i] = env.now
            yield env.timeout(svc[i])
        end[i] = env.now
        r.outstanding -= 1

    def source() -> Any:
        arr = trace.arrival_s.tolist()
        for i, t in enumerate(arr):
            if t > env.now:
                yield env.timeout(t - env.now)
            env.process(request(i))

    env.process(source())
    env.run()
    return ReferenceResult(replica=rep_of, start_s=start, end_s=end)
