"""Response caches: which responses are kept, and which are dropped when full.

Every cache is a small class registered in :data:`cache_policies`. They are clock-free:
time enters only through ``now_s`` (seconds on the caller's clock, simulated or real),
which must not decrease from one call to the next. A cache only tracks keys; the
caller keeps the responses if it needs them.

Expiry rule (all caches with a TTL): an entry inserted at ``t`` is live while
``now_s < t + ttl_s`` and expired from ``now_s == t + ttl_s`` on.

Counters: ``hits + misses`` equals the number of ``get`` calls; ``evictions`` counts
live entries dropped to make room; ``expirations`` counts expired entries removed
(found expired by ``get``, purged by ``put``, or dropped for room while already expired).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import ClassVar, Protocol

from servewise.policies._params import check_float, check_int
from servewise.policies._registry import Registry

__all__ = [
    "ResponseCache",
    "cache_policies",
    "LRUCache",
    "TTLCache",
    "FIFOCache",
]


class ResponseCache(Protocol):
    """A bounded set of cached response keys with hit/miss accounting."""

    name: ClassVar[str]
    capacity: int
    hits: int
    misses: int
    evictions: int
    expirations: int

    def get(self, key: Hashable, now_s: float) -> bool:
        """True on a hit; an expired entry is a miss and is removed."""
        ...

    def put(self, key: Hashable, now_s: float) -> None:
        """Insert or refresh ``key``; evict per policy when over capacity."""
        ...

    def __len__(self) -> int: ...


cache_policies: Registry[ResponseCache] = Registry("cache")
"""Every response cache by name: ``cache_policies.get("lru")(capacity=1000)``."""


class _CacheBase:
    """Counters, capacity and size shared by the caches below."""

    name: ClassVar[str]

    def __init__(self, capacity: int) -> None:
        self.capacity = check_int(self.name, "capacity", capacity, 1)
        """Maximum number of entries held at once."""
        self.hits = 0
        """``get`` calls that found a live entry."""
        self.misses = 0
        """``get`` calls that found nothing or an expired entry."""
        self.evictions = 0
        """Live entries dropped to make room."""
        self.expirations = 0
        """Expired entries removed."""
        self._entries: OrderedDict[Hashable, float] = OrderedDict()  # key -> inserted_s

    def _insert(self, key: Hashable, now_s: float, ttl_s: float | None) -> None:
        """Add a key not held; when over capacity drop the oldest entry, counted as an
        expiration if it had expired (``ttl_s``), else as an eviction."""
        entries = self._entries
        entries[key] = now_s
        if len(entries) > self.capacity:
            _, inserted_s = entries.popitem(last=False)
            if ttl_s is not None and now_s >= inserted_s + ttl_s:
                self.expirations += 1
            else:
                self.evictions += 1

    def __len__(self) -> int:
        """Entries held, expired ones not yet removed included."""
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held (possibly expired); no counter changes."""
        return key in self._entries

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(len={len(self)}, capacity={self.capacity}, "
            f"hits={self.hits}, misses={self.misses}, evictions={self.evictions}, "
            f"expirations={self.expirations})"
        )


@cache_policies.register("lru")
class LRUCache(_CacheBase):
    """Least recently used: a hit or a put makes the key most recent; when full, the
    least recent entry goes.

    With ``ttl_s`` (seconds, > 0) an entry also expires ``ttl_s`` after its last
    ``put`` (a hit refreshes recency, not the expiry time).
    """

    def __init__(self, *, capacity: int, ttl_s: float | None = None) -> None:
        super().__init__(capacity)
        self.ttl_s = None if ttl_s is None else check_float("lru", "ttl_s", ttl_s, 0.0, strict=True)
        """Lifetime of an entry from insertion, in seconds (None: no expiry)."""

    def get(self, key: Hashable, now_s: float) -> bool:
        entries = self._entries
        inserted_s = entries.get(key)
        if inserted_s is None:
            self.misses += 1
            return False
        ttl_s = self.ttl_s
        if ttl_s is not None and now_s >= inserted_s + ttl_s:
            del entries[key]
            self.expirations += 1
            self.misses += 1
            return False
        entries.move_to_end(key)
        self.hits += 1
        return True

    def put(self, key: Hashable, now_s: float) -> None:
        entries = self._entries
        if key in entries:
            entries[key] = now_s
            entries.move_to_end(key)
            return
        self._insert(key, now_s, self.ttl_s)


@cache_policies.register("ttl")
class TTLCache(_CacheBase):
    """Time to live: an entry lives ``ttl_s`` seconds after its last ``put``.

    Hits do not extend the life. When full, the entry that expires soonest (the oldest
    insertion) goes. ``put`` first purges the expired entries at the old end.
    """

    def __init__(self, *, capacity: int, ttl_s: float) -> None:
        super().__init__(capacity)
        self.ttl_s = check_float("ttl", "ttl_s", ttl_s, 0.0, strict=True)
        """Lifetime of an entry from insertion, in seconds."""

    def get(self, key: Hashable, now_s: float) -> bool:
        entries = self._entries
        inserted_s = entries.get(key)
        if inserted_s is None:
            self.misses += 1
            return False
        if now_s >= inserted_s + self.ttl_s:
            del entries[key]
            self.expirations += 1
            self.misses += 1
            return False
        self.hits += 1
        return True

    def put(self, key: Hashable, now_s: float) -> None:
        entries = self._entries
        ttl_s = self.ttl_s
        # Entries are in insertion-time order (now_s never decreases): expired ones
        # sit at the front.
        while entries:
            oldest_s = entries[next(iter(entries))]
            if now_s < oldest_s + ttl_s:
                break
            entries.popitem(last=False)
            self.expirations += 1
        if key in entries:
            entries[key] = now_s
            entries.move_to_end(key)
            return
        self._insert(key, now_s, ttl_s)  # expired entries are gone: this evicts a live one


@cache_policies.register("fifo")
class FIFOCache(_CacheBase):
    """First in, first out: when full, the entry inserted first goes.

    Neither hits nor repeated ``put``s of a held key change its place. No expiry.
    """

    def __init__(self, *, capacity: int) -> None:
        super().__init__(capacity)

    def get(self, key: Hashable, now_s: float) -> bool:
        if key in self._entries:
            self.hits += 1
            return True
        self.misses += 1
        return False

    def put(self, key: Hashable, now_s: float) -> None:
        entries = self._entries
        if key in entries:
            return
        self._insert(key, now_s, None)
