"""The state the LLM engine keeps: sequences, a replica's paged KV cache, the work in progress.

:class:`LLMReplica` is also the view load balancers read (``outstanding``, ``kv_load``,
``prefix_match``); :class:`LLMRaw` is what a run hands to the result builder.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servewise.trace import Request

from ._llm_step import _Noise

__all__ = ["LLMRaw", "LLMReplica", "Seq"]


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
