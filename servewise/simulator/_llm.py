"""The LLM engine: iteration-level (continuous) batching over a paged KV cache, per replica.

Each replica runs the loop of an engine like vLLM. At every iteration boundary its
scheduler picks the work of the next iteration, within ``max_num_seqs`` running
sequences and ``max_batched_tokens`` tokens:

- ``decode_first`` (vLLM V1, and V0 with chunked prefill): the running sequences in
  admission order (one token each when decoding, the next prompt chunk when still
  prefilling), then waiting requests, first come first served, fill the token budget;
- ``prefill_first`` (vLLM V0): when prompt work can be scheduled the iteration runs
  prompts only; otherwise every running sequence decodes.

KV memory is paged: a sequence holds ``ceil(tokens / block_size)`` blocks, allocated
before the iteration that needs them. A request is admitted only when its blocks are
free; when a running sequence cannot grow, the newest running sequence is preempted
(``recompute``: its blocks are freed and it later re-prefills prompt + generated
tokens; ``swap``: its KV is copied to the host and back, at ``swap_bandwidth``). With
prefix caching, full prompt blocks are kept, by the trace's block hashes (Mooncake's
``hash_ids``), after their sequence has prefilled them; a later prompt starting with
the same blocks skips their prefill. Unused cached blocks count as free memory and are
evicted least recently released first, as in vLLM's automatic prefix caching.

Iteration time is the profile's ``step_time(prefill_tokens, decode_seqs,
context_tokens, prefill_seqs)`` times a noise factor (log-normal, median 1, CV the
variant's ``noise_cv``) drawn per iteration from the replica's own stream, divided by
the pool's ``speed_factor``. Each output token is emitted at the end of its iteration:
the first ends the prefill (TTFT), the others one per decode iteration.

Fast-forward. While every running sequence decodes and nothing can be admitted, the
batch does not change until the first sequence finishes (or a block allocation would
fail): the iterations of that run are a *span*, their times evaluated in one vectorised
call and their effects applied in one step. A span is cut short, after the iteration in
progress, when a request arrives that the scheduler could admit. Iteration ``k`` of a
replica always uses the ``k``-th noise draw and the same arithmetic, so fast-forward
gives the same per-request times as stepping every iteration (``fast_forward: false``).

Arrivals are processed in time order; before routing one, every replica is advanced to
its arrival time (boundaries strictly before it are processed; a request arriving at a
boundary joins that boundary's scheduling). There are no control events (failures,
autoscaling are not modelled with this engine), so no SimPy process is needed.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import numpy as np

from servewise.config import ContinuousEngine, Deployment
from servewise.errors import ConfigError
from servewise.policies import from_config
from servewise.trace import Request, Trace

from ._arrivals import COMPLETED, FAILED, PENDING, TraceReplay, rejections
from ._engine import RawResult, allowed_pools, build_cache
from ._llm_sched import IterationScheduler
from ._llm_state import LLMRaw, LLMReplica, Seq, _Work
from ._llm_step import ProfileStepModel, StepModel, _decode_run, _Noise, _one, kv_capacity

__all__ = ["LLMEngine", "LLMReplica", "LLMRaw", "StepModel", "ProfileStepModel", "kv_capacity"]

_SPAN_CHUNK = 64
"""Iteration times of a span evaluated per call (a span is extended while it lasts)."""


def _prefix_blocks(eng: ContinuousEngine, trace: Trace) -> tuple[int, list[tuple[int, ...]]]:
    """Tokens per trace block (0: no prefix caching) and each request's block hashes."""
    if not eng.prefix_caching or trace.prefix_blocks is None:
        return 0, [()] * len(trace)
    T = trace.block_tokens
    if T is None:
        raise ConfigError(
            "the trace has prefix blocks but no block_tokens (tokens per block): load it with block_tokens, "
            "or set engine.prefix_caching: false"
        )
    if T % eng.block_size:
        raise ConfigError(
            f"engine.block_size ({eng.block_size}) must divide the trace's block_tokens ({T}) for prefix caching"
        )
    return T, list(trace.prefix_blocks)


class LLMEngine(TraceReplay, IterationScheduler):
    """Simulates a deployment with ``engine: {kind: continuous}``; :meth:`run` returns a RawResult."""

    def __init__(
        self,
        deployment: Deployment,
        trace: Trace,
        *,
        seed: int,
        warmup_s: float = 0.0,
        step_model: StepModel | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if len(trace) == 0:
            raise ConfigError("the trace holds no requests")
        eng = deployment.engine
        assert eng is not None and deployment.model is not None
        self.dep = deployment
        self.eng = eng
        self.trace = trace
        self.seed = seed
        self._progress = progress
        variant = deployment.model.loaded()
        self.variant = variant
        self.step = step_model if step_model is not None else ProfileStepModel(variant)
        n = len(trace)
        self.n = n
        if not np.any(trace.input_tokens) and n:
            raise ConfigError(
                "the trace has no input_tokens (0 for every request); the continuous engine needs token counts"
            )
        out = np.maximum(trace.output_tokens.astype(np.int64), 1)
        self.prompt_len = variant.served_prompt(trace.input_tokens, out).tolist()  # clipped as the server does
        self.out_len = out.tolist()
        over = variant.over_window(trace.output_tokens)
        self.invalid = over.tolist() if over is not None else None
        self.arr: list[float] = trace.arrival_s.tolist()
        self.cls = [trace.class_names[c] for c in trace.traffic_class.tolist()]
        self.counted = (trace.arrival_s >= warmup_s).tolist()
        self.bs = eng.block_size
        self.budget = eng.max_batched_tokens
        self.max_seqs = eng.max_num_seqs
        self.chunked = eng.chunked_prefill
        self.prefill_first = eng.priority == "prefill_first"
        self.ff = eng.fast_forward
        self.swap = eng.preemption == "swap"
        kvb = variant.kv_bytes_per_token or 0
        self.swap_s_per_block = (kvb * self.bs / eng.swap_bandwidth_bytes_per_s) if self.swap else 0.0
        if self.swap and not kvb:
            raise ConfigError(f"preemption 'swap' needs the KV bytes per token, and {variant.label} has none")

        # prefix caching: trace blocks of T tokens = E engine blocks
        self.T, self.hashes = _prefix_blocks(eng, trace)

        streams = np.random.SeedSequence(seed).spawn(3)
        self._rng_lb = np.random.default_rng(streams[0])
        noise_seeds = streams[1]
        self.policies = from_config(deployment, rng=self._rng_lb)  # the live router's factory
        self.lb = self.policies.balancer
        self.allowed_pools = allowed_pools(deployment, trace)
        self.cache = build_cache(self.policies, trace)
        self.keys: list[int] | None = trace.key.tolist() if self.cache is not None and trace.key is not None else None
        self.hit_latency_s = deployment.cache.hit_latency_s if deployment.cache else 0.0
        self.qcap = deployment.queue.capacity

        self.pools = deployment.resolved_pools()
        self.replicas: list[LLMReplica] = []
        self.pool_kv: list[dict[str, Any]] = []
        self._build_replicas(noise_seeds)

        self._outputs(n)

    def _build_replicas(self, noise_seeds: np.random.SeedSequence) -> None:
        """Every pool's replicas, each with its KV capacity and its own noise stream."""
        eng, variant = self.eng, self.variant
        total_reps = sum(p.replicas for p in self.pools)
        rep_seeds = noise_seeds.spawn(max(total_reps, 1))
        for pi, pool in enumerate(self.pools):
            tokens, how = kv_capacity(eng, variant, pool)
            blocks = tokens // self.bs
            if blocks < 1:
                raise ConfigError(f"pool {pool.name!r}: the KV cache holds {tokens} tokens, less than one block")
            self.pool_kv.append({"pool": pool.name, "kv_capacity_tokens": tokens, "kv_blocks": blocks, "source": how})
            for _ in range(pool.replicas):
                rid = len(self.replicas)
                weight = pool.weight if pool.weight is not None else pool.speed_factor
                r = LLMReplica(
                    rid, pi, pool.speed_factor, weight, blocks, tokens,
                    _Noise(np.random.default_rng(rep_seeds[rid]), self.step.noise),
                )
                r.E = self.T // self.bs if self.T else 1
                self.replicas.append(r)

    def _outputs(self, n: int) -> None:
        """The per-request outputs, filled in as the run goes."""
        self.status = [PENDING] * n
        self.rep = [-1] * n
        self.pool_of = [-1] * n
        self.dispatch = [math.nan] * n
        self.start = [math.nan] * n
        self.end = [math.nan] * n
        self.bsize = [0] * n
        self.seqs: list[Seq | None] = [None] * n
        self.itl_single: list[float] = []
        self.itl_chunks: list[tuple[np.ndarray, int]] = []
        self.reject_reason: dict[int, str] = {}
        self.spans = 0
        self._completions: list[tuple[float, int]] = []

    # ------------------------------------------------------------------ time

    def _extend(self, r: LLMReplica, w: _Work, upto: int) -> None:
        """Compute the end times of ``w``'s iterations up to index ``upto`` (exclusive), in chunks."""
        have = len(w.ends)
        if have >= upto:
            return
        if w.K == 1:
            pre = w.pre
            ptok = 0
            for _, c in pre:
                ptok += c
            t1 = _one(self.step, ptok, w.n, w.ctx0, len(pre))
            t1 = t1 * float(r.noise.get(w.noise0, 1)[0]) / r.speed + w.extra_s
            w.ends.append(w.t0 + t1)
            return
        hi = min(w.K, max(upto, have + _SPAN_CHUNK))
        ks = np.arange(have, hi, dtype=np.int64)
        m = len(ks)
        d = _decode_run(self.step, w.n, w.ctx0 + w.n * ks)
        d = d * r.noise.get(w.noise0 + have, m) / r.speed
        start = w.ends[-1] if have else w.t0
        acc = np.add.accumulate(np.concatenate(([start], d)))[1:]
        w.ends.extend(acc.tolist())

    def _advance(self, r: LLMReplica, until: float) -> None:
        """Process ``r``'s iteration boundaries strictly before ``until``."""
        while True:
            w = r.work
            if w is None:
                return
            ends = w.ends
            while ends[-1] < until and len(ends) < w.K:
                self._extend(r, w, len(ends) + 1)
            j = bisect_left(ends, until)  # iterations finished before until
            if j >= w.K:
                self._complete(r, w, w.K)
                self._schedule(r, ends[w.K - 1])
                continue
            if j > w.pos:
                self._progress_to(r, w, j)
            return

    def _progress_to(self, r: LLMReplica, w: _Work, j: int) -> None:
        """Iteration ``j`` of span ``w`` has started: allocate the blocks it needs."""
        assert w.need is not None
        blocks = int(w.need[j] - w.need[w.pos])
        if blocks:
            r.alloc(blocks)
        r.iterations += j - w.pos
        w.pos = j

    def _cut(self, r: LLMReplica) -> None:
        """A request the scheduler may admit arrived: end the span after the iteration in progress."""
        w = r.work
        if w is not None and w.K > w.pos + 1:
            w.K = w.pos + 1
            del w.ends[w.K :]
            if w.need is not None:
                w.need = w.need[: w.K]

    def _complete(self, r: LLMReplica, w: _Work, K: int) -> None:
        """Apply the ``K`` iterations of ``w`` (all ended): tokens, finishes, accounting."""
        ends = w.ends
        if K > 1 and w.pos < K - 1:
            self._progress_to(r, w, K - 1)
        t_end = ends[K - 1]
        busy = t_end - w.t0
        r.busy_s += busy
        if K == 1:
            r.kv_used_s += w.kv0 * busy
            e = t_end
            for s, c in w.pre:
                s.computed += c
                s.prefilled += c
                if s.computed >= s.need:
                    self._prefilled(r, s)
                    self._emit(r, s, e)
            for s in w.dec:
                s.computed += 1
                self._emit(r, s, e)
            return
        # a span: K decode iterations of the same sequences
        assert w.need is not None
        d = np.diff(np.asarray(ends[:K]), prepend=w.t0)
        r.kv_used_s += float(((w.kv0 + w.need[:K]) * d).sum())  # held blocks grow by need[k] from iteration k
        gaps = np.diff(np.asarray(ends[:K]))
        gmax = float(gaps.max()) if len(gaps) else 0.0
        m = 0
        first = ends[0]
        bs = self.bs
        E = r.E
        for s in w.dec:
            s.computed += K
            s.own = -(-s.computed // bs) - len(s.refs) * E  # the span allocated these as it went
            g = first - s.last_s
            if s.counted:
                m += 1
                self.itl_single.append(g)
            top = g if g > gmax else gmax
            if top > s.itl_max:
                s.itl_max = top
            s.gen += K
            s.last_s = t_end
        if m and len(gaps):
            self.itl_chunks.append((gaps, m))
        for s in [s for s in w.dec if s.gen >= s.out]:
            self._finish(r, s, t_end)

    def _prefilled(self, r: LLMReplica, s: Seq) -> None:
        """``s`` finished its prompt: its full prompt blocks join the prefix cache."""
        if not self.T or not s.hashes:
            return
        full = min(len(s.hashes), s.prompt // self.T)
        E = r.E
        for h in s.hashes[len(s.refs) : full]:
            # the sequence's own blocks for this prompt block become the shared cached block
            # (or are dropped, when another sequence cached the same block meanwhile)
            r.pin(h)
            s.refs.append(h)
            s.own -= E
            r.own_total -= E

    def _emit(self, r: LLMReplica, s: Seq, t: float) -> None:
        s.gen += 1
        if s.gen == 1:
            s.first_s = t
        else:
            g = t - s.last_s
            if s.counted:
                self.itl_single.append(g)
            if g > s.itl_max:
                s.itl_max = g
        s.last_s = t
        if s.gen >= s.out:
            self._finish(r, s, t)

    def _finish(self, r: LLMReplica, s: Seq, t: float) -> None:
        r.running.remove(s)
        self._release(r, s)
        i = s.i
        self.status[i] = COMPLETED
        self.end[i] = t
        if self.cache is not None:
            self._completions.append((t, i))

    # ------------------------------------------------------------------ arrivals

    def _route(self, i: int, now: float) -> None:
        reps = self.replicas
        if self.allowed_pools is not None:
            allowed = self.allowed_pools[i]
            if allowed is not None:
                reps = [r for r in reps if r.pool in allowed]
        if not reps:  # its class may use only pools without replicas
            self.status[i] = FAILED
            self.end[i] = now
            return
        prompt, out = self.prompt_len[i], self.out_len[i]
        req = Request(i, self.arr[i], prompt, out, self.keys[i] if self.keys else None, self.hashes[i], self.cls[i])
        r = reps[self.lb.choose(reps, req)] if len(reps) > 1 else reps[0]
        self.rep[i] = r.id
        self.pool_of[i] = r.pool
        self.dispatch[i] = now
        if not self.chunked and prompt + out - 1 > self.budget:
            self._reject(i, now, "prompt_too_long")
            return
        if -(-(prompt + out - 1) // self.bs) > r.total:
            self._reject(i, now, "kv_too_small")
            return
        if self.qcap is not None and len(r.waiting) >= self.qcap:
            self._reject(i, now, "queue_full")
            return
        s = Seq(i, prompt, out, self.hashes[i], self.counted[i])
        self.seqs[i] = s
        was_empty = not r.waiting
        r.waiting.append(s)
        r.waiting_blocks += -(-prompt // self.bs)
        if r.work is None:
            self._schedule(r, now)
        elif was_empty:
            self._cut(r)

    def _sync(self, now: float) -> None:
        for r in self.replicas:
            w = r.work
            # only a replica whose iteration in progress has ended (or whose known end times
            # run out) before ``now`` has anything to do
            if w is not None and (w.ends[-1] < now or w.ends[w.pos] < now):
                self._advance(r, now)
        if self._completions:
            self._completions.sort()
            keys = self.keys
            assert self.cache is not None and keys is not None
            for t, i in self._completions:
                self.cache.put(keys[i], t)
            self._completions.clear()

    def run(self) -> RawResult:
        for _ in self._replay():
            pass
        self._sync(math.inf)
        self._replayed()
        arr = self.arr
        horizon = max(max((e for e in self.end if not math.isnan(e)), default=0.0), arr[-1])
        for r in self.replicas:
            r.ended_at = horizon
        return self._raw(horizon)

    def _raw(self, horizon: float) -> RawResult:
        n = self.n
        first = np.full(n, np.nan)
        gen = np.zeros(n, dtype=np.int64)
        itl_max = np.full(n, np.nan)
        pre = np.zeros(n, dtype=np.int64)
        cached = np.zeros(n, dtype=np.int64)
        prefilled = np.zeros(n, dtype=np.int64)
        for i, s in enumerate(self.seqs):
            if s is None:
                continue
            first[i] = s.first_s
            gen[i] = s.gen
            itl_max[i] = s.itl_max if s.gen > 1 else np.nan
            pre[i] = s.preempted
            cached[i] = max(s.cached_tokens, 0)
            prefilled[i] = s.prefilled
        parts = [np.asarray(self.itl_single, dtype=float)] + [np.repeat(g, m) for g, m in self.itl_chunks]
        itl = np.concatenate(parts) if parts else np.zeros(0)
        kv = [
            {
                "replica": r.id,
                "pool": self.pools[r.pool].name,
                "kv_blocks": r.total,
                "kv_peak_blocks": r.kv_peak,
                "kv_held_peak_blocks": r.kv_held_peak,
                "kv_used_block_seconds": r.kv_used_s,
                "preemptions": r.preemptions,
                "evictions": r.evictions,
                "iterations": r.iterations,
            }
            for r in self.replicas
        ]
        llm = LLMRaw(
            first_token_s=first,
            generated=gen,
            itl_max_s=itl_max,
            preemptions=pre,
            cached_tokens=cached,
            prefilled_tokens=prefilled,
            itl_s=itl,
            kv=kv,
            rejections=rejections(self.reject_reason, ("queue_full", "prompt_too_long", "kv_too_small")),
            iterations=sum(r.iterations for r in self.replicas),
            spans=self.spans,
        )
        return RawResult(
            trace=self.trace,
            deployment=self.dep,
            seed=self.seed,
            status=np.asarray(self.status, dtype=np.int8),
            replica=np.asarray(self.rep, dtype=np.int64),
            pool=np.asarray(self.pool_of, dtype=np.int64),
            dispatch_s=np.asarray(self.dispatch),
            start_s=np.asarray(self.start),
            end_s=np.asarray(self.end),
            cold_start_s=np.zeros(n),
            retries=np.zeros(n, dtype=np.int64),
            batch_size=np.asarray(self.bsize, dtype=np.int64),
            replicas=self.replicas,  # type: ignore[arg-type]
            timeline=[(0.0, len(self.replicas)), (horizon, 0)] if horizon > 0 else [(0.0, len(self.replicas))],
            horizon_s=horizon,
            cold_starts=0,
            restarts=0,
            serverless_busy_s=0.0,
            reject_reason=self.reject_reason,
            served_input_tokens=np.asarray(self.prompt_len, dtype=np.int64),
            llm=llm,
            pool_kv=self.pool_kv,
        )
