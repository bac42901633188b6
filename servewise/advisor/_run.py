"""Evaluating candidates: one simulation per task, on local cores or on a Ray cluster.

A :class:`Task` carries a candidate's plain deployment document and the key of its
profiled variant; the trace and the variants are installed once per worker (a process
pool initializer, or one Ray object shared by every task), so a task costs a few KB to
send. ``evaluate`` is the only code that runs in a worker.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Protocol

from servewise.errors import ConfigError
from servewise.profile import Variant
from servewise.trace import Trace

__all__ = ["Task", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "evaluate", "prefix"]


@dataclass(frozen=True)
class Task:
    """Simulate candidate ``index`` on the trace prefix ``fraction``, at ``rate`` × the trace's rate."""

    index: int
    doc: dict[str, Any]
    variant_key: tuple[str, str]
    fraction: float = 1.0
    seed: int = 0
    rate: float = 1.0


_STATE: dict[str, Any] = {}


def _install(trace: Trace, variants: dict[tuple[str, str], Variant], warmup_s: float) -> None:
    _STATE.clear()
    _STATE.update(trace=trace, variants=variants, warmup_s=warmup_s, prefixes={})


def prefix(trace: Trace, fraction: float) -> Trace:
    """The first ``fraction`` of the trace's duration (the whole trace at 1)."""
    if fraction >= 1.0 or len(trace) == 0:
        return trace
    t0 = float(trace.arrival_s[0])
    return trace.window(t0, t0 + fraction * trace.duration_s, rebase=False)


def evaluate(task: Task) -> dict[str, Any]:
    """Simulate one task in this process (the trace and variants installed); the result's summary and SLO checks.

    ``summary`` is the run's :class:`~servewise.results.Summary`, ``slo`` its
    :class:`~servewise.results.SloResult` (None when the deployment sets no SLO).
    """
    from servewise.advisor._candidates import build_deployment
    from servewise.simulator import simulate

    trace: Trace = _STATE["trace"]
    cache: dict[float, Trace] = _STATE["prefixes"]
    tr = cache.get(task.fraction)
    if tr is None:
        tr = cache[task.fraction] = prefix(trace, task.fraction)
    if task.rate != 1.0:
        tr = tr.scale_rate(task.rate)
    dep = build_deployment(task.doc, _STATE["variants"][task.variant_key])
    t0 = time.perf_counter()
    res = simulate(dep, tr, seed=task.seed, warmup_s=_STATE["warmup_s"] / task.rate)
    wall = time.perf_counter() - t0
    return {
        "index": task.index,
        "fraction": task.fraction,
        "seed": task.seed,
        "rate": task.rate,
        "requests": len(tr),
        "sim_wall_s": wall,
        "summary": res.summary,
        "slo": res.slo,
    }


class Executor(Protocol):
    """Runs tasks, in any order, and returns their results in task order."""

    name: str
    jobs: int

    def run(self, tasks: list[Task], on_done: Callable[[int], None] | None = None) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def _worker_init(trace: Trace, variants: dict[tuple[str, str], Variant], warmup_s: float) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _install(trace, variants, warmup_s)


class LocalExecutor:
    """Tasks on this machine: in this process (``jobs=1``) or a pool of worker processes."""

    name = "local"

    def __init__(self, trace: Trace, variants: dict[tuple[str, str], Variant], warmup_s: float, jobs: int | None) -> None:
        self.jobs = jobs if jobs is not None else (os.cpu_count() or 1)
        self._args = (trace, variants, warmup_s)
        self._pool: ProcessPoolExecutor | None = None
        if self.jobs <= 1:
            _install(trace, variants, warmup_s)

    def run(self, tasks: list[Task], on_done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        if self.jobs <= 1 or len(tasks) <= 1:
            if self.jobs > 1:
                _install(*self._args)
            out = []
            for t in tasks:
                out.append(evaluate(t))
                if on_done:
                    on_done(1)
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=get_context("spawn"), initializer=_worker_init, initargs=self._args
            )
        futures = {self._pool.submit(evaluate, t): k for k, t in enumerate(tasks)}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        for f in as_completed(futures):
            results[futures[f]] = f.result()
            if on_done:
                on_done(1)
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _ray_evaluate(state: Any, task: Task) -> dict[str, Any]:
    trace, variants, warmup_s, token = state
    if _STATE.get("token") != token:
        _install(trace, variants, warmup_s)
        _STATE["token"] = token
    return evaluate(task)


class RayExecutor:
    """Tasks on a Ray cluster (``address``), or on a local Ray instance started here."""

    name = "ray"

    def __init__(
        self,
        trace: Trace,
        variants: dict[tuple[str, str], Variant],
        warmup_s: float,
        jobs: int | None,
        address: str | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'servewise[dist]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=jobs or os.cpu_count() or 1, **kwargs)
            self._started = True
        self.jobs = int(ray.cluster_resources().get("CPU", 1))
        token = f"{os.getpid()}-{time.time_ns()}"
        self._state = ray.put((trace, variants, warmup_s, token))
        self._fn = ray.remote(num_cpus=1)(_ray_evaluate)

    def run(self, tasks: list[Task], on_done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        ray = self._ray
        refs = [self._fn.remote(self._state, t) for t in tasks]
        index = {r: k for k, r in enumerate(refs)}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                results[index[r]] = ray.get(r)
                if on_done:
                    on_done(1)
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(
    kind: str,
    trace: Trace,
    variants: dict[tuple[str, str], Variant],
    warmup_s: float,
    *,
    jobs: int | None = None,
    address: str | None = None,
) -> Executor:
    """``local`` (the default) or ``ray``."""
    if kind == "local":
        return LocalExecutor(trace, variants, warmup_s, jobs)
    if kind == "ray":
        return RayExecutor(trace, variants, warmup_s, jobs, address)
    raise ConfigError(f"unknown executor {kind!r}; expected local or ray")


def t_quantile(conf: float, dof: int) -> float:
    """Two-sided Student t quantile for a confidence level (scipy)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + conf / 2, dof)) if dof > 0 else math.inf
