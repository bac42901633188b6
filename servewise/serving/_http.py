"""The public HTTP API: ``/v1/completions``, ``/predict``, ``/healthz``, ``/metrics``, ``/v1/models``.

A request is checked at the door (:mod:`._validate`), answered from the response cache
when its key is there (``policies.cache``), else dispatched (:mod:`._dispatch`), and its
outcome counted once (:mod:`._outcomes`). Every error is a JSON body
``{"error": {"message", "type", "code"}}``, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from servewise import __version__
from servewise.policies import ResponseCache

from ._jobs import (
    HEADER_CACHE,
    HEADER_REPLICA,
    HEADER_REQUEST_ID,
    HEADER_TIMING,
    ClientError,
    Failed,
    Job,
    Rejected,
    chunk,
    error_response,
    sse,
    tok_text,
)
from ._metrics import CONTENT_TYPE
from ._replicas import READY
from ._validate import header, token_ok
from ._warn import warn

if TYPE_CHECKING:
    from ._router import Router

__all__ = ["Api", "AnswerCache"]

_API_PATHS = frozenset({"/v1/completions", "/predict"})
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class AnswerCache:
    """The exact-match response cache: the policy decides what is held, this keeps the answers."""

    def __init__(self, policy: ResponseCache, t0: float) -> None:
        self.policy = policy
        self.t0 = t0
        self._answers: dict[Hashable, Any] = {}

    def get(self, key: Hashable) -> dict[str, Any] | None:
        hit = self.policy.get(key, time.monotonic() - self.t0) and key in self._answers
        return self._answers[key] if hit else None

    def put(self, key: Hashable, answer: dict[str, Any]) -> None:
        self.policy.put(key, time.monotonic() - self.t0)
        self._answers[key] = answer
        if len(self._answers) > 2 * len(self.policy) + 64:  # drop the answers the policy evicted
            for k in [k for k in self._answers if k not in self.policy]:  # type: ignore[operator]
                del self._answers[k]


class Api:
    """The router's request handlers."""

    def __init__(self, router: Router) -> None:
        self.r = router

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.r.settings.max_body_bytes, middlewares=[self._guard])
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/predict", self._predict)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        return app

    def _invalid(self, request: web.Request, status: int, message: str, **kw: Any) -> web.Response:
        """A 4xx outside a job (logged when it was a request to the API)."""
        endpoint = request.path if request.method == "POST" and request.path in _API_PATHS else None
        try:
            rid = header(request, HEADER_REQUEST_ID)
        except ClientError:
            rid = None
        resp = self.r.outcomes.invalid(status, message, endpoint=endpoint, request_id=rid, **kw)
        if status == 408:  # the rest of the body may still come: this connection is done
            resp.force_close()
        return resp

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.r.settings.token
        if token is not None and request.path != "/healthz" and not token_ok(request, token):
            return self._invalid(
                request, 401, "missing or wrong bearer token", kind="authentication_error", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except ClientError as err:
            return self._invalid(request, err.status, str(err))
        except web.HTTPException as exc:
            if exc.status == 413:
                return self._invalid(request, 413, f"request body larger than {self.r.settings.max_body_bytes} bytes")
            if 400 <= exc.status < 500:
                return self._invalid(request, exc.status, exc.reason)
            return error_response(exc.status, exc.reason)
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            self.r.metrics.errors.labels("internal").inc()
            warn(f"internal error on {request.path}: {type(exc).__name__}: {exc}")
            return error_response(500, "internal error", kind="server_error")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "predict")

    async def _serve(self, request: web.Request, kind: Literal["completion", "predict"]) -> web.StreamResponse:
        r = self.r
        t_arrive = time.monotonic()
        if r.draining:
            return error_response(503, "server is shutting down", kind="server_error", headers={"Connection": "close", "Retry-After": "5"})
        door = r.door
        try:
            job = door.job(request, kind, await door.read(request))
        except ClientError as err:
            return self._invalid(request, err.status, str(err), arrived=t_arrive)
        job.arrived = t_arrive
        if r.pending >= r.max_pending:
            return r.outcomes.rejected(job, 1.0, f"server overloaded ({r.pending} requests pending)")
        r.enter()
        try:
            return await self._answer(request, job)
        finally:
            r.leave()

    async def _answer(self, request: web.Request, job: Job) -> web.StreamResponse:
        cache = self.r.answers
        if cache is not None and job.key is not None:
            hit = cache.get(job.key)
            if hit is not None:
                self.r.metrics.cache_hits.inc()
                return await self._respond(request, job, hit, cache_hit=True)
        try:
            if job.stream:
                return await self._stream(request, job)
            final: dict[str, Any] = {}
            async for msg in self.r.dispatcher.dispatch(job):
                final = msg
            if cache is not None and job.key is not None:
                cache.put(job.key, final)
            return await self._respond(request, job, final, cache_hit=False)
        except Rejected as rej:
            return self.r.outcomes.rejected(job, rej.retry_after_s, str(rej))
        except ClientError as err:
            return self.r.outcomes.invalid(err.status, str(err), job=job)
        except Failed as fail:
            return self.r.outcomes.failed(job, fail)

    def _headers(self, job: Job, cache_hit: bool, answer: dict[str, Any] | None = None) -> dict[str, str]:
        h = {HEADER_REQUEST_ID: job.id, HEADER_CACHE: "hit" if cache_hit else "miss"}
        if job.replica is not None and not cache_hit:
            h[HEADER_REPLICA] = job.replica.label
            if answer is not None and answer.get("service_s") is not None:
                q, svc = float(answer.get("queue_s") or 0.0), float(answer["service_s"])
                idle = float(answer.get("idle_s") or 0.0)
                h[HEADER_TIMING] = (
                    f"queue={q:.6f};service={svc:.6f};batch={int(answer.get('batch_size') or 1)};idle={idle:.6f}"
                )
        return h

    async def _respond(self, request: web.Request, job: Job, answer: dict[str, Any], *, cache_hit: bool) -> web.StreamResponse:
        status = "cache_hit" if cache_hit else "completed"
        tokens = list(answer.get("output_token_ids") or [])
        if job.kind == "completion" and job.stream:  # a cached answer to a streaming request: replay its tokens
            resp = web.StreamResponse(headers={**self._headers(job, cache_hit), **_SSE_HEADERS})
            await resp.prepare(request)
            first = None
            for tok in tokens:
                await resp.write(sse(chunk(job, tok_text(tok), None)))
                first = first or time.monotonic()
            await resp.write(sse(chunk(job, "", "length")) + b"data: [DONE]\n\n")
            await resp.write_eof()
            self.r.outcomes.served(job, status, answer, first_token=first, n_tokens=len(tokens))
            return resp
        body = _completion_body(job, tokens) if job.kind == "completion" else _predict_body(job, answer, tokens)
        resp = web.json_response(body, headers=self._headers(job, cache_hit, answer))
        self.r.outcomes.served(job, status, answer, response=body)
        return resp

    async def _stream(self, request: web.Request, job: Job) -> web.StreamResponse:
        resp: web.StreamResponse | None = None
        first: float | None = None
        tokens: list[int] = []
        final: dict[str, Any] = {}
        try:
            async for msg in self.r.dispatcher.dispatch(job):
                if "token_id" in msg:
                    if resp is None:
                        resp = web.StreamResponse(headers={**self._headers(job, False), **_SSE_HEADERS})
                        await resp.prepare(request)
                    tokens.append(int(msg["token_id"]))
                    first = first if first is not None else time.monotonic()
                    await resp.write(sse(chunk(job, tok_text(msg["token_id"]), None)))
                elif msg.get("done"):
                    final = msg
        except Failed as fail:  # (a replica refuses, 429 or 4xx, before its first line: _answer answers those)
            if resp is None:
                return self.r.outcomes.failed(job, fail)
            await resp.write(sse({"error": {"message": str(fail), "type": "server_error", "code": fail.http_status}}))
            await resp.write_eof()
            self.r.outcomes.failed(job, fail)
            return resp
        if resp is None:
            resp = web.StreamResponse(headers={**self._headers(job, False), **_SSE_HEADERS})
            await resp.prepare(request)
        await resp.write(sse(chunk(job, "", "length")) + b"data: [DONE]\n\n")
        await resp.write_eof()
        answer = {**final, "output_token_ids": tokens}
        if self.r.answers is not None and job.key is not None:
            self.r.answers.put(job.key, answer)
        self.r.outcomes.served(job, "completed", answer, first_token=first, n_tokens=len(tokens))
        return resp

    # ------------------------------------------------------------------ small endpoints

    async def _healthz(self, request: web.Request) -> web.Response:
        r = self.r
        ready = sum(1 for x in r.fleet.replicas if x.state == READY)
        ok = not r.draining and (ready > 0 or r.plan.scaling_mode == "serverless")
        body = {
            "status": "draining" if r.draining else ("ok" if ok else "starting"),
            "deployment": r.plan.dep.name,
            "mode": r.plan.mode,
            "replicas": len([x for x in r.fleet.replicas if x.alive]),
            "replicas_ready": ready,
            "pending": r.pending,
            "version": __version__,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.r.fleet.refresh_gauges()
        return web.Response(body=self.r.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": self.r.plan.model_name, "object": "model", "owned_by": "servewise"}
        return web.json_response({"object": "list", "data": [model]})


def _completion_body(job: Job, tokens: list[int]) -> dict[str, Any]:
    return {
        "id": f"cmpl-{job.id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": [{"index": 0, "text": "".join(tok_text(t) for t in tokens), "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": job.input_tokens, "completion_tokens": len(tokens), "total_tokens": job.input_tokens + len(tokens)},
    }


def _predict_body(job: Job, answer: dict[str, Any], tokens: list[int]) -> dict[str, Any]:
    outputs = answer.get("embedding")
    if outputs is None:
        outputs = answer.get("output")
    if outputs is None:
        outputs = tokens
    return {"id": job.id, "model": job.model, "outputs": outputs}

