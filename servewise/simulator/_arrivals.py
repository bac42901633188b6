"""What both engines share: the trace's arrivals in time order, the response cache in front.

The FIFO engine (:mod:`._engine`) and the LLM engine (:mod:`._llm`) replay a trace the
same way: before each arrival every replica is brought up to its time (``_sync``), then
a request the server would refuse before routing (``invalid``: an output over the
model's context window, 422 live) is rejected with that cause, a response-cache hit is
answered at the cache's latency and anything else is routed (``_route``). Every
rejection keeps its cause (``reject_reason``). :meth:`TraceReplay._replay` is that
loop. It yields each arrival's time
before syncing, so the FIFO engine's SimPy process can first run the control events
(failures, autoscaler ticks, batch timers) due at or before it; the LLM engine, which
has none, just iterates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from servewise.policies import ResponseCache

__all__ = ["rejections", "PENDING", "COMPLETED", "CACHE_HIT", "REJECTED", "FAILED", "STATUS_NAMES", "TraceReplay"]

PENDING, COMPLETED, CACHE_HIT, REJECTED, FAILED = 0, 1, 2, 3, 4
"""A request's status in both engines' per-request arrays."""
STATUS_NAMES = ("pending", "completed", "cache_hit", "rejected", "failed")


def rejections(reject_reason: dict[int, str], causes: tuple[str, ...] = ()) -> dict[str, int]:
    """Rejected requests by cause, from each one's cause (``causes`` listed even at 0)."""
    out = dict.fromkeys(causes, 0)
    for why in reject_reason.values():
        out[why] = out.get(why, 0) + 1
    return out


class TraceReplay:
    """Base of the engines: the arrival loop and the cache lookup in front of routing."""

    arr: list[float]
    n: int
    _progress: Callable[[int, int], None] | None
    cache: ResponseCache | None
    keys: list[int] | None
    hit_latency_s: float
    status: list[int]
    dispatch: list[float]
    start: list[float]
    end: list[float]
    invalid: list[bool] | None = None
    """Per request: refused on arrival as the router does (output over the context window)."""
    reject_reason: dict[int, str]
    """Each rejected request's cause; counts by cause are derived from it (:func:`rejections`)."""

    def _reject(self, i: int, now: float, why: str) -> None:
        """Request ``i`` rejected at ``now`` for ``why`` (``queue_full``, ``window``, ...)."""
        self.status[i] = REJECTED
        self.end[i] = now
        self.reject_reason[i] = why

    def _sync(self, now: float) -> None:
        """Process everything that happens strictly before ``now``."""
        raise NotImplementedError

    def _route(self, i: int, now: float) -> None:
        """Send request ``i`` to a replica (or reject it)."""
        raise NotImplementedError

    def _arrive(self, i: int, now: float) -> None:
        if self.invalid is not None and self.invalid[i]:
            self._reject(i, now, "window")
            return
        cache = self.cache
        if cache is not None:
            assert self.keys is not None
            if cache.get(self.keys[i], now):
                self.status[i] = CACHE_HIT
                self.dispatch[i] = now
                self.start[i] = now
                self.end[i] = now + self.hit_latency_s
                return
        self._route(i, now)

    def _replay(self) -> Iterator[float]:
        """Every arrival in trace order: yield its time, then sync the replicas to it and take it in."""
        arr = self.arr
        n = self.n
        progress = self._progress
        sync = self._sync
        arrive = self._arrive
        for i in range(n):
            t = arr[i]
            if progress is not None and not i & 0xFFFF:
                progress(i, n)
            yield t
            sync(t)
            arrive(i, t)

    def _replayed(self) -> None:
        """Report the end of the run to the progress callback."""
        if self._progress is not None:
            self._progress(self.n, self.n)
