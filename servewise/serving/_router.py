"""The router: the public HTTP API in front of the replica workers.

It makes the same decisions as the simulator, with the very same policy objects of
:mod:`servewise.policies`, built by the same :func:`servewise.policies.from_config` and
driven by real time instead of simulated time:

- the exact-match response cache is looked up on arrival (``policies.cache``);
- the load balancer picks among the ready replicas (``policies.balancer``), restricted to
  the pools a traffic class may use (``placement``, header ``X-Servewise-Class``);
- a replica's queue is bounded (``queue.capacity``, enforced by the worker: 429 with
  ``Retry-After``), and dynamic batching happens in the worker (``policies.batching``);
- ``scaling.mode: autoscale`` evaluates ``policies.scaling`` every ``interval_s`` and
  drains the replicas it removes; ``serverless`` starts an instance when every live one
  is busy, routes the request to it (the cold start is in that request's latency), and
  stops instances idle for ``keep_alive_s`` — down to zero.

The parts: :mod:`._validate` (the door), :mod:`._http` (handlers), :mod:`._dispatch`
(replica choice, retries, timeouts), :mod:`._fleet` (replica lifecycle, health,
scaling), :mod:`._outcomes` (metrics and request log), :mod:`._plan` (configuration).
SIGTERM drains: new requests get 503, in-flight ones finish, then the workers stop.
SIGHUP reloads the current version of the deployment (``servewise deploy rollback``)
with a rolling replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from servewise.config import Deployment
from servewise.errors import ConfigError
from servewise.policies import PolicySet, from_config

from ._dispatch import Dispatcher
from ._fleet import Fleet
from ._http import AnswerCache, Api
from ._metrics import Metrics
from ._outcomes import Outcomes
from ._plan import Plan, make_plan
from ._replicas import DEAD, STOPPED, Replica
from ._reqlog import RequestLog
from ._settings import ServeSettings
from ._validate import Door, ModelLimits

__all__ = ["Router", "ServeSettings"]

_CONNECT_TIMEOUT_S = 5.0


class Router:
    """Runs a deployment's replicas and answers the public API."""

    def __init__(self, deployment: Deployment, deployment_path: Path, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(*_slo_buckets(deployment))
        log = (
            RequestLog(settings.log_path, sample=settings.log_sample, redact=settings.log_redact, seed=settings.seed)
            if settings.log_path is not None
            else None
        )
        self.outcomes = Outcomes(self.metrics, log)
        self.fleet = Fleet(settings, self.metrics)
        self.fleet.on_ready = self._learn_limits
        self.door = Door(max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s, max_tokens=settings.max_tokens)
        self.pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._configure(deployment, deployment_path)

    # ------------------------------------------------------------------ configuration

    def _configure(self, dep: Deployment, path: Path) -> None:
        s = self.settings
        self.plan: Plan = make_plan(dep, path, s)
        self.policies: PolicySet = from_config(dep, rng=np.random.default_rng(s.seed))
        self.fleet.configure(self.plan, self.policies.scaling)
        self.dispatcher = Dispatcher(self.fleet, self.plan, self.policies.balancer)
        self.answers = AnswerCache(self.policies.cache, self.fleet.t0) if self.policies.cache is not None else None
        self.door.limits = ModelLimits(kind=self.plan.model_kind)
        self.door.model_name = self.plan.model_name
        self.door.cache_keys = self.answers is not None
        o = self.outcomes
        o.default_pool = self.plan.pools[0].name if self.plan.pools else "default"
        o.ttft_target_s = dep.slo.ttft_target_s if dep.slo is not None else None
        o.tpot_target_s = dep.slo.tpot_target_s if dep.slo is not None else None

    def _learn_limits(self, r: Replica) -> None:
        """A replica that loaded the model reports its window and vocabulary: check requests against them."""
        lim = r.limits
        self.door.limits = ModelLimits(
            kind=self.plan.model_kind or lim.get("kind"),
            window_tokens=lim.get("window_tokens"),
            vocab_size=lim.get("vocab_size"),
        )

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def max_pending(self) -> int:
        return self.plan.max_pending

    @property
    def draining(self) -> bool:
        return self.fleet.draining

    @property
    def replicas(self) -> list[Replica]:
        return self.fleet.replicas

    def enter(self) -> None:
        """A request is inside the router (counted against ``max_pending``; drain waits for it)."""
        self.pending += 1
        self._idle.clear()

    def leave(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._idle.set()

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        return Api(self).app()

    async def start(self) -> None:
        """Start the initial replicas and the control loops; returns when every initial replica is up."""
        self.fleet.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
        )
        fleet = await self.fleet.start_initial()
        dead = [r for r in fleet if r.state == DEAD]
        if dead and len(dead) == len(fleet):
            raise ConfigError(f"no replica could start: {dead[0].error}")
        self.fleet.start_loops()

    async def drain(self) -> None:
        """Refuse new requests, let in-flight ones finish (up to ``drain_timeout_s``), stop the workers."""
        self.fleet.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
        await self.close()

    async def close(self) -> None:
        fleet = self.fleet
        fleet.draining = True
        fleet.cancel_tasks()
        await asyncio.gather(*(r.stop() for r in fleet.replicas if r.proc is not None and r.state != DEAD), return_exceptions=True)
        for r in fleet.replicas:
            if r.state != DEAD:
                r.state = STOPPED
        if fleet.session is not None:
            await fleet.session.close()
        if self.outcomes.log is not None:
            self.outcomes.log.close()

    async def reload(self, dep: Deployment, path: Path) -> None:
        """Roll onto a new version: start its replicas, then drain the old ones."""
        old = [r for r in self.fleet.replicas if r.alive]
        self._configure(dep, path)
        fresh = [self.fleet.launch(p, initial=False) for p in self.plan.pools for _ in range(self.fleet.wanted[p.name])]
        await asyncio.gather(*(r.ready_event.wait() for r in fresh))
        for r in old:
            self.fleet.spawn(self.fleet.drain_replica(r))

    def stats(self) -> dict[str, Any]:
        return {
            "replicas": [
                {"id": r.id, "pool": r.pool, "state": r.state, "pid": r.pid, "port": r.port, "load_s": r.load_s}
                for r in self.fleet.replicas
            ],
            "cold_starts": self.fleet.cold_starts,
            "restarts": self.fleet.restarts,
        }


def _slo_buckets(dep: Deployment) -> tuple[tuple[float, ...], tuple[float, ...]]:
    slo = dep.slo
    if slo is None:
        return (), ()
    lat = tuple(v for k, v in slo.model_dump().items() if k.endswith("_latency_s") and isinstance(v, (int, float)))
    ttft = tuple(v for k, v in slo.model_dump().items() if k.startswith("p") and k.endswith("_ttft_s") and isinstance(v, (int, float)))
    return lat, ttft + ((slo.ttft_target_s,) if slo.ttft_target_s else ())
