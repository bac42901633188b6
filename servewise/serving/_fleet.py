"""The router's replicas: launching, health checks, ejection, replacement and scaling.

A replica whose process exits is replaced (a cold start, counted in
``servewise_cold_starts_total``); ``eject_after`` failed health checks eject it and a
passing one readmits it; :meth:`Fleet.eject` is the passive ejection the dispatcher
applies when a request to a replica fails or hangs. ``autoscale`` evaluates the
deployment's scaling rule every ``interval_s`` and drains the replicas it removes;
``serverless`` stops instances idle for ``keep_alive_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from servewise.config import Pool
from servewise.policies import ScalingRule

from ._metrics import Metrics
from ._plan import Plan
from ._replicas import DEAD, DRAINING, EJECTED, READY, STARTING, Replica
from ._settings import ServeSettings
from ._warn import warn

__all__ = ["Fleet"]

_MAX_START_FAILURES = 3
"""Consecutive failed starts after which a pool is no longer restarted (the model does not load)."""


class Fleet:
    """Every replica the router launched, and the loops that keep the wanted ones up."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.replicas: list[Replica] = []
        self.draining = False
        self.cold_starts = 0
        self.restarts = 0
        self.t0 = time.monotonic()
        self.plan: Plan | None = None
        self.wanted: dict[str, int] = {}
        self.rule: ScalingRule | None = None
        self.session: aiohttp.ClientSession | None = None
        self.on_ready: Callable[[Replica], None] | None = None
        """Called with each replica that became ready (it reports the model's limits)."""
        self._next_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._start_failures: dict[str, int] = {}

    def configure(self, plan: Plan, rule: ScalingRule | None) -> None:
        """Serve ``plan`` from now on (replicas already running are left to the caller)."""
        self.plan = plan
        self.rule = rule
        self.wanted = dict(plan.wanted)
        self.metrics.init_pools([p.name for p in plan.pools])

    @property
    def _plan(self) -> Plan:
        assert self.plan is not None
        return self.plan

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the fleet cancels on :meth:`cancel_tasks`."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    # ------------------------------------------------------------------ launching

    def launch(self, pool: Pool, *, initial: bool) -> Replica:
        plan = self._plan
        spec = plan.specs[pool.name]
        weight = pool.weight if pool.weight is not None else pool.speed_factor * spec.concurrency
        r = Replica(self._next_id, pool.name, plan.pool_index[pool.name], spec, weight, initial=initial)
        self._next_id += 1
        self.replicas.append(r)
        if not initial:
            self.cold_starts += 1
            self.metrics.cold_starts.labels(pool.name).inc()
        self.set_in_flight(r)
        self.metrics.queue_depth.labels(r.pool, r.label).set(0)
        self.spawn(self._run_replica(r))
        self.refresh_gauges()
        return r

    async def _run_replica(self, r: Replica) -> None:
        await r.start(self.settings.worker_log)
        if r.state == DEAD:
            self._start_failures[r.pool] = self._start_failures.get(r.pool, 0) + 1
            self.metrics.errors.labels("internal").inc()
            warn(f"replica {r.id} ({r.pool}) failed to start: {r.error}")
        else:
            self._start_failures[r.pool] = 0
            if self.on_ready is not None:
                self.on_ready(r)
        self.refresh_gauges()
        await r.gone_event.wait()
        if r.state == DEAD and r.ready_at is not None:  # it served, then died: the reconciler replaces it
            self.restarts += 1
            self.metrics.errors.labels("replica_failed").inc()
            warn(f"replica {r.id} ({r.pool}) {r.error}; ejected")
        self.metrics.forget_replica(r.pool, r.label)
        self.refresh_gauges()
        self.reconcile()

    def alive(self, pool: str | None = None) -> list[Replica]:
        return [r for r in self.replicas if r.state in (STARTING, READY, EJECTED) and (pool is None or r.pool == pool)]

    def reconcile(self) -> None:
        """Start replicas until each pool has what it wants (fixed and autoscale; a dead one is replaced)."""
        if self.draining or self._plan.scaling_mode == "serverless":
            return
        for p in self._plan.pools:
            if self._start_failures.get(p.name, 0) >= _MAX_START_FAILURES:
                continue  # the model does not load: do not restart in a loop (errors are in the log)
            for _ in range(self.wanted[p.name] - len(self.alive(p.name))):
                self.launch(p, initial=False)

    async def start_initial(self) -> list[Replica]:
        """Launch the plan's replicas and wait until each is up or dead."""
        plan = self._plan
        fleet = [self.launch(p, initial=True) for p in plan.pools for _ in range(self.wanted[p.name])]
        await asyncio.gather(*(r.ready_event.wait() for r in fleet))
        return fleet

    # ------------------------------------------------------------------ state and gauges

    def refresh_gauges(self) -> None:
        m = self.metrics
        for p in self._plan.pools:
            alive = [r for r in self.replicas if r.pool == p.name and r.alive]
            m.replicas.labels(p.name).set(len(alive))
            m.replicas_ready.labels(p.name).set(sum(1 for r in alive if r.state == READY))

    def set_in_flight(self, r: Replica) -> None:
        self.metrics.in_flight.labels(r.pool, r.label).set(r.outstanding)

    def eject(self, r: Replica) -> None:
        """Passive ejection: a request to ``r`` failed or hung; health checks readmit it once it answers."""
        if r.state == READY:
            r.state = EJECTED
            r.health_failures = self.settings.eject_after
            self.refresh_gauges()

    # ------------------------------------------------------------------ control loops

    def start_loops(self) -> None:
        self.spawn(self._health_loop())
        if self.rule is not None:
            self.spawn(self._autoscale_loop())
        if self._plan.scaling_mode == "serverless":
            self.spawn(self._reaper_loop())

    async def _health_loop(self) -> None:
        interval = self.settings.health_interval_s
        timeout = aiohttp.ClientTimeout(total=max(1.0, interval))
        while True:
            await asyncio.sleep(interval)
            checks = [r for r in self.replicas if r.state in (READY, EJECTED) and r.port is not None]
            results = await asyncio.gather(*(self._probe(r, timeout) for r in checks))
            for r, ok in zip(checks, results, strict=True):
                self._judge(r, ok)
            self.refresh_gauges()

    def _judge(self, r: Replica, ok: bool) -> None:
        if r.state not in (READY, EJECTED):
            return
        if ok:
            r.health_failures = 0
            if r.state == EJECTED:
                r.state = READY
        else:
            r.health_failures += 1
            if r.state == READY and r.health_failures >= self.settings.eject_after:
                r.state = EJECTED
                self.metrics.errors.labels("timeout").inc()
                warn(f"replica {r.id} ({r.pool}) failed {r.health_failures} health checks; ejected")
        self.metrics.queue_depth.labels(r.pool, r.label).set(r.queued)

    async def _probe(self, r: Replica, timeout: aiohttp.ClientTimeout) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(f"{r.url}/healthz", timeout=timeout) as resp:
                if resp.status != 200:
                    return False
                data = await resp.json()
                r.queued = int(data.get("queued", 0))
                return bool(data.get("ready", False))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False

    async def _autoscale_loop(self) -> None:
        rule = self.rule
        assert rule is not None
        interval = self._plan.dep.scaling.interval_s
        while True:
            await asyncio.sleep(interval)
            if self.draining:
                return
            pool = self._plan.pools[0]
            alive = self.alive(pool.name)
            current = len(alive)
            desired = rule.desired(time.monotonic() - self.t0, current, sum(r.outstanding for r in alive))
            self.wanted[pool.name] = desired
            if desired > current:
                for _ in range(desired - current):
                    self.launch(pool, initial=False)
            elif desired < current:
                # starting replicas first (newest first), then the least loaded: as the simulator does
                victims = sorted(alive, key=lambda r: (r.state == READY, r.outstanding, -r.id))[: current - desired]
                for r in victims:
                    self.spawn(self.drain_replica(r))
            self.refresh_gauges()

    async def _reaper_loop(self) -> None:
        keep = self._plan.dep.scaling.keep_alive_s or 0.0
        while True:
            await asyncio.sleep(min(max(keep / 4, 0.05), 1.0))
            now = time.monotonic()
            for r in list(self.replicas):
                if r.state == READY and r.outstanding == 0 and now - r.last_busy >= keep:
                    self.spawn(self.drain_replica(r))

    async def drain_replica(self, r: Replica) -> None:
        """Stop routing to ``r``, wait for its requests, stop its process."""
        if r.state not in (STARTING, READY, EJECTED):
            return
        r.state = DRAINING
        self.refresh_gauges()
        while r.outstanding > 0 and r.proc is not None and r.proc.returncode is None:
            await asyncio.sleep(0.05)
        await r.stop()
        self.metrics.forget_replica(r.pool, r.label)
        self.refresh_gauges()
