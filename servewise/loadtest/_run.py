"""``run_loadtest``: replay a trace against a live server from Locust generator processes.

The parent never imports Locust or gevent (gevent monkey-patches the process that imports
it). It checks the inputs, splits the requests between ``processes`` children (child k
sends requests i with i % processes == k), waits until every child is ready, gives them
one absolute start time so they share one schedule, and merges their raw records.

The children are plain ``python -c`` processes rather than ``multiprocessing`` ones: a
spawned multiprocessing child re-imports the parent's ``__main__`` (the CLI, pytest)
before its target runs, so gevent's patching would not come first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from servewise import __version__
from servewise.errors import ArtifactError, ConfigError, LoadTestError, MissingExtraError, TraceError
from servewise.io import atomic_write, write_json
from servewise.procs import child_env
from servewise.results import Measured
from servewise.trace import Trace

from ._measured import Samples, build_measured
from ._wire import API_PATHS, target_url
from ._worker import BOOTSTRAP

__all__ = ["run_loadtest"]

LEAD_S = 0.25
"""The shared start is this long after the last child reported ready."""
READY_TIMEOUT_S = 60.0
"""How long a child may take to start Python and import Locust."""
STALL_GRACE_S = 30.0
"""Past the schedule's end, a child that finishes nothing for timeout_s + this long is hung."""


def run_loadtest(
    url: str,
    trace: Trace,
    *,
    out_dir: str | Path,
    time_scale: float = 1.0,
    max_requests: int | None = None,
    api: Literal["openai", "predict"] | None = None,
    stream: bool = False,
    model: str = "servewise",
    token: str | None = None,
    processes: int = 1,
    timeout_s: float = 120.0,
    max_send_lag_s: float = 0.05,
    prompt: Literal["tokens", "text"] = "tokens",
    progress: Callable[[int, int], None] | None = None,
) -> Measured:
    """Replay ``trace`` against ``url`` open loop; write ``measured.json`` and ``requests.csv``.

    Request i is sent at ``start + (arrival_s[i] - arrival_s[0]) / time_scale`` whatever the
    server does, and its latency counts from that scheduled time. ``api`` defaults to
    "openai" when the trace has output lengths, else "predict". With ``stream`` the answer
    is read line by line (SSE or NDJSON) for TTFT and inter-token latencies. Returns the
    :class:`~servewise.results.Measured` record written to ``measured.json``; its
    ``generator.valid`` says whether the generator kept to its schedule.
    ``progress(done, total)`` is called now and then.
    """
    trace_n = _check_trace(trace)
    n = _check_args(
        trace_n,
        time_scale=time_scale,
        max_requests=max_requests,
        processes=processes,
        timeout_s=timeout_s,
        max_send_lag_s=max_send_lag_s,
        api=api,
        prompt=prompt,
        model=model,
        token=token,
    )
    if api is None:
        api = "openai" if int(trace.output_tokens.max()) > 0 else "predict"
    target = target_url(url, api)
    _check_locust()
    replayed = trace if n == trace_n else trace.head(n)
    sched = _Schedule.of(replayed, time_scale=float(time_scale), path=API_PATHS[api] if _is_base(url) else _path_of(target))
    client = {
        "url": target,
        "host": _host_of(target),
        "api": api,
        "stream": bool(stream),
        "model": model,
        "prompt": prompt,
        "timeout_s": float(timeout_s),
        "headers": _headers(stream=stream, token=token),
    }
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    n_proc = min(int(processes), n)
    with tempfile.TemporaryDirectory(prefix="servewise-loadtest-") as tmp:
        plans = [sched.plan(k, n_proc, client, Path(tmp)) for k in range(n_proc)]
        fleet = _Fleet(plans, Path(tmp), span_s=float(sched.due_s[-1]), timeout_s=float(timeout_s))
        results, itl = fleet.run(n, progress)

    samples = Samples.merge(results, itl)
    if samples.id.tolist() != list(range(n)):
        raise LoadTestError(f"the generator processes returned {len(samples.id)} records for {n} requests")
    metadata = _metadata(
        url, trace, replayed, client, created=created, token=token, time_scale=float(time_scale),
        max_requests=max_requests, processes=n_proc,
    )  # fmt: skip
    d = Path(out_dir)
    measured, table = build_measured(
        samples,
        input_tokens=np.asarray(replayed.input_tokens),
        output_tokens=np.asarray(replayed.output_tokens),
        traffic_class=sched.classes,
        stream=bool(stream),
        max_send_lag_s=float(max_send_lag_s),
        processes=_process_stats(results),
        metadata=metadata,
        source=d / Measured.FILE,
    )
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / "requests.csv", lambda f: table.to_csv(f, index=False, lineterminator="\n"))
    measured.write_json(d / Measured.FILE)
    return measured


@dataclass(frozen=True)
class _Schedule:
    """What each replayed request is: its send time (seconds after the start), key and Locust name."""

    replayed: Trace
    due_s: np.ndarray
    keys: list[str | None]
    classes: list[str]
    """Each request's traffic class."""
    names: list[str]
    """Each request's name in Locust's statistics: the path, and the class unless it is the default."""

    @classmethod
    def of(cls, replayed: Trace, *, time_scale: float, path: str) -> _Schedule:
        arrival = np.asarray(replayed.arrival_s, dtype=float)
        keys: list[str | None]
        if replayed.key is None:
            keys = [None] * len(replayed)
        else:
            labels = replayed.key_labels or ()
            keys = [labels[k] for k in replayed.key.tolist()]
        classes = [replayed.class_names[c] for c in replayed.traffic_class.tolist()]
        names = [path if c == "default" else f"{path} [{c}]" for c in classes]
        return cls(replayed, (arrival - arrival[0]) / time_scale, keys, classes, names)

    def plan(self, k: int, n_proc: int, client: dict[str, Any], tmp: Path) -> dict[str, Any]:
        """Generator process ``k``'s plan: the client settings and requests i with i % n_proc == k."""
        sel = list(range(k, len(self.names), n_proc))
        t = self.replayed
        return {
            "process": k,
            **client,
            "requests": {
                "id": sel,
                "due_s": [float(self.due_s[i]) for i in sel],
                "input_tokens": [int(t.input_tokens[i]) for i in sel],
                "output_tokens": [int(t.output_tokens[i]) for i in sel],
                "key": [self.keys[i] for i in sel],
                "name": [self.names[i] for i in sel],
            },
            "result": str(tmp / f"result-{k}.json"),
            "itl": str(tmp / f"itl-{k}.npy"),
        }


def _metadata(
    url: str, trace: Trace, replayed: Trace, client: dict[str, Any], *, created: str, token: str | None,
    time_scale: float, max_requests: int | None, processes: int,
) -> dict[str, Any]:  # fmt: skip
    """``measured.json``'s metadata: what was load tested, with what, on which trace (no secret in it)."""
    return {
        "tool": "servewise",
        "version": __version__,
        "created_utc": created,
        "url": _redact(url),
        "target": _redact(client["url"]),
        "api": client["api"],
        "stream": client["stream"],
        "model": client["model"],
        "prompt": client["prompt"],
        "auth": token is not None,
        "trace_source": trace.source,
        "trace_sha256": trace.content_hash(),
        "trace_requests": len(trace),
        "replayed_requests": len(replayed),
        "replayed_sha256": replayed.content_hash(),
        "time_scale": time_scale,
        "max_requests": max_requests,
        "processes": processes,
        "timeout_s": client["timeout_s"],
        "client": f"locust {_locust_version()} FastHttpUser",
    }


def _headers(*, stream: bool, token: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"servewise-loadtest/{__version__}",
    }
    if stream:
        headers["Accept"] = "text/event-stream, application/x-ndjson, application/json"
        headers["Accept-Encoding"] = "identity"  # read lines as they arrive, not a compressed stream
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _process_stats(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each generator process's share of the requests and its CPU time, in process order."""
    return [
        {
            "process": r["process"],
            "requests": r["requests"],
            "cpu_user_s": r["cpu_user_s"],
            "cpu_system_s": r["cpu_system_s"],
            "wall_s": r["wall_s"],
            "cpu_utilisation": _ratio(r["cpu_user_s"] + r["cpu_system_s"], r["wall_s"]),
            "locust_requests": r["locust_requests"],
            "locust_failures": r["locust_failures"],
        }
        for r in sorted(results, key=lambda r: r["process"])
    ]


# -- inputs ----------------------------------------------------------------------------


def _check_trace(trace: Any) -> int:
    if not isinstance(trace, Trace):
        raise ConfigError(f"trace must be a servewise.trace.Trace, got {type(trace).__name__}")
    if len(trace) == 0:
        raise TraceError(f"the trace {trace.source or '(in memory)'} has no requests to replay")
    return len(trace)


def _check_args(
    n: int,
    *,
    time_scale: float,
    max_requests: int | None,
    processes: int,
    timeout_s: float,
    max_send_lag_s: float,
    api: str | None,
    prompt: str,
    model: str,
    token: str | None,
) -> int:
    """The number of requests to replay; ConfigError (one line) for a bad argument."""
    _positive("time_scale", time_scale)
    _positive("timeout_s", timeout_s)
    _positive("max_send_lag_s", max_send_lag_s)
    if max_requests is not None:
        if isinstance(max_requests, bool) or not isinstance(max_requests, (int, np.integer)) or max_requests < 1:
            raise ConfigError(f"max_requests must be an integer >= 1 or None, got {max_requests!r}")
        n = min(n, int(max_requests))
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) or processes < 1:
        raise ConfigError(f"processes must be an integer >= 1, got {processes!r}")
    if api is not None and api not in API_PATHS:
        raise ConfigError(f"api must be one of {sorted(API_PATHS)}, got {api!r}")
    if prompt not in ("tokens", "text"):
        raise ConfigError(f"prompt must be 'tokens' or 'text', got {prompt!r}")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model must be a non-empty string, got {model!r}")
    if token is not None and (not isinstance(token, str) or not token or any(c in token for c in "\r\n")):
        raise ConfigError("token must be a non-empty string on one line")
    return n


def _positive(name: str, value: Any) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _check_locust() -> None:
    for mod in ("locust", "gevent"):
        if importlib.util.find_spec(mod) is None:
            raise MissingExtraError(f"the load test needs {mod}: pip install 'servewise[loadtest]'")


def _locust_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("locust")
    except PackageNotFoundError:
        return "unknown"


def _is_base(url: str) -> bool:
    import urllib.parse

    return urllib.parse.urlsplit(url.strip()).path in ("", "/")


def _path_of(target: str) -> str:
    import urllib.parse

    return urllib.parse.urlsplit(target).path


def _host_of(target: str) -> str:
    import urllib.parse

    p = urllib.parse.urlsplit(target)
    return f"{p.scheme}://{p.netloc}"


def _redact(url: str) -> str:
    """``url`` without a password in it (measured.json is shared; secrets stay out)."""
    import urllib.parse

    p = urllib.parse.urlsplit(url.strip())
    if p.password is None:
        return url
    return urllib.parse.urlunsplit(p._replace(netloc=f"{p.username}:***@{p.netloc.rpartition('@')[2]}"))


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


# -- generator processes ---------------------------------------------------------------


class _Fleet:
    """The generator processes of one run: start, synchronise, watch, collect."""

    def __init__(self, plans: list[dict[str, Any]], tmp: Path, *, span_s: float, timeout_s: float) -> None:
        self.plans = plans
        self.tmp = tmp
        self.span_s = span_s
        self.timeout_s = timeout_s
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errs: list[IO[bytes]] = []
        self.buf: dict[int, bytes] = {}
        self.ready: set[int] = set()
        self.finished: set[int] = set()
        self.done: dict[int, int] = {}
        self.sel = selectors.DefaultSelector()

    def run(
        self, total: int, progress: Callable[[int, int], None] | None
    ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        try:
            self._launch()
            self._wait_ready()
            start = time.time() + LEAD_S
            for p in self.procs:
                assert p.stdin is not None
                with contextlib.suppress(BrokenPipeError):  # a dead child is reported by _watch
                    p.stdin.write(f"{start!r}\n".encode())
                    p.stdin.close()
            self._watch(start, total, progress)
            return self._collect()
        finally:
            self._stop()

    def _launch(self) -> None:
        env = child_env()  # the child imports this very loadtest, and dies with us
        for plan in self.plans:
            k = plan["process"]
            plan_path = self.tmp / f"plan-{k}.json"
            write_json(plan_path, plan)
            err = open(self.tmp / f"stderr-{k}.txt", "wb")  # noqa: SIM115 - closed in _stop
            self.errs.append(err)
            p = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, str(plan_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=str(self.tmp),
            )
            self.procs.append(p)
            assert p.stdout is not None
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout, selectors.EVENT_READ, k)
            self.buf[k] = b""

    def _pump(self, timeout: float) -> None:
        """Read what the children have said, at most ``timeout`` seconds of waiting."""
        if not self.sel.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.sel.select(timeout):
            k = key.data
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self.sel.unregister(key.fileobj)
                continue
            self.buf[k] += chunk
            *lines, self.buf[k] = self.buf[k].split(b"\n")
            for line in lines:
                self._message(k, line.decode("utf-8", "replace").strip())

    def _message(self, k: int, line: str) -> None:
        if not line.startswith("servewise:"):
            return
        msg = line[len("servewise:") :]
        if msg == "ready":
            self.ready.add(k)
        elif msg.startswith("progress "):
            self.done[k] = int(msg.split()[1])
        elif msg == "done":
            self.finished.add(k)

    def _dead(self) -> int | None:
        """A child that exited before it finished, if any."""
        for k, p in enumerate(self.procs):
            if p.poll() is not None and k not in self.finished:
                self._pump(0.0)  # it may have said "done" just before exiting
                if k not in self.finished:
                    return k
        return None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(self.ready) < len(self.procs):
            self._pump(0.05)
            if (k := self._dead()) is not None:
                raise LoadTestError(f"generator process {k} exited before it was ready: {self._stderr_tail(k)}")
            if time.monotonic() > deadline:
                raise LoadTestError(f"generator processes were not ready after {READY_TIMEOUT_S:g} s")

    def _watch(self, start: float, total: int, progress: Callable[[int, int], None] | None) -> None:
        last_done = -1
        last_change = time.monotonic()
        end_of_schedule = start + self.span_s
        while len(self.finished) < len(self.procs):
            self._pump(0.1)
            done = sum(self.done.values())
            if done != last_done:
                last_done, last_change = done, time.monotonic()
                if progress is not None:
                    progress(done, total)
            if (k := self._dead()) is not None:
                code = self.procs[k].returncode
                raise LoadTestError(f"generator process {k} failed (exit code {code}): {self._stderr_tail(k)}")
            idle = time.monotonic() - last_change
            if time.time() > end_of_schedule and idle > self.timeout_s + STALL_GRACE_S:
                raise LoadTestError(
                    f"generator processes finished nothing for {idle:.0f} s after the schedule ended "
                    f"({done} of {total} requests done); stopped them"
                )
        for p in self.procs:
            p.wait(timeout=30)

    def _collect(self) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        from servewise.io import read_json

        results, itl = [], []
        for plan in self.plans:
            k = plan["process"]
            try:
                results.append(read_json(plan["result"]))
                itl.append(np.load(plan["itl"]))
            except (OSError, ValueError, ArtifactError) as err:
                raise LoadTestError(f"generator process {k} left no readable result ({err})") from None
        return results, itl

    def _stderr_tail(self, k: int) -> str:
        """The last non-empty line the child wrote to stderr (usually the exception)."""
        with contextlib.suppress(OSError):
            self.errs[k].flush()
            lines = [ln.strip() for ln in (self.tmp / f"stderr-{k}.txt").read_text(errors="replace").splitlines()]
            lines = [ln for ln in lines if ln]
            if lines:
                return lines[-1][:500]
        return "no message"

    def _stop(self) -> None:
        """Stop every child still running (on error or interrupt), by its own PID."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        for err in self.errs:
            err.close()
        self.sel.close()
