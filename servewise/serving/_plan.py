"""What the router runs, worked out once from a deployment and the serve settings.

:func:`make_plan` checks that the deployment can be served live (the pool asked for,
no continuous-batching engine, a model for real mode) and derives the pools, worker
specs, replica counts, admission limit and upstream timeout. The policy objects come
from :func:`servewise.policies.from_config`, as the simulator's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from servewise.config import Deployment, Pool
from servewise.errors import ConfigError
from servewise.hardware import usable_cpus
from servewise.service import build_service

from ._replicas import WorkerSpec
from ._settings import ServeSettings

__all__ = ["Plan", "make_plan", "default_upstream_timeout_s", "UPSTREAM_FLOOR_S", "UPSTREAM_FACTOR"]

UPSTREAM_FACTOR = 10.0
"""The default upstream timeout is this many times the expected worst case (see ServeSettings)."""
UPSTREAM_FLOOR_S = 30.0
"""Least default upstream timeout, seconds."""
_DEFAULT_QUEUE = 256
"""Requests a replica's unbounded queue is assumed to hold (for the admission limit and the timeout)."""
_DEFAULT_SEQ_LEN = 1024
"""Input tokens of the full batch of a deployment without profiled sequence lengths."""
_DRAWS = 200
"""Seeded draws of a full batch's time; the slowest one counts."""


@dataclass(frozen=True)
class Plan:
    """The served part of a deployment, and how the router treats it."""

    dep: Deployment
    path: Path
    pools: list[Pool]
    """The pools this server runs (``--pool`` keeps one)."""
    pool_index: dict[str, int]
    """Index of every pool of the deployment (placement refers to pools by index)."""
    mode: Literal["real", "synthetic"]
    specs: dict[str, WorkerSpec]
    wanted: dict[str, int]
    """Initial replicas per pool."""
    max_pending: int
    """Requests inside the router at once; more get 429."""
    max_retries: int
    per_slot: int
    """Requests one replica slot runs at once (the batch size)."""
    upstream_timeout_s: float
    model_name: str
    model_kind: str | None
    """``decoder``, ``encoder`` or ``classic`` for a profiled model; None for a service-time distribution."""

    @property
    def scaling_mode(self) -> str:
        return self.dep.scaling.mode


def make_plan(dep: Deployment, path: Path, s: ServeSettings) -> Plan:
    """The plan for serving ``dep`` (read from ``path``) with settings ``s``; ConfigError when it cannot be served."""
    all_pools = dep.resolved_pools()
    if s.pool is not None and s.pool not in [p.name for p in all_pools]:
        raise ConfigError(f"--pool {s.pool!r}: the deployment has pools {', '.join(p.name for p in all_pools)}")
    if dep.engine is not None:
        raise ConfigError(
            "engine: continuous batching is simulated but not served live yet; remove 'engine' to serve the "
            "deployment with dynamic batching"
        )
    pools = [p for p in all_pools if s.pool is None or p.name == s.pool]
    mode = _mode(dep, path, s)
    specs = _specs(dep, path, s, pools, mode)
    wanted = _wanted(dep, s, pools)
    per_slot = dep.batching.max_batch_size if dep.batching is not None else 1
    variant = dep.model.resolved if dep.model is not None else None
    return Plan(
        dep=dep,
        path=path,
        pools=pools,
        pool_index={p.name: k for k, p in enumerate(all_pools)},
        mode=mode,
        specs=specs,
        wanted=wanted,
        max_pending=s.max_pending if s.max_pending is not None else _max_pending(dep, pools, specs, wanted, per_slot),
        max_retries=dep.faults.max_retries if dep.faults is not None else 2,
        per_slot=per_slot,
        upstream_timeout_s=s.upstream_timeout_s if s.upstream_timeout_s is not None else default_upstream_timeout_s(dep, s),
        model_name=str(variant.model) if variant is not None else dep.name,
        model_kind=str(variant.model_kind) if variant is not None else None,
    )


def _mode(dep: Deployment, path: Path, s: ServeSettings) -> Literal["real", "synthetic"]:
    if s.mode == "synthetic" or (s.mode == "auto" and dep.model is None):
        return "synthetic"
    if dep.model is None:
        raise ConfigError(
            f"{path}: real mode needs a profiled model (model: profile/variant); this deployment has only a "
            "service_time distribution: use --mode synthetic"
        )
    return "real"


def fitting_threads(dep: Deployment, pools: list[Pool], s: ServeSettings) -> int:
    """Intra-op threads per replica that fit this host: its CPUs ÷ the most replicas that
    can run at once (``--replicas``, the pools', or ``max_replicas`` when scaling), at
    least 1 — so replicas do not oversubscribe the cores they share."""
    if s.replicas is not None and dep.scaling.mode == "fixed":
        most = s.replicas * len(pools)  # --replicas N: N in each pool served
    else:
        most = dep.most_replicas(tuple(pools))
    return max(1, usable_cpus() // max(most, 1))


def _specs(dep: Deployment, path: Path, s: ServeSettings, pools: list[Pool], mode: str) -> dict[str, WorkerSpec]:
    # --threads, else the deployment's host threads (what the simulator charged), else what fits
    threads = s.threads if s.threads is not None else (dep.host_threads() or fitting_threads(dep, pools, s))
    workdir = s.workdir or Path.home() / ".cache" / "servewise" / "models"
    return {
        p.name: WorkerSpec(
            deployment_path=path,
            pool=p.name,
            mode=mode,
            threads=threads,
            seed=s.seed,
            workdir=workdir,
            concurrency=p.concurrency if p.concurrency is not None else dep.concurrency,
        )
        for p in pools
    }


def _wanted(dep: Deployment, s: ServeSettings, pools: list[Pool]) -> dict[str, int]:
    sc = dep.scaling
    wanted: dict[str, int] = {}
    for p in pools:
        n = s.replicas if s.replicas is not None else p.replicas
        if sc.mode == "autoscale":
            assert sc.min_replicas is not None and sc.max_replicas is not None
            n = min(max(n, sc.min_replicas), sc.max_replicas)
        wanted[p.name] = n
    return wanted


def _max_pending(dep: Deployment, pools: list[Pool], specs: dict[str, WorkerSpec], wanted: dict[str, int], per_slot: int) -> int:
    sc = dep.scaling
    most = sum((wanted[p.name] if sc.mode == "fixed" else (sc.max_replicas or 1)) for p in pools)
    cap = dep.queue.capacity if dep.queue.capacity is not None else _DEFAULT_QUEUE
    per = max(spec.concurrency for spec in specs.values()) * per_slot + cap
    return max(most, 1) * per


def default_upstream_timeout_s(dep: Deployment, s: ServeSettings) -> float:
    """The rule documented at :attr:`ServeSettings.upstream_timeout_s`, in seconds."""
    slo = dep.slo
    limits = [v for v in (slo.p50_latency_s, slo.p90_latency_s, slo.p95_latency_s, slo.p99_latency_s) if v] if slo else []
    if limits:
        return max(UPSTREAM_FACTOR * max(limits), UPSTREAM_FLOOR_S)
    bat = dep.batching
    batch = bat.max_batch_size if bat is not None else 1
    variant = dep.model.resolved if dep.model is not None else None
    seq_len = max((p.seq_len for p in variant.points if p.phase != "decode"), default=_DEFAULT_SEQ_LEN) if variant else _DEFAULT_SEQ_LEN
    out = s.max_tokens if variant is None or variant.model_kind == "decoder" else 1
    service = build_service(
        dep,
        batch_cost_factor=bat.batch_cost_factor if bat is not None else 0.0,
        rng=np.random.default_rng(0),
        input_tokens=np.zeros(0, dtype=np.int64),
        output_tokens=np.zeros(0, dtype=np.int64),
    )
    full_s = max(service.batch_time_of([seq_len] * batch, [out] * batch) for _ in range(_DRAWS))
    speed = min((p.speed_factor for p in dep.resolved_pools()), default=1.0)
    concurrency = dep.concurrency
    queue = dep.queue.capacity if dep.queue.capacity is not None else _DEFAULT_QUEUE
    ahead = math.ceil(queue / batch) / concurrency  # full batches queued ahead of a request, per slot
    return max(UPSTREAM_FACTOR * full_s / speed * (1.0 + ahead), UPSTREAM_FLOOR_S)
