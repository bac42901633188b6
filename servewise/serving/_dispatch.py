"""Dispatch: run a request on a replica the balancer picks, retrying on another when one fails.

- The load balancer (``policies.balancer``, as in the simulator) picks among the ready
  replicas of the pools the request's traffic class may use; with none ready it waits
  for one still starting. ``serverless`` starts an instance when every live one is busy.
- A replica that refuses the connection, resets it, or answers 503 is ejected and the
  request goes to another, up to ``faults.max_retries`` times (default 2).
- A replica that says nothing for ``upstream_timeout_s`` is hung: ejected and the request
  retried the same way (``servewise_errors_total{reason="timeout"}`` counts each). For a
  stream the limit applies to each read (``sock_read``), so a stream that stalls after
  its first tokens is caught too; it cannot be retried once tokens went to the client.
- A replica's 4xx is the client's mistake: it reaches the client as that same status with
  the replica's message (:class:`ClientError`), and the replica stays in.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp

from servewise.policies import LoadBalancer, warm_instance
from servewise.trace import Request

from ._fleet import Fleet
from ._jobs import ClientError, Failed, Job, Rejected, int_key
from ._plan import Plan
from ._replicas import READY, STARTING, Replica

__all__ = ["Dispatcher"]

_CONNECT_TIMEOUT_S = 5.0
_NO_REPLICA_WAIT_S = 60.0
"""Longest a request waits for a replacement replica when none is alive."""
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
_PASSED_ON = frozenset(range(400, 500)) - {404, 405, 429}
"""Replica statuses passed to the client as they are (404/405 would be our bug: 502; 429 is a rejection)."""


class _Retry(Exception):
    """The replica failed before answering: eject it, try another."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class Dispatcher:
    """Picks a replica for each request and talks to it."""

    def __init__(self, fleet: Fleet, plan: Plan, balancer: LoadBalancer) -> None:
        self.fleet = fleet
        self.plan = plan
        self.lb = balancer

    # ------------------------------------------------------------------ choosing

    def _candidates(self, job: Job) -> list[Replica]:
        allowed: set[int] | None = None
        placement = self.plan.dep.placement
        if placement and job.traffic_class is not None and job.traffic_class in placement:
            allowed = {self.plan.pool_index[n] for n in placement[job.traffic_class]}
        reps = self.fleet.replicas
        ok = [r for r in reps if r.state == READY and (allowed is None or r.pool_index in allowed)]
        if ok:
            return ok
        # none ready: wait for one still starting (as the simulator routes to starting replicas)
        return [r for r in reps if r.state == STARTING and (allowed is None or r.pool_index in allowed)]

    def _choose(self, replicas: list[Replica], job: Job) -> Replica:
        if len(replicas) == 1:
            return replicas[0]
        t = job.arrived - self.fleet.t0
        req = Request(0, t, job.input_tokens, job.output_tokens, int_key(job.key), (), job.traffic_class or "default")
        return replicas[self.lb.choose(replicas, req)]

    async def _pick(self, job: Job, exclude: set[int]) -> Replica:
        if self.plan.scaling_mode == "serverless":
            return self._pick_serverless(job, exclude)
        cands = [r for r in self._candidates(job) if r.id not in exclude] or self._candidates(job)
        if not cands:
            # nothing alive: wait a little for a replacement being started by the reconciler
            deadline = time.monotonic() + min(self.plan.upstream_timeout_s, _NO_REPLICA_WAIT_S)
            while not cands and time.monotonic() < deadline and not self.fleet.draining:
                self.fleet.reconcile()
                await asyncio.sleep(0.05)
                cands = self._candidates(job)
            if not cands:
                raise Failed(503, "no replica is available", "replica_failed")
        return self._choose(cands, job)

    def _pick_serverless(self, job: Job, exclude: set[int]) -> Replica:
        sc = self.plan.dep.scaling
        assert sc.max_replicas is not None
        live = [r for r in self.fleet.replicas if r.state in (STARTING, READY) and r.id not in exclude]
        free = [r for r in live if r.outstanding < r.spec.concurrency * self.plan.per_slot]
        if free:
            k = warm_instance(sc.warm_rule, free) if len(free) > 1 else 0
            r = self._choose(free, job) if k is None else free[k]
        elif len(live) < sc.max_replicas:
            r = self.fleet.launch(self.plan.pools[0], initial=False)
        elif not live:
            raise Failed(503, "no instance is available", "replica_failed")
        else:
            r = self._choose(live, job)
        r.last_routed = time.monotonic()
        return r

    # ------------------------------------------------------------------ talking to a replica

    def _timeout(self, job: Job) -> aiohttp.ClientTimeout:
        t = self.plan.upstream_timeout_s
        # a stream may run long in all, but never stalls longer than t between reads
        return aiohttp.ClientTimeout(total=None if job.stream else t, sock_connect=_CONNECT_TIMEOUT_S, sock_read=t)

    async def dispatch(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """Run ``job`` on a replica, retrying on another when one fails before answering.

        Yields the worker's messages: for a stream one per token then the final one; else one.
        Raises :class:`Rejected` (429), :class:`ClientError` (a replica's 4xx) or :class:`Failed`.
        """
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
            started = False
            try:
                async with contextlib.aclosing(self._attempt(r, job, payload)) as messages:
                    async for msg in messages:
                        started = True
                        yield msg
                return
            except _Retry as err:
                self.fleet.eject(r)
                status = 504 if err.timeout else 502
                if started:
                    what = "stalled" if err.timeout else "failed"
                    raise Failed(status, f"replica {r.id} {what} mid-stream ({err})", _reason(err)) from None
                if job.retries >= self.plan.max_retries:
                    why = f"replica {r.id} failed and {self.plan.max_retries} retries were used ({err})"
                    raise Failed(status, why, _reason(err)) from None
                if err.timeout:  # counted here when retried; a request that ends on it is counted as it fails
                    self.fleet.metrics.errors.labels("timeout").inc()
                tried.add(r.id)
                job.retries += 1

    async def _attempt(self, r: Replica, job: Job, payload: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """One try on ``r``: its messages, or :class:`_Retry` when it failed before or while answering."""
        fleet = self.fleet
        assert fleet.session is not None
        r.outstanding += 1
        fleet.set_in_flight(r)
        try:
            if r.state == STARTING:
                await r.ready_event.wait()
                if r.state != READY:
                    raise _Retry(r.error or "replica failed to start")
            async with fleet.session.post(f"{r.url}/infer", json=payload, timeout=self._timeout(job)) as resp:
                await self._check_status(r, resp)
                if job.stream:
                    async for line in resp.content:
                        if line.strip():
                            yield json.loads(line)
                else:
                    yield await resp.json()
        except TimeoutError:
            raise _Retry(f"no answer within {self.plan.upstream_timeout_s:g} s", timeout=True) from None
        except aiohttp.ClientConnectorError as err:
            if err.os_error.errno in _OUT_OF_FDS:  # the router's own trouble: the replica is fine
                raise Failed(503, "the server is out of file descriptors", "internal") from None
            raise _Retry(str(err)) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionResetError) as err:
            raise _Retry(str(err)) from None
        finally:
            r.outstanding -= 1
            r.last_busy = time.monotonic()
            fleet.set_in_flight(r)

    async def _check_status(self, r: Replica, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 200:
            return
        data = await _json_or_empty(resp)
        message = str(data.get("error", ""))
        if resp.status == 429:
            raise Rejected(float(data.get("retry_after_s", 1.0)), message or "replica queue full")
        if resp.status == 503:  # draining or not ready: try another
            raise _Retry(message or "replica unavailable")
        if resp.status in _PASSED_ON:
            raise ClientError(resp.status, message or f"the replica refused the request ({resp.status})")
        raise Failed(502, f"replica {r.id} answered {resp.status}: {message}", "upstream")


def _reason(err: _Retry) -> str:
    return "timeout" if err.timeout else "replica_failed"


async def _json_or_empty(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return data if isinstance(data, dict) else {}
