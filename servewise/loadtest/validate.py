"""``servewise validate``: does the live deployment do what the simulator predicted?

Two ways in:

- a deployment: simulate it on the trace, serve it on this machine
  (:func:`serving.start_server`), load test it with the same trace, stop it, compare;
- an endpoint URL plus the advisor's ``expected.json``: load test the URL and compare
  with the prediction written there.

``validation.json`` holds the ``verdict`` (``pass``, ``fail``, or ``invalid`` when the
load generator fell behind and the measurement cannot be trusted) and ``metrics`` keyed
by summary path (``latency_s.p95``), each with ``predicted``, ``measured``,
``relative_error`` ((measured − predicted) / predicted), ``tolerance`` and ``pass``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servewise import __version__
from servewise.config import SLO
from servewise.errors import ConfigError
from servewise.results import Measured, MetricComparison, Summary, Validation, check_slo, load_artifact
from servewise.stats import VALIDATION_TOLERANCES
from servewise.trace import Trace

__all__ = ["validate", "compare", "replay_trace", "VALIDATION_KIND", "load_validation"]

VALIDATION_KIND = Validation.KIND


def replay_trace(trace: Trace, *, max_requests: int | None, time_scale: float) -> Trace:
    """The requests a validation replays: the first ``max_requests``, starting at 0, ``time_scale`` times faster."""
    if not math.isfinite(time_scale) or time_scale <= 0:
        raise ConfigError(f"--time-scale must be a number > 0, got {time_scale!r}")
    t = trace.head(max_requests) if max_requests is not None else trace
    if len(t) == 0:
        raise ConfigError(f"trace {trace.source}: no requests to replay")
    start = float(t.arrival_s[0])
    if start != 0.0:
        t = t.window(start, math.inf)
    return t.scale_rate(time_scale) if time_scale != 1.0 else t


def compare(predicted: Summary, measured: Summary, tolerances: dict[str, float]) -> dict[str, MetricComparison]:
    """Per metric (a summary path, ``latency_s.p95``): predicted, measured, relative error, tolerance and
    pass; only metrics both sides have."""
    out: dict[str, MetricComparison] = {}
    for path, tol in tolerances.items():
        p, m = predicted.metric(path), measured.metric(path)
        if p is None or m is None:
            continue
        rel = (m - p) / p if p != 0 else (0.0 if m == 0 else math.inf)
        out[path] = MetricComparison.model_validate({
            "predicted": p,
            "measured": m,
            "relative_error": rel if math.isfinite(rel) else None,
            "tolerance": tol,
            "pass": bool(math.isfinite(rel) and abs(rel) <= tol),
        })  # fmt: skip
    return out


def _verdict(metrics: dict[str, MetricComparison], generator_valid: bool) -> str:
    if not generator_valid or not metrics:
        return "invalid"
    return "pass" if all(m.passed for m in metrics.values()) else "fail"


@dataclass(frozen=True)
class _Sides:
    """What a validation compares: the prediction (and its SLO), the measurement, the server it ran."""

    predicted: Summary
    slo: SLO | None
    measured: Measured
    tolerances: dict[str, float]
    server: dict[str, Any] | None = None


def _refuse_fitted_on(dep: Any, replay: Trace) -> None:
    """A calibrated variant is never judged on the requests it was calibrated on."""
    from servewise.profile import tokens_fingerprint

    cal = dep.model.loaded().serving if dep.model is not None and dep.model.resolved is not None else None
    if cal is not None and cal.tokens_sha256 == tokens_fingerprint(replay.input_tokens):
        raise ConfigError(
            f"variant {dep.model.variant} was calibrated on these very requests ({cal.trace_source}); a prediction "
            "counts only on traffic it was not fitted on: validate on another trace window"
        )


class _CpuMeter:
    """CPU seconds the router process and the load generator spend on the requests of a load test.

    The router is the server process itself (its workers are its children, not counted).
    The load generator is the Locust processes this process starts (its other
    descendants, the server's tree excluded). A thread samples both from now until
    :meth:`read`, every 0.5 s (a scan of the process table costs CPU too). Locust's
    start-up (imports, parsing the locustfile) is not request work, so the load
    generator's CPU counts from the first sample at which the router has started
    spending CPU on requests; the router's counts from now. The router also spends CPU
    when idle (its event loop, health and metrics): measured for :data:`IDLE_S` before
    the load starts, that rate is reported as ``router_idle_cores``, so that CPU per
    request and CPU per second can be told apart.
    """

    INTERVAL_S = 0.5
    IDLE_S = 1.0

    def __init__(self, router_pid: int) -> None:
        import threading

        import psutil

        self._psutil = psutil
        try:
            self._router: psutil.Process | None = psutil.Process(router_pid)
            self._server_tree = {router_pid} | {c.pid for c in self._router.children(recursive=True)}
        except psutil.Error:
            self._router, self._server_tree = None, {router_pid}
        self._me = psutil.Process()
        self._client: dict[int, float] = {}  # Locust pid -> its CPU seconds when last seen
        self._client_at_start: float | None = None
        idle0 = self._router_s()
        t_idle = time.monotonic()
        time.sleep(self.IDLE_S)
        self._r0 = self._router_s()
        self._t0 = time.monotonic()
        self._idle_cores = (
            (self._r0 - idle0) / (self._t0 - t_idle) if self._r0 is not None and idle0 is not None else None
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="servewise-cpu-meter", daemon=True)
        self._thread.start()

    def _router_s(self) -> float | None:
        if self._router is None:
            return None
        try:
            t = self._router.cpu_times()
        except self._psutil.Error:
            return None
        return float(t.user + t.system)

    def _client_s(self) -> float:
        psutil = self._psutil
        try:
            kids = self._me.children(recursive=True)
        except psutil.Error:
            kids = []
        for k in kids:
            if k.pid in self._server_tree:
                continue
            try:
                if any(parent.pid in self._server_tree for parent in k.parents()):
                    self._server_tree.add(k.pid)  # a worker the server started since
                    continue
                t = k.cpu_times()
            except psutil.Error:
                continue
            self._client[k.pid] = float(t.user + t.system)
        return sum(self._client.values())

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            client = self._client_s()
            if self._client_at_start is None:
                r = self._router_s()
                if r is not None and self._r0 is not None and r - self._r0 > 0.02:  # requests are flowing
                    self._client_at_start = client

    def read(self) -> dict[str, float | None]:
        self._stop.set()
        self._thread.join()
        r1 = self._router_s()
        router = r1 - self._r0 if r1 is not None and self._r0 is not None else None
        client = self._client_s() - self._client_at_start if self._client_at_start is not None else None
        return {"router_cpu_s": router, "load_generator_cpu_s": client, "router_idle_cores": self._idle_cores,
                "load_s": time.monotonic() - self._t0}  # fmt: skip


def _served(
    deployment_path: Path, replay: Trace, out_dir: Path, load: Callable[[str], Measured], *, seed: int,
    warmup_s: float, serve_args: list[str] | None, progress: Any,
) -> _Sides:  # fmt: skip
    """Simulate the deployment on the replay, serve it here, load test it, stop it."""
    from servewise import serving
    from servewise.config import load_deployment
    from servewise.simulator import simulate

    dep = load_deployment(deployment_path)
    _refuse_fitted_on(dep, replay)
    _note(progress, f"simulating {len(replay)} requests")
    result = simulate(dep, replay, seed=seed, warmup_s=warmup_s)
    result.write(out_dir / "predicted")
    _note(progress, "starting the server")
    server = serving.start_server(deployment_path, workdir=out_dir / "server", args=[*(serve_args or []), "--seed", str(seed)])
    server_info: dict[str, Any] | None = None
    try:
        _note(progress, f"load testing {server.url}")
        meter = _CpuMeter(server.pid)
        measured = load(server.url)
        server_info = {"url": server.url, "pid": server.pid, "replicas": server.info.get("replicas"), **meter.read()}
    finally:
        code = server.stop()
        if server_info is not None:
            server_info["exit_code"] = code
    return _Sides(result.summary, dep.slo, measured, dict(VALIDATION_TOLERANCES), server_info)


def _endpoint(url: str, expected_path: Path, load: Callable[[str], Measured], progress: Any) -> _Sides:
    """Load test a running endpoint; the prediction is the advisor's ``expected.json``."""
    exp = load_artifact(expected_path, "expected")
    _note(progress, f"load testing {url}")
    return _Sides(exp.summary, None, load(url), {**VALIDATION_TOLERANCES, **exp.tolerances})


def validate(
    trace: Trace,
    out_dir: Path,
    *,
    deployment_path: Path | None = None,
    url: str | None = None,
    expected_path: Path | None = None,
    max_requests: int | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    serve_args: list[str] | None = None,
    stream: bool = False,
    api: str | None = None,
    token: str | None = None,
    model: str | None = None,
    processes: int = 1,
    warmup_s: float = 0.0,
    progress: Any = None,
) -> Validation:
    """Run a validation and write ``out_dir/validation.json`` (plus the predicted and measured files)."""
    from servewise import loadtest

    if (deployment_path is None) == (url is None):
        raise ConfigError("validate needs either a deployment (to serve and simulate) or an endpoint URL, not both")
    if url is not None and expected_path is None:
        raise ConfigError("validate --url needs --expected (the advisor's expected.json) to compare with")
    replay = replay_trace(trace, max_requests=max_requests, time_scale=time_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def load(target: str) -> Measured:
        return loadtest.run_loadtest(
            target, replay, out_dir=out_dir / "measured", stream=stream, api=api, token=token,  # type: ignore[arg-type]
            model=model or "servewise", processes=processes,
        )  # fmt: skip

    if deployment_path is not None:
        sides = _served(deployment_path, replay, out_dir, load, seed=seed, warmup_s=warmup_s, serve_args=serve_args,
                        progress=progress)  # fmt: skip
    else:
        assert url is not None and expected_path is not None
        sides = _endpoint(url, expected_path, load, progress)
    measured, gen = sides.measured.summary, sides.measured.generator
    metrics = compare(sides.predicted, measured, sides.tolerances)
    doc: dict[str, Any] = {
        "schema_version": Validation.SCHEMA_VERSION,
        "kind": VALIDATION_KIND,
        "metadata": {
            "tool": "servewise",
            "version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "wall_s": time.time() - t0,
            "deployment": str(deployment_path) if deployment_path is not None else None,
            "url": url,
            "expected": str(expected_path) if expected_path is not None else None,
            "trace_source": replay.source,
            "trace_sha256": replay.content_hash(),
            "requests": len(replay),
            "max_requests": max_requests,
            "time_scale": time_scale,
            "seed": seed,
        },
        "verdict": _verdict(metrics, gen.valid),
        "invalid_reasons": [*gen.invalid_reasons, *([] if metrics else ["no metric is available on both sides"])],
        "metrics": metrics,
        "predicted": sides.predicted,
        "measured": measured,
        "generator": gen,
        "server": sides.server,
        # the SLOs a client can see (not availability, cost or drift), by the simulator's rules
        "slo_measured": check_slo(sides.slo, measured, skip_unknown=True) if sides.slo is not None else None,
    }
    record: Validation = Validation.from_doc(doc, out_dir / Validation.FILE)
    record.write_json(out_dir / Validation.FILE)
    return record


def load_validation(path: str | Path) -> Validation:
    """A ``validation.json`` (or the folder holding it); anything else is one :class:`ArtifactError` line."""
    return load_artifact(path, "validation")


def _note(progress: Any, text: str) -> None:
    if progress is not None:
        progress(text)
