"""The LLM engine's scheduler: what a replica runs in its next iteration.

At every iteration boundary :meth:`IterationScheduler._schedule` picks the work of the
next iteration within ``max_num_seqs`` running sequences and ``max_batched_tokens``
tokens (``decode_first``: the running sequences, then waiting requests first come first
served; ``prefill_first``: prompt work first, decodes when there is none), allocates the
KV blocks it needs, preempting the newest running sequences when they run out, and
decides how many identical decode-only iterations may be fast-forwarded as one span.
The engine (:class:`._llm.LLMEngine`) owns the state and the clock; this mixin reads its
settings and calls back its :meth:`_extend` to time the work.
"""

from __future__ import annotations

import math

import numpy as np

from ._llm_state import LLMReplica, Seq, _Work

__all__ = ["IterationScheduler"]


class IterationScheduler:
    """The scheduling half of :class:`._llm.LLMEngine` (a mixin over the engine's state)."""

    T: int
    bs: int
    budget: int
    max_seqs: int
    chunked: bool
    prefill_first: bool
    ff: bool
    swap: bool
    swap_s_per_block: float
    spans: int
    start: list[float]
    bsize: list[int]

    def _extend(self, r: LLMReplica, w: _Work, upto: int) -> None:
        raise NotImplementedError

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
        preempted = r.preemptions
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
        # sequences and the budget stay the same and free blocks only shrink. Not so when
        # prefill_first preempted a sequence for the decodes: the blocks it freed came after
        # the admission check, so the next boundary may admit what this one refused.
        stable = not (self.prefill_first and r.preemptions != preempted)
        if self.ff and stable and not w.pre and n == len(running) and w.extra_s == 0.0:
            # a run of identical decode iterations: until the first sequence finishes ...
            K = min(s.out - s.gen for s in dec)
            if K > 1:
                # ... or a block allocation would fail (iteration k needs a block for each
                # sequence whose token count after it starts a new block)
                res = np.bincount(np.fromiter((s.computed % bs for s in dec), np.int64, n), minlength=bs)
                ks = np.arange(K, dtype=np.int64)
                # blocks needed by iterations 1..k in all: Σ_r res[r] · floor((r + k) / bs)
                need = (res[None, :] * ((np.arange(bs)[None, :] + ks[:, None]) // bs)).sum(axis=1)
                # with a request waiting, a span must not evict cached blocks: one its prompt
                # would reuse costs it room while cached, and nothing once evicted (a chunked
                # prompt's first chunk needs the same blocks either way), so an eviction can
                # admit at the next boundary what this one refused
                room = r.free if r.waiting and r.lru else r.room
                K = min(K, int(np.searchsorted(need, room, side="right")))
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
