"""Load balancers: a conformance suite over every registered one, then each against
what its algorithm promises (uniformity by chi-square, exact cycles, remap fractions)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servewise.errors import ConfigError, UnknownPolicyError
from servewise.policies import (
    ConsistentHash,
    LeastKV,
    LeastOutstanding,
    PowerOfDChoices,
    PrefixAffinity,
    RandomBalancer,
    RoundRobin,
    SmoothWeighted,
    lb_policies,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Req:
    """Stand-in with the fields of servewise.trace.Request."""

    id: int
    arrival_s: float = 0.0
    input_tokens: int = 1
    output_tokens: int = 1
    key: int | None = None
    prefix_blocks: tuple[int, ...] = ()
    traffic_class: str = "default"


@dataclass(slots=True)
class Rep:
    """A replica as a balancer sees it (ReplicaView)."""

    id: int
    outstanding: int = 0
    weight: float = 1.0
    kv_load: float = 0.0
    cached: frozenset[int] = frozenset()

    def prefix_match(self, request: Req) -> int:
        n = 0
        for h in request.prefix_blocks:
            if h not in self.cached:
                break
            n += 1
        return n


def reps(n: int, outstanding: list[int] | None = None, first_id: int = 0) -> list[Rep]:
    outs = outstanding or [0] * n
    return [Rep(first_id + i, outs[i]) for i in range(n)]


def make(name: str, seed: int = 0, **params: object):
    return lb_policies.get(name)(rng=np.random.default_rng(seed), **params)


# chi-square critical values at p = 0.001, by degrees of freedom
CHI2_999 = {3: 16.27, 5: 20.52, 7: 24.32, 9: 27.88, 15: 37.70}


def chi_square(counts: list[int], expected: list[float]) -> float:
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True))


# --------------------------------------------------------------------------- conformance

ALL = lb_policies.names()
VARIANTS = [(name, {}) for name in ALL] + [
    ("p2c", {"d": 1}),
    ("p2c", {"d": 3}),
    ("consistent_hash", {"virtual_nodes": 7, "load_bound": 1.25}),
]


def test_registry_has_the_documented_balancers():
    assert set(ALL) >= {"round_robin", "random", "least_outstanding", "p2c", "consistent_hash", "weighted"}
    for name in ALL:
        assert lb_policies.get(name).name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownPolicyError) as err:
        lb_policies.get("p3c")
    assert "p3c" in str(err.value)
    for name in ALL:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_rng_must_be_a_generator(name):
    with pytest.raises(ConfigError, match="rng"):
        lb_policies.get(name)(rng=42)


@st.composite
def replica_sets(draw):
    """A replica set: unique ids in appearance order, loads, weights."""
    ids = draw(st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True))
    outs = draw(st.lists(st.integers(0, 6), min_size=len(ids), max_size=len(ids)))
    ws = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=len(ids), max_size=len(ids)))
    return [Rep(i, o, w) for i, o, w in zip(ids, outs, ws, strict=True)]


scenario = st.lists(
    st.tuples(replica_sets(), st.lists(st.one_of(st.none(), st.integers(-5, 50)), max_size=8)),
    min_size=1,
    max_size=12,
)


def run(name: str, params: dict, seed: int, steps) -> list[int]:
    balancer = make(name, seed, **params)
    out = []
    rid = 0
    for replicas, keys in steps:
        for key in keys:
            rid += 1
            idx = balancer.choose(replicas, Req(rid, key=key))
            assert type(idx) is int
            assert 0 <= idx < len(replicas)
            out.append(replicas[idx].id)
    return out


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=[f"{n}{p or ''}" for n, p in VARIANTS])
@settings(max_examples=60, deadline=None)
@given(steps=scenario, seed=st.integers(0, 2**32 - 1))
def test_conformance_valid_index_and_deterministic(name, params, steps, seed):
    first = run(name, params, seed, steps)
    assert run(name, params, seed, steps) == first


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("p2c", {"d": 0}, "The 'd' parameter of p2c must be an int >= 1. Got 0 instead."),
        ("p2c", {"d": 2.0}, "The 'd' parameter of p2c must be an int >= 1. Got 2.0 instead."),
        ("p2c", {"d": True}, "The 'd' parameter of p2c must be an int >= 1. Got True instead."),
        ("consistent_hash", {"virtual_nodes": 0}, "'virtual_nodes' parameter of consistent_hash"),
        ("consistent_hash", {"load_bound": 0.9}, "must be a float >= 1. Got 0.9 instead."),
        ("consistent_hash", {"load_bound": float("inf")}, "'load_bound'"),
    ],
)
def test_bad_params_raise_config_error(name, params, message):
    with pytest.raises(ConfigError) as err:
        make(name, **params)
    assert message in str(err.value)


# --------------------------------------------------------------------------- round robin


def test_round_robin_exact_cycle():
    rr = RoundRobin(rng=np.random.default_rng(0))
    replicas = reps(3, first_id=10)
    assert [rr.choose(replicas, Req(i)) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_follows_ids_across_set_changes():
    rr = RoundRobin(rng=np.random.default_rng(0))
    a, b, c, d, z = Rep(1), Rep(2), Rep(3), Rep(4), Rep(9)

    def pick(replicas):
        return replicas[rr.choose(replicas, Req(0))].id

    assert [pick([a, b, c]), pick([a, b, c])] == [1, 2]
    assert pick([z, a, b, c]) == 3  # a replica added in front: continue after b
    assert pick([a, b, c, d]) == 4  # z gone, d appended: after c comes d
    assert pick([a, b, c]) == 1  # d (the last chosen) gone: wrap to the start
    assert pick([b, c]) == 2  # a (the last chosen) gone: its successor
    assert [pick([b, c]) for _ in range(3)] == [3, 2, 3]
    assert [pick([a, b, c, d]) for _ in range(2)] == [4, 1]  # c (last) found: d, then a
    assert pick([a, c, d]) == 3  # b gone: after a (the last chosen) comes c
    assert pick([a, d]) == 4  # c (the last chosen) gone: d, which followed it


def test_round_robin_drops_nobody_when_the_last_chosen_leaves_mid_list():
    rr = RoundRobin(rng=np.random.default_rng(0))
    replicas = reps(5)
    assert [rr.choose(replicas, Req(0)) for _ in range(3)] == [0, 1, 2]
    del replicas[2]  # id 2, chosen last, fails
    got = [replicas[rr.choose(replicas, Req(0))].id for _ in range(4)]
    assert got == [3, 4, 0, 1]


# --------------------------------------------------------------------------- random / p2c


def test_random_is_uniform():
    rnd = RandomBalancer(rng=np.random.default_rng(1))
    replicas = reps(8)
    draws = 80_000
    counts = Counter(rnd.choose(replicas, Req(i)) for i in range(draws))
    assert chi_square([counts[i] for i in range(8)], [draws / 8] * 8) < CHI2_999[7]


def test_p2c_is_uniform_when_loads_are_equal():
    p2c = PowerOfDChoices(rng=np.random.default_rng(2), d=2)
    replicas = reps(10, [3] * 10)
    draws = 50_000
    counts = Counter(p2c.choose(replicas, Req(i)) for i in range(draws))
    assert chi_square([counts[i] for i in range(10)], [draws / 10] * 10) < CHI2_999[9]


@pytest.mark.parametrize("d", [2, 3])
def test_p2c_win_probability_matches_theory(d):
    # Distinct loads: the replica with the k-th smallest load wins iff it is sampled and
    # the other d-1 samples all come from the n-1-k more loaded replicas:
    #   P(k) = C(n-1-k, d-1) / C(n, d).
    from math import comb

    n = 6
    loads = [5, 0, 4, 1, 3, 2]  # index i has rank loads[i]
    p2c = PowerOfDChoices(rng=np.random.default_rng(3), d=d)
    replicas = reps(n, loads)
    draws = 60_000
    counts = Counter(p2c.choose(replicas, Req(i)) for i in range(draws))
    expected = [draws * comb(n - 1 - loads[i], d - 1) / comb(n, d) for i in range(n)]
    used = [i for i in range(n) if expected[i] > 0]
    assert all(counts[i] == 0 for i in range(n) if expected[i] == 0)
    stat = chi_square([counts[i] for i in used], [expected[i] for i in used])
    assert stat < {4: 18.47, 3: 16.27}[len(used) - 1]


def test_p2c_samples_without_replacement():
    # d=2 of 3, loads [4, 0, 4]: the idle replica loses only when it is not sampled,
    # which is 1/3 without replacement (it would be 4/9 with replacement).
    p2c = PowerOfDChoices(rng=np.random.default_rng(4), d=2)
    replicas = reps(3, [4, 0, 4])
    wins = sum(p2c.choose(replicas, Req(i)) == 1 for i in range(30_000))
    assert abs(wins / 30_000 - 2 / 3) < 0.015


@settings(max_examples=40, deadline=None)
@given(steps=scenario, seed=st.integers(0, 2**32 - 1))
def test_p2c_with_d1_is_random(steps, seed):
    assert run("p2c", {"d": 1}, seed, steps) == run("random", {}, seed, steps)


@settings(max_examples=40, deadline=None)
@given(steps=scenario, seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 3))
def test_p2c_with_d_at_least_n_is_least_outstanding(steps, seed, extra):
    n_max = max(len(r) for r, _ in steps)
    got = run("p2c", {"d": n_max + extra}, seed, steps)
    assert got == run("least_outstanding", {}, seed, steps)


# --------------------------------------------------------------------------- least outstanding


@settings(max_examples=100, deadline=None)
@given(replicas=replica_sets(), seed=st.integers(0, 1000))
def test_least_outstanding_picks_a_minimum(replicas, seed):
    lo = LeastOutstanding(rng=np.random.default_rng(seed))
    idx = lo.choose(replicas, Req(0))
    assert replicas[idx].outstanding == min(r.outstanding for r in replicas)


def test_least_outstanding_breaks_ties_uniformly():
    lo = LeastOutstanding(rng=np.random.default_rng(5))
    replicas = reps(7, [1, 0, 2, 0, 0, 3, 0])
    draws = 40_000
    counts = Counter(lo.choose(replicas, Req(i)) for i in range(draws))
    assert set(counts) == {1, 3, 4, 6}
    assert chi_square([counts[i] for i in (1, 3, 4, 6)], [draws / 4] * 4) < CHI2_999[3]


# --------------------------------------------------------------------------- weighted


def test_weighted_matches_nginx_sequence():
    # nginx's documented example: weights a=5, b=1, c=1 give a a b a c a a
    w = SmoothWeighted(rng=np.random.default_rng(0))
    replicas = [Rep(0, weight=5), Rep(1, weight=1), Rep(2, weight=1)]
    seq = [w.choose(replicas, Req(i)) for i in range(14)]
    assert seq == [0, 0, 1, 0, 2, 0, 0] * 2


@pytest.mark.parametrize("weights", [[3, 2, 7, 1], [0.5, 1.5], [1, 1, 1], [10, 1]])
def test_weighted_shares_exact_over_each_cycle(weights):
    w = SmoothWeighted(rng=np.random.default_rng(0))
    replicas = [Rep(i, weight=x) for i, x in enumerate(weights)]
    unit = min(weights)
    cycle = round(sum(weights) / unit)
    for _ in range(5):
        counts = Counter(w.choose(replicas, Req(0)) for _ in range(cycle))
        assert [counts[i] for i in range(len(weights))] == [round(x / unit) for x in weights]


def test_weighted_keeps_state_by_id_when_order_changes():
    w = SmoothWeighted(rng=np.random.default_rng(0))
    rng = np.random.default_rng(7)
    replicas = [Rep(i, weight=x) for i, x in enumerate([3, 2, 7, 1])]
    counts: Counter[int] = Counter()
    calls = 1300
    for _ in range(calls):
        order = list(rng.permutation(4))
        shuffled = [replicas[i] for i in order]
        counts[shuffled[w.choose(shuffled, Req(0))].id] += 1
    for rep in replicas:
        assert abs(counts[rep.id] - calls * rep.weight / 13) <= 2


# --------------------------------------------------------------------------- consistent hash


def owner_ids(balancer, replicas, keys) -> list[int]:
    return [replicas[balancer.choose(replicas, Req(10**6 + k, key=k))].id for k in keys]


def test_consistent_hash_same_key_same_replica_and_seed_free():
    replicas = reps(8, first_id=100)
    keys = range(2000)
    a = owner_ids(make("consistent_hash", seed=1), replicas, keys)
    assert owner_ids(make("consistent_hash", seed=2), replicas, keys) == a
    ch = make("consistent_hash", seed=3)
    assert owner_ids(ch, replicas, keys) == a
    assert owner_ids(ch, list(reversed(replicas)), keys) == a  # order does not matter


def test_consistent_hash_none_key_hashes_by_request_id():
    ch = make("consistent_hash")
    replicas = reps(8)
    first = [ch.choose(replicas, Req(i)) for i in range(500)]
    assert [ch.choose(replicas, Req(i)) for i in range(500)] == first
    assert len(set(first)) == 8


def test_consistent_hash_spreads_keys_evenly():
    n, keys = 10, 40_000
    counts = Counter(owner_ids(make("consistent_hash"), reps(n), range(keys)))
    assert len(counts) == n
    shares = [counts[i] / (keys / n) for i in range(n)]
    assert min(shares) > 0.6 and max(shares) < 1.4, shares


@pytest.mark.parametrize("n", [4, 10, 20])
def test_consistent_hash_adding_a_replica_moves_about_1_over_n_plus_1(n):
    ch = make("consistent_hash")
    keys = range(20_000)
    before = owner_ids(ch, reps(n), keys)
    grown = reps(n + 1)
    after = owner_ids(ch, grown, keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == n for k in moved)  # keys move only to the new replica
    assert abs(len(moved) / len(keys) - 1 / (n + 1)) < 0.4 / (n + 1)


def test_consistent_hash_removing_a_replica_moves_only_its_keys():
    ch = make("consistent_hash")
    keys = range(10_000)
    replicas = reps(6)
    before = owner_ids(ch, replicas, keys)
    after = owner_ids(ch, replicas[:2] + replicas[3:], keys)
    for k in keys:
        assert after[k] == before[k] or before[k] == 2


def test_consistent_hash_is_stable_across_processes():
    # Ring points and non-int keys must not depend on Python's salted hash().
    code = (
        "import numpy as np\n"
        "from servewise.policies import ConsistentHash\n"
        "from types import SimpleNamespace as NS\n"
        "ch = ConsistentHash(rng=np.random.default_rng(0))\n"
        "r = [NS(id=i, outstanding=0, weight=1.0) for i in range(7)]\n"
        "keys = list(range(40)) + ['a', 'b', (1, 2)]\n"
        "print([ch.choose(r, NS(id=0, key=k)) for k in keys])\n"
    )
    outs = set()
    for salt in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=salt, PYTHONPATH=str(REPO))
        res = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        outs.add(res.stdout)
    assert len(outs) == 1


@settings(max_examples=100, deadline=None)
@given(
    replicas=replica_sets(),
    key=st.integers(0, 10**9),
    bound=st.sampled_from([1.0, 1.1, 1.25, 2.0]),
)
def test_consistent_hash_load_bound_respected(replicas, key, bound):
    import math

    ch = make("consistent_hash", virtual_nodes=20, load_bound=bound)
    idx = ch.choose(replicas, Req(0, key=key))
    total = sum(r.outstanding for r in replicas)
    assert replicas[idx].outstanding + 1 <= math.ceil(bound * (total + 1) / len(replicas))


def test_consistent_hash_load_bound_spreads_a_hot_key():
    n, bound = 5, 1.25
    replicas = reps(n)
    plain = make("consistent_hash")
    bounded = make("consistent_hash", load_bound=bound)
    home = plain.choose(replicas, Req(0, key=7))
    for i in range(100):  # one hot key, nothing finishes
        idx = bounded.choose(replicas, Req(i, key=7))
        replicas[idx].outstanding += 1
    # the home replica fills to the bound first; then the load is spread
    loads = [r.outstanding for r in replicas]
    assert loads[home] == max(loads)
    assert max(loads) <= -(-bound * 100 // n)
    # with no load the bound never binds: same answer as plain consistent hashing
    idle = reps(n)
    assert [bounded.choose(idle, Req(0, key=k)) for k in range(300)] == [
        plain.choose(idle, Req(0, key=k)) for k in range(300)
    ]


def test_consistent_hash_ring_has_virtual_nodes_points_per_replica():
    ch = ConsistentHash(rng=np.random.default_rng(0), virtual_nodes=17)
    ch.choose(reps(3), Req(0, key=1))
    assert len(ch._points) == 51
    assert sorted(ch._points) == ch._points


@pytest.mark.parametrize("name", ALL)
def test_accepts_the_real_request_type(name):
    trace = pytest.importorskip("servewise.trace")
    balancer = make(name)
    replicas = reps(4, [2, 0, 1, 3])
    for i, key in enumerate([None, 5, 5, 0]):
        request = trace.Request(
            id=i, arrival_s=0.1 * i, input_tokens=8, output_tokens=4, key=key, prefix_blocks=(), traffic_class="a"
        )
        assert 0 <= balancer.choose(replicas, request) < 4


# --------------------------------------------------------------------------- LLM-aware balancers


def test_least_kv_picks_the_least_kv_load_then_fewest_outstanding():
    b = LeastKV(rng=np.random.default_rng(0))
    rs = [Rep(0, outstanding=1, kv_load=0.9), Rep(1, outstanding=9, kv_load=0.2), Rep(2, outstanding=0, kv_load=0.5)]
    assert b.choose(rs, Req(1)) == 1  # KV load, not request count, decides
    rs = [Rep(0, outstanding=3, kv_load=0.2), Rep(1, outstanding=2, kv_load=0.2), Rep(2, outstanding=0, kv_load=0.7)]
    assert b.choose(rs, Req(2)) == 1


def test_least_kv_breaks_exact_ties_uniformly():
    b = LeastKV(rng=np.random.default_rng(3))
    rs = [Rep(i, outstanding=1, kv_load=0.25) for i in range(4)] + [Rep(4, outstanding=0, kv_load=0.5)]
    counts = Counter(b.choose(rs, Req(k)) for k in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert chi_square([counts[i] for i in range(4)], [1000.0] * 4) < CHI2_999[3]


def test_prefix_affinity_follows_the_longest_cached_prefix():
    b = PrefixAffinity(rng=np.random.default_rng(0))
    rs = [Rep(0, 2, cached=frozenset({1})), Rep(1, 2, cached=frozenset({1, 2, 3})), Rep(2, 0, cached=frozenset())]
    assert b.choose(rs, Req(1, prefix_blocks=(1, 2, 3, 4))) == 1
    # only a prefix counts: block 3 without 2 before it is no match
    rs = [Rep(0, 1, cached=frozenset({1, 3})), Rep(1, 1, cached=frozenset({1, 2}))]
    assert b.choose(rs, Req(2, prefix_blocks=(1, 2, 3))) == 1


def test_prefix_affinity_respects_the_load_bound():
    # bound = ceil(1.25 * (10 + 0 + 1) / 2) = 7: the cached replica (10 outstanding) is skipped
    b = PrefixAffinity(rng=np.random.default_rng(0), load_bound=1.25)
    rs = [Rep(0, 10, cached=frozenset({7, 8})), Rep(1, 0)]
    assert b.choose(rs, Req(1, prefix_blocks=(7, 8))) == 1
    # a looser bound lets affinity win
    b = PrefixAffinity(rng=np.random.default_rng(0), load_bound=3.0)
    assert b.choose(rs, Req(1, prefix_blocks=(7, 8))) == 0


def test_prefix_affinity_without_blocks_or_hits_is_least_outstanding():
    b = PrefixAffinity(rng=np.random.default_rng(0))
    rs = [Rep(0, 4), Rep(1, 1, cached=frozenset({5})), Rep(2, 3)]
    assert b.choose(rs, Req(1)) == 1
    assert b.choose(rs, Req(2, prefix_blocks=(9,))) == 1


def test_llm_balancers_refused_without_the_continuous_engine():
    from servewise.config import parse_deployment
    from servewise.errors import ConfigError as CE

    for policy in ("least_kv", "prefix_affinity"):
        with pytest.raises(CE, match="engine"):
            parse_deployment(
                {"replicas": 2, "service_time": {"distribution": "exponential", "mean_s": 1.0}, "balancer": {"policy": policy}}
            )
