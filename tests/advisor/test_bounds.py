"""The analytic lower bounds that let the advisor skip simulations.

A bound must never exceed what the simulator measures (else a feasible candidate could
be pruned). Checked against queueing theory — Lindley's recursion written out, the
Pollaczek–Khinchine mean of M/D/1 — and against simulations of M/D/1, M/D/c and
heterogeneous-service deployments over a range of utilisations and replica counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servewise.advisor import advise
from servewise.advisor._bounds import _lindley, lower_bounds, violated
from servewise.advisor._candidates import build_deployment
from servewise.config import SLO, Deployment, parse_deployment
from servewise.profile import Hardware, Profile, save_profile
from servewise.simulator import simulate
from servewise.space import parse_space
from servewise.trace import TokenSpec, Trace, poisson

pytestmark = pytest.mark.xdist_group("advisor")

#: the conftest's classic model at 64 tokens, alone: 0.01 + 0.02 + 5e-4·64 + 2e-6·64² s
D64 = 0.01 + 0.02 + 5e-4 * 64 + 2e-6 * 64**2
STATS = ("mean", "p50", "p90", "p95", "p99")


def _md_trace(rho: float, servers: int, n: int, seed: int, service_s: float = D64) -> Trace:
    """Poisson arrivals offering ``rho`` of ``servers`` deterministic servers (64-token requests)."""
    return poisson(rate_rps=rho * servers / service_s, n_requests=n, seed=seed,
                   tokens=TokenSpec(input_mean=64, output_mean=1))


def _profiled(variant: Any, **fields: Any) -> Deployment:
    return parse_deployment({"model": {"profile": "p.json", "variant": variant.name, "resolved": variant}, **fields})


def _lindley_loop(t: np.ndarray, work: np.ndarray, cap: float) -> np.ndarray:
    b = np.zeros(len(t))
    for i in range(1, len(t)):
        b[i] = max(0.0, b[i - 1] + work[i - 1] - cap * (t[i] - t[i - 1]))
    return b


def _pk_mean_latency(rho: float, service_s: float) -> float:
    """M/D/1 mean time in system (Pollaczek–Khinchine with zero service variance)."""
    return service_s + rho * service_s / (2 * (1 - rho))


def _below(bound: dict[str, Any], measured: dict[str, Any], what: str) -> None:
    for k in STATS:
        assert bound[k] <= measured[k] * (1 + 1e-9) + 1e-12, f"{what}: bound {k} {bound[k]} > simulated {measured[k]}"


# --------------------------------------------------------------------------- Lindley


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
    cap=st.floats(0.1, 8),
)
def test_lindley_closed_form_equals_the_recursion(gaps: list[float], seed: int, cap: float) -> None:
    rng = np.random.default_rng(seed)
    t = np.cumsum(np.asarray(gaps))
    work = rng.exponential(rng.uniform(0.01, 3), size=len(t)) * (rng.random(len(t)) < 0.9)
    got = _lindley(t, work, cap)
    want = _lindley_loop(t, work, cap)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * (1 + float(work.sum())))
    assert _lindley(np.zeros(0), np.zeros(0), cap).shape == (0,)


# --------------------------------------------------------------------------- M/D/1, M/D/c


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
def test_md1_bound_is_the_exact_fifo_queue_and_matches_pollaczek_khinchine(make_variant: Any, rho: float) -> None:
    v = make_variant("fp32", noise_cv=0.0)
    assert float(v.batch_time(1, 64)[0]) == pytest.approx(D64)
    tr = _md_trace(rho, 1, 20_000, seed=7)
    dep = _profiled(v, replicas=1)
    b = lower_bounds(dep, tr)
    assert b is not None
    assert b["utilisation"] == pytest.approx(rho, rel=0.05)
    sim = simulate(dep, tr, seed=0).summary.latency_s.model_dump()
    # one FIFO server with deterministic service: the fluid queue IS the queue
    exact = _lindley_loop(tr.arrival_s, np.full(len(tr), D64), 1.0) + D64
    for k in STATS:
        assert b["latency_s"][k] == pytest.approx(sim[k], rel=1e-9)
    assert b["latency_s"]["mean"] == pytest.approx(float(exact.mean()), rel=1e-9)
    if rho <= 0.8:  # long-run mean: Pollaczek–Khinchine (statistical at 20k requests)
        assert b["latency_s"]["mean"] == pytest.approx(_pk_mean_latency(rho, D64), rel=0.1)


@pytest.mark.parametrize("servers", [2, 4])
@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9, 0.95])
@pytest.mark.parametrize("policy", ["round_robin", "least_outstanding"])
def test_mdc_bound_is_below_the_simulation(make_variant: Any, servers: int, rho: float, policy: str) -> None:
    v = make_variant("fp32", noise_cv=0.0)
    tr = _md_trace(rho, servers, 20_000, seed=servers)
    dep = _profiled(v, replicas=servers, balancer={"policy": policy})
    b = lower_bounds(dep, tr)
    assert b is not None
    sim = simulate(dep, tr, seed=1).summary.latency_s.model_dump()
    _below(b["latency_s"], sim, f"M/D/{servers} rho={rho} {policy}")
    # the fluid part is M/D/1 with a server `servers` times as fast: the bound's mean is at
    # least max(service time, that queue's Pollaczek–Khinchine mean) (up to sampling)
    fast = _pk_mean_latency(rho, D64 / servers)
    assert b["latency_s"]["p50"] >= D64 * (1 - 1e-9)
    if rho <= 0.9:
        assert b["latency_s"]["mean"] >= 0.9 * max(D64, fast)


@pytest.mark.parametrize("servers", [1, 3])
@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_linear_service_time_deployment(servers: int, rho: float) -> None:
    """``service_time: {distribution: linear, base_s}``: deterministic service without a profile."""
    s = 0.05
    tr = _md_trace(rho, servers, 10_000, seed=3, service_s=s)
    dep = parse_deployment({"replicas": servers, "service_time": {"distribution": "linear", "base_s": s},
                            "balancer": {"policy": "least_outstanding"}})
    b = lower_bounds(dep, tr)
    assert b is not None and b["utilisation"] == pytest.approx(rho, rel=0.05)
    sim = simulate(dep, tr, seed=0).summary.latency_s.model_dump()
    _below(b["latency_s"], sim, f"linear M/D/{servers}")
    if servers == 1:
        assert b["latency_s"]["mean"] == pytest.approx(sim["mean"], rel=1e-9)


# --------------------------------------------------------------------------- heterogeneous service


@pytest.mark.parametrize("servers", [2, 4, 8])
@pytest.mark.parametrize("rho", [0.3, 0.7])
@pytest.mark.parametrize("batching", [None, {"max_batch_size": 4, "max_wait_s": 0.01}])
def test_bound_holds_when_short_requests_overtake_long_ones(
    make_variant: Any, servers: int, rho: float, batching: dict[str, Any] | None
) -> None:
    """Heavy-tailed prompt lengths on several replicas: a short request does not wait for a long
    one's work, so the fluid queue may not charge it. (Charging every request its own work put
    the bound 25-90% above the simulated p95/p99 here: feasible candidates were pruned.)"""
    v = make_variant("fp32", noise_cv=0.0)
    tokens = TokenSpec(input_mean=64, input_cv=1.5, output_mean=1)
    mean_s = float(np.mean(v.batch_time(1, poisson(rate_rps=1, n_requests=5000, seed=9, tokens=tokens).input_tokens)))
    tr = poisson(rate_rps=rho * servers / mean_s, duration_s=300, seed=4, tokens=tokens)
    dep = _profiled(v, replicas=servers, balancer={"policy": "least_outstanding"}, batching=batching)
    b = lower_bounds(dep, tr)
    assert b is not None
    sim = simulate(dep, tr, seed=0).summary.latency_s.model_dump()
    _below(b["latency_s"], sim, f"heterogeneous ×{servers} rho={rho}")


def test_single_fifo_server_with_heterogeneous_service_is_exact(make_variant: Any) -> None:
    v = make_variant("fp32", noise_cv=0.0)
    tokens = TokenSpec(input_mean=64, input_cv=1.0, output_mean=1)
    tr = poisson(rate_rps=8, duration_s=600, seed=5, tokens=tokens)
    dep = _profiled(v, replicas=1)
    b = lower_bounds(dep, tr)
    own = v.batch_time(1, tr.input_tokens)
    exact = _lindley_loop(tr.arrival_s, own, 1.0) + own
    sim = simulate(dep, tr, seed=0).summary.latency_s.model_dump()
    assert b is not None
    assert b["latency_s"]["mean"] == pytest.approx(float(exact.mean()), rel=1e-9)
    assert b["latency_s"]["p95"] == pytest.approx(sim["p95"], rel=1e-9)


def test_engine_bound_with_heavy_tailed_outputs(make_variant: Any) -> None:
    """An LLM engine runs sequences side by side: a long generation does not hold up short ones."""
    v = make_variant("fp16", kind="decoder", kv_bytes_per_token=1000)
    tokens = TokenSpec(input_mean=256, input_cv=0.5, output_mean=64, output_cv=2.0)
    for rate, servers in ((2, 1), (8, 1), (8, 2)):
        tr = poisson(rate_rps=rate, duration_s=120, seed=1, tokens=tokens)
        dep = _profiled(v, replicas=servers, engine={"kind": "continuous", "kv_capacity_tokens": 100_000})
        b = lower_bounds(dep, tr)
        assert b is not None
        sim = simulate(dep, tr, seed=0).summary
        _below(b["latency_s"], sim.latency_s.model_dump(), f"engine ×{servers} at {rate} rps")
        _below(b["ttft_s"], sim.ttft_s.model_dump(), f"engine ×{servers} at {rate} rps, TTFT")


def test_decoder_without_an_engine_is_bounded_by_its_generation_time(make_variant: Any) -> None:
    """A decoder served request by request (no ``engine:``): one generation per slot.

    Regression: the bound imported ``simulator._service``, a module that had moved, so
    ``advise`` crashed with ModuleNotFoundError on any decoder profile without an engine.
    """
    v = make_variant("fp32", kind="decoder")
    tokens = TokenSpec(input_mean=64, input_cv=0.5, output_mean=16, output_cv=0.5)
    tr = poisson(rate_rps=2, duration_s=120, seed=2, tokens=tokens)
    for servers in (1, 2):
        dep = _profiled(v, replicas=servers)
        b = lower_bounds(dep, tr)
        assert b is not None
        _below(b["latency_s"], simulate(dep, tr, seed=0).summary.latency_s.model_dump(), f"decoder ×{servers}")


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("servers", [1, 3])
def test_overload_bound_exceeds_a_small_slo(make_variant: Any, servers: int) -> None:
    v = make_variant("fp32", noise_cv=0.0)
    tr = _md_trace(1.3, servers, 3000, seed=2)
    dep = _profiled(v, replicas=servers, slo={"p95_latency_s": 10 * D64})
    b = lower_bounds(dep, tr)
    assert b is not None and b["utilisation"] > 1.2
    # the backlog grows by (rho - 1)·capacity per second: by the 95th percentile of arrivals it is
    # about 0.3 × 0.95 × duration of service ahead
    hit = violated(b, dep.slo)
    assert hit is not None and hit[0] == "p95_latency_s"
    assert hit[1] > hit[2] == 10 * D64
    growth = 0.3 * 0.9 * tr.duration_s / 1.3
    assert b["latency_s"]["p95"] >= 0.8 * growth
    assert violated(b, SLO(p95_latency_s=10 * growth)) is None
    assert violated(b, None) is None and violated(None, dep.slo) is None


def test_no_bound_with_queue_capacity_faults_or_random_service(make_variant: Any) -> None:
    v = make_variant("fp32", noise_cv=0.0)
    tr = _md_trace(2.0, 1, 2000, seed=2)
    assert lower_bounds(_profiled(v, replicas=1), tr) is not None
    assert lower_bounds(_profiled(v, replicas=1, queue={"capacity": 4}), tr) is None
    assert lower_bounds(_profiled(v, replicas=1, faults={"mtbf_s": 100, "mttr_s": 5}), tr) is None
    expo = parse_deployment({"replicas": 1, "service_time": {"distribution": "exponential", "mean_s": 0.1}})
    assert lower_bounds(expo, tr) is None


def _save(path: Path, *variants: Any) -> Path:
    hw = Hardware(cpu_model="test cpu", cpu_count=64, threads_used=1, mem_bytes=2**34)
    save_profile(Profile(status="complete", created_utc="2025-01-01T00:00:00Z", tool_version="test", hardware=hw,
                         variants=list(variants)), path)
    return path


def test_advise_prunes_overloaded_candidates_and_only_those(tmp_path: Path, make_variant: Any) -> None:
    v = make_variant("fp32", noise_cv=0.0)
    p = _save(tmp_path / "p.json", v)
    tr = _md_trace(2.6 / 1, 1, 8000, seed=3)  # 2.6 servers of load
    sp = parse_space({
        "hardware": [{"name": "local", "price_per_hour_usd": 1}], "variant": ["fp32"], "replicas": {"range": [1, 5]},
        "queue": [None, {"capacity": 8}], "slo": {"p95_latency_s": 5 * D64},
        "search": {"replications": 0, "headroom": False},
    })
    plan = advise(sp, tr, [p], jobs=1)
    pruned = [c for c in plan.candidates if c.status == "pruned"]
    # replicas 1 and 2 cannot keep up (rho 2.6 and 1.3); with a bounded queue no bound applies
    assert sorted(c.deployment["replicas"] for c in pruned) == [1, 2]
    for c in pruned:
        assert "queue" not in c.deployment or c.deployment["queue"].get("capacity") is None
        assert c.pruned_by.slo == "p95_latency_s"
        assert c.pruned_by.bound > c.pruned_by.limit == 5 * D64
        assert c.bound.latency_s.p95 == pytest.approx(c.pruned_by.bound)
        assert c.feasible is False and c.binding_slo.bound is True
        # and the simulation agrees: it does miss the SLO
        res = simulate(build_deployment(c.deployment, v), tr, seed=0)
        assert res.slo.passed is False
        assert res.summary.latency_s.p95 >= c.pruned_by.bound * (1 - 1e-9)
    for c in plan.candidates:
        if (c.deployment.get("queue") or {}).get("capacity") is not None:
            assert c.bound is None and c.status == "evaluated"
    assert plan.winner is not None and plan.winner.deployment["replicas"] >= 3


def test_advise_refuses_a_profile_with_unstable_points_unless_allowed(tmp_path: Path, make_variant: Any) -> None:
    from servewise.errors import ConfigError
    from servewise.profile import LatencyStats, Point

    stats = LatencyStats(mean=0.01, p50=0.01, p90=0.012, p99=0.02, min=0.009, max=0.02, iqr=0.001, cv=0.3, n=12, ci_rel=0.07)
    points = [
        Point(phase="forward", batch_size=1, seq_len=16, status="measured", latency_s=stats, samples_s=[0.01] * 12),
        Point(phase="forward", batch_size=4, seq_len=64, status="measured", latency_s=stats, samples_s=[0.01] * 12,
              stable=False, instability="the 95% CI of the median is ±7.0% after 12 samples (target ±2%)"),
    ]  # fmt: skip
    p = _save(tmp_path / "p.json", make_variant("fp32", points=points))
    tr = _md_trace(0.5, 1, 500, seed=3)
    sp = parse_space({
        "hardware": [{"name": "local", "price_per_hour_usd": 1}], "variant": ["fp32"], "replicas": {"range": [1, 2]},
        "slo": {"p95_latency_s": 1.0}, "search": {"replications": 0, "headroom": False},
    })  # fmt: skip
    with pytest.raises(ConfigError) as err:
        advise(sp, tr, [p], jobs=1)
    msg = str(err.value)
    assert "\n" not in msg and "builtin:test-model/fp32: 1 of 2 points flagged unstable" in msg
    assert "forward b=4 s=64: the 95% CI of the median is ±7.0%" in msg and "--allow-unstable-profile" in msg
    assert advise(sp, tr, [p], jobs=1, allow_unstable=True).feasible
