"""Analytic bounds: discard candidates that cannot meet the SLOs, without simulating them.

Two facts hold for every request of any candidate, whatever the balancer:

- **Its own service.** A request takes at least its service time alone on one replica
  (batching pads, never shortens; a decoder's tokens come one step at a time), so each
  latency percentile is at least that percentile of the lone service times. Possible
  response-cache hits (a key seen before) count as 0.
- **The fluid queue.** The pool serves work at most at its capacity ``C`` (replicas ×
  concurrency × speed, at the maximum replica count when scaling). Each request brings
  at least its work at the most efficient batch size; a backlog ``B`` of that work ahead
  of a request is cleared no faster than ``B / C``. The fluid backlog obeys Lindley's
  recursion ``B_i = max(0, B_{i-1} + W_{i-1} − C·(t_i − t_{i-1}))``, and the request's
  latency is at least ``(B_i + W_i) / C`` — the latency in an ideal single queue that
  shares every server perfectly. That holds for one FIFO slot; where requests can pass
  each other (several replicas or slots, an LLM engine) a short request need not wait
  for a long one's work, so there every request counts at the smallest work of any
  (requests in the system still cannot leave faster than ``C`` over that work).

Noise in the profile's latency model can make a request faster than its model time, so
times are scaled down by ``exp(−2σ)`` first. Candidates with a bounded queue or faults
are not bounded (rejections and retries change who is measured). A candidate is pruned
only when a bound exceeds an SLO limit; the bound's value is recorded in the plan.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from servewise.config import Deployment
from servewise.profile import Variant
from servewise.stats import summarize
from servewise.trace import Trace

__all__ = ["lower_bounds", "violated"]


def _own_and_work(dep: Deployment, trace: Trace) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(lone service time, least work per request in replica-seconds, noise σ), speed 1."""
    inp = np.maximum(trace.input_tokens.astype(np.int64), 1)
    out = np.maximum(trace.output_tokens.astype(np.int64), 1)
    if dep.model is None:
        st = dep.service_time
        from servewise.config import Linear

        if isinstance(st, Linear):
            own = st.base_s + st.per_item_s + st.per_input_token_s * inp + st.per_output_token_s * out
            sigma = math.sqrt(math.log1p(st.noise_cv**2))
            b = dep.batching.max_batch_size if dep.batching else 1
            work = st.base_s / b + st.per_item_s + st.per_input_token_s * inp + st.per_output_token_s * out
            return own.astype(float), work.astype(float), sigma
        return None  # a random distribution: no per-request bound worth its cost
    v = dep.model.loaded()
    own, work, sigma = _profiled(dep, trace, v, v.served_prompt(inp, out), out)
    over = v.over_window(trace.output_tokens)
    if over is not None:  # rejected on arrival: no work, and no latency to bound
        own, work = np.where(over, 0.0, own), np.where(over, 0.0, work)
    return own, work, sigma


def _profiled(
    dep: Deployment, trace: Trace, v: Variant, inp: np.ndarray, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`_own_and_work` of a profiled model, for prompts as the server clips them."""
    sigma = math.sqrt(math.log1p(v.noise_cv**2))
    if dep.engine is not None:
        e = dep.engine
        prefill = np.maximum(v.step_time(inp, 0, 0, 1).astype(float), 0.0)
        ctx = inp + out / 2.0
        tpot1 = np.maximum(v.step_time(0, 1, ctx).astype(float), 0.0)
        own = prefill + (out - 1) * tpot1
        if e.prefix_caching and trace.prefix_blocks is not None:
            own = (out - 1) * tpot1  # a cached prefix may skip nearly all of the prefill
            prefill = np.zeros_like(prefill)
        b = e.max_num_seqs
        per_token = np.maximum(v.step_time(0, b, b * ctx).astype(float) / b, 0.0)
        idle = float(np.asarray(v.step_time(0, 0, 0, 0)).reshape(-1)[0])
        marginal = np.maximum(prefill - idle, 0.0)
        work = marginal + (out - 1) * per_token
        return own, work, sigma
    if v.model_kind == "decoder":
        from servewise.service import generation_times

        own = generation_times(v, inp, out)
        b = dep.batching.max_batch_size if dep.batching else 1
        if b > 1:
            p, o = int(np.median(inp)), int(np.median(out))
            ratio = v.service_time(b, p, o) / b / v.service_time(1, p, o)
            work = own * min(ratio, 1.0)
        else:
            work = own
        return own, work, sigma
    own = v.batch_time(1, inp).astype(float)
    b = dep.batching.max_batch_size if dep.batching else 1
    work = v.batch_time(b, inp).astype(float) / b if b > 1 else own
    return own, np.minimum(work, own), sigma


def _capacity(dep: Deployment) -> float:
    """Replica-seconds of service per second the deployment can give at most."""
    sc = dep.scaling
    if sc.mode != "fixed":
        assert sc.max_replicas is not None
        pool = dep.resolved_pools()[0]
        conc = pool.concurrency or dep.concurrency
        return sc.max_replicas * conc * pool.speed_factor
    return sum(p.replicas * (p.concurrency or dep.concurrency) * p.speed_factor for p in dep.resolved_pools())


def _overtaking(dep: Deployment) -> bool:
    """Whether a request can finish before one that arrived earlier (more than one FIFO slot)."""
    if dep.engine is not None:
        return True
    sc = dep.scaling
    if sc.mode != "fixed":
        pool = dep.resolved_pools()[0]
        return (sc.max_replicas or 1) * (pool.concurrency or dep.concurrency) > 1
    return sum(p.replicas * (p.concurrency or dep.concurrency) for p in dep.resolved_pools()) > 1


def _hit_possible(trace: Trace, dep: Deployment) -> np.ndarray:
    """Requests whose key appeared before (a response-cache hit is possible)."""
    n = len(trace)
    if dep.cache is None or trace.key is None:
        return np.zeros(n, dtype=bool)
    _, first = np.unique(trace.key, return_index=True)
    seen = np.ones(n, dtype=bool)
    seen[first] = False
    return seen


def lower_bounds(dep: Deployment, trace: Trace, *, warmup_s: float = 0.0) -> dict[str, Any] | None:
    """Lower bounds on the latency (and TTFT / TPOT) percentiles, or None when no bound applies."""
    if dep.queue.capacity is not None or dep.faults is not None or len(trace) == 0:
        return None
    got = _own_and_work(dep, trace)
    if got is None:
        return None
    own, work, sigma = got
    safety = math.exp(-2.0 * sigma)
    speed = max(p.speed_factor for p in dep.resolved_pools())
    own = own * safety / speed
    work = work * safety
    hit = _hit_possible(trace, dep)
    own = np.where(hit, 0.0, own)
    work = np.where(hit, 0.0, work)
    cap = _capacity(dep)
    t = trace.arrival_s.astype(float)
    queued = work
    if _overtaking(dep) and bool((~hit).any()):
        # several slots (or an engine's side-by-side sequences) let a short request pass a long one:
        # it need not wait for the work ahead of it, only for as many requests as the fluid holds
        queued = np.where(hit, 0.0, float(work[~hit].min()))
    backlog = _lindley(t, queued, cap)
    fluid = (backlog + queued) / cap
    lat = np.maximum(own, np.where(hit, 0.0, fluid))
    counted = t >= warmup_s
    rho = float(work.sum() / (cap * max(float(t[-1] - t[0]), 1e-9)))
    out: dict[str, Any] = {"latency_s": summarize(lat[counted]), "utilisation": rho}
    if dep.engine is not None and not (dep.engine.prefix_caching and trace.prefix_blocks is not None):
        v = dep.model.loaded() if dep.model else None
        assert v is not None
        inp = np.maximum(trace.input_tokens.astype(np.int64), 1)
        ttft = np.maximum(v.step_time(inp, 0, 0, 1).astype(float), 0.0) * safety / speed
        out["ttft_s"] = summarize(np.where(hit, 0.0, ttft)[counted & ~hit])
    return out


def _lindley(t: np.ndarray, work: np.ndarray, cap: float) -> np.ndarray:
    """Fluid backlog (replica-seconds) found by each arrival: Lindley's recursion in closed form.

    With ``x_i = W_{i-1} − C·(t_i − t_{i-1})`` and ``S`` its running sum (``S_0 = 0``),
    ``B_i = S_i − min_{k<=i} S_k``.
    """
    if len(t) == 0:
        return np.zeros(0)
    x = work[:-1] - np.diff(t) * cap
    s = np.concatenate(([0.0], np.cumsum(x)))
    return np.maximum(s - np.minimum.accumulate(s), 0.0)


_BOUND_SLOS = {
    **{f"p{q}_latency_s": ("latency_s", f"p{q}") for q in (50, 90, 95, 99)},
    **{f"p{q}_ttft_s": ("ttft_s", f"p{q}") for q in (50, 90, 95, 99)},
}


def violated(bounds: dict[str, Any] | None, slo: Any) -> tuple[str, float, float] | None:
    """The first SLO a bound shows cannot be met: (name, bound, limit), or None."""
    if bounds is None or slo is None:
        return None
    for name, (key, sub) in _BOUND_SLOS.items():
        limit = getattr(slo, name, None)
        if limit is None or key not in bounds:
            continue
        value = bounds[key].get(sub)
        if value is not None and value > limit:
            return name, float(value), float(limit)
    return None
