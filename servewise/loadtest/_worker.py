"""One load-generator process: Locust (as a library) replays its share of the trace, open loop.

The parent starts it as ``python -c BOOTSTRAP plan.json``. BOOTSTRAP monkey-patches the
process with gevent before anything else is imported, then calls :func:`main`; Locust
and gevent are imported only here, so the parent is never patched.

Protocol with the parent: the child writes ``servewise:ready`` on stdout once Locust is
set up, reads the absolute start time (Unix seconds) from stdin, writes
``servewise:progress N`` now and then, writes its results (``plan["result"]``: JSON
rows; ``plan["itl"]``: the inter-token gaps as ``.npy``) atomically, and exits 0.

Open loop: one dispatcher greenlet sleeps until each request is due and spawns its send,
so a slow server never delays the next send. Times are seconds since the shared start.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servewise.loadtest._wire import (
    CACHE_HEADER,
    DONE,
    ERROR,
    INDEX_HEADER,
    KEY_HEADER,
    REPLICA_HEADER,
    TIMING_HEADER,
    TOKEN,
    LineReader,
)
from servewise.loadtest._wire import request_body as build_body

if TYPE_CHECKING:
    from locust.contrib.fasthttp import FastHttpSession, FastResponse

__all__ = ["BOOTSTRAP", "main"]

BOOTSTRAP = (
    "from gevent import monkey\n"
    "monkey.patch_all()\n"
    "import sys\n"
    "from servewise.loadtest._worker import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)
"""The child's whole program: gevent's monkey-patching comes first, before any import."""

PROGRESS_EVERY_S = 0.25
"""How often the child reports the number of finished requests."""

ROW_FIELDS = (
    "id",
    "due_s",
    "sent_s",
    "end_s",
    "http_status",
    "status",
    "first_token_s",
    "last_token_s",
    "tokens",
    "itl_max_s",
    "replica",
    "replica_queue_s",
    "replica_service_s",
    "replica_idle_s",
    "batch_size",
    "error",
)
"""What the child records of each request; its result holds one list per field (columns)."""


class _Timeout(Exception):
    """Raised by gevent.Timeout when a request runs past ``timeout_s``."""


class Replay:
    """The open-loop replay of one process's requests (state shared by its greenlets)."""

    def __init__(self, plan: dict[str, Any]) -> None:
        import gevent.event

        self.plan = plan
        reqs = plan["requests"]
        self.ids: list[int] = reqs["id"]
        self.due_s: list[float] = reqs["due_s"]
        self.input_tokens: list[int] = reqs["input_tokens"]
        self.output_tokens: list[int] = reqs["output_tokens"]
        self.keys: list[str | None] = reqs["key"]
        self.names: list[str] = reqs["name"]
        self.url: str = plan["url"]
        self.headers: dict[str, str] = plan["headers"]
        self.stream: bool = plan["stream"]
        self.timeout_s: float = plan["timeout_s"]
        self.rows: list[dict[str, Any]] = []
        self.itl: list[float] = []
        self.start = 0.0  # time.monotonic() of the shared start
        self.started = False
        self.crash: str | None = None
        """The traceback of a failure of the replay itself (not of a request), if any."""
        self.done = gevent.event.Event()

    def run(self, client: FastHttpSession) -> None:
        """Send every request at its due time, each from a greenlet of its own; wait for all."""
        import gevent
        from gevent.pool import Group

        group = Group()
        now = time.monotonic
        for j in range(len(self.ids)):
            due = self.start + self.due_s[j]
            while (wait := due - now()) > 0:  # loop: the event loop's clock may wake us early
                gevent.sleep(wait)
            group.spawn(self.send, client, j)
            gevent.sleep(0)  # let the send go out now, in order, before the next one is spawned
        group.join()

    def send(self, client: FastHttpSession, j: int) -> None:
        """Send request ``j``, read its answer, and record one row; never raises."""
        import gevent

        i = self.ids[j]
        plan = self.plan
        body = build_body(
            plan["api"],
            index=i,
            input_tokens=self.input_tokens[j],
            output_tokens=self.output_tokens[j],
            key=self.keys[j],
            model=plan["model"],
            stream=self.stream,
            prompt=plan["prompt"],
        )
        headers = dict(self.headers)
        headers[INDEX_HEADER] = str(i)
        if self.keys[j] is not None:
            headers[KEY_HEADER] = str(self.keys[j])
        t0 = self.start
        sent = time.monotonic()
        row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
        row.update(id=i, due_s=self.due_s[j], sent_s=sent - t0, status="failed")
        events: list[float] = []
        timer = gevent.Timeout(self.timeout_s, _Timeout)
        timer.start()
        try:
            resp = client.request("POST", self.url, name=self.names[j], data=body, headers=headers, stream=self.stream)
            code = int(resp.status_code or 0)
            if code:
                row["http_status"] = code
                row["replica"] = _header(resp, REPLICA_HEADER)
                _timing(row, _header(resp, TIMING_HEADER))
            if 200 <= code < 300:
                error = self._read_body(resp, events) if self.stream else _body_error(resp)
                if error is None:
                    hit = (_header(resp, CACHE_HEADER) or "").lower() == "hit"
                    row["status"] = "cache_hit" if hit else "completed"
                else:
                    row["error"] = error
            elif code == 429:
                row["status"] = "rejected"
            elif code == 422:  # refused for this model (e.g. an output over its window): the simulator's "window"
                row["status"] = "rejected"
                row["error"] = f"HTTP 422{_snippet(resp)}"
            elif code:
                row["error"] = f"HTTP {code}{_snippet(resp)}"
            else:
                row["error"] = self._no_response(resp, sent)
        except _Timeout:
            row["error"] = f"timeout after {self.timeout_s:g} s"
        except Exception as err:  # noqa: BLE001 - a crash of one request is a failed request, recorded
            row["error"] = _describe(err)
        finally:
            timer.close()
        row["end_s"] = time.monotonic() - t0
        if events:
            row.update(first_token_s=events[0] - t0, last_token_s=events[-1] - t0, tokens=len(events))
            gaps = [b - a for a, b in zip(events, events[1:], strict=False)]
            row["itl_max_s"] = max(gaps) if gaps else None
            if row["status"] == "completed":
                self.itl.extend(gaps)
        elif self.stream:
            row["tokens"] = 0
        self.rows.append(row)

    def _read_body(self, resp: FastResponse, events: list[float]) -> str | None:
        """Read a streamed answer line by line as it arrives; each token line's time goes to ``events``."""
        ctype = (_header(resp, "content-type") or "").split(";")[0].strip().lower()
        stream = resp.stream
        now = time.monotonic
        if ctype == "application/json":  # not a stream after all: the whole answer is one event
            data = stream.read()
            if data.strip():
                events.append(now())
            return _json_error(data)
        reader = LineReader()
        error: str | None = None
        finished = False
        try:
            while True:
                line = stream.readline(b"\n")
                if not line:
                    line = stream.read()  # a last line without a line break
                    finished = True
                    if not line:
                        break
                t = now()
                kind, text = reader.classify(line)
                if kind == TOKEN:
                    events.append(t)
                elif kind == ERROR and error is None:
                    error = f"error event in stream: {text}"
                elif kind == DONE:
                    pass  # read on to the end of the answer
                if finished:
                    break
        except BaseException:
            _discard(stream)
            raise
        return error

    def _no_response(self, resp: FastResponse, sent: float) -> str:
        err = getattr(resp, "error", None)
        if time.monotonic() - sent >= self.timeout_s * 0.999:
            return f"timeout after {self.timeout_s:g} s"
        if err is None:
            return "no response"
        return _describe(err)


def _describe(err: BaseException) -> str:
    """One line naming the error."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text[:500]


def _timing(row: dict[str, Any], value: str | None) -> None:
    """The replica's queue and service seconds and batch size from ``x-servewise-timing``, when sent."""
    if not value:
        return
    try:
        parts = dict(p.split("=", 1) for p in value.split(";"))
        row["replica_queue_s"] = float(parts["queue"])
        row["replica_service_s"] = float(parts["service"])
        row["batch_size"] = int(parts.get("batch", 1))
        if "idle" in parts:
            row["replica_idle_s"] = float(parts["idle"])
    except (KeyError, ValueError):  # another server's header: its times are unknown, the request still counts
        pass


def _header(resp: FastResponse, name: str) -> str | None:
    h = resp.headers
    if h is None:
        return None
    v = h.get(name)
    return None if v is None else str(v)


def _snippet(resp: FastResponse) -> str:
    """``: <start of the body>`` of an error answer, when it is at hand."""
    try:
        body = resp.content or b""
    except Exception:  # noqa: BLE001 - the body of an error answer is a nicety
        return ""
    text = body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
    return f": {text}" if text else ""


def _body_error(resp: FastResponse) -> str | None:
    """None when the whole (non-streamed) answer arrived; else what went wrong."""
    if not resp.isclosed():
        return "answer body incomplete"
    return None


def _json_error(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("error"):
        return f"error in answer: {str(doc['error'])[:300]}"
    return None


def _discard(stream: Any) -> None:
    """Close the socket of an answer abandoned halfway, so the pool never reuses it."""
    sock = getattr(stream, "_sock", None)
    try:
        if sock is not None:
            sock.close()
        stream.release()
    except Exception:  # noqa: BLE001, S110 - best effort on a connection we give up anyway
        pass


def _raise_fd_limit() -> None:
    """An open loop needs a connection per request in flight: lift the soft limit on files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


def _user_class(plan: dict[str, Any], replay: Replay) -> type:
    """A FastHttpUser whose single task replays this process's requests once."""
    from locust import FastHttpUser, constant, task
    from locust.exception import StopUser

    class TraceReplay(FastHttpUser):
        host = plan["host"]
        wait_time = constant(0)
        concurrency = len(replay.ids) + 1  # open loop: a connection for every request in flight
        network_timeout = plan["timeout_s"]
        connection_timeout = plan["timeout_s"]
        max_retries = 0

        @task
        def replay_trace(self) -> None:
            if replay.started:  # the task runs once
                raise StopUser()
            replay.started = True
            try:
                replay.run(self.client)
            except BaseException:
                replay.crash = traceback.format_exc()
                raise
            finally:
                replay.done.set()
            raise StopUser()

    return TraceReplay


def main(argv: list[str]) -> int:
    """Run one generator process (see the module docstring); the exit code is 0 on success."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise RuntimeError("loadtest._worker runs only in a generator process started with BOOTSTRAP")
    from servewise.procs import die_with_parent

    die_with_parent()  # a killed load test takes its generator processes with it
    import gevent
    import numpy as np
    from locust.env import Environment
    from locust.event import Events

    from servewise.io import atomic_write_bytes, write_json

    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints (Locust's included) go to stderr, not into the protocol
    sys.stdout = sys.stderr

    def say(msg: str) -> None:
        proto.write(f"servewise:{msg}\n".encode())

    plan = json.loads(Path(argv[0]).read_text())
    _raise_fd_limit()
    replay = Replay(plan)
    env = Environment(user_classes=[_user_class(plan, replay)], host=plan["host"], events=Events())
    runner = env.create_local_runner()
    say("ready")
    line = sys.stdin.readline()
    if not line.strip():
        return 3  # the parent gave up before the start
    start_wall = float(line)
    replay.start = time.monotonic() + (start_wall - time.time())
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    runner.start(1, spawn_rate=1)

    def report() -> None:
        last = -1
        while True:
            n = len(replay.rows)
            if n != last:
                say(f"progress {n}")
                last = n
            gevent.sleep(PROGRESS_EVERY_S)

    reporter = gevent.spawn(report)
    replay.done.wait()
    wall_end = time.monotonic()
    reporter.kill()
    runner.quit()
    if replay.crash is not None or len(replay.rows) != len(replay.ids):
        sys.stderr.write(f"the replay stopped after {len(replay.rows)} of {len(replay.ids)} requests\n")
        sys.stderr.write(replay.crash or "")  # its last line, the exception, is what the parent reports
        return 1
    say(f"progress {len(replay.rows)}")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    total = env.stats.total
    result = {
        "process": plan["process"],
        "requests": len(replay.rows),
        "columns": {f: [r[f] for r in replay.rows] for f in ROW_FIELDS},
        "cpu_user_s": cpu1.ru_utime - cpu0.ru_utime,
        "cpu_system_s": cpu1.ru_stime - cpu0.ru_stime,
        "wall_s": max(wall_end - replay.start, 0.0),
        "locust_requests": int(total.num_requests),
        "locust_failures": int(total.num_failures),
    }
    buf = io.BytesIO()
    np.save(buf, np.asarray(replay.itl, dtype=np.float64))
    atomic_write_bytes(plan["itl"], buf.getvalue())
    write_json(plan["result"], result)
    say("done")
    return 0
