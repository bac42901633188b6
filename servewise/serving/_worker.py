"""A replica worker of the live server: one process serving one replica over HTTP.

::

    python -m serving._worker --deployment PATH --pool NAME --replica ID \\
        --mode real|synthetic [--threads N] [--seed S] [--workdir DIR] [--port 0]

The worker binds ``127.0.0.1:PORT`` (0: an ephemeral port), loads and warms up the model
(the cold start; synthetic mode sleeps the deployment's cold start instead), then prints
one JSON line to stdout, ``{"event": "ready", "port", "pid", "load_s", "limits"}`` (``limits``:
the model's ``kind``, ``window_tokens`` and ``vocab_size``, None where unknown), or on a failure
to start ``{"event": "error", "message"}`` and exits 1. Nothing else goes to stdout; logs
go to stderr. SIGTERM (or SIGINT) drains: new requests get 503, queued and running work
finishes, then the process exits 0.

A :class:`Batcher` mirrors the simulator's replica (``simulator/_engine.py``): ``concurrency``
slots each running one batch at a time, one FIFO queue, the registered ``dynamic``
batching rule deciding on the real clock, and the deployment's bounded queue. HTTP::

    POST /infer  {"id", "input_tokens", "output_tokens", "token_ids", "text", "stream"}
      200 {"id", "replica", "batch_size", "queue_s", "service_s", "input_tokens",
           "output_token_ids", "embedding", "output"}
      200 stream (application/x-ndjson): {"token_id"} per token as it exists, then
           {"done": true, "id", "replica", "batch_size", "queue_s", "service_s"}
           (or {"done": true, "id", "error"} when the batch failed)
      400 invalid JSON; 422 {"error": "field: what was expected"}; 429 {"error":
      "replica queue full", "retry_after_s"} + Retry-After; 503 loading or draining;
      500 {"error"} when the batch failed
    GET /healthz  {"ready", "replica", "queued", "running", "pid"}: 200, 503 unless ready
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servewise.config import Batching, load_deployment
from servewise.errors import ConfigError, ServewiseError
from servewise.policies import BatchingRule, batching_from_config
from servewise.procs import die_with_parent
from servewise.serving._executor import Emit, Executor, Item, Output, RequestError, build_executor

__all__ = ["InferRequest", "Job", "Batcher", "build_app", "main"]

log = logging.getLogger("servewise.serving.worker")

_MAX_BODY_BYTES = 16 * 2**20
"""Largest /infer body accepted (token ids or text of a long prompt)."""
_EWMA = 0.2
"""Weight of the newest batch in the replica's running mean batch time (for Retry-After)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class InferRequest(BaseModel):
    """The body of ``POST /infer`` (strict JSON types; unknown fields are refused).

    ``input_tokens`` may be left out when ``token_ids`` (their count is the input length)
    or, for a real model with a tokenizer, ``text`` is sent (its tokenized length is).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: str = Field(description="The request id, echoed back.")
    input_tokens: int | None = Field(default=None, ge=1, description="Input (prompt) length in tokens.")
    output_tokens: int = Field(default=0, ge=0, description="Tokens to generate (decoders).")
    token_ids: list[int] | None = Field(default=None, min_length=1, description="The input's token ids.")
    text: str | None = Field(default=None, description="The input as text (real models with a tokenizer).")
    stream: bool = Field(default=False, description="Send each generated token as it exists (NDJSON).")


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """How a request's batch ran."""

    batch_size: int
    queue_s: float
    """Seconds from joining the queue to the start of its batch."""
    service_s: float
    """Seconds the batch ran (measured)."""
    idle_s: float = 0.0
    """Seconds the replica had run nothing before this batch started (0 when another ran)."""


class Job:
    """A request admitted to the replica: its item, when it was queued, and its result."""

    __slots__ = ("item", "enqueued_s", "future", "tokens")

    def __init__(self, item: Item, *, stream: bool) -> None:
        self.item = item
        self.enqueued_s = math.nan
        self.future: asyncio.Future[tuple[Output, BatchInfo]] = asyncio.get_running_loop().create_future()
        self.tokens: asyncio.Queue[int | None] | None = asyncio.Queue() if stream else None
        """Streamed token ids as they are generated, then None; None for a non-stream job."""


class BatchFailed(ServewiseError):
    """The batch a request ran in raised; the message says why (HTTP 500)."""


class Batcher:
    """Slots, one FIFO queue and a batching rule: the simulator's replica on the real clock.

    Without batching, a request starts as soon as a slot is free, and is rejected when
    every slot is busy and ``capacity`` requests already wait. With batching, every
    request waits in the queue, which holds at most ``capacity`` requests; whenever a slot
    is free the ``dynamic`` rule decides on ``(queued, oldest enqueued, now)`` (seconds of
    ``time.monotonic``) whether to run the oldest requests as one batch now, or when to
    decide again. ``capacity`` None is unbounded. A draining replica runs what it has
    queued without waiting for batches to fill.
    """

    def __init__(self, executor: Executor, *, concurrency: int, batching: Batching | None, capacity: int | None) -> None:
        self._executor = executor
        self._concurrency = concurrency
        self._capacity = capacity
        # the simulator's rule, from the same factory (max_batch_size 1 without a wait is no batching at all)
        self._rule: BatchingRule | None = batching_from_config(batching)
        self._max_batch = 1
        if self._rule is not None:
            assert batching is not None
            self._max_batch = batching.max_batch_size  # <= capacity: the Deployment contract's rule
        self._queue: deque[Job] = deque()
        self._free = concurrency
        self._running = 0
        self._started: list[float] = []  # start of each running batch
        self._last_end = time.monotonic()  # when the last batch ended (or the replica came up)
        self._batch_s: float | None = None  # running mean batch time
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._draining = False
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot (or for their batch to fill)."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Requests in running batches."""
        return self._running

    def submit(self, job: Job) -> float | None:
        """Queue ``job``: None, or when the queue is full, seconds after which to retry."""
        cap = self._capacity
        if cap is not None and len(self._queue) >= cap and (self._rule is not None or self._free == 0):
            return self._retry_after_s()
        job.enqueued_s = time.monotonic()
        self._queue.append(job)
        self._pump()
        return None

    def drain(self) -> None:
        """Stop waiting for batches to fill; :meth:`wait_idle` returns once all work is done."""
        self._draining = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pump()
        self._check_idle()

    async def wait_idle(self) -> None:
        """Wait until a draining replica has nothing queued or running."""
        await self._idle.wait()

    def _retry_after_s(self) -> float:
        """Seconds until a queue place is likely free: the expected rest of the soonest-ending
        running batch, at the running mean batch time (before any batch ended: as long again
        as the batch has run so far). At least 0.01."""
        now = time.monotonic()
        if not self._started:
            return max(self._batch_s or 1.0, 0.01)
        if self._batch_s is None:
            rest = now - max(self._started)
        else:
            rest = min(s + self._batch_s - now for s in self._started)
        return max(rest, 0.01)

    def _pump(self) -> None:
        """Start every batch that is due now (the simulator's ``_try_batch``)."""
        q = self._queue
        now = time.monotonic()
        while q and self._free > 0:
            if self._rule is None:
                take = 1
            elif self._draining:
                take = min(len(q), self._max_batch)
            else:
                take, wake_s = self._rule.decide(len(q), q[0].enqueued_s, now)
                if take == 0:
                    if wake_s is not None:
                        self._arm(wake_s, now)
                    return
            batch = [q.popleft() for _ in range(take)]
            idle = max(now - self._last_end, 0.0) if not self._started else 0.0
            self._free -= 1
            self._running += len(batch)
            self._started.append(now)
            task = asyncio.get_running_loop().create_task(self._run(batch, now, idle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _arm(self, at_s: float, now: float) -> None:
        if self._timer is not None:
            if self._timer_at <= at_s:
                return
            self._timer.cancel()
        self._timer_at = at_s
        self._timer = asyncio.get_running_loop().call_later(max(at_s - now, 0.0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._pump()

    async def _run(self, batch: list[Job], start_s: float, idle_s: float = 0.0) -> None:
        emit: Emit | None = None
        if any(j.tokens is not None for j in batch):

            def emit(i: int, token_id: int) -> None:
                tokens = batch[i].tokens
                if tokens is not None:
                    tokens.put_nowait(token_id)

        t0 = time.monotonic()
        try:
            outputs = await self._executor.run([j.item for j in batch], emit)
            service_s = time.monotonic() - t0
            for j, out in zip(batch, outputs, strict=True):
                if not j.future.done():
                    j.future.set_result((out, BatchInfo(len(batch), start_s - j.enqueued_s, service_s, idle_s)))
        except Exception as err:  # noqa: BLE001 - every member gets the error, the replica goes on
            log.error("a batch of %d failed", len(batch), exc_info=True)
            failed = BatchFailed(f"the batch failed ({_first_line(err)})")
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(failed)
        finally:
            bt = time.monotonic() - t0
            self._batch_s = bt if self._batch_s is None else (1 - _EWMA) * self._batch_s + _EWMA * bt
            self._started.remove(start_s)
            self._last_end = time.monotonic()
            for j in batch:
                if j.tokens is not None:
                    j.tokens.put_nowait(None)
            self._free += 1
            self._running -= len(batch)
            self._pump()
            self._check_idle()

    def _check_idle(self) -> None:
        if self._draining and not self._queue and self._running == 0:
            self._idle.set()


# --------------------------------------------------------------------------- HTTP


class _State:
    """What the handlers share: the phase, and how many /infer handlers are still answering."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.phase = "loading"  # loading | ready | draining
        self.active = 0
        self.answered = asyncio.Event()
        self.answered.set()


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _validation_message(err: ValidationError) -> str:
    """``field: what was expected (got ...)`` for the first invalid field."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "body"
    msg = first["msg"]
    msg = msg[:1].lower() + msg[1:]
    got = first.get("input")
    if first["type"] in ("missing", "extra_forbidden") or isinstance(got, dict):
        return f"{loc}: {msg}"
    shown = repr(got)
    return f"{loc}: {msg} (got {shown if len(shown) <= 80 else shown[:77] + '...'})"


def _parse(body: bytes) -> InferRequest | web.Response:
    try:
        data = json.loads(body)
    except RecursionError:
        return _error(400, "body: expected JSON, got JSON nested too deeply")
    except ValueError as err:
        return _error(400, f"body: expected JSON, got invalid JSON ({err})")
    if not isinstance(data, dict):
        return _error(422, f"body: expected a JSON object, got {type(data).__name__}")
    try:
        req = InferRequest.model_validate(data)
    except ValidationError as err:
        return _error(422, _validation_message(err))
    if req.token_ids is not None and req.text is not None:
        return _error(422, "token_ids: give at most one of token_ids or text")
    return req


class _WorkerApp:
    """The worker's request handlers (``/infer``, ``/healthz``) over its batcher and executor."""

    def __init__(self, batcher: Batcher, executor: Executor, state: _State) -> None:
        self.batcher = batcher
        self.executor = executor
        self.state = state

    async def healthz(self, _request: web.Request) -> web.Response:
        ready = self.state.phase == "ready"
        body = {
            "ready": ready,
            "replica": self.state.replica_id,
            "queued": self.batcher.queued,
            "running": self.batcher.running,
            "pid": os.getpid(),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def infer(self, request: web.Request) -> web.StreamResponse:
        if self.state.phase != "ready":
            return _error(503, f"replica is {self.state.phase}")
        self.state.active += 1
        self.state.answered.clear()
        try:
            return await self._infer(request)
        finally:
            self.state.active -= 1
            if self.state.active == 0:
                self.state.answered.set()

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        req = _parse(await request.read())
        if isinstance(req, web.Response):
            return req
        if req.stream and not self.executor.streams():
            return _error(422, f"stream: expected false: {self.executor.kind} models generate no tokens to stream")
        try:
            item = self.executor.prepare(req.input_tokens, req.output_tokens, req.token_ids, req.text)
        except RequestError as err:
            return _error(422, str(err))
        job = Job(item, stream=req.stream)
        retry_s = self.batcher.submit(job)
        if retry_s is not None:
            headers = {"Retry-After": str(max(1, math.ceil(retry_s)))}
            return _error(429, "replica queue full", headers, retry_after_s=round(retry_s, 3))
        if req.stream:
            return await self._stream(request, req, job)
        try:
            out, info = await job.future
        except BatchFailed as err:
            return _error(500, str(err))
        return web.json_response(
            {
                "id": req.id,
                "replica": self.state.replica_id,
                "batch_size": info.batch_size,
                "queue_s": info.queue_s,
                "service_s": info.service_s,
                "idle_s": info.idle_s,
                "input_tokens": item.input_tokens,
                "output_token_ids": out.output_token_ids,
                "embedding": out.embedding,
                "output": out.output,
            }
        )

    async def _stream(self, request: web.Request, req: InferRequest, job: Job) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        assert job.tokens is not None
        try:
            while (tok := await job.tokens.get()) is not None:
                await resp.write(json.dumps({"token_id": tok}).encode() + b"\n")
            try:
                _out, info = await job.future
                last: dict[str, Any] = {
                    "done": True,
                    "id": req.id,
                    "replica": self.state.replica_id,
                    "batch_size": info.batch_size,
                    "queue_s": info.queue_s,
                    "service_s": info.service_s,
                    "idle_s": info.idle_s,
                }
            except BatchFailed as err:
                last = {"done": True, "id": req.id, "error": str(err)}
            await resp.write(json.dumps(last).encode() + b"\n")
            await resp.write_eof()
        except ConnectionError:
            log.info("request %s: the client went away while streaming", req.id)
            if not job.future.done():
                await asyncio.wait([job.future])  # its batch still runs; drain waits for it
        return resp


@web.middleware
async def _never_a_traceback(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except web.HTTPException:
        raise
    except Exception as err:  # noqa: BLE001 - logged in full; the client gets one line
        log.error("%s %s failed", request.method, request.path, exc_info=True)
        return _error(500, f"internal error: {type(err).__name__}")


def build_app(batcher: Batcher, executor: Executor, state: _State) -> web.Application:
    """The worker's HTTP application (``/infer``, ``/healthz``)."""
    handlers = _WorkerApp(batcher, executor, state)
    app = web.Application(client_max_size=_MAX_BODY_BYTES, middlewares=[_never_a_traceback])
    app.router.add_post("/infer", handlers.infer)
    app.router.add_get("/healthz", handlers.healthz)
    return app


# --------------------------------------------------------------------------- process


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m serving._worker", description="One replica of the live server.")
    p.add_argument("--deployment", required=True, help="Deployment YAML file.")
    p.add_argument("--pool", required=True, help="Name of the deployment pool this replica belongs to.")
    p.add_argument("--replica", required=True, help="Replica id, echoed in every answer.")
    p.add_argument("--mode", required=True, choices=("real", "synthetic"), help="Run the model, or sleep its service time.")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (real mode).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the synthetic service times.")
    p.add_argument("--workdir", default=None, help="Where real mode materialises models (default: a temp folder).")
    p.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: any free port).")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise _UsageError(f"argument --threads: expected an integer >= 1, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"argument --port: expected 0 .. 65535, got {args.port}")
    return args


def _quiet() -> None:
    """Real mode: keep the model libraries offline and their chatter down (as the profiler's worker)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("torchao").setLevel(logging.ERROR)


def _emit(out: TextIO, event: str, **data: Any) -> None:
    out.write(json.dumps({"event": event, **data}) + "\n")
    out.flush()


async def _serve(args: argparse.Namespace, out: TextIO) -> int:
    deployment = load_deployment(args.deployment)
    pools = deployment.resolved_pools()
    pool = next((p for p in pools if p.name == args.pool), None)
    if pool is None:
        raise ConfigError(f"--pool: the deployment has no pool {args.pool!r}; pools: {', '.join(p.name for p in pools)}")
    if deployment.engine is not None:
        raise ConfigError(
            "engine 'continuous' is not served by the replica worker yet (it runs static batches); "
            "remove 'engine' to serve with batching"
        )
    concurrency = pool.concurrency if pool.concurrency is not None else deployment.concurrency
    if args.mode == "real":
        _quiet()
    workdir = Path(args.workdir) if args.workdir else Path(os.environ.get("TMPDIR", "/tmp")) / "servewise-serve"
    executor = build_executor(
        deployment,
        mode=args.mode,
        speed_factor=pool.speed_factor,
        concurrency=concurrency,
        threads=args.threads,
        seed=args.seed,
        workdir=workdir,
    )
    batcher = Batcher(executor, concurrency=concurrency, batching=deployment.batching, capacity=deployment.queue.capacity)
    state = _State(str(args.replica))
    runner = web.AppRunner(build_app(batcher, executor, state), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = int(runner.addresses[0][1])
        t0 = time.perf_counter()
        loading = asyncio.ensure_future(executor.load())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():  # stopped while loading: nothing to drain
            loading.cancel()
            log.info("replica %s: stopped while loading", state.replica_id)
            return 0
        stopping.cancel()
        loading.result()
        load_s = time.perf_counter() - t0
        state.phase = "ready"
        log.info("replica %s (%s mode) ready on port %d after %.3f s", state.replica_id, args.mode, port, load_s)
        _emit(out, "ready", port=port, pid=os.getpid(), load_s=load_s, limits=executor.limits())
        await stop.wait()
        state.phase = "draining"
        log.info("replica %s: draining %d queued, %d running", state.replica_id, batcher.queued, batcher.running)
        batcher.drain()
        await batcher.wait_idle()
        await state.answered.wait()
        log.info("replica %s: drained, exiting", state.replica_id)
        return 0
    finally:
        await runner.cleanup()
        executor.close()


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the worker; the ready or error line goes to ``out`` (stdout). Returns the exit code."""
    out = out if out is not None else sys.stdout
    die_with_parent()  # never outlive the router, even after its kill -9
    try:
        args = _args(argv)
    except _UsageError as err:
        _emit(out, "error", message=f"usage: {err}")
        return 1
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format=f"%(asctime)s replica {args.replica} %(levelname)s %(message)s"
    )
    try:
        return asyncio.run(_serve(args, out))
    except ServewiseError as err:
        _emit(out, "error", message=str(err).strip().replace("\n", " "))
    except Exception as err:  # noqa: BLE001 - the parent gets one line; stderr the traceback
        log.error("the worker failed", exc_info=True)
        _emit(out, "error", message=_first_line(err))
    return 1


def _cli() -> int:
    """``python -m serving._worker``: stdout carries only the ready / error line."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed (by us, torch or a C library) lands on stderr
    sys.stdout = sys.stderr
    return main(None, out)


if __name__ == "__main__":
    sys.exit(_cli())
