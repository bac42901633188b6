"""The router: the public HTTP API in front of the replica workers.

It makes the same decisions as the simulator, with the very same policy objects of
:mod:`servewise.policies`, driven by real time instead of simulated time:

- the exact-match response cache is looked up on arrival (``cache_policies``);
- the load balancer picks among the ready replicas (``lb_policies``), restricted to the
  pools a traffic class may use (``placement``, header ``X-Servewise-Class``);
- a replica's queue is bounded (``queue.capacity``, enforced by the worker: 429 with
  ``Retry-After``), and dynamic batching happens in the worker (``batching_rules``);
- ``scaling.mode: autoscale`` evaluates ``autoscale_rules`` every ``interval_s`` and
  drains the replicas it removes; ``serverless`` starts an instance when every live one
  is busy, routes the request to it (the cold start is in that request's latency), and
  stops instances idle for ``keep_alive_s`` — down to zero.

Health: a replica whose process exits, or whose connection fails, is ejected at once
and its request retried on another replica (up to ``faults.max_retries``, default 2);
failed health checks eject it, passing ones readmit it; dead replicas are replaced (a
cold start, counted in ``servewise_cold_starts_total``). SIGTERM drains: new requests
get 503, in-flight ones finish, then the workers stop. SIGHUP reloads the current
version of the deployment (``servewise deploy rollback``) with a rolling replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np
from aiohttp import web
from pydantic import ValidationError

from servewise import __version__
from servewise.config import Deployment, Pool
from servewise.errors import ConfigError
from servewise.policies import autoscale_rules, cache_policies, lb_policies
from servewise.trace import Request

from ._api import CompletionBody, PredictBody, first_error, prompt_tokens
from ._metrics import CONTENT_TYPE, Metrics
from ._replicas import DEAD, DRAINING, EJECTED, READY, STARTING, STOPPED, Replica, WorkerSpec
from ._reqlog import RequestLog
from ._settings import ServeSettings

__all__ = ["Router", "ServeSettings"]

_HEADER_KEY = "X-Servewise-Key"
_HEADER_CLASS = "X-Servewise-Class"
_HEADER_REPLICA = "X-Servewise-Replica"
_HEADER_CACHE = "X-Servewise-Cache"
_HEADER_REQUEST_ID = "X-Request-Id"


@dataclass
class _Job:
    """One request on its way through the router."""

    id: str
    kind: Literal["completion", "predict"]
    arrived: float
    input_tokens: int
    output_tokens: int
    token_ids: list[int] | None
    text: str | None
    stream: bool
    key: Hashable | None
    traffic_class: str | None
    model: str
    prompt: Any = None
    retries: int = 0
    replica: Replica | None = None


class _Failed(Exception):
    def __init__(self, http_status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason


class _Rejected(Exception):
    def __init__(self, retry_after_s: float, message: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _error(status: int, message: str, *, kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status, headers=headers)


class Router:
    """Runs a deployment's replicas and answers the public API."""

    def __init__(self, deployment: Deployment, deployment_path: Path, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(*_slo_buckets(deployment))
        self.log = (
            RequestLog(settings.log_path, sample=settings.log_sample, redact=settings.log_redact, seed=settings.seed)
            if settings.log_path is not None
            else None
        )
        self.replicas: list[Replica] = []
        self.pending = 0
        self.draining = False
        self.cold_starts = 0
        self.restarts = 0
        self._next_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._answers: dict[Hashable, Any] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._start_failures: dict[str, int] = {}
        self.t0 = time.monotonic()
        self._configure(deployment, deployment_path)

    # ------------------------------------------------------------------ configuration

    def _configure(self, dep: Deployment, path: Path) -> None:
        s = self.settings
        self.dep = dep
        self.path = path
        pools = dep.resolved_pools()
        if s.pool is not None:
            names = [p.name for p in pools]
            if s.pool not in names:
                raise ConfigError(f"--pool {s.pool!r}: the deployment has pools {', '.join(names)}")
        self.pools: list[Pool] = [p for p in pools if s.pool is None or p.name == s.pool]
        self.pool_index = {p.name: k for k, p in enumerate(pools)}
        self.metrics.init_pools([p.name for p in self.pools])
        if dep.engine is not None:
            raise ConfigError(
                "engine: continuous batching is simulated but not served live yet; remove 'engine' to serve the "
                "deployment with dynamic batching"
            )
        mode = s.mode
        if mode == "auto":
            mode = "real" if dep.model is not None else "synthetic"
        if mode == "real" and dep.model is None:
            raise ConfigError(
                f"{path}: real mode needs a profiled model (model: profile/variant); this deployment has only a "
                "service_time distribution: use --mode synthetic"
            )
        self.mode = mode
        b = dep.balancer
        self.lb = lb_policies.get(b.policy)(rng=np.random.default_rng(s.seed), **b.params())
        self.cache = cache_policies.get(dep.cache.policy)(**dep.cache.params()) if dep.cache is not None else None
        self._answers = {}
        self.max_retries = dep.faults.max_retries if dep.faults is not None else 2
        bat = dep.batching
        self.per_slot = bat.max_batch_size if bat is not None else 1
        sc = dep.scaling
        self.scaling_mode = sc.mode
        self.rule = (
            autoscale_rules.get("target_in_flight")(
                target=sc.target_in_flight,
                min_replicas=sc.min_replicas,
                max_replicas=sc.max_replicas,
                scale_down_stabilization_s=sc.scale_down_stabilization_s,
                scale_up_stabilization_s=sc.scale_up_stabilization_s,
                tolerance=sc.tolerance,
            )
            if sc.mode == "autoscale"
            else None
        )
        threads = s.threads
        if threads is None:
            prof_threads = None
            if dep.model is not None and dep.model.resolved is not None:
                prof_threads = getattr(getattr(dep.model.resolved, "hardware", None), "threads_used", None)
            threads = prof_threads or 1
        workdir = s.workdir or Path.home() / ".cache" / "servewise" / "models"
        self.specs = {
            p.name: WorkerSpec(
                deployment_path=path,
                pool=p.name,
                mode=mode,
                threads=threads,
                seed=s.seed,
                workdir=workdir,
                concurrency=p.concurrency if p.concurrency is not None else dep.concurrency,
            )
            for p in self.pools
        }
        self.wanted: dict[str, int] = {}
        for p in self.pools:
            n = s.replicas if s.replicas is not None else p.replicas
            if sc.mode == "autoscale":
                assert sc.min_replicas is not None and sc.max_replicas is not None
                n = min(max(n, sc.min_replicas), sc.max_replicas)
            self.wanted[p.name] = n
        if s.max_pending is not None:
            self.max_pending = s.max_pending
        else:
            most = sum(
                (self.wanted[p.name] if sc.mode == "fixed" else (sc.max_replicas or 1))
                for p in self.pools
            )
            cap = dep.queue.capacity if dep.queue.capacity is not None else 256
            per = max(spec.concurrency for spec in self.specs.values()) * self.per_slot + cap
            self.max_pending = max(most, 1) * per
        self.upstream_timeout_s = s.upstream_timeout_s if s.upstream_timeout_s is not None else 300.0
        self.model_name = _model_name(dep)
        self.ttft_target = dep.slo.ttft_target_s if dep.slo is not None else None
        self.tpot_target = dep.slo.tpot_target_s if dep.slo is not None else None

    # ------------------------------------------------------------------ replicas

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _launch(self, pool: Pool, *, initial: bool) -> Replica:
        weight = pool.weight if pool.weight is not None else pool.speed_factor * self.specs[pool.name].concurrency
        r = Replica(self._next_id, pool.name, self.pool_index[pool.name], self.specs[pool.name], weight, initial=initial)
        self._next_id += 1
        self.replicas.append(r)
        if not initial:
            self.cold_starts += 1
            self.metrics.cold_starts.labels(pool.name).inc()
        self._set_in_flight(r)
        self.metrics.queue_depth.labels(r.pool, r.label).set(0)
        self._spawn(self._run_replica(r))
        self._refresh_gauges()
        return r

    async def _run_replica(self, r: Replica) -> None:
        await r.start(self.settings.worker_log)
        if r.state == DEAD:
            self._start_failures[r.pool] = self._start_failures.get(r.pool, 0) + 1
            self.metrics.errors.labels("internal").inc()
            _warn(f"replica {r.id} ({r.pool}) failed to start: {r.error}")
        else:
            self._start_failures[r.pool] = 0
        self._refresh_gauges()
        await r.gone_event.wait()
        if r.state == DEAD and r.ready_at is not None:  # it served, then died: the reconciler replaces it
            self.restarts += 1
            self.metrics.errors.labels("replica_failed").inc()
            _warn(f"replica {r.id} ({r.pool}) {r.error}; ejected")
        self.metrics.forget_replica(r.pool, r.label)
        self._refresh_gauges()
        self._reconcile()

    def _alive(self, pool: str | None = None) -> list[Replica]:
        return [r for r in self.replicas if r.state in (STARTING, READY, EJECTED) and (pool is None or r.pool == pool)]

    def _reconcile(self) -> None:
        """Start replicas until each pool has what it wants (fixed and autoscale; a dead one is replaced)."""
        if self.draining or self.scaling_mode == "serverless":
            return
        for p in self.pools:
            if self._start_failures.get(p.name, 0) >= 3:
                continue  # the model does not load: do not restart in a loop (errors are in the log)
            missing = self.wanted[p.name] - len(self._alive(p.name))
            for _ in range(missing):
                self._launch(p, initial=False)

    def _refresh_gauges(self) -> None:
        m = self.metrics
        for p in self.pools:
            alive = [r for r in self.replicas if r.pool == p.name and r.alive]
            m.replicas.labels(p.name).set(len(alive))
            m.replicas_ready.labels(p.name).set(sum(1 for r in alive if r.state == READY))

    def _set_in_flight(self, r: Replica) -> None:
        self.metrics.in_flight.labels(r.pool, r.label).set(r.outstanding)

    async def start(self) -> None:
        """Start the initial replicas and the control loops; returns when every initial replica is up."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout_s, sock_connect=5.0),
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
        )
        fleet = [self._launch(p, initial=True) for p in self.pools for _ in range(self.wanted[p.name])]
        await asyncio.gather(*(r.ready_event.wait() for r in fleet))
        dead = [r for r in fleet if r.state == DEAD]
        if dead and len(dead) == len(fleet):
            raise ConfigError(f"no replica could start: {dead[0].error}")
        self._spawn(self._health_loop())
        if self.rule is not None:
            self._spawn(self._autoscale_loop())
        if self.scaling_mode == "serverless":
            self._spawn(self._reaper_loop())

    # ------------------------------------------------------------------ control loops

    async def _health_loop(self) -> None:
        assert self._session is not None
        interval = self.settings.health_interval_s
        timeout = aiohttp.ClientTimeout(total=max(1.0, interval))
        while True:
            await asyncio.sleep(interval)
            checks = [r for r in self.replicas if r.state in (READY, EJECTED) and r.port is not None]
            results = await asyncio.gather(*(self._probe(r, timeout) for r in checks))
            for r, ok in zip(checks, results, strict=True):
                if r.state not in (READY, EJECTED):
                    continue
                if ok:
                    r.health_failures = 0
                    if r.state == EJECTED:
                        r.state = READY
                else:
                    r.health_failures += 1
                    if r.state == READY and r.health_failures >= self.settings.eject_after:
                        r.state = EJECTED
                        self.metrics.errors.labels("timeout").inc()
                        _warn(f"replica {r.id} ({r.pool}) failed {r.health_failures} health checks; ejected")
                self.metrics.queue_depth.labels(r.pool, r.label).set(r.queued)
            self._refresh_gauges()

    async def _probe(self, r: Replica, timeout: aiohttp.ClientTimeout) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(f"{r.url}/healthz", timeout=timeout) as resp:
                if resp.status != 200:
                    return False
                data = await resp.json()
                r.queued = int(data.get("queued", 0))
                return bool(data.get("ready", False))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False

    async def _autoscale_loop(self) -> None:
        assert self.rule is not None
        interval = self.dep.scaling.interval_s
        while True:
            await asyncio.sleep(interval)
            if self.draining:
                return
            pool = self.pools[0]
            alive = self._alive(pool.name)
            in_flight = sum(r.outstanding for r in alive)
            current = len(alive)
            desired = self.rule.desired(time.monotonic() - self.t0, current, in_flight)
            self.wanted[pool.name] = desired
            if desired > current:
                for _ in range(desired - current):
                    self._launch(pool, initial=False)
            elif desired < current:
                # starting replicas first (newest first), then the least loaded: as the simulator does
                victims = sorted(alive, key=lambda r: (r.state == READY, r.outstanding, -r.id))[: current - desired]
                for r in victims:
                    self._spawn(self._drain_replica(r))
            self._refresh_gauges()

    async def _reaper_loop(self) -> None:
        keep = self.dep.scaling.keep_alive_s or 0.0
        while True:
            await asyncio.sleep(min(max(keep / 4, 0.05), 1.0))
            now = time.monotonic()
            for r in list(self.replicas):
                if r.state == READY and r.outstanding == 0 and now - r.last_busy >= keep:
                    self._spawn(self._drain_replica(r))

    async def _drain_replica(self, r: Replica) -> None:
        if r.state not in (STARTING, READY, EJECTED):
            return
        r.state = DRAINING
        self._refresh_gauges()
        while r.outstanding > 0 and r.proc is not None and r.proc.returncode is None:
            await asyncio.sleep(0.05)
        await r.stop()
        self.metrics.forget_replica(r.pool, r.label)
        self._refresh_gauges()

    # ------------------------------------------------------------------ routing

    def _candidates(self, job: _Job) -> list[Replica]:
        allowed: set[int] | None = None
        placement = self.dep.placement
        if placement and job.traffic_class is not None and job.traffic_class in placement:
            allowed = {self.pool_index[n] for n in placement[job.traffic_class]}
        ok = [r for r in self.replicas if r.state == READY and (allowed is None or r.pool_index in allowed)]
        if ok:
            return ok
        # none ready: wait for one still starting (as the simulator routes to starting replicas)
        return [r for r in self.replicas if r.state == STARTING and (allowed is None or r.pool_index in allowed)]

    def _choose(self, replicas: list[Replica], job: _Job) -> Replica:
        if len(replicas) == 1:
            return replicas[0]
        req = Request(0, job.arrived - self.t0, job.input_tokens, job.output_tokens, _int_key(job.key), (), job.traffic_class or "default")
        return replicas[self.lb.choose(replicas, req)]

    async def _pick(self, job: _Job, exclude: set[int]) -> Replica:
        if self.scaling_mode == "serverless":
            return self._pick_serverless(job, exclude)
        cands = [r for r in self._candidates(job) if r.id not in exclude] or self._candidates(job)
        if not cands:
            # nothing alive: wait a little for a replacement being started by the reconciler
            deadline = time.monotonic() + min(self.upstream_timeout_s, 60.0)
            while not cands and time.monotonic() < deadline and not self.draining:
                self._reconcile()
                await asyncio.sleep(0.05)
                cands = self._candidates(job)
            if not cands:
                raise _Failed(503, "no replica is available", "replica_failed")
        return self._choose(cands, job)

    def _pick_serverless(self, job: _Job, exclude: set[int]) -> Replica:
        sc = self.dep.scaling
        assert sc.max_replicas is not None
        live = [r for r in self.replicas if r.state in (STARTING, READY) and r.id not in exclude]
        free = [r for r in live if r.outstanding < r.spec.concurrency * self.per_slot]
        if free:
            return self._choose(free, job)
        if len(live) < sc.max_replicas:
            return self._launch(self.pools[0], initial=False)
        if not live:
            raise _Failed(503, "no instance is available", "replica_failed")
        return self._choose(live, job)

    async def _dispatch(self, job: _Job) -> AsyncIterator[dict[str, Any]]:
        """Run ``job`` on a replica, retrying on another when one fails before answering.

        Yields the worker's messages: for a stream one per token then the final one; else one.
        """
        assert self._session is not None
        tried: set[int] = set()
        payload = {
            "id": job.id,
            "input_tokens": job.input_tokens,
            "output_tokens": job.output_tokens,
            "token_ids": job.token_ids,
            "text": job.text,
            "stream": job.stream,
        }
        while True:
            r = await self._pick(job, tried)
            job.replica = r
            r.outstanding += 1
            self._set_in_flight(r)
            started = False
            try:
                if r.state == STARTING:
                    await r.ready_event.wait()
                    if r.state != READY:
                        raise aiohttp.ClientConnectionError(r.error or "replica failed to start")
                async with self._session.post(f"{r.url}/infer", json=payload) as resp:
                    if resp.status == 429:
                        data = await _json_or_empty(resp)
                        raise _Rejected(float(data.get("retry_after_s", 1.0)), str(data.get("error", "replica queue full")))
                    if resp.status != 200:
                        data = await _json_or_empty(resp)
                        if resp.status == 503:  # draining or not ready: try another
                            raise aiohttp.ClientConnectionError(str(data.get("error", "replica unavailable")))
                        raise _Failed(502, f"replica {r.id} answered {resp.status}: {data.get('error', '')}", "upstream")
                    if job.stream:
                        async for line in resp.content:
                            if not line.strip():
                                continue
                            msg = json.loads(line)
                            started = True
                            yield msg
                    else:
                        yield await resp.json()
                    return
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionResetError) as err:
                self._passive_eject(r)
                if started:
                    raise _Failed(502, f"replica {r.id} failed mid-stream ({err})", "replica_failed") from None
                tried.add(r.id)
                job.retries += 1
                if job.retries > self.max_retries:
                    raise _Failed(502, f"replica failed and {self.max_retries} retries were used ({err})", "replica_failed") from None
            except TimeoutError:
                raise _Failed(504, f"replica {r.id} did not answer within {self.upstream_timeout_s:g} s", "timeout") from None
            finally:
                r.outstanding -= 1
                r.last_busy = time.monotonic()
                self._set_in_flight(r)

    def _passive_eject(self, r: Replica) -> None:
        if r.state == READY:
            r.state = EJECTED
            r.health_failures = self.settings.eject_after
            self._refresh_gauges()

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._guard])
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/predict", self._predict)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.settings.token
        if token is not None and request.path != "/healthz":
            got = request.headers.get("Authorization", "")
            if not _same(got, f"Bearer {token}"):
                return _error(401, "missing or wrong bearer token", kind="authentication_error", headers={"WWW-Authenticate": "Bearer"})
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except web.HTTPException as exc:
            if exc.status == 413:
                return _error(413, f"request body larger than {self.settings.max_body_bytes} bytes")
            return _error(exc.status, exc.reason)
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            self.metrics.errors.labels("internal").inc()
            _warn(f"internal error on {request.path}: {type(exc).__name__}: {exc}")
            return _error(500, "internal error", kind="server_error")

    async def _read(self, request: web.Request) -> Any:
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.settings.max_body_bytes, actual_size=length)
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as err:
            raise _BadRequest(f"invalid JSON body: {err}") from None

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "predict")

    def _job(self, request: web.Request, kind: Literal["completion", "predict"], data: Any) -> _Job:
        if not isinstance(data, dict):
            raise _Unprocessable("body: expected a JSON object")
        try:
            body: CompletionBody | PredictBody = CompletionBody.model_validate(data) if kind == "completion" else PredictBody.model_validate(data)
        except ValidationError as err:
            raise _Unprocessable(first_error(err)) from None
        if body.max_tokens > self.settings.max_tokens:
            raise _Unprocessable(f"max_tokens: must be <= {self.settings.max_tokens}")
        prompt = body.prompt if isinstance(body, CompletionBody) else body.inputs
        key: Hashable | None = request.headers.get(_HEADER_KEY)
        if key is None and isinstance(body, PredictBody) and body.key is not None:
            key = str(body.key)
        if key is None and self.cache is not None:
            key = hashlib.sha256(json.dumps([kind, prompt, body.max_tokens]).encode()).hexdigest()
        return _Job(
            id=request.headers.get(_HEADER_REQUEST_ID) or uuid.uuid4().hex[:16],
            kind=kind,
            arrived=time.monotonic(),
            input_tokens=prompt_tokens(prompt),
            output_tokens=body.max_tokens,
            token_ids=prompt if isinstance(prompt, list) else None,
            text=prompt if isinstance(prompt, str) else None,
            stream=isinstance(body, CompletionBody) and body.stream,
            key=key,
            traffic_class=request.headers.get(_HEADER_CLASS),
            model=self.model_name,
            prompt=prompt,
        )

    async def _serve(self, request: web.Request, kind: Literal["completion", "predict"]) -> web.StreamResponse:
        t_arrive = time.monotonic()
        if self.draining:
            return _error(503, "server is shutting down", kind="server_error", headers={"Connection": "close", "Retry-After": "5"})
        try:
            job = self._job(request, kind, await self._read(request))
        except _ClientError as err:
            return _error(err.status, str(err))
        job.arrived = t_arrive
        if self.pending >= self.max_pending:
            return self._finish_rejected(job, 1.0, f"server overloaded ({self.pending} requests pending)")
        self.pending += 1
        self._idle.clear()
        try:
            return await self._answer(request, job)
        finally:
            self.pending -= 1
            if self.pending == 0:
                self._idle.set()

    async def _answer(self, request: web.Request, job: _Job) -> web.StreamResponse:
        cache = self.cache
        if cache is not None and job.key is not None:
            now = time.monotonic() - self.t0
            hit = cache.get(job.key, now) and job.key in self._answers
            if hit:
                self.metrics.cache_hits.inc()
                return await self._respond(request, job, self._answers[job.key], cache_hit=True)
        try:
            if job.stream:
                return await self._stream(request, job)
            final: dict[str, Any] = {}
            async for msg in self._dispatch(job):
                final = msg
            if cache is not None and job.key is not None:
                cache.put(job.key, time.monotonic() - self.t0)
                self._remember(job.key, final)
            return await self._respond(request, job, final, cache_hit=False)
        except _Rejected as rej:
            return self._finish_rejected(job, rej.retry_after_s, str(rej))
        except _Failed as fail:
            return self._finish_failed(job, fail)

    def _remember(self, key: Hashable, answer: dict[str, Any]) -> None:
        self._answers[key] = answer
        cache = self.cache
        assert cache is not None
        if len(self._answers) > 2 * len(cache) + 64:
            for k in [k for k in self._answers if k not in cache]:  # type: ignore[operator]
                del self._answers[k]

    def _headers(self, job: _Job, cache_hit: bool) -> dict[str, str]:
        h = {_HEADER_REQUEST_ID: job.id, _HEADER_CACHE: "hit" if cache_hit else "miss"}
        if job.replica is not None and not cache_hit:
            h[_HEADER_REPLICA] = job.replica.label
        return h

    async def _respond(self, request: web.Request, job: _Job, answer: dict[str, Any], *, cache_hit: bool) -> web.StreamResponse:
        tokens = list(answer.get("output_token_ids") or [])
        if job.kind == "completion":
            if job.stream:  # a cached answer to a streaming request: replay its tokens
                resp = web.StreamResponse(headers={**self._headers(job, cache_hit), "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
                await resp.prepare(request)
                first = None
                for tok in tokens:
                    await resp.write(_sse(_chunk(job, _tok_text(tok), None)))
                    first = first or time.monotonic()
                await resp.write(_sse(_chunk(job, "", "length")) + b"data: [DONE]\n\n")
                await resp.write_eof()
                self._finish_served(job, "cache_hit" if cache_hit else "completed", answer, first_token=first, n_tokens=len(tokens))
                return resp
            body: dict[str, Any] = {
                "id": f"cmpl-{job.id}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": job.model,
                "choices": [{"index": 0, "text": "".join(_tok_text(t) for t in tokens), "finish_reason": "length", "logprobs": None}],
                "usage": {"prompt_tokens": job.input_tokens, "completion_tokens": len(tokens), "total_tokens": job.input_tokens + len(tokens)},
            }
        else:
            outputs = answer.get("embedding")
            if outputs is None:
                outputs = answer.get("output")
            if outputs is None:
                outputs = tokens
            body = {"id": job.id, "model": job.model, "outputs": outputs}
        resp = web.json_response(body, headers=self._headers(job, cache_hit))
        self._finish_served(job, "cache_hit" if cache_hit else "completed", answer, response=body)
        return resp

    async def _stream(self, request: web.Request, job: _Job) -> web.StreamResponse:
        resp: web.StreamResponse | None = None
        first: float | None = None
        tokens: list[int] = []
        final: dict[str, Any] = {}
        try:
            async for msg in self._dispatch(job):
                if "token_id" in msg:
                    if resp is None:
                        resp = web.StreamResponse(
                            headers={**self._headers(job, False), "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                        )
                        await resp.prepare(request)
                    tokens.append(int(msg["token_id"]))
                    if first is None:
                        first = time.monotonic()
                    await resp.write(_sse(_chunk(job, _tok_text(msg["token_id"]), None)))
                elif msg.get("done"):
                    final = msg
        except _Rejected as rej:
            if resp is None:
                return self._finish_rejected(job, rej.retry_after_s, str(rej))
            raise
        except _Failed as fail:
            if resp is None:
                return self._finish_failed(job, fail)
            await resp.write(_sse({"error": {"message": str(fail), "type": "server_error", "code": fail.http_status}}))
            await resp.write_eof()
            self._finish_failed(job, fail, respond=False)
            return resp
        if resp is None:
            resp = web.StreamResponse(headers={**self._headers(job, False), "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
        await resp.write(_sse(_chunk(job, "", "length")) + b"data: [DONE]\n\n")
        await resp.write_eof()
        answer = {**final, "output_token_ids": tokens}
        if self.cache is not None and job.key is not None:
            self.cache.put(job.key, time.monotonic() - self.t0)
            self._remember(job.key, answer)
        self._finish_served(job, "completed", answer, first_token=first, n_tokens=len(tokens))
        return resp

    # ------------------------------------------------------------------ outcomes

    def _finish_served(
        self,
        job: _Job,
        status: str,
        answer: dict[str, Any],
        *,
        first_token: float | None = None,
        n_tokens: int = 0,
        response: Any = None,
    ) -> None:
        end = time.monotonic()
        latency = end - job.arrived
        m = self.metrics
        m.request_duration.labels(status).observe(latency)
        m.requests.labels(status).inc()
        pool = job.replica.pool if job.replica is not None else (self.pools[0].name if self.pools else "default")
        ttft = tpot = None
        if first_token is not None:
            ttft = first_token - job.arrived
            m.ttft.labels(pool).observe(ttft)
            if n_tokens > 1:
                tpot = (end - first_token) / (n_tokens - 1)
                m.tpot.labels(pool).observe(tpot)
            if status == "completed" and (self.ttft_target is not None or self.tpot_target is not None):
                ok = (self.ttft_target is None or ttft <= self.ttft_target) and (
                    self.tpot_target is None or tpot is None or tpot <= self.tpot_target
                )
                if ok:
                    m.goodput.inc()
        self._log(job, status, 200, latency, answer=answer, ttft=ttft, tpot=tpot, response=response)

    def _finish_rejected(self, job: _Job, retry_after_s: float, message: str) -> web.Response:
        latency = time.monotonic() - job.arrived
        self.metrics.request_duration.labels("rejected").observe(latency)
        self.metrics.requests.labels("rejected").inc()
        self._log(job, "rejected", 429, latency, error=message)
        retry = str(max(1, math.ceil(retry_after_s)))
        return _error(429, message, kind="rate_limit_error", headers={"Retry-After": retry, _HEADER_REQUEST_ID: job.id})

    def _finish_failed(self, job: _Job, fail: _Failed, *, respond: bool = True) -> web.Response:
        latency = time.monotonic() - job.arrived
        self.metrics.request_duration.labels("failed").observe(latency)
        self.metrics.requests.labels("failed").inc()
        self.metrics.errors.labels(fail.reason).inc()
        self._log(job, "failed", fail.http_status, latency, error=str(fail))
        return _error(fail.http_status, str(fail), kind="server_error", headers={_HEADER_REQUEST_ID: job.id})

    def _log(
        self,
        job: _Job,
        status: str,
        http_status: int,
        latency: float,
        *,
        answer: dict[str, Any] | None = None,
        error: str | None = None,
        ttft: float | None = None,
        tpot: float | None = None,
        response: Any = None,
    ) -> None:
        if self.log is None:
            return
        a = answer or {}
        entry = {
            "ts_utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "id": job.id,
            "endpoint": "/v1/completions" if job.kind == "completion" else "/predict",
            "status": status,
            "http_status": http_status,
            "latency_s": round(latency, 6),
            "ttft_s": None if ttft is None else round(ttft, 6),
            "tpot_s": None if tpot is None else round(tpot, 6),
            "pool": job.replica.pool if job.replica is not None else None,
            "replica": job.replica.id if job.replica is not None else None,
            "retries": job.retries,
            "batch_size": a.get("batch_size"),
            "queue_s": a.get("queue_s"),
            "service_s": a.get("service_s"),
            "input_tokens": job.input_tokens,
            "output_tokens": job.output_tokens,
            "traffic_class": job.traffic_class,
            "error": error,
            "prompt": job.prompt,
            "response": response if response is not None else (a.get("output_token_ids") if answer else None),
        }
        self.log.record(entry)

    # ------------------------------------------------------------------ small endpoints

    async def _healthz(self, request: web.Request) -> web.Response:
        ready = sum(1 for r in self.replicas if r.state == READY)
        ok = not self.draining and (ready > 0 or self.scaling_mode == "serverless")
        body = {
            "status": "draining" if self.draining else ("ok" if ok else "starting"),
            "deployment": self.dep.name,
            "mode": self.mode,
            "replicas": len([r for r in self.replicas if r.alive]),
            "replicas_ready": ready,
            "pending": self.pending,
            "version": __version__,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._refresh_gauges()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "servewise"}]})

    # ------------------------------------------------------------------ lifecycle

    async def drain(self) -> None:
        """Refuse new requests, let in-flight ones finish (up to ``drain_timeout_s``), stop the workers."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
        await self.close()

    async def close(self) -> None:
        self.draining = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*(r.stop() for r in self.replicas if r.proc is not None and r.state != DEAD), return_exceptions=True)
        for r in self.replicas:
            if r.state != DEAD:
                r.state = STOPPED
        if self._session is not None:
            await self._session.close()
        if self.log is not None:
            self.log.close()

    async def reload(self, dep: Deployment, path: Path) -> None:
        """Roll onto a new version: start its replicas, then drain the old ones."""
        old = [r for r in self.replicas if r.alive]
        self._configure(dep, path)
        fleet = [self._launch(p, initial=False) for p in self.pools for _ in range(self.wanted[p.name])]
        await asyncio.gather(*(r.ready_event.wait() for r in fleet))
        for r in old:
            self._spawn(self._drain_replica(r))

    def stats(self) -> dict[str, Any]:
        return {
            "replicas": [
                {"id": r.id, "pool": r.pool, "state": r.state, "pid": r.pid, "port": r.port, "load_s": r.load_s}
                for r in self.replicas
            ],
            "cold_starts": self.cold_starts,
            "restarts": self.restarts,
        }


# --------------------------------------------------------------------------- helpers


class _ClientError(Exception):
    status = 400


class _BadRequest(_ClientError):
    status = 400


class _Unprocessable(_ClientError):
    status = 422


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _int_key(key: Hashable | None) -> int | None:
    if key is None:
        return None
    if isinstance(key, int):
        return key
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")


def _tok_text(token_id: Any) -> str:
    return f" {token_id}"


def _chunk(job: _Job, text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": f"cmpl-{job.id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _json_or_empty(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_name(dep: Deployment) -> str:
    v = dep.model.resolved if dep.model is not None else None
    if v is not None:
        return str(v.model)
    return dep.name


def _slo_buckets(dep: Deployment) -> tuple[tuple[float, ...], tuple[float, ...]]:
    slo = dep.slo
    if slo is None:
        return (), ()
    lat = tuple(v for k, v in slo.model_dump().items() if k.endswith("_latency_s") and isinstance(v, (int, float)))
    ttft = tuple(v for k, v in slo.model_dump().items() if k.startswith("p") and k.endswith("_ttft_s") and isinstance(v, (int, float)))
    return lat, ttft + ((slo.ttft_target_s,) if slo.ttft_target_s else ())


def _warn(msg: str) -> None:
    import sys

    print(f"servewise serve: {msg}", file=sys.stderr, flush=True)
