"""The continuous-batching LLM engine (``engine: {kind: continuous}``).

Expected numbers come from outside the engine: the profile's latency-model formula
evaluated by hand, ``Variant.generation_time`` (profile.py's own implementation), the
FIFO engine's static generation, and bulk-service queueing theory computed here from
an embedded Markov chain (cross-checked, for exponential batch times, against the
queue's continuous-time Markov chain, and against M/M/1 and M/D/1 for batches of one). Fast-forward is checked against stepping every iteration,
request by request; hypothesis checks the invariants on random small cases.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import poisson as poisson_dist

from servewise.config import parse_deployment
from servewise.errors import ConfigError
from servewise.hardware import load_catalog
from servewise.results import STATS
from servewise.simulator import SimResult, simulate
from servewise.trace import Trace, poisson

Z = 4.0

# step_time = A0 + P1·prefill + P2·prefill²/seqs + D·decode_seqs + C·context + ACT·[prefill > 0]
A0, P1, P2, D, C, ACT = 0.003, 1e-5, 1e-8, 0.002, 1e-6, 0.0005
LINEAR = (A0, [P1, P2, D, C, ACT])


def step_time(p: float, d: float, c: float, ps: float = 1) -> float:
    return A0 + P1 * p + P2 * p * p / max(ps, 1) + D * d + C * c + (ACT if p > 0 else 0.0)


@pytest.fixture
def decoder(make_variant):
    def build(noise_cv: float = 0.0, **fields: Any):
        fields.setdefault("kv_bytes_per_token", 4096)
        fields.setdefault("weights_bytes", 10**9)
        return make_variant(kind="decoder", linear=LINEAR, noise_cv=noise_cv, **fields)

    return build


def dep(variant, *, replicas: int = 1, balancer: str = "round_robin", slo: dict | None = None, pools=None, **engine: Any):
    engine.setdefault("kv_capacity_tokens", 1 << 20)
    doc: dict[str, Any] = {
        "model": {"profile": "p.json", "variant": variant.name, "resolved": variant},
        "engine": {"kind": "continuous", **engine},
        "balancer": {"policy": balancer},
    }
    if pools is not None:
        doc["pools"] = pools
    else:
        doc["replicas"] = replicas
    if slo is not None:
        doc["slo"] = slo
    return parse_deployment(doc)


def trace_of(arrival, prompt, output, blocks=None, block_tokens=None) -> Trace:
    n = len(arrival)
    return Trace(
        arrival_s=np.asarray(arrival, dtype=float),
        input_tokens=np.broadcast_to(np.asarray(prompt, dtype=np.int64), (n,)).copy(),
        output_tokens=np.broadcast_to(np.asarray(output, dtype=np.int64), (n,)).copy(),
        prefix_blocks=blocks,
        block_tokens=block_tokens,
        source="test",
    )


def col(res: SimResult, name: str) -> np.ndarray:
    return res.requests[name].to_numpy(dtype=float)


def random_trace(n: int, rate: float, seed: int, *, prompt=(16, 400), output=(1, 120), prefix: int | None = None) -> Trace:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1 / rate, n))
    p = rng.integers(prompt[0], prompt[1] + 1, n)
    o = rng.integers(output[0], output[1] + 1, n)
    blocks = None
    if prefix is not None:  # a few shared "system prompts" of 2-4 blocks, then private blocks
        heads = [tuple(range(1000 * k, 1000 * k + rng.integers(2, 5))) for k in range(4)]
        rows = []
        for i in range(n):
            h = heads[rng.integers(0, 4)]
            own = tuple(10**6 + 100 * i + j for j in range(max(0, int(p[i]) // prefix - len(h))))
            rows.append((h + own)[: max(1, -(-int(p[i]) // prefix))])
        blocks = tuple(rows)
    return trace_of(arr, p, o, blocks, prefix)


# =========================================================================== exact single-request times


def test_a_lone_request_takes_prefill_then_one_decode_step_per_token(decoder):
    v = decoder()
    res = simulate(dep(v), trace_of([0.0, 100.0], [200, 37], [50, 1]), seed=0)
    ttft, end = col(res, "ttft_s"), col(res, "end_s")
    assert ttft[0] == pytest.approx(step_time(200, 0, 0), rel=1e-12)
    expected = step_time(200, 0, 0) + sum(step_time(0, 1, 200 + k) for k in range(1, 50))
    assert end[0] == pytest.approx(expected, rel=1e-12)
    assert end[0] == pytest.approx(v.generation_time(1, 200, 50), rel=1e-12)  # profile.py's own implementation
    assert end[1] - 100.0 == pytest.approx(step_time(37, 0, 0), rel=1e-12)  # one output token: prefill only
    assert col(res, "tpot_s")[0] == pytest.approx((expected - ttft[0]) / 49, rel=1e-12)
    assert np.isnan(col(res, "tpot_s")[1])


def test_one_sequence_at_a_time_equals_the_fifo_engine(decoder):
    """max_num_seqs 1 is FIFO static generation: the classic engine's profiled path agrees."""
    v = decoder()
    tr = random_trace(300, rate=2.0, seed=4)
    llm = simulate(dep(v, max_num_seqs=1), tr, seed=1)
    fifo = simulate(
        parse_deployment({"replicas": 1, "model": {"profile": "p.json", "variant": "fp32", "resolved": v}}), tr, seed=1
    )
    np.testing.assert_allclose(col(llm, "end_s"), col(fifo, "end_s"), rtol=1e-9)
    assert llm.summary.latency_s.p95 == pytest.approx(fifo.summary.latency_s.p95, rel=1e-9)


def test_chunked_prefill_splits_a_long_prompt_over_iterations(decoder):
    v = decoder()
    res = simulate(dep(v, max_batched_tokens=256), trace_of([0.0], [1000], [2]), seed=0)
    chunks = [256, 256, 256, 232]
    expected = sum(step_time(c, 0, 0) for c in chunks)
    assert col(res, "ttft_s")[0] == pytest.approx(expected, rel=1e-12)
    assert col(res, "end_s")[0] == pytest.approx(expected + step_time(0, 1, 1001), rel=1e-12)


def test_a_prompt_over_the_token_budget_is_rejected_without_chunking(decoder):
    v = decoder()
    res = simulate(dep(v, max_batched_tokens=256, chunked_prefill=False), trace_of([0.0, 1.0], [300, 100], [5, 5]), seed=0)
    assert list(res.requests["status"]) == ["rejected", "completed"]
    assert res.engine.rejections["prompt_too_long"] == 1


def test_decode_first_mixes_prompts_into_running_decodes(decoder):
    """A prompt arriving mid-generation joins the next iteration with the running decode."""
    v = decoder()
    res = simulate(dep(v), trace_of([0.0, 0.001], [100, 50], [20, 3]), seed=0)
    t1 = step_time(100, 0, 0)  # request 0's prefill (request 1 arrives during it)
    t2 = step_time(50, 1, 101, 1)  # mixed: request 1's prompt + request 0's first decode step
    assert col(res, "ttft_s")[1] == pytest.approx(t1 + t2 - 0.001, rel=1e-12)


def test_prefill_first_stalls_decodes_for_a_prompt(decoder):
    v = decoder()
    res = simulate(dep(v, priority="prefill_first", chunked_prefill=False), trace_of([0.0, 0.001], [100, 50], [3, 2]), seed=0)
    t1 = step_time(100, 0, 0)
    t2 = step_time(50, 0, 0)  # prompt only
    assert col(res, "ttft_s")[1] == pytest.approx(t1 + t2 - 0.001, rel=1e-12)
    # request 0: prefill, stalled during t2, then decodes together with request 1
    t3 = step_time(0, 2, 101 + 51)
    t4 = step_time(0, 1, 102)
    assert col(res, "end_s")[0] == pytest.approx(t1 + t2 + t3 + t4, rel=1e-12)


# =========================================================================== fast-forward == stepping

FF_CASES = {
    "default": ({}, {}),
    "tight_kv_recompute": ({"kv_capacity_tokens": 640, "block_size": 16}, {}),
    "tight_kv_swap": ({"kv_capacity_tokens": 640, "preemption": "swap"}, {}),
    "prefill_first_unchunked": ({"priority": "prefill_first", "chunked_prefill": False, "max_batched_tokens": 1024}, {}),
    "few_seqs_small_budget": ({"max_num_seqs": 3, "max_batched_tokens": 64}, {}),
    "prefix_affinity": ({"kv_capacity_tokens": 8192}, {"prefix": 32, "balancer": "prefix_affinity", "replicas": 3}),
    "least_kv_two_pools": ({}, {"balancer": "least_kv", "pools": True}),
}


@pytest.mark.parametrize("case", sorted(FF_CASES))
def test_fast_forward_gives_the_same_per_request_times_as_stepping(decoder, case):
    engine, opts = FF_CASES[case]
    v = decoder(noise_cv=0.1)
    tr = random_trace(400, rate=6.0, seed=11, prefix=opts.get("prefix"))
    pools = None
    if opts.get("pools"):
        pools = [
            {"name": "fast", "replicas": 2, "speed_factor": 1.5, "instance_type": "local"},
            {"name": "slow", "replicas": 1},
        ]
    kw = dict(replicas=opts.get("replicas", 2), balancer=opts.get("balancer", "round_robin"), pools=pools)
    ff = simulate(dep(v, fast_forward=True, **engine, **kw), tr, seed=5)
    step = simulate(dep(v, fast_forward=False, **engine, **kw), tr, seed=5)
    assert ff.engine.fast_forward_spans > 0, "fast-forward never engaged: the test would be vacuous"
    assert step.engine.fast_forward_spans == 0
    assert ff.engine.iterations == step.engine.iterations
    for name in ("end_s", "first_token_s", "tpot_s", "itl_max_s", "preemptions", "cached_tokens", "prefilled_tokens"):
        np.testing.assert_array_equal(col(ff, name), col(step, name), err_msg=name)
    assert list(ff.requests["status"]) == list(step.requests["status"])
    for key in ("ttft_s", "tpot_s", "itl_s", "latency_s"):
        for q in STATS:
            val = getattr(ff.summary.distribution(key), q)
            assert val == pytest.approx(getattr(step.summary.distribution(key), q), rel=1e-12, abs=1e-15), (key, q)
    if "tight" in case:
        assert ff.summary.preemptions > 0, "the tight-KV case must exercise preemption"
    if opts.get("prefix"):
        assert ff.summary.prefix_hit_ratio > 0


# =========================================================================== bulk-service theory


def bulk_service_sojourn(lam: float, B: int, service: Any, n_max: int = 400) -> float:
    """Mean sojourn time of the M/G^(1,B)/1 bulk queue, service time depending on batch size.

    The server takes min(queue, B) waiting customers at once when it is free (at least one,
    starting as soon as one arrives to an empty system); arrivals during a service wait for
    the next. Embedded chain at departures: q' = q - min(q, B) + A, A ~ Poisson(λ·S_b)
    (a mixture over S_b), q' = A_1 from an empty system. Solved by truncation at n_max; the
    time-average number in system is E[area] / E[cycle] over a departure-to-departure cycle
    (area q·E[S] + λ·E[S²]/2 while q + arrivals wait, plus an empty idle period of mean 1/λ
    after q = 0), and Little's law gives the sojourn. ``service(b)`` returns
    (E[S_b], E[S_b²], pmf of arrivals during S_b over 0..n_max).
    """
    P = np.zeros((n_max + 1, n_max + 1))
    for q in range(n_max + 1):
        b = min(max(q, 1), B)
        _, _, pmf = service(b)
        base = max(q - b, 0)
        row = np.zeros(n_max + 1)
        row[base:] = pmf[: n_max + 1 - base]
        row[-1] += 1.0 - row.sum()  # truncation mass
        P[q] = row
    A = P.T - np.eye(n_max + 1)
    A[-1] = 1.0
    rhs = np.zeros(n_max + 1)
    rhs[-1] = 1.0
    pi = np.linalg.solve(A, rhs)
    area = 0.0
    length = 0.0
    for q in range(n_max + 1):
        b = min(max(q, 1), B)
        es, es2, _ = service(b)
        area += pi[q] * (max(q, 1) * es + lam * es2 / 2)
        length += pi[q] * (es + (1 / lam if q == 0 else 0.0))
    return area / length / lam


def exp_service(lam: float, mean: float, n_max: int):
    k = np.arange(n_max + 1)
    mu = 1 / mean
    pmf = (mu / (lam + mu)) * (lam / (lam + mu)) ** k  # Poisson arrivals during an exponential time
    return lambda b: (mean, 2 * mean * mean, pmf)


def linear_service(lam: float, a: float, b_: float, n_max: int):
    def f(b: int):
        s = a + b_ * b
        return s, s * s, poisson_dist.pmf(np.arange(n_max + 1), lam * s)

    return f


def ctmc_bulk_exponential(lam: float, mu: float, B: int, n_max: int = 300) -> float:
    """M/M^(1,B)/1 mean sojourn from its continuous-time Markov chain, an independent check.

    State: idle, or (b, q) = (size of the batch in service, customers waiting). Arrivals
    (rate λ) add to q; a completion (rate μ) starts the next batch of min(q, B), or idles.
    Solved numerically (truncated at q = n_max); L = Σ π(b, q)·(b + q), W = L / λ.
    """
    idx = {("idle",): 0}
    for b in range(1, B + 1):
        for q in range(n_max + 1):
            idx[(b, q)] = len(idx)
    n = len(idx)
    Q = np.zeros((n, n))
    Q[0, idx[(1, 0)]] += lam
    for b in range(1, B + 1):
        for q in range(n_max + 1):
            i = idx[(b, q)]
            if q < n_max:
                Q[i, idx[(b, q + 1)]] += lam
            nb = min(q, B)
            Q[i, 0 if nb == 0 else idx[(nb, q - nb)]] += mu
    np.fill_diagonal(Q, -Q.sum(axis=1))
    A = Q.T.copy()
    A[-1] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    pi = np.linalg.solve(A, rhs)
    L = sum(pi[i] * (k[0] + k[1]) for k, i in idx.items() if len(k) == 2)
    return L / lam


class ExpSteps:
    """Iteration time exponential with mean ``mean``, whatever the batch: a test step model."""

    def __init__(self, mean: float) -> None:
        self.mean = mean

    def times(self, p, d, c, ps):
        return np.full(len(np.atleast_1d(p)), self.mean)

    def noise(self, rng, n):
        return rng.exponential(1.0, n)


def test_bulk_theory_helpers_agree():
    for lam, B in ((0.8, 1), (1.5, 2), (3.0, 4), (5.0, 8)):
        chain = bulk_service_sojourn(lam, B, exp_service(lam, 1.0, 400))
        ctmc = ctmc_bulk_exponential(lam, 1.0, B)
        assert chain == pytest.approx(ctmc, rel=1e-6), (lam, B)
    assert bulk_service_sojourn(0.8, 1, exp_service(0.8, 1.0, 400)) == pytest.approx(1 / (1 - 0.8), rel=1e-6)  # M/M/1
    # B = 1, S deterministic: M/D/1, W = s + λ s² / (2 (1 - λ s))
    lam, s = 0.6, 1.0
    assert bulk_service_sojourn(lam, 1, linear_service(lam, s, 0.0, 400)) == pytest.approx(
        s + lam * s * s / (2 * (1 - lam * s)), rel=1e-6
    )


def _replicate(deployment, lam: float, n: int, reps: int, seed: int, step_model=None) -> np.ndarray:
    out = []
    for k in range(reps):
        tr = poisson(rate_rps=lam, n_requests=n, seed=seed + k)
        tr = trace_of(tr.arrival_s, 1, 1)  # one prompt token, one output token: one iteration each
        res = simulate(deployment, tr, seed=seed + 50_000 + k, warmup_s=float(tr.arrival_s[n // 10]), step_model=step_model)
        assert res.summary.ttft_s.mean == pytest.approx(res.summary.latency_s.mean, rel=1e-12)
        out.append(res.summary.latency_s.mean)
    return np.asarray(out)


def _agree(label: str, v: np.ndarray, theory: float, rel: float = 0.01) -> None:
    mean, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    print(f"[theory] {label}: theory={theory:.5g} sim={mean:.5g} se={se:.2g} ({(mean - theory) / theory:+.2%})")
    assert Z * se <= 0.1 * theory, f"{label}: too noisy to test"
    assert abs(mean - theory) <= max(Z * se, rel * theory), f"{label}: theory {theory:.5g}, simulated {mean:.5g} ± {se:.2g}"


@pytest.mark.parametrize("lam,B", [(0.6, 1), (1.2, 2), (2.4, 4)])
def test_bulk_service_with_exponential_batch_time(decoder, lam, B):
    d = dep(decoder(), max_num_seqs=B)
    sim = _replicate(d, lam, 10000, 10, seed=100 + B, step_model=ExpSteps(1.0))
    _agree(f"M/M^(1,{B})/1 lam={lam}", sim, bulk_service_sojourn(lam, B, exp_service(lam, 1.0, 400)))


@pytest.mark.parametrize("lam,B,a,b", [(0.5, 1, 1.0, 0.2), (2.0, 4, 0.6, 0.15), (6.0, 8, 0.5, 0.05)])
def test_bulk_service_with_batch_time_a_plus_b_size(make_variant, lam, B, a, b):
    # one prompt token each: prefill_tokens = batch size, prefill²/seqs = batch size
    v = make_variant(kind="decoder", linear=(a, [b, 0.0, 0.0, 0.0, 0.0]), kv_bytes_per_token=16)
    d = dep(v, max_num_seqs=B)
    sim = _replicate(d, lam, 6000, 8, seed=200 + B)
    _agree(f"M/(a+b·n)^(1,{B})/1 lam={lam}", sim, bulk_service_sojourn(lam, B, linear_service(lam, a, b, 400)))


# =========================================================================== KV cache, preemption, prefix cache


def test_kv_capacity_comes_from_the_catalog_memory_minus_weights(decoder):
    v = decoder(kv_bytes_per_token=131072, weights_bytes=16 * 10**9)
    d = parse_deployment(
        {
            "replicas": 1,
            "instance_type": "a100-80gb",
            "model": {"profile": "p.json", "variant": "fp32", "resolved": v},
            "engine": {"kind": "continuous", "memory_utilization": 0.9},
        }
    )
    res = simulate(d, trace_of([0.0], [10], [2]), seed=0)
    mem = load_catalog().get("a100-80gb").accelerator.mem_bytes
    tokens = (int(mem * 0.9) - 16 * 10**9) // 131072
    pool = res.engine.pools[0]
    assert pool["kv_capacity_tokens"] == tokens
    assert pool["kv_blocks"] == tokens // 16
    assert 440_000 < tokens < 480_000  # 80 GiB × 0.9 − 16 GB over 128 KiB


def test_kv_capacity_needs_a_known_memory_size(decoder):
    v = decoder()
    doc = {"replicas": 1, "model": {"profile": "p.json", "variant": "fp32", "resolved": v}, "engine": {"kind": "continuous"}}
    with pytest.raises(ConfigError, match="instance_type"):
        simulate(parse_deployment(doc), trace_of([0.0], [10], [2]), seed=0)


def test_weights_that_do_not_fit_are_a_clear_error(decoder):
    v = decoder(weights_bytes=200 * 10**9)
    doc = {
        "replicas": 1,
        "instance_type": "l4",
        "model": {"profile": "p.json", "variant": "fp32", "resolved": v},
        "engine": {"kind": "continuous"},
    }
    with pytest.raises(ConfigError, match="does not fit"):
        simulate(parse_deployment(doc), trace_of([0.0], [10], [2]), seed=0)


def test_overflow_preempts_and_recomputes_and_every_request_finishes(decoder):
    v = decoder()
    # 3 long generations at once in 64 blocks of 16 tokens: they cannot all grow to 600 tokens
    tr = trace_of([0.0, 0.0, 0.0], [100, 100, 100], [500, 500, 500])
    res = simulate(dep(v, kv_capacity_tokens=1024, block_size=16), tr, seed=0)
    assert set(res.requests["status"]) == {"completed"}
    assert res.summary.preemptions > 0
    prefilled = col(res, "prefilled_tokens")
    assert prefilled.sum() > 300  # recomputation re-prefills prompt + generated tokens
    assert all(r["kv_peak_blocks"] <= r["kv_blocks"] for r in res.engine.replicas)
    swap = simulate(dep(v, kv_capacity_tokens=1024, block_size=16, preemption="swap"), tr, seed=0)
    assert swap.summary.preemptions > 0
    np.testing.assert_array_equal(col(swap, "prefilled_tokens"), [100, 100, 100])  # swap keeps the KV


def test_a_request_larger_than_the_kv_cache_is_rejected(decoder):
    v = decoder()
    res = simulate(dep(v, kv_capacity_tokens=256, block_size=16), trace_of([0.0, 1.0], [200, 20], [100, 10]), seed=0)
    assert list(res.requests["status"]) == ["rejected", "completed"]
    assert res.engine.rejections["kv_too_small"] == 1


def test_prefix_cache_hit_skips_the_cached_prompt_blocks(decoder):
    v = decoder()
    T = 64
    shared = (1, 2, 3, 4)
    blocks = (shared + (10,), shared + (20, 21), (99,) + shared)
    tr = trace_of([0.0, 10.0, 20.0], [300, 400, 300], [1, 1, 1], blocks=blocks, block_tokens=T)
    res = simulate(dep(v), tr, seed=0)
    ttft = col(res, "ttft_s")
    assert ttft[0] == pytest.approx(step_time(300, 0, 0), rel=1e-12)
    assert ttft[1] == pytest.approx(step_time(400 - 4 * T, 0, 0), rel=1e-12)  # 4 cached blocks
    assert ttft[2] == pytest.approx(step_time(300, 0, 0), rel=1e-12)  # a different first block: no prefix
    np.testing.assert_array_equal(col(res, "cached_tokens"), [0, 256, 0])
    assert res.summary.prefix_hit_ratio == pytest.approx(256 / 1000)
    assert res.summary.prefill_tokens_saved == 256
    off = simulate(dep(v, prefix_caching=False), tr, seed=0)
    assert off.summary.prefix_hit_ratio is None
    assert col(off, "ttft_s")[1] == pytest.approx(step_time(400, 0, 0), rel=1e-12)


def test_a_fully_cached_prompt_still_computes_its_last_block(decoder):
    v = decoder()
    blocks = ((1, 2), (1, 2))
    tr = trace_of([0.0, 10.0], [128, 128], [1, 1], blocks=blocks, block_tokens=64)
    res = simulate(dep(v), tr, seed=0)
    assert col(res, "cached_tokens")[1] == 64  # the last block is recomputed to produce a token
    assert col(res, "ttft_s")[1] == pytest.approx(step_time(64, 0, 0), rel=1e-12)


def conversations(n_conv: int, turns: int, rate: float, seed: int, T: int = 32) -> Trace:
    """Multi-turn chats: turn k of a conversation resends its history (2 blocks per turn) plus 2 new blocks."""
    rng = np.random.default_rng(seed)
    events = []
    for c in range(n_conv):
        t = rng.uniform(0, n_conv / rate)
        for k in range(turns):
            blocks = tuple(10_000 * c + j for j in range(2 * (k + 1)))
            events.append((t, blocks))
            t += rng.exponential(n_conv * turns / rate / turns)
    events.sort()
    arr = [e[0] for e in events]
    blocks = tuple(e[1] for e in events)
    prompt = [len(b) * T for b in blocks]
    return trace_of(arr, prompt, 8, blocks, T)


def test_prefix_affinity_beats_round_robin_on_conversations(decoder):
    v = decoder()
    tr = conversations(40, 8, rate=4.0, seed=3)
    hits = {}
    for policy in ("prefix_affinity", "round_robin", "least_kv"):
        res = simulate(dep(v, replicas=4, balancer=policy, kv_capacity_tokens=8192), tr, seed=1)
        hits[policy] = res.summary.prefix_hit_ratio
    print(f"[prefix] hit ratios {hits}")
    assert hits["prefix_affinity"] > hits["round_robin"] + 0.2, hits
    assert hits["prefix_affinity"] > hits["least_kv"] + 0.2, hits


def test_block_size_must_divide_the_trace_blocks(decoder):
    v = decoder()
    tr = trace_of([0.0], [100], [2], blocks=((1, 2),), block_tokens=50)
    with pytest.raises(ConfigError, match="block_size"):
        simulate(dep(v, block_size=16), tr, seed=0)


# =========================================================================== metrics and SLOs


def test_goodput_counts_requests_meeting_both_targets(decoder):
    v = decoder()
    tr = random_trace(200, rate=3.0, seed=9)
    slo = {"ttft_target_s": 0.05, "tpot_target_s": 0.0045, "p95_ttft_s": 10.0, "min_goodput_rps": 0.1}
    res = simulate(dep(v, replicas=1, slo=slo), tr, seed=0)
    t = res.requests
    ok = (t["ttft_s"] <= 0.05) & (t["tpot_s"].fillna(0) <= 0.0045) & (t["status"] == "completed")
    assert 0 < ok.sum() < len(t)
    assert res.summary.goodput_rps == pytest.approx(ok.sum() / res.summary.duration_s)
    checks = res.slo.checks
    assert set(checks) == {"p95_ttft_s", "min_goodput_rps"}
    assert checks["p95_ttft_s"].value == res.summary.ttft_s.p95
    out_tokens = t.loc[t["status"] == "completed", "generated_tokens"].sum()
    assert res.summary.output_tokens_per_s == pytest.approx(out_tokens / res.summary.duration_s)


def test_itl_samples_are_every_gap_between_tokens(decoder):
    v = decoder()
    tr = random_trace(50, rate=1.0, seed=2)
    res = simulate(dep(v, replicas=1), tr, seed=0)
    t = res.requests
    gaps = int((t["generated_tokens"] - 1).clip(lower=0).sum())
    # mean ITL weighted by gaps = Σ (end - first token) / Σ (tokens - 1)
    span = float((t["end_s"] - t["first_token_s"]).sum())
    assert res.summary.itl_s.mean == pytest.approx(span / gaps, rel=1e-9)
    assert res.summary.itl_s.max == pytest.approx(t["itl_max_s"].max(), rel=1e-12)


def test_classic_results_carry_the_llm_keys_as_null():
    res = simulate(
        parse_deployment({"replicas": 1, "service_time": {"distribution": "exponential", "mean_s": 1.0}}),
        poisson(rate_rps=0.5, n_requests=20, seed=0),
        seed=0,
    )
    for key in ("ttft_s", "tpot_s", "itl_s"):
        d = res.summary.distribution(key)
        assert set(d.model_dump()) == set(res.summary.latency_s.model_dump())
        assert all(v is None for v in d.model_dump().values())
    assert res.summary.goodput_rps is None and res.summary.preemptions is None


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"batching": {"max_batch_size": 4, "max_wait_s": 0.0}}, "batching"),
        ({"scaling": {"mode": "serverless", "max_replicas": 2, "keep_alive_s": 1.0}}, "serverless"),
        ({"faults": {"mtbf_s": 100.0, "mttr_s": 1.0}}, "faults"),
    ],
)
def test_engine_refuses_what_it_does_not_model(decoder, extra, match):
    v = decoder()
    doc = {"replicas": 1, "model": {"profile": "p.json", "variant": "fp32", "resolved": v}, "engine": {"kind": "continuous"}}
    doc.update(extra)
    with pytest.raises(ConfigError, match=match):
        parse_deployment(doc)


def test_engine_needs_a_decoder_model(make_variant):
    with pytest.raises(ConfigError, match="model"):
        parse_deployment({"replicas": 1, "service_time": {"distribution": "exponential", "mean_s": 1}, "engine": {"kind": "continuous"}})
    classic = make_variant()
    with pytest.raises(ConfigError, match="decoder"):
        parse_deployment(
            {"replicas": 1, "model": {"profile": "p.json", "variant": "fp32", "resolved": classic}, "engine": {"kind": "continuous"}}
        )


# =========================================================================== invariants (hypothesis)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.2), min_size=n, max_size=n))
    prompt = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    out = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    bs = draw(st.sampled_from([8, 16]))
    prefix = draw(st.booleans())
    blocks = None
    if prefix:
        heads = [(1, 2), (1, 3), (4,)]
        blocks = tuple(
            (heads[draw(st.integers(0, 2))] + tuple(100 + 10 * i + j for j in range(5)))[: max(1, -(-p // 32))]
            for i, p in enumerate(prompt)
        )
    engine = {
        "max_num_seqs": draw(st.integers(1, 8)),
        "max_batched_tokens": draw(st.integers(16, 512)),
        "chunked_prefill": draw(st.booleans()),
        "priority": draw(st.sampled_from(["decode_first", "prefill_first"])),
        "block_size": bs,
        "kv_capacity_tokens": draw(st.integers(4, 128)) * bs,
        "preemption": draw(st.sampled_from(["recompute", "swap"])),
    }
    replicas = draw(st.integers(1, 3))
    balancer = draw(st.sampled_from(["round_robin", "least_kv", "prefix_affinity", "p2c"]))
    tr = trace_of(np.cumsum(gaps), prompt, out, blocks, 32 if prefix else None)
    return tr, engine, replicas, balancer


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cases())
def test_invariants(make_variant, case):
    tr, engine, replicas, balancer = case
    v = make_variant(kind="decoder", linear=LINEAR, noise_cv=0.2, kv_bytes_per_token=64)
    res = simulate(dep(v, replicas=replicas, balancer=balancer, fast_forward=True, **engine), tr, seed=3)
    t = res.requests
    # every request finishes or is rejected
    assert set(t["status"]) <= {"completed", "rejected"}
    blocks_per_replica = engine["kv_capacity_tokens"] // engine["block_size"]
    for i, row in t.iterrows():
        p, o = int(tr.input_tokens[i]), int(tr.output_tokens[i])
        if row["status"] == "rejected":
            too_big = -(-(p + o - 1) // engine["block_size"]) > blocks_per_replica
            too_long = not engine["chunked_prefill"] and p + o - 1 > engine["max_batched_tokens"]
            assert too_big or too_long, f"request {i} rejected without cause"
            continue
        # tokens conserved: every output token emitted once, every prompt token computed or cached
        assert row["generated_tokens"] == o
        if row["preemptions"] == 0 or engine["preemption"] == "swap":
            assert row["cached_tokens"] + row["prefilled_tokens"] == p
        else:  # recomputed: a re-admission may find blocks cached since (cached_tokens counts the first)
            T = tr.block_tokens or 0
            cacheable = (p - 1) // T * T if T else 0
            assert row["prefilled_tokens"] >= p - cacheable
        assert tr.arrival_s[i] <= row["start_s"] <= row["first_token_s"] <= row["end_s"]
    # the KV cache is never over capacity
    for r in res.engine.replicas:
        assert r["kv_peak_blocks"] <= r["kv_blocks"]
    # and stepping every iteration gives the same times
    step = simulate(dep(v, replicas=replicas, balancer=balancer, fast_forward=False, **engine), tr, seed=3)
    np.testing.assert_array_equal(col(res, "end_s"), col(step, "end_s"))
    np.testing.assert_array_equal(col(res, "first_token_s"), col(step, "first_token_s"))


def _ff_and_step(make_variant, tr, engine):
    """The same run with fast-forward and stepping every iteration (one replica, seed 3)."""
    v = make_variant(kind="decoder", linear=LINEAR, noise_cv=0.2, kv_bytes_per_token=64)
    ff = simulate(dep(v, replicas=1, balancer="round_robin", fast_forward=True, **engine), tr, seed=3)
    step = simulate(dep(v, replicas=1, balancer="round_robin", fast_forward=False, **engine), tr, seed=3)
    return ff, step


def test_fast_forward_matches_stepping_after_a_prefill_first_preemption(make_variant):
    """prefill_first checks admission before the decodes preempt: the blocks a preemption
    frees may admit the waiting head at the next boundary, so no span may start there
    (found by test_invariants: the 32-token prompt ended at 0.048 s instead of 0.113 s)."""
    n = 23
    prompt, out = np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    prompt[[2, 5]], out[[2, 5]] = (32, 29), (6, 5)
    tr = trace_of(np.zeros(n), prompt, out, tuple((1,) for _ in range(n)), 32)
    engine = {
        "max_num_seqs": 2,
        "max_batched_tokens": 37,
        "chunked_prefill": False,
        "priority": "prefill_first",
        "block_size": 8,
        "kv_capacity_tokens": 72,
        "preemption": "recompute",
    }
    ff, step = _ff_and_step(make_variant, tr, engine)
    assert step.requests["preemptions"].sum() > 0  # the case needs a preemption
    np.testing.assert_array_equal(col(ff, "end_s"), col(step, "end_s"))
    np.testing.assert_array_equal(col(ff, "first_token_s"), col(step, "first_token_s"))


def test_fast_forward_matches_stepping_when_a_span_would_evict_what_the_waiting_head_reuses(make_variant):
    """A chunked prompt waiting for room needs fewer blocks once a cached block it would
    reuse is evicted, so a span that evicts may not run past the boundary that admits it
    (found by test_invariants: requests 6-7 ended 1.5 ms early)."""
    n = 31
    prompt, out = np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    prompt[[6, 7, 8]], out[[6, 7, 8]] = (12, 296, 200), (14, 10, 2)
    blocks = [(1,)] * n
    blocks[7], blocks[8] = (1, 2, *range(170, 175)), (1, 2, *range(180, 185))
    tr = trace_of(np.zeros(n), prompt, out, tuple(blocks), 32)
    engine = {
        "max_num_seqs": 3,
        "max_batched_tokens": 75,
        "chunked_prefill": True,
        "priority": "decode_first",
        "block_size": 8,
        "kv_capacity_tokens": 464,
        "preemption": "recompute",
    }
    ff, step = _ff_and_step(make_variant, tr, engine)
    assert step.engine.replicas[0]["evictions"] > 0  # the case needs an eviction
    np.testing.assert_array_equal(col(ff, "end_s"), col(step, "end_s"))
    np.testing.assert_array_equal(col(ff, "first_token_s"), col(step, "first_token_s"))
    assert ff.engine.replicas == step.engine.replicas


# =========================================================================== CLI


def test_cli_simulate_writes_the_llm_summary_keys(tmp_path, decoder, write_profile):
    import json

    from typer.testing import CliRunner

    from servewise.cli import app

    write_profile(decoder(), path="profile.json")
    (tmp_path / "d.yaml").write_text(
        "replicas: 2\n"
        "model: {profile: profile.json, variant: fp32}\n"
        "engine: {kind: continuous, kv_capacity_tokens: 65536}\n"
        "balancer: {policy: least_kv}\n"
        "slo: {p99_ttft_s: 10.0, p95_tpot_s: 1.0, ttft_target_s: 1.0, tpot_target_s: 0.1}\n"
    )
    tr = random_trace(100, rate=2.0, seed=1)
    csv = tmp_path / "t.csv"
    import pandas as pd

    pd.DataFrame({"arrival_s": tr.arrival_s, "input_tokens": tr.input_tokens, "output_tokens": tr.output_tokens}).to_csv(csv, index=False)
    res = CliRunner().invoke(app, ["simulate", "-d", str(tmp_path / "d.yaml"), "-t", str(csv), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "TTFT p99" in res.output and "goodput" in res.output
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    s = doc["summary"]
    for key in ("ttft_s", "tpot_s", "itl_s"):
        assert set(s[key]) == {"mean", "p50", "p90", "p95", "p99", "max"} and s[key]["p95"] > 0
    assert s["goodput_rps"] > 0 and s["preemptions"] == 0 and s["prefix_hit_ratio"] is None
    assert doc["slo"]["pass"] is True
    assert doc["engine"]["pools"][0]["kv_capacity_tokens"] == 65536
    cols = pd.read_csv(tmp_path / "out" / "requests.csv").columns
    assert {"ttft_s", "tpot_s", "first_token_s", "preemptions", "cached_tokens"} <= set(cols)


def test_response_cache_in_front_and_queue_capacity(decoder):
    v = decoder()
    tr = random_trace(300, rate=20.0, seed=8).with_zipf_keys(20, 1.2, seed=2)
    d = parse_deployment(
        {
            "replicas": 1,
            "model": {"profile": "p.json", "variant": "fp32", "resolved": v},
            "engine": {"kind": "continuous", "kv_capacity_tokens": 1 << 20, "max_num_seqs": 2},
            "cache": {"policy": "lru", "capacity": 100, "hit_latency_s": 0.001},
            "queue": {"capacity": 3},
        }
    )
    res = simulate(d, tr, seed=0)
    t = res.requests
    hits = t["status"] == "cache_hit"
    assert hits.sum() > 0 and res.summary.cache_hits == hits.sum()
    assert t.loc[hits, "ttft_s"].isna().all()  # hits are not streamed: no TTFT
    assert res.summary.ttft_s.max == pytest.approx(t.loc[t["status"] == "completed", "ttft_s"].max())
    # a key is cached only after its first request completed
    first_done = t[t["status"] == "completed"].groupby(tr.key[t["status"] == "completed"])["end_s"].min()
    for i in np.flatnonzero(hits.to_numpy()):
        assert first_done[tr.key[i]] <= tr.arrival_s[i]
    assert res.engine.rejections["queue_full"] == (t["status"] == "rejected").sum() > 0


def test_same_seed_same_result_byte_for_byte(decoder, tmp_path):
    v = decoder(noise_cv=0.1)
    tr = random_trace(200, rate=5.0, seed=1, prefix=32)
    d = dep(v, replicas=3, balancer="prefix_affinity", kv_capacity_tokens=4096)
    a = simulate(d, tr, seed=4).write(tmp_path / "a")
    b = simulate(d, tr, seed=4).write(tmp_path / "b")
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes()
    c = simulate(d, tr, seed=5).write(tmp_path / "c")
    assert c[1].read_bytes() != a[1].read_bytes()  # the noise follows the seed


def test_prefill_first_cannot_livelock_on_preemption(decoder):
    """A case random search found: prompts admitted into the last free blocks, whose decodes
    then preempted them, over and over (prefill_first, chunked, recompute). New prompt work
    now leaves a block for each running sequence's next token."""
    import signal

    def too_long(*_):
        raise AssertionError("the simulation did not finish in 20 s: a scheduling livelock")

    tr = trace_of([0.1602, 0.3253, 0.4884, 0.6218, 0.6824], [116, 185, 253, 228, 148], [42, 48, 3, 46, 39])
    d = dep(
        decoder(noise_cv=0.2),
        max_num_seqs=4,
        max_batched_tokens=52,
        priority="prefill_first",
        block_size=16,
        kv_capacity_tokens=368,
        preemption="recompute",
    )
    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(20)
    try:
        res = simulate(d, tr, seed=3)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert set(res.requests["status"]) == {"completed"}
    assert res.summary.preemptions > 0
