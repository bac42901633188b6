"""The discrete-event engine: a SimPy environment plus an exact request fast path.

SimPy owns the *control* events: replica failures and repairs, autoscaler ticks,
readiness after a cold start, and dynamic-batching timers. Requests are not SimPy
processes. Each replica is a FIFO queue in front of ``concurrency`` slots, so a
request's start and end are known exactly when it is admitted (the Kiefer–Wolfowitz
recursion over the replica's slot-free times); completions go onto one heap and are
drained, in time order, whenever the state at some time is needed (before a routing
decision, a cache lookup, an autoscaler tick, a failure). The result is the same as
scheduling one completion event per request, without the per-request event cost.

Arrivals are fed in time order by one SimPy process running the arrival loop both
engines share (:class:`._arrivals.TraceReplay`); between control events it processes
arrivals in a tight loop, yielding to SimPy only when a control event is due
at or before the next arrival (ties: the control event first).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from servewise.config import Deployment, Pool
from servewise.errors import ConfigError
from servewise.policies import PolicySet, ResponseCache, from_config, warm_instance
from servewise.service import ProfileServiceModel, build_service
from servewise.trace import Request, Trace

from ._arrivals import CACHE_HIT, COMPLETED, FAILED, PENDING, REJECTED, STATUS_NAMES, TraceReplay
from ._host import SharedHost

__all__ = ["Engine", "RawResult", "Replica", "build_cache", "PENDING", "COMPLETED", "CACHE_HIT", "REJECTED", "FAILED", "STATUS_NAMES"]


# replica states
_UP, _DOWN, _DRAINING, _GONE = 0, 1, 2, 3

_INF = math.inf


class Replica:
    """One replica: a FIFO queue in front of ``concurrency`` slots (a slot runs a request or a batch)."""

    __slots__ = (
        "id",
        "pool",
        "concurrency",
        "speed",
        "weight",
        "outstanding",
        "slots",
        "waiting",
        "active",
        "bq",
        "timer_at",
        "launched_at",
        "last_routed",
        "ready_at",
        "ended_at",
        "busy_until",
        "busy_s",
        "down_s",
        "down_since",
        "starting_s",
        "state",
    )

    def __init__(self, rid: int, pool: int, concurrency: int, speed: float, weight: float, launched_at: float, ready_at: float) -> None:
        self.id = rid
        self.pool = pool
        self.concurrency = concurrency
        self.speed = speed
        self.weight = weight
        self.outstanding = 0
        self.slots = [ready_at] * concurrency  # heap of slot-free times
        self.waiting: deque[float] = deque()  # start times of admitted requests still waiting
        self.active: set[int] = set()  # admitted, not finished (kept only with faults)
        self.bq: deque[int] = deque()  # batching: requests waiting to be batched
        self.timer_at: float | None = None
        self.launched_at = launched_at
        self.last_routed = launched_at
        self.ready_at = ready_at
        self.ended_at: float | None = None
        self.busy_until = ready_at
        self.busy_s = 0.0  # slot-seconds spent serving
        self.down_s = 0.0
        self.down_since = 0.0
        self.starting_s = ready_at - launched_at  # time spent (re)loading the model
        self.state = _UP


@dataclass
class RawResult:
    """What the engine produced, before summarising (see ``simulator._result``)."""

    trace: Trace
    deployment: Deployment
    seed: int
    status: np.ndarray
    replica: np.ndarray
    pool: np.ndarray
    dispatch_s: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    cold_start_s: np.ndarray
    retries: np.ndarray
    batch_size: np.ndarray
    replicas: list[Replica]
    timeline: list[tuple[float, int]]  # (time, replicas alive) after each change
    horizon_s: float
    cold_starts: int
    restarts: int
    serverless_busy_s: float
    reject_reason: dict[int, str] = field(default_factory=dict)  # request index -> its cause
    served_input_tokens: np.ndarray | None = None  # a profiled model: prompts as the server clips them
    overhead_s: np.ndarray | None = None  # a calibrated model: each request's time outside the replica slot
    llm: Any = None  # simulator._llm.LLMRaw for engine 'continuous'
    pool_kv: list[dict[str, Any]] | None = None  # engine 'continuous': KV capacity of each pool


def build_cache(policies: PolicySet, trace: Trace) -> ResponseCache | None:
    """The deployment's response cache (``policies.cache``; None without one); a cache needs request keys."""
    if policies.cache is None:
        return None
    if trace.key is None:
        raise ConfigError(
            "cache is configured but the trace has no request keys; add keys "
            "(e.g. --zipf-keys N --zipf-alpha A) or remove 'cache'"
        )
    return policies.cache



def allowed_pools(deployment: Deployment, trace: Trace) -> list[frozenset[int] | None] | None:
    """Per request, the pool indices its traffic class may use (``deployment.placement``); None = any."""
    if not deployment.placement:
        return None
    index = {p.name: k for k, p in enumerate(deployment.resolved_pools())}
    per_class = [
        frozenset(index[n] for n in deployment.placement[c]) if c in deployment.placement else None
        for c in trace.class_names
    ]
    return [per_class[c] for c in trace.traffic_class.tolist()]

class Engine(TraceReplay):
    """Simulates one deployment against one trace; :meth:`run` returns a :class:`RawResult`."""

    def __init__(
        self,
        deployment: Deployment,
        trace: Trace,
        *,
        seed: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self._progress = progress
        if len(trace) == 0:
            raise ConfigError("the trace holds no requests")
        self.dep = deployment
        self.trace = trace
        self.seed = seed
        streams = np.random.SeedSequence(seed).spawn(5)
        self._rng_service = np.random.default_rng(streams[0])
        self._rng_lb = np.random.default_rng(streams[1])
        self._rng_faults = np.random.default_rng(streams[2])
        self._rng_batch = np.random.default_rng(streams[3])
        self._rng_overhead = np.random.default_rng(streams[4])

        self.env = simpy.Environment()
        n = len(trace)
        self.n = n
        self.arr: list[float] = trace.arrival_s.tolist()
        self.keys: list[int] | None = trace.key.tolist() if trace.key is not None else None
        # columns as python lists, to build the Request a balancer sees cheaply
        self._cols = (
            trace.input_tokens.tolist(),
            trace.output_tokens.tolist(),
            self.keys if self.keys is not None else [None] * n,
            trace.prefix_blocks if trace.prefix_blocks is not None else [()] * n,
            [trace.class_names[c] for c in trace.traffic_class.tolist()],
        )
        self.pools: tuple[Pool, ...] = deployment.resolved_pools()

        self._services(deployment, trace)

        # built by the same factory as the live router's (policy names and parameters were checked by the config)
        self.policies = from_config(deployment, rng=self._rng_lb)
        self.lb = self.policies.balancer
        self.allowed_pools = allowed_pools(deployment, trace)

        self.cache = build_cache(self.policies, trace)
        self.hit_latency_s = deployment.cache.hit_latency_s if deployment.cache else 0.0

        self.qcap = deployment.queue.capacity
        bat = deployment.batching
        self.batcher = self.policies.batching
        self.batching = self.batcher is not None
        self.max_batch = bat.max_batch_size if bat else 1
        # queue.capacity >= batching.max_batch_size is the Deployment contract's rule

        self.faults = deployment.faults
        self.mode = deployment.scaling.mode
        self.warm_rule = deployment.scaling.warm_rule
        self.cold_start_s = deployment.cold_start_s()  # scaling.cold_start_s, or the profile's load time

        self._request_state(n)
        self._admit: Callable[[Replica, int, float], bool] = self._admit_batch if self.batching else self._admit_fifo
        self._host(deployment)

    def _services(self, deployment: Deployment, trace: Trace) -> None:
        """The service-time model (batches) and each request's own service time."""
        self.service = build_service(
            deployment,
            batch_cost_factor=deployment.batching.batch_cost_factor if deployment.batching else 0.0,
            rng=self._rng_batch,
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
        )
        # Drawn once per request from their own stream: common random numbers across deployments.
        self.svc: list[float] = build_service(
            deployment,
            batch_cost_factor=0.0,
            rng=self._rng_service,
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
        ).request_times().tolist()
        self.served_in: np.ndarray | None = None
        self.idle_cal = None  # a calibration that charges the idle gap before each service
        if deployment.model is not None:
            cal = deployment.model.loaded().serving
            if cal is not None and cal.idle_factors:
                self.idle_cal = cal
            over = deployment.model.loaded().over_window(trace.output_tokens)
            self.invalid = over.tolist() if over is not None else None
            assert isinstance(self.service, ProfileServiceModel)
            self.served_in = self.service.served_input_tokens

    def _host(self, deployment: Deployment) -> None:
        """CPU contention on the local host (``deployment.host``): which pools share it."""
        host = deployment.host
        self.shares_host = [host is not None and p.instance_type == "local" for p in self.pools]
        self.host: SharedHost | None = None
        if host is None:
            return
        threads = deployment.host_threads()
        assert threads is not None
        self.host = SharedHost(
            host.cores, threads, deployment.host_cpu_per_request_s(), self.arr, deployment.host_background_cores()
        )
        fifo = self._admit
        shares = self.shares_host

        def admit(r: Replica, i: int, now: float) -> bool:
            return self._admit_shared(r, i, now) if shares[r.pool] else fifo(r, i, now)

        if not self.batching:
            self._admit = admit

    def _request_state(self, n: int) -> None:
        """Per-request state (python lists: fast scalar access) and the fleet's counters."""
        self.status = [PENDING] * n
        self.reject_reason: dict[int, str] = {}
        self.rep = [-1] * n
        self.rep_obj: list[Replica | None] = [None] * n
        self.dispatch = [math.nan] * n
        self.start = [math.nan] * n
        self.end = [math.nan] * n
        self.cold = [0.0] * n
        self.retries = [0] * n
        self.bsize = [0] * n
        self.batch_of = [-1] * n  # batching: id of the batch a dispatched request runs in
        self._next_batch = 0
        self.attempt = [0] * n

        self.done: list[tuple[float, int, int]] = []  # (end, request, attempt)
        self.replicas: list[Replica] = []
        self.routable: list[Replica] = []
        self.events: list[tuple[float, int]] = []  # (time, +1/-1 replicas alive)
        self.cold_starts = 0
        self.restarts = 0
        self._next_id = 0
        self._finished = False

    # ------------------------------------------------------------------ replicas

    def _concurrency(self, pool: Pool) -> int:
        return pool.concurrency if pool.concurrency is not None else self.dep.concurrency

    def _launch(self, pool_idx: int, now: float, cold_start_s: float, *, initial: bool = False) -> Replica:
        """Start a replica at ``now``, serving from ``now + cold_start_s``; every launch
        after the initial fleet counts as a cold start."""
        pool = self.pools[pool_idx]
        conc = self._concurrency(pool)
        weight = pool.weight if pool.weight is not None else pool.speed_factor * conc
        r = Replica(self._next_id, pool_idx, conc, pool.speed_factor, weight, now, now + cold_start_s)
        self._next_id += 1
        self.replicas.append(r)
        self.events.append((now, 1))
        if not initial:
            self.cold_starts += 1
        if cold_start_s > 0 and self.mode != "serverless":  # serverless routes to starting instances itself
            self._route_when_ready(r)
        if self.faults is not None:
            self.env.process(self._fault_loop(r))
        return r

    def _route_when_ready(self, r: Replica) -> None:
        """Rebuild the routable replicas when ``r`` finishes its current cold start."""

        def on_ready(_ev: Any, ready_at: float = r.ready_at) -> None:
            self._rebuild_routable(ready_at)

        self.env.timeout(max(0.0, r.ready_at - self.env.now)).callbacks.append(on_ready)

    def _end_replica(self, r: Replica, t: float) -> None:
        r.state = _GONE
        r.ended_at = t
        self.events.append((t, -1))

    def _rebuild_routable(self, now: float) -> None:
        up = [r for r in self.replicas if r.state == _UP]
        ready = [r for r in up if r.ready_at <= now]
        self.routable = ready if ready else up

    # ------------------------------------------------------------------ completions

    def _sync(self, now: float) -> None:
        """Apply every completion at or before ``now`` (in time order)."""
        if self.host is not None:
            self._sync_host(now)
        done = self.done
        if not done or done[0][0] > now:
            return
        attempt = self.attempt
        status = self.status
        rep_obj = self.rep_obj
        cache = self.cache
        keys = self.keys
        track = self.faults is not None
        pop = heapq.heappop
        while done and done[0][0] <= now:
            end, i, att = pop(done)
            if att != attempt[i]:
                continue
            r = rep_obj[i]
            assert r is not None
            r.outstanding -= 1
            status[i] = COMPLETED
            if track:
                r.active.discard(i)
            if cache is not None and keys is not None:
                cache.put(keys[i], end)

    # ------------------------------------------------------------------ admission

    def _admit_fifo(self, r: Replica, i: int, now: float) -> bool:
        slots = r.slots
        free = slots[0]
        start = free if free > now else now
        qcap = self.qcap
        if qcap is not None:
            w = r.waiting
            while w and w[0] <= now:
                w.popleft()
            # waiting for a free slot counts against the queue; waiting for a cold start does not
            if start > now and start > r.ready_at:
                if len(w) >= qcap:
                    self._reject(i, now, "queue_full")
                    return False
                w.append(start)
        s = self.svc[i] / r.speed
        if self.idle_cal is not None:
            s *= self._idle_factor(r, start)
        end = start + s
        heapq.heapreplace(slots, end)
        r.outstanding += 1
        r.busy_s += s
        if end > r.busy_until:
            r.busy_until = end
        self.rep[i] = r.id
        self.rep_obj[i] = r
        self.dispatch[i] = now
        self.start[i] = start
        self.end[i] = end
        self.bsize[i] = 1
        if r.ready_at > now:
            self.cold[i] = r.ready_at - now
        heapq.heappush(self.done, (end, i, self.attempt[i]))
        if self.faults is not None:
            r.active.add(i)
        return True

    # ------------------------------------------------------------------ the shared host

    def _admit_shared(self, r: Replica, i: int, now: float) -> bool:
        """FIFO admission on a replica of the shared host: start now on a free slot, or
        wait in the replica's queue until one of its services ends (end times are the
        host's, not known at admission)."""
        if r.slots[0] > now:
            if self.qcap is not None and len(r.bq) >= self.qcap:
                self._reject(i, now, "queue_full")
                return False
            r.bq.append(i)
        else:
            self._start_shared(r, [i], now, self._lone_work(r, i, now))
        r.outstanding += 1
        self.rep[i] = r.id
        self.rep_obj[i] = r
        self.dispatch[i] = now
        self.bsize[i] = 1
        return True

    def _lone_work(self, r: Replica, i: int, start: float) -> float:
        """Uncontended seconds of request ``i`` alone on ``r`` from ``start``."""
        s = self.svc[i] / r.speed
        return s * self._idle_factor(r, start) if self.idle_cal is not None else s

    def _idle_factor(self, r: Replica, start: float) -> float:
        """The calibrated factor for a service that starts on ``r`` at ``start``: by how long
        the replica had run nothing (0 when another of its slots is busy), as the worker
        measures it (``servewise calibrate``)."""
        cal = self.idle_cal
        assert cal is not None
        last = max(r.slots)  # a busy shared-host slot is inf
        return cal.idle_factor(start - last if start >= last else 0.0)

    def _start_shared(self, r: Replica, members: list[int], start: float, work_s: float) -> None:
        """Run a service (a request or a batch) of ``work_s`` uncontended seconds on the host."""
        host = self.host
        assert host is not None
        heapq.heapreplace(r.slots, _INF)  # busy until the host ends it
        self._batch_started(members, start)
        host.start(start, work_s, (r, members, start))

    def _batch_started(self, members: list[int], start: float) -> None:
        """Record that ``members`` run together from ``start`` (one batch id, its size)."""
        size = len(members)
        batch = self._next_batch
        self._next_batch += 1
        for m in members:
            self.batch_of[m] = batch
            self.start[m] = start
            self.bsize[m] = size

    def _sync_host(self, now: float) -> None:
        """End the host's services due by ``now``, in time order, starting what waited behind them."""
        host = self.host
        assert host is not None
        attempt = self.attempt
        while host.heap and host.next_end() <= now:
            t, (r, members, start) = host.finish()
            slots = r.slots
            slots.remove(_INF)
            slots.append(t)
            heapq.heapify(slots)
            r.busy_s += t - start
            if t > r.busy_until:
                r.busy_until = t
            for m in members:
                self.end[m] = t
                heapq.heappush(self.done, (t, m, attempt[m]))
            if self.batching:
                self._try_batch(r, t)
            elif r.bq:
                i = r.bq.popleft()
                self._start_shared(r, [i], t, self._lone_work(r, i, t))
        host.arrival(now)

    def _admit_batch(self, r: Replica, i: int, now: float) -> bool:
        if self.qcap is not None and len(r.bq) >= self.qcap:
            self._reject(i, now, "queue_full")
            return False
        r.bq.append(i)
        r.outstanding += 1
        self.rep[i] = r.id
        self.rep_obj[i] = r
        self.dispatch[i] = now
        if r.ready_at > now:
            self.cold[i] = r.ready_at - now
        if self.faults is not None:
            r.active.add(i)
        self._try_batch(r, now)
        return True

    def _try_batch(self, r: Replica, now: float) -> None:
        """Dispatch batches on ``r`` that are due at ``now``; arm a timer for the next decision."""
        bq = r.bq
        slots = r.slots
        batcher = self.batcher
        assert batcher is not None
        while bq:
            free = slots[0]
            if free > now:
                if free != _INF:  # a shared-host slot ends when the host says (_sync_host)
                    self._arm(r, free)
                return
            take, wake_s = batcher.decide(len(bq), self.dispatch[bq[0]], now)
            if take == 0:
                if wake_s is not None:
                    self._arm(r, wake_s)
                return
            self._dispatch_batch(r, [bq.popleft() for _ in range(take)], now)

    def _dispatch_batch(self, r: Replica, members: list[int], start: float) -> None:
        bt = self.service.batch_time(members) / r.speed
        if self.idle_cal is not None:
            bt *= self._idle_factor(r, start)
        if self.host is not None and self.shares_host[r.pool]:
            self._start_shared(r, members, start, bt)
            return
        end = start + bt
        heapq.heapreplace(r.slots, end)
        r.busy_s += bt
        if end > r.busy_until:
            r.busy_until = end
        attempt = self.attempt
        self._batch_started(members, start)
        for m in members:
            self.end[m] = end
            heapq.heappush(self.done, (end, m, attempt[m]))

    def _flush(self, r: Replica, now: float) -> None:
        """A draining replica runs what it has queued without waiting for batches to fill."""
        bq = r.bq
        B = self.max_batch
        while bq:
            start = max(now, r.slots[0])
            take = B if len(bq) >= B else len(bq)
            self._dispatch_batch(r, [bq.popleft() for _ in range(take)], start)
        r.timer_at = None

    def _arm(self, r: Replica, t: float) -> None:
        if r.timer_at is not None and r.timer_at <= t:
            return
        r.timer_at = t
        ev = self.env.timeout(max(0.0, t - self.env.now))

        def fire(_ev: Any, r: Replica = r, t: float = t) -> None:
            if r.timer_at == t:
                r.timer_at = None
            if r.state != _UP:
                return
            self._sync(t)
            self._try_batch(r, t)

        ev.callbacks.append(fire)

    # ------------------------------------------------------------------ routing

    def _request(self, i: int) -> Request:
        inp, out, key, blocks, cls = self._cols
        return Request(i, self.arr[i], inp[i], out[i], key[i], blocks[i], cls[i])

    def _route(self, i: int, now: float) -> None:
        """Send request ``i`` (arriving or retried at ``now``) to a replica, or reject / fail it."""
        if self.mode == "serverless":
            self._route_serverless(i, now)
            return
        routable = self.routable
        if self.allowed_pools is not None:
            allowed = self.allowed_pools[i]
            if allowed is not None:
                routable = [r for r in routable if r.pool in allowed]
                if not routable:  # no allowed replica is ready: wait for one still starting, as with no placement
                    routable = [r for r in self.replicas if r.state == _UP and r.pool in allowed]
        if not routable:
            self.status[i] = FAILED
            self.end[i] = now
            return
        r = routable[self.lb.choose(routable, self._request(i))] if len(routable) > 1 else routable[0]
        self._admit(r, i, now)

    def _route_serverless(self, i: int, now: float) -> None:
        sc = self.dep.scaling
        keep = sc.keep_alive_s
        assert keep is not None and sc.max_replicas is not None
        live = []
        for r in self.routable:
            if r.outstanding == 0 and not r.bq and r.busy_until + keep <= now:
                self._end_replica(r, r.busy_until + keep)
            else:
                live.append(r)
        self.routable = live
        per = self.max_batch if self.batching else 1
        free = [r for r in live if r.outstanding < r.concurrency * per]
        if free:
            k = warm_instance(self.warm_rule, free) if len(free) > 1 else 0
            if k is None:
                k = self.lb.choose(free, self._request(i))
            r = free[k]
        elif len(live) < sc.max_replicas:
            r = self._launch(0, now, self.cold_start_s)
            live.append(r)
        else:
            r = live[self.lb.choose(live, self._request(i))] if len(live) > 1 else live[0]
        r.last_routed = now
        self._admit(r, i, now)

    # ------------------------------------------------------------------ processes

    def _arrivals(self) -> Any:
        env = self.env
        sync = self._sync
        for t in self._replay():
            if env.peek() <= t:  # a control event is due first: let SimPy run it
                yield env.timeout(t - env.now)
        # drain: step through the remaining completions and timers
        done = self.done
        attempt = self.attempt
        while True:
            while done and done[0][2] != attempt[done[0][1]]:  # aborted by a failure: not a completion
                heapq.heappop(done)
            nxt = done[0][0] if done else _INF
            host = self.host
            if host is not None and host.heap:  # the shared host's next end: it may start what waits
                nxt = min(nxt, host.next_end())
            if nxt == _INF and not any(r.bq for r in self.replicas):
                break
            target = min(nxt, env.peek())
            if target == _INF:
                break
            yield env.timeout(max(0.0, target - env.now))
            sync(env.now)
        self._finished = True
        self._replayed()
        self._end_ev.succeed()

    def _autoscaler(self) -> Any:
        sc = self.dep.scaling
        assert sc.min_replicas is not None and sc.max_replicas is not None and sc.target_in_flight is not None
        rule = self.policies.scaling
        assert rule is not None
        env = self.env
        while True:
            yield env.timeout(sc.interval_s)
            if self._finished:
                return
            now = env.now
            self._sync(now)
            alive = [r for r in self.replicas if r.state in (_UP, _DOWN)]
            in_flight = sum(r.outstanding for r in alive)
            current = len(alive)
            desired = rule.desired(now, current, in_flight)
            if desired > current:
                for _ in range(desired - current):
                    self._launch(0, now, self.cold_start_s)
            elif desired < current:
                # starting replicas first (newest first), then the least loaded
                victims = sorted(
                    (r for r in alive if r.state == _UP),
                    key=lambda r: (r.ready_at <= now, r.outstanding, -r.id),
                )[: current - desired]
                for r in victims:
                    r.state = _DRAINING
                    if self.batching:
                        self._flush(r, now)
                    self._end_replica(r, max(now, r.busy_until) if r.outstanding else now)
            self._rebuild_routable(now)

    def _fault_loop(self, r: Replica) -> Any:
        f = self.faults
        assert f is not None
        env = self.env
        rng = self._rng_faults
        while True:
            yield env.timeout(float(rng.exponential(f.mtbf_s)))
            if self._finished or r.state in (_GONE, _DRAINING):
                return
            now = env.now
            self._fail(r, now)
            ttr = float(rng.exponential(f.mttr_s)) if f.repair == "exponential" else f.mttr_s
            yield env.timeout(ttr)
            if r.state != _DOWN:
                return
            now = env.now
            r.down_s += now - r.down_since
            # repaired: the replica reloads the model before it serves again
            cold = self.cold_start_s
            r.state = _UP
            r.ready_at = now + cold
            r.starting_s += cold
            r.slots = [r.ready_at] * r.concurrency
            r.waiting.clear()
            r.busy_until = r.ready_at
            self.restarts += 1
            self._rebuild_routable(now)
            if cold > 0:
                self._route_when_ready(r)

    def _fail(self, r: Replica, now: float) -> None:
        """Replica ``r`` fails at ``now``: its unfinished requests are retried elsewhere or fail."""
        f = self.faults
        assert f is not None
        self._sync(now)
        victims = sorted(r.active)
        seen_batches: set[int] = set()
        for i in victims:
            s, e = self.start[i], self.end[i]
            if not math.isnan(s) and e > now:  # dispatched: give back the unrun part (once per batch)
                if self.batching:
                    if self.batch_of[i] in seen_batches:
                        continue
                    seen_batches.add(self.batch_of[i])
                r.busy_s -= e - max(s, now)
        r.active.clear()
        r.bq.clear()
        r.outstanding = 0
        if r.ready_at > now:  # failed during its cold start: the rest of it never happens
            r.starting_s -= r.ready_at - now
            r.ready_at = now
        r.state = _DOWN
        r.down_since = now
        r.timer_at = None
        self._rebuild_routable(now)
        for i in victims:
            self.attempt[i] += 1
            self.start[i] = math.nan
            self.end[i] = math.nan
            self.rep[i] = -1
            self.rep_obj[i] = None
            self.cold[i] = 0.0
            if f.on_failure == "retry" and self.retries[i] < f.max_retries:
                self.retries[i] += 1
                self._route(i, now)
            else:
                self.status[i] = FAILED
                self.end[i] = now

    # ------------------------------------------------------------------ run

    def run(self) -> RawResult:
        env = self.env
        for pi, pool in enumerate(self.pools):
            for _ in range(pool.replicas):
                self._launch(pi, 0.0, 0.0, initial=True)
        self._rebuild_routable(0.0)
        self._end_ev = env.event()
        env.process(self._arrivals())
        if self.mode == "autoscale":
            env.process(self._autoscaler())
        env.run(until=self._end_ev)
        horizon = max(env.now, self.arr[-1])
        self._sync(_INF)
        # close what is still alive
        keep = self.dep.scaling.keep_alive_s
        for r in self.replicas:
            if r.state == _DOWN:
                r.down_s += horizon - r.down_since
            if r.state in (_UP, _DOWN):
                if self.mode == "serverless":
                    assert keep is not None
                    self._end_replica(r, r.busy_until + keep)
                else:
                    self._end_replica(r, horizon)
        busy = self._serverless_busy() if self.mode == "serverless" else 0.0
        status = np.asarray(self.status, dtype=np.int8)
        end = np.asarray(self.end)
        overhead = self._overhead(status)
        if overhead is not None:
            end = end + overhead  # latency only: the replica slot was free at the end of service
        return RawResult(
            trace=self.trace,
            deployment=self.dep,
            seed=self.seed,
            status=status,
            replica=np.asarray(self.rep, dtype=np.int64),
            pool=np.asarray([r.pool if r is not None else -1 for r in self.rep_obj], dtype=np.int64),
            dispatch_s=np.asarray(self.dispatch),
            start_s=np.asarray(self.start),
            end_s=end,
            cold_start_s=np.asarray(self.cold),
            retries=np.asarray(self.retries, dtype=np.int64),
            batch_size=np.asarray(self.bsize, dtype=np.int64),
            replicas=self.replicas,
            timeline=_timeline(self.events),
            horizon_s=horizon,
            cold_starts=self.cold_starts,
            restarts=self.restarts,
            serverless_busy_s=busy,
            reject_reason=self.reject_reason,
            served_input_tokens=self.served_in,
            overhead_s=overhead,
        )

    def _overhead(self, status: np.ndarray) -> np.ndarray | None:
        """Each completed request's time outside the replica slot, drawn from the variant's
        calibration (client and router HTTP, parsing, hops); None without one."""
        model = self.dep.model
        cal = model.loaded().serving if model is not None else None
        if cal is None:
            return None
        samples = np.asarray(cal.overhead_samples_s, dtype=float)
        drawn = samples[self._rng_overhead.integers(0, len(samples), size=len(status))]
        return np.where(status == COMPLETED, drawn, 0.0)

    def _serverless_busy(self) -> float:
        """Seconds during which some instance was starting or serving (summed over instances)."""
        by_rep: dict[int, list[tuple[float, float]]] = {r.id: [(r.launched_at, r.ready_at)] for r in self.replicas}
        for i in range(self.n):
            if self.status[i] == COMPLETED:
                by_rep[self.rep[i]].append((self.start[i], self.end[i]))
        total = 0.0
        for spans in by_rep.values():
            spans.sort()
            cur_s, cur_e = spans[0]
            for s, e in spans[1:]:
                if s > cur_e:
                    total += cur_e - cur_s
                    cur_s, cur_e = s, e
                elif e > cur_e:
                    cur_e = e
            total += cur_e - cur_s
        return total


def _timeline(events: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Cumulate (time, ±1) events into (time, replicas alive) points, one per distinct time."""
    out: list[tuple[float, int]] = []
    alive = 0
    for t, d in sorted(events, key=lambda e: e[0]):
        alive += d
        if out and out[-1][0] == t:
            out[-1] = (t, alive)
        else:
            out.append((t, alive))
    return out
