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
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from servewise.config import ContinuousEngine, Deployment, Pool
from servewise.errors import ConfigError
from servewise.policies import from_config
from servewise.profile import Variant, step_features
from servewise.trace import Request, Trace

from ._engine import CACHE_HIT, COMPLETED, FAILED, PENDING, REJECTED, RawResult, allowed_pools, build_cache

__all__ = ["LLMEngine", "LLMReplica", "LLMRaw", "StepModel", "ProfileStepModel", "kv_capacity"]

_NOISE_CHUNK = 1024
_SPAN_CHUNK = 64
"""Iteration times of a span evaluated per call (a span is extended while it lasts)."""


class StepModel(Protocol):
    """Iteration times of an LLM engine on a replica of speed 1, seconds."""

    def times(self, prefill_tokens: np.ndarray, decode_seqs: np.ndarray, context_tokens: np.ndarray, prefill_seqs: np.ndarray) -> np.ndarray:
        """Noise-free time of each iteration (arrays of equal length)."""
        ...

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` multiplicative noise factors, one per iteration."""
        ...


def _one(step: StepModel, p: int, d: int, c: int, ps: int) -> float:
    f = getattr(step, "one", None)
    if f is not None:
        return float(f(p, d, c, ps))
    return float(step.times(np.array([float(p)]), np.array([float(d)]), np.array([float(c)]), np.array([float(ps)]))[0])


def _decode_run(step: StepModel, n: int, ctx: np.ndarray) -> np.ndarray:
    f = getattr(step, "decode_run", None)
    if f is not None:
        return np.asarray(f(n, ctx), dtype=float)
    m = len(ctx)
    return np.asarray(step.times(np.zeros(m), np.full(m, float(n)), ctx.astype(float), np.zeros(m)), dtype=float)


class ProfileStepModel:
    """A profiled decoder's ``step_time`` with log-normal noise (median 1, CV ``noise_cv``).

    The engine calls :meth:`one` for a single iteration and :meth:`decode_run` for a span.
    Both evaluate a linear model term by term (``intercept + Σ coef·feature``) in the same
    order, so an iteration's time is the same bit for bit whether it is evaluated alone
    or in a span (a tree ensemble goes through :meth:`times` either way).
    """

    def __init__(self, variant: Variant) -> None:
        lm = variant.latency_model
        if lm is None or lm.target != "step_time":
            raise ConfigError(f"{variant.label} has no step_time latency model: the continuous engine needs one")
        self._lm = lm
        self._sigma = float(np.sqrt(np.log1p(lm.noise_cv**2)))

    def times(self, prefill_tokens: np.ndarray, decode_seqs: np.ndarray, context_tokens: np.ndarray, prefill_seqs: np.ndarray) -> np.ndarray:
        return self._lm.predict(step_features(prefill_tokens, decode_seqs, context_tokens, prefill_seqs))

    def one(self, prefill_tokens: int, decode_seqs: int, context_tokens: int, prefill_seqs: int) -> float:
        """One iteration's time (what the engine calls; a linear model term by term)."""
        lm = self._lm
        if lm.kind == "linear":
            p = float(prefill_tokens)
            c0, c1, c2, c3, c4 = lm.coef_s
            t = lm.intercept_s + c0 * p
            t = t + c1 * (p * p / max(float(prefill_seqs), 1.0))
            t = t + c2 * float(decode_seqs)
            t = t + c3 * float(context_tokens)
            t = t + c4 * (1.0 if p > 0 else 0.0)
            return max(t, 1e-9)
        return float(self.times(np.array([prefill_tokens]), np.array([decode_seqs]), np.array([context_tokens]), np.array([prefill_seqs]))[0])

    def decode_run(self, decode_seqs: int, context_tokens: np.ndarray) -> np.ndarray:
        """Times of decode-only iterations of ``decode_seqs`` sequences (bit for bit :meth:`one`'s)."""
        lm = self._lm
        if lm.kind == "linear":
            c0, c1, c2, c3, c4 = lm.coef_s
            # the prefill terms are 0 (x + 0.0 == x), so this is one()'s arithmetic
            t = (lm.intercept_s + c2 * float(decode_seqs)) + c3 * context_tokens.astype(float)
            return np.maximum(t, 1e-9)
        m = len(context_tokens)
        return self.times(np.zeros(m), np.full(m, float(decode_seqs)), context_tokens.astype(float), np.zeros(m))

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self._sigma == 0:
            return np.ones(n)
        return rng.lognormal(0.0, self._sigma, n)


class _Noise:
    """A replica's noise factors by iteration index: a pure function of the seed and the index.

    Factors are drawn in chunks of :data:`_NOISE_CHUNK`; reads never go back before the
    start of an earlier read, so a refill drops what lies before the current one.
    """

    __slots__ = ("_rng", "_draw", "buf", "base")

    def __init__(self, rng: np.random.Generator, draw: Callable[[np.random.Generator, int], np.ndarray]) -> None:
        self._rng = rng
        self._draw = draw
        self.buf = np.empty(0)
        self.base = 0  # iteration index of buf[0]

    def get(self, start: int, n: int) -> np.ndarray:
        lo = start - self.base
        assert lo >= 0, "noise read before an earlier read"
        if lo + n > len(self.buf):
            chunks = -(-(lo + n - len(self.buf)) // _NOISE_CHUNK)
            parts = [self.buf] + [np.asarray(self._draw(self._rng, _NOISE_CHUNK), dtype=float) for _ in range(chunks)]
            self.buf = np.concatenate(parts)[lo:]
            self.base = start
            lo = 0
        return self.buf[lo : lo + n]


def kv_capacity(engine: ContinuousEngine, variant: Variant, pool: Pool, catalog: Any = None) -> tuple[int, str]:
    """KV-cache capacity of one replica of ``pool``, in tokens, and where it came from."""
    if engine.kv_capacity_tokens is not None:
        return engine.kv_capacity_tokens, "engine.kv_capacity_tokens"
    kvb = variant.kv_bytes_per_token
    if not kvb:
        raise ConfigError(
            f"{variant.label} has no kv_bytes_per_token (profile a decoder with servewise profile): "
            "set engine.kv_capacity_tokens"
        )
    if engine.kv_cache_bytes is not None:
        return engine.kv_cache_bytes // kvb, f"engine.kv_cache_bytes / kv_bytes_per_token ({kvb})"
    if pool.instance_type == "local":
        raise ConfigError(
            f"pool {pool.name!r}: the KV-cache size needs the replica's memory: give the pool an instance_type from "
            "the hardware catalog (servewise profile transfer --help lists them), or set engine.kv_cache_bytes "
            "or engine.kv_capacity_tokens"
        )
    if catalog is None:
        from servewise.hardware import load_catalog

        catalog = load_catalog()
    inst = catalog.get(pool.instance_type)
    if variant.weights_bytes is None:
        raise ConfigError(f"{variant.label} has no weights_bytes: set engine.kv_cache_bytes or engine.kv_capacity_tokens")
    mem = inst.device_mem_bytes
    free = int(mem * engine.memory_utilization) - variant.weights_bytes
    if free < kvb * engine.block_size:
        raise ConfigError(
            f"pool {pool.name!r}: {variant.label} does not fit on {inst.name}: weights {variant.weights_bytes} B, "
            f"device memory {mem} B × memory_utilization {engine.memory_utilization} leaves no KV-cache block"
        )
    return free // kvb, (
        f"{inst.name} device memory {mem} B × {engine.memory_utilization} − weights {variant.weights_bytes} B, "
        f"/ kv_bytes_per_token {kvb}"
    )


class Seq:
    """A request inside a replica's engine."""

    __slots__ = (
        "i",
        "prompt",
        "out",
        "need",
        "computed",
        "gen",
        "own",
        "refs",
        "hashes",
        "swapped",
        "first_s",
        "last_s",
        "itl_max",
        "preempted",
        "cached_tokens",
        "prefilled",
        "counted",
        "started",
    )

    def __init__(self, i: int, prompt: int, out: int, hashes: tuple[int, ...], counted: bool) -> None:
        self.i = i
        self.prompt = prompt
        self.out = out
        self.need = prompt  # tokens to prefill before the next token comes out
        self.computed = 0  # tokens in the KV cache
        self.gen = 0  # tokens emitted
        self.own = 0  # KV blocks held that are not shared cache blocks
        self.refs: list[int] = []  # prefix-cache blocks held (by hash)
        self.hashes = hashes
        self.swapped = False
        self.first_s = math.nan
        self.last_s = math.nan
        self.itl_max = 0.0
        self.preempted = 0
        self.cached_tokens = -1  # prompt tokens found cached at the first admission (-1: not admitted yet)
        self.prefilled = 0  # prompt tokens computed, recomputation included
        self.counted = counted
        self.started = math.nan


class _Work:
    """What a replica is running: one general iteration, or a span of decode-only iterations."""

    __slots__ = ("t0", "ends", "K", "pos", "dec", "pre", "n", "ctx0", "noise0", "need", "extra_s", "kv0")

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.ends: list[float] = []
        self.K = 1  # iterations in the work
        self.pos = 0  # the iteration in progress (its blocks are allocated)
        self.dec: list[Seq] = []
        self.pre: list[tuple[Seq, int]] = []
        self.n = 0
        self.ctx0 = 0
        self.noise0 = 0
        self.need: np.ndarray | None = None  # span: cumulative new blocks by iteration
        self.extra_s = 0.0  # swap copies
        self.kv0 = 0  # span: blocks in use at its start


class LLMReplica:
    """One replica's engine state; also the view balancers read (``outstanding``, ``kv_load``, ``prefix_match``)."""

    def __init__(self, rid: int, pool: int, speed: float, weight: float, blocks: int, kv_tokens: int, noise: _Noise) -> None:
        self.id = rid
        self.pool = pool
        self.speed = speed
        self.weight = weight
        self.total = blocks
        self.kv_tokens = kv_tokens
        self.noise = noise
        self.iterations = 0  # iterations started (= noise draws used)
        self.running: list[Seq] = []
        self.waiting: deque[Seq] = deque()
        self.waiting_blocks = 0
        self.own_total = 0
        self.pinned: dict[int, int] = {}  # cached block hash -> sequences holding it
        self.lru: OrderedDict[int, None] = OrderedDict()  # cached blocks nobody holds, least recently released first
        self.E = 1  # engine blocks per trace block
        self.work: _Work | None = None
        # accounting (RawResult's Replica fields)
        self.launched_at = 0.0
        self.ready_at = 0.0
        self.ended_at: float | None = None
        self.starting_s = 0.0
        self.down_s = 0.0
        self.busy_s = 0.0
        self.kv_used_s = 0.0  # ∫ blocks held by running sequences dt
        self.kv_peak = 0  # most blocks ever in use, cached ones included (<= total)
        self.kv_held_peak = 0  # most blocks held by running sequences
        self.preemptions = 0
        self.evictions = 0

    # -- views -----------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return len(self.running) + len(self.waiting)

    @property
    def held(self) -> int:
        """Blocks held by running sequences (their own plus the cached ones they use)."""
        return self.own_total + len(self.pinned) * self.E

    @property
    def kv_load(self) -> float:
        return (self.held + self.waiting_blocks) / self.total

    def prefix_match(self, request: Request) -> int:
        n = 0
        pinned, lru = self.pinned, self.lru
        for h in request.prefix_blocks:
            if h in pinned or h in lru:
                n += 1
            else:
                break
        return n

    # -- blocks ----------------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.total - self.own_total - (len(self.pinned) + len(self.lru)) * self.E

    @property
    def room(self) -> int:
        """Blocks an allocation may take: free ones plus cached ones nobody holds."""
        return self.free + len(self.lru) * self.E

    def alloc(self, n: int) -> None:
        """Take ``n`` blocks, evicting unused cached blocks (least recently released first)."""
        free = self.free
        while free < n:
            self.lru.popitem(last=False)
            self.evictions += 1
            free += self.E
        self.own_total += n
        used = self.total - free + n
        if used > self.kv_peak:
            self.kv_peak = used
        h = self.held
        if h > self.kv_held_peak:
            self.kv_held_peak = h

    def pin(self, h: int) -> None:
        c = self.pinned.get(h)
        if c is None:
            self.lru.pop(h, None)
            self.pinned[h] = 1
        else:
            self.pinned[h] = c + 1

    def unpin(self, h: int) -> None:
        c = self.pinned[h] - 1
        if c:
            self.pinned[h] = c
        else:
            del self.pinned[h]
            self.lru[h] = None


@dataclass
class LLMRaw:
    """Per-request token times and engine counters of a continuous-engine run."""

    first_token_s: np.ndarray
    generated: np.ndarray
    itl_max_s: np.ndarray
    preemptions: np.ndarray
    cached_tokens: np.ndarray
    prefilled_tokens: np.ndarray
    itl_s: np.ndarray  # every inter-token gap of counted requests
    kv: list[dict[str, Any]] = field(default_factory=list)  # per replica
    rejections: dict[str, int] = field(default_factory=dict)
    iterations: int = 0
    spans: int = 0


class LLMEngine:
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
        self.prompt_len = np.maximum(trace.input_tokens.astype(np.int64), 1).tolist()
        self.out_len = np.maximum(trace.output_tokens.astype(np.int64), 1).tolist()
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
        self.T = 0
        self.hashes: list[tuple[int, ...]] = [()] * n
        if eng.prefix_caching and trace.prefix_blocks is not None:
            T = trace.block_tokens
            if T is None:
                raise ConfigError(
                    "the trace has prefix blocks but no block_tokens (tokens per block): load it with block_tokens, "
                    "or set engine.prefix_caching: false"
                )
            if T % self.bs:
                raise ConfigError(
                    f"engine.block_size ({self.bs}) must divide the trace's block_tokens ({T}) for prefix caching"
                )
            self.T = T
            self.hashes = list(trace.prefix_blocks)

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

        # per-request outputs
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
        self.rejections = {"queue_full": 0, "prompt_too_long": 0, "kv_too_small": 0}
        self.spans = 0
        self._completions: list[tuple[float, int]] = []

    # ------------------------------------------------------------------ scheduling

    def _lookup(self, r: LLMReplica, s: Seq) -> int:
        """Cached prompt blocks usable by ``s`` (a prefix of its hashes, leaving >= 1 token to compute)."""
        if not self.T or not s.hashes:
            return 0
        limit = min(len(s.hashes), (s.need - 1) // self.T)
        n = 0
        pinned, lru = r.pinned, r.lru
        hs = s.hashes
        while n < limit and (hs[n] in pinned or hs[n] in lru):
            n += 1
        return n

    def _release(self, r: LLMReplica, s: Seq) -> None:
        r.own_total -= s.own
        s.own = 0
        for h in s.refs:
            r.unpin(h)
        s.refs = []

    def _preempt(self, r: LLMReplica, s: Seq, w: _Work) -> None:
        r.preemptions += 1
        s.preempted += 1
        if self.swap:
            w.extra_s += self.swap_s_per_block * (s.own + len(s.refs) * r.E)
            s.swapped = True
        else:
            s.need = s.prompt + s.gen
            s.computed = 0
        self._release(r, s)
        r.waiting.appendleft(s)
        r.waiting_blocks += -(-s.need // self.bs)

    def _schedule(self, r: LLMReplica, t: float) -> None:
        """Decide the iteration starting at ``t`` (or leave the replica idle)."""
        w = _Work(t)
        budget = self.budget
        running = r.running
        bs = self.bs
        if self.prefill_first:
            # prompt work (unfinished prompts, then new ones) first, but only with a block to
            # spare for each running sequence whose next token needs one: otherwise the decodes
            # it stalls would preempt it, and it would come back, again and again (a livelock)
            reserve = sum(1 for s in running if s.computed >= s.need and s.computed % bs == 0)
            budget = self._run_running(r, w, budget, prefill_only=True, reserve=reserve)
            budget = self._admit(r, w, budget, only="prompts", reserve=reserve)
            if not w.pre:  # nothing admitted: every running sequence decodes, then swapped ones resume
                budget = self._run_running(r, w, budget, prefill_only=False)
                budget = self._admit(r, w, budget, only="resumes")
        else:
            budget = self._run_running(r, w, budget, prefill_only=False)
            budget = self._admit(r, w, budget)
        if not w.pre and not w.dec:
            r.work = None
            return
        r.work = w
        w.noise0 = r.iterations
        dec = w.dec
        n = len(dec)
        w.n = n
        ctx = 0
        for s in dec:
            ctx += s.computed + 1
        w.ctx0 = ctx
        K = 1
        # Whatever kept a waiting request out now (running sequences, token budget, free
        # blocks) keeps it out until a sequence finishes: during a decode-only run the
        # sequences and the budget stay the same and free blocks only shrink.
        if self.ff and not w.pre and n == len(running) and w.extra_s == 0.0:
            # a run of identical decode iterations: until the first sequence finishes ...
            K = min(s.out - s.gen for s in dec)
            if K > 1:
                # ... or a block allocation would fail (iteration k needs a block for each
                # sequence whose token count after it starts a new block)
                res = np.bincount(np.fromiter((s.computed % bs for s in dec), np.int64, n), minlength=bs)
                ks = np.arange(K, dtype=np.int64)
                # blocks needed by iterations 1..k in all: Σ_r res[r] · floor((r + k) / bs)
                need = (res[None, :] * ((np.arange(bs)[None, :] + ks[:, None]) // bs)).sum(axis=1)
                K = min(K, int(np.searchsorted(need, r.room, side="right")))
                w.need = need[:K]
        w.K = max(K, 1)
        w.kv0 = r.held
        if K > 1:
            self.spans += 1
        r.iterations += 1
        self._extend(r, w, 1)

    def _run_running(self, r: LLMReplica, w: _Work, budget: int, *, prefill_only: bool, reserve: int = 0) -> int:
        """Schedule the running sequences in order (decode: 1 token; prefill: the next chunk),
        preempting the newest ones when blocks run out. ``prefill_only``: the unfinished
        prompts alone, each only while ``reserve`` blocks stay free (never preempting)."""
        running = r.running
        bs = self.bs
        k = 0
        while k < len(running) and budget > 0:
            s = running[k]
            decoding = s.computed >= s.need
            if prefill_only and decoding:
                k += 1
                continue
            if decoding:
                ntok = 1
            else:
                ntok = min(s.need - s.computed, budget)
            blocks = -(-(s.computed + ntok) // bs) - s.own - len(s.refs) * r.E
            if prefill_only and blocks > r.room - reserve:
                break
            victim_self = False
            while blocks > r.room:
                v = running.pop()
                self._preempt(r, v, w)
                if v is s:
                    victim_self = True
                    break
            if victim_self:
                break
            if blocks > 0:
                r.alloc(blocks)
                s.own += blocks
            if decoding:
                w.dec.append(s)
            else:
                w.pre.append((s, ntok))
            budget -= ntok
            k += 1
        return budget

    def _admit(self, r: LLMReplica, w: _Work, budget: int, *, only: str = "", reserve: int = 0) -> int:
        """Admit waiting requests, first come first served, while they fit (keeping ``reserve``
        blocks free). ``only="prompts"`` stops at a swapped-out decoding sequence,
        ``only="resumes"`` at anything else."""
        running = r.running
        waiting = r.waiting
        bs = self.bs
        E = r.E
        while waiting:
            if len(running) >= self.max_seqs:
                return budget
            if budget <= 0:
                return budget
            s = waiting[0]
            hits = 0
            newly_pinned = 0
            decoding = s.swapped and s.computed >= s.need
            if only and decoding != (only == "resumes"):
                return budget
            if s.swapped:
                ntok = 1 if decoding else min(s.need - s.computed, budget)
                tokens = s.computed + ntok
            else:
                hits = self._lookup(r, s)
                start = hits * self.T
                remaining = s.need - start
                if not self.chunked and remaining > budget:
                    return budget
                ntok = min(remaining, budget)
                tokens = start + ntok
                newly_pinned = sum(1 for h in s.hashes[:hits] if h not in r.pinned)
            blocks = -(-tokens // bs) - hits * E
            if blocks > r.room - newly_pinned * E - reserve:
                return budget
            waiting.popleft()
            r.waiting_blocks -= -(-s.need // bs)
            if not s.swapped:
                for h in s.hashes[:hits]:
                    r.pin(h)
                s.refs = list(s.hashes[:hits])
                s.computed = hits * self.T
                if s.cached_tokens < 0:
                    s.cached_tokens = s.computed
            else:
                w.extra_s += self.swap_s_per_block * -(-s.computed // bs)
                s.swapped = False
            r.alloc(blocks)
            s.own += blocks
            running.append(s)
            if math.isnan(s.started):
                s.started = w.t0
                self.start[s.i] = w.t0
                self.bsize[s.i] = len(running)
            if decoding:
                w.dec.append(s)
            else:
                w.pre.append((s, ntok))
            budget -= ntok
        return budget

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

    def _reject(self, i: int, now: float, why: str) -> None:
        self.status[i] = REJECTED
        self.end[i] = now
        self.rejections[why] += 1

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

    def _sync_all(self, now: float) -> None:
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
        arr = self.arr
        n = self.n
        progress = self._progress
        cache = self.cache
        keys = self.keys
        for i in range(n):
            t = arr[i]
            if progress is not None and not i & 0xFFFF:
                progress(i, n)
            self._sync_all(t)
            if cache is not None:
                assert keys is not None
                if cache.get(keys[i], t):
                    self.status[i] = CACHE_HIT
                    self.dispatch[i] = t
                    self.start[i] = t
                    self.end[i] = t + self.hit_latency_s
                    continue
            self._route(i, t)
        self._sync_all(math.inf)
        if progress is not None:
            progress(n, n)
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
            rejections=dict(self.rejections),
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
            llm=llm,
            pool_kv=self.pool_kv,
        )
