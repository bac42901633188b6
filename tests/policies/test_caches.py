"""Response caches: invariants over every registered cache (hypothesis), agreement with
a plain-list reference model, and exact small examples per policy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servewise.errors import ConfigError
from servewise.policies import FIFOCache, LRUCache, TTLCache, cache_policies

# One or more ways to build each registered cache (capacity -> cache).
FACTORIES: dict[str, Callable[[int], object]] = {
    "lru": lambda cap: LRUCache(capacity=cap),
    "lru+ttl": lambda cap: LRUCache(capacity=cap, ttl_s=2.5),
    "ttl": lambda cap: TTLCache(capacity=cap, ttl_s=2.5),
    "fifo": lambda cap: FIFOCache(capacity=cap),
}


def test_every_registered_cache_is_covered():
    covered = {name.split("+")[0] for name in FACTORIES}
    assert set(cache_policies.names()) <= covered
    for name in cache_policies.names():
        assert cache_policies.get(name).name == name


ops = st.lists(
    st.tuples(
        st.sampled_from(["get", "put"]),
        st.integers(0, 7),  # key
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5, 3.0]),  # time step, s
    ),
    max_size=80,
)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 5), seq=ops)
def test_capacity_and_counters(kind, capacity, seq):
    cache = FACTORIES[kind](capacity)
    now_s, gets = 0.0, 0
    for op, key, dt in seq:
        now_s += dt
        if op == "get":
            gets += 1
            cache.get(key, now_s)
        else:
            cache.put(key, now_s)
            assert cache.get(key, now_s)  # a fresh put is always a hit at once
            gets += 1
        assert len(cache) <= capacity
        assert cache.hits + cache.misses == gets
    assert min(cache.hits, cache.misses, cache.evictions, cache.expirations) >= 0


class Model:
    """Reference: a list of [key, inserted_s] in eviction order (front goes first)."""

    def __init__(self, kind: str, capacity: int, ttl_s: float | None) -> None:
        self.kind, self.capacity, self.ttl_s = kind, capacity, ttl_s
        self.items: list[list] = []

    def _find(self, key):
        return next((e for e in self.items if e[0] == key), None)

    def _expired(self, e, now_s) -> bool:
        return self.ttl_s is not None and now_s >= e[1] + self.ttl_s

    def get(self, key, now_s) -> bool:
        e = self._find(key)
        if e is None:
            return False
        if self._expired(e, now_s):
            self.items.remove(e)
            return False
        if self.kind == "lru":
            self.items.remove(e)
            self.items.append(e)
        return True

    def put(self, key, now_s) -> None:
        if self.kind == "ttl":
            self.items = [e for e in self.items if not self._expired(e, now_s)]
        e = self._find(key)
        if e is not None:
            if self.kind != "fifo":
                self.items.remove(e)
                self.items.append([key, now_s])
            return
        self.items.append([key, now_s])
        if len(self.items) > self.capacity:
            self.items.pop(0)


@pytest.mark.parametrize(("kind", "ttl_s"), [("lru", None), ("lru", 2.5), ("ttl", 2.5), ("fifo", None)])
@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 4), seq=ops)
def test_agrees_with_reference_model(kind, ttl_s, capacity, seq):
    params = {"capacity": capacity} if ttl_s is None else {"capacity": capacity, "ttl_s": ttl_s}
    cache = cache_policies.get(kind)(**params)
    model = Model(kind, capacity, ttl_s)
    now_s = 0.0
    for op, key, dt in seq:
        now_s += dt
        if op == "get":
            assert cache.get(key, now_s) == model.get(key, now_s)
        else:
            cache.put(key, now_s)
            model.put(key, now_s)
        assert {k for k in range(8) if k in cache} == {e[0] for e in model.items}
        assert len(cache) == len(model.items)


# --------------------------------------------------------------------------- LRU


def test_lru_evicts_least_recently_used():
    c = LRUCache(capacity=2)
    c.put("a", 0.0)
    c.put("b", 1.0)
    assert c.get("a", 2.0)  # a is now more recent than b
    c.put("c", 3.0)  # evicts b
    assert not c.get("b", 4.0)
    assert c.get("a", 4.0) and c.get("c", 4.0)
    assert (c.hits, c.misses, c.evictions, c.expirations, len(c)) == (3, 1, 1, 0, 2)
    c.put("a", 5.0)  # refresh: a most recent, c least
    c.put("d", 6.0)
    assert "c" not in c and "a" in c and "d" in c


def test_lru_ttl_expires_exactly_at_insert_plus_ttl():
    c = LRUCache(capacity=4, ttl_s=10.0)
    c.put("a", 0.0)
    assert c.get("a", 9.999)  # a hit refreshes recency, not the expiry time
    assert not c.get("a", 10.0)  # inserted at 0, ttl 10: expired at exactly 10
    assert (c.hits, c.misses, c.expirations, len(c)) == (1, 1, 1, 0)


def test_lru_counts_an_expired_victim_as_expiration():
    c = LRUCache(capacity=1, ttl_s=1.0)
    c.put("a", 0.0)
    c.put("b", 1.0)  # a had expired at 1.0: not an eviction of a live entry
    c.put("c", 1.5)  # b is live: an eviction
    assert (c.evictions, c.expirations) == (1, 1)


# --------------------------------------------------------------------------- TTL


def test_ttl_expiry_boundary_and_refresh():
    c = TTLCache(capacity=4, ttl_s=10.0)
    c.put("a", 0.0)
    assert c.get("a", 9.5)
    assert not c.get("a", 10.0)  # expired at exactly insert + ttl
    c.put("b", 20.0)
    c.put("b", 25.0)  # re-put restarts the lifetime
    assert c.get("b", 34.9)
    assert not c.get("b", 35.0)
    assert c.expirations == 2


def test_ttl_evicts_soonest_expiring_even_if_recently_hit():
    c = TTLCache(capacity=2, ttl_s=10.0)
    c.put("a", 0.0)
    c.put("b", 1.0)
    assert c.get("a", 2.0)  # a hit does not extend a's life
    c.put("c", 3.0)  # full: a expires soonest, so a goes
    assert "a" not in c and "b" in c and "c" in c
    assert c.evictions == 1


def test_ttl_put_purges_expired_entries_first():
    c = TTLCache(capacity=2, ttl_s=10.0)
    c.put("a", 0.0)
    c.put("b", 1.0)
    c.put("c", 11.0)  # a and b both expired by now: purged, nothing evicted
    assert len(c) == 1
    assert (c.evictions, c.expirations) == (0, 2)


# --------------------------------------------------------------------------- FIFO


def test_fifo_order_exact():
    c = FIFOCache(capacity=3)
    for k in "abc":
        c.put(k, 0.0)
    assert c.get("a", 1.0)  # a hit does not move a
    c.put("d", 2.0)  # evicts a (first in)
    assert "a" not in c
    c.put("b", 3.0)  # re-put keeps b's place
    c.put("e", 4.0)  # evicts b
    assert [k for k in "abcde" if k in c] == ["c", "d", "e"]
    assert c.evictions == 2
    assert c.get("c", 1e9)  # no expiry


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("lru", {"capacity": 0}, "The 'capacity' parameter of lru must be an int >= 1. Got 0"),
        ("fifo", {"capacity": 2.0}, "'capacity' parameter of fifo"),
        ("lru", {"capacity": 1, "ttl_s": 0.0}, "The 'ttl_s' parameter of lru must be a float > 0"),
        ("ttl", {"capacity": 1, "ttl_s": -1}, "'ttl_s' parameter of ttl"),
        ("ttl", {"capacity": 1, "ttl_s": float("nan")}, "'ttl_s' parameter of ttl"),
    ],
)
def test_bad_params_raise_config_error(kind, params, message):
    with pytest.raises(ConfigError) as err:
        cache_policies.get(kind)(**params)
    assert message in str(err.value)


def test_ttl_requires_ttl_s():
    with pytest.raises(TypeError):
        TTLCache(capacity=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", cache_policies.names())
def test_every_cache_counts_each_eviction(name):
    """capacity + k distinct keys put at once (nothing expires): exactly k evictions."""
    params = {"capacity": 3}
    if name == "ttl":
        params["ttl_s"] = 100.0
    cache = cache_policies.get(name)(**params)
    for key in range(3 + 4):
        cache.put(key, 0.0)
    assert len(cache) == 3
    assert cache.evictions == 4 and cache.expirations == 0
