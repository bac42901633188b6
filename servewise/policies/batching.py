"""Batching rules: when a free slot should run a batch, and how big.

Every rule is a small class registered in :data:`batching_rules` with one method,
``decide(queued, oldest_enqueued_s, now_s) -> BatchDecision``, called when a replica has
a free slot. Rules are clock-free: time enters only through the arguments. The
simulator calls them on simulated time; the live router on real time.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple, Protocol

from servewise.policies._params import check_float, check_int
from servewise.policies._registry import Registry

__all__ = ["BatchDecision", "BatchingRule", "batching_rules", "DynamicBatching"]


class BatchDecision(NamedTuple):
    """What a free slot does now."""

    take: int
    """Requests to run now as one batch, oldest first (0: run nothing yet)."""
    wake_s: float | None
    """With ``take == 0``: when to decide again if no request arrives before (None: never)."""


class BatchingRule(Protocol):
    """Decides batches for a replica with a free slot."""

    name: ClassVar[str]
    max_batch_size: int

    def decide(self, queued: int, oldest_enqueued_s: float, now_s: float) -> BatchDecision:
        """``queued`` requests wait (``>= 0``); the oldest joined the queue at ``oldest_enqueued_s``."""
        ...


batching_rules: Registry[BatchingRule] = Registry("batching rule")
"""Every batching rule by name: ``batching_rules.get("dynamic")(max_batch_size=8, max_wait_s=0.01)``."""


@batching_rules.register("dynamic")
class DynamicBatching:
    """Triton-style dynamic batching.

    A free slot runs a batch as soon as ``max_batch_size`` requests wait, or once the
    oldest waiting request has waited ``max_wait_s`` (then with whatever is queued, up
    to ``max_batch_size``). ``max_wait_s = 0`` runs whatever is queued at once.
    """

    name: ClassVar[str]

    def __init__(self, *, max_batch_size: int, max_wait_s: float) -> None:
        self.max_batch_size = check_int("dynamic", "max_batch_size", max_batch_size, 1)
        """Largest batch one slot runs."""
        self.max_wait_s = check_float("dynamic", "max_wait_s", max_wait_s, 0.0)
        """Longest the oldest queued request waits for its batch to fill, seconds."""

    def decide(self, queued: int, oldest_enqueued_s: float, now_s: float) -> BatchDecision:
        if queued <= 0:
            return BatchDecision(0, None)
        if queued >= self.max_batch_size:
            return BatchDecision(self.max_batch_size, None)
        deadline = oldest_enqueued_s + self.max_wait_s
        if now_s >= deadline:
            return BatchDecision(queued, None)
        return BatchDecision(0, deadline)
