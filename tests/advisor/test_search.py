"""The search: halving finds exhaustive search's winner for less simulation, and the plan holds up.

The proof the advisor rests on is here: on spaces small enough to simulate every
candidate, the default strategy (analytic pruning, then successive halving over trace
prefixes) picks the very candidate exhaustive search picks, on Poisson and bursty
traffic and several seeds, and spends less simulation time doing it. The rest checks
the plan against brute force and re-simulation: the ranking order, the Pareto front,
the confidence intervals and load headroom of the finalists, the infeasible verdict,
determinism across worker counts and executors, and the CLI end to end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from servewise.advisor import Plan, advise
from servewise.advisor._candidates import build_deployment
from servewise.cli import app
from servewise.config import load_deployment
from servewise.profile import Hardware, Profile, Variant, save_profile
from servewise.results import Candidate, SimResult, SloResult
from servewise.simulator import simulate
from servewise.space import parse_space
from servewise.trace import TokenSpec, Trace, gamma_renewal, poisson, save_trace

pytestmark = pytest.mark.xdist_group("advisor")

TOKENS = TokenSpec(input_mean=64, input_cv=0.5, output_mean=1)
PRICE = 0.2
#: 2 variants × replicas 1..6 × 3 balancers × 3 batchings = 108 candidates
PROOF_SPACE: dict[str, Any] = {
    "name": "proof",
    "hardware": [{"name": "local", "price_per_hour_usd": PRICE}],
    "variant": ["fp32", "int8"],
    "replicas": {"range": [1, 6]},
    "balancer": ["round_robin", "p2c", "least_outstanding"],
    "batching": [None, {"max_batch_size": [4, 8], "max_wait_s": 0.01}],
    "slo": {"p95_latency_s": 0.25},
}


def _variants(make_variant: Any) -> list[Variant]:
    fp32 = make_variant("fp32", noise_cv=0.1)
    int8 = make_variant("int8", noise_cv=0.1, linear=(0.005, [0.01, 2.5e-4, 1e-6]))  # twice as fast
    return [fp32, int8]


@pytest.fixture
def profile(tmp_path: Path, make_variant: Any) -> Path:
    hw = Hardware(cpu_model="test cpu", cpu_count=64, threads_used=1, mem_bytes=2**34)
    p = tmp_path / "profile.json"
    save_profile(Profile(status="complete", created_utc="2025-01-01T00:00:00Z", tool_version="test", hardware=hw,
                         variants=_variants(make_variant)), p)
    return p


def _space(base: dict[str, Any], **search: Any) -> Any:
    return parse_space({**base, "search": {**base.get("search", {}), **search}})


def _variant_of(c: Candidate, make_variant: Any) -> Variant:
    return {v.name: v for v in _variants(make_variant)}[c.variant]


# --------------------------------------------------------------------------- the proof


def _poisson(seed: int) -> Trace:
    return poisson(rate_rps=30, duration_s=200, seed=seed, tokens=TOKENS)


def _bursty(seed: int) -> Trace:
    return gamma_renewal(rate_rps=30, cv=3.0, duration_s=200, seed=seed, tokens=TOKENS)


@pytest.mark.slow
@pytest.mark.parametrize("make_trace", [_poisson, _bursty], ids=["poisson", "bursty"])
def test_halving_picks_the_exhaustive_winner_for_less_simulation(
    profile: Path, make_trace: Any, record_property: Any
) -> None:
    ratios = []
    for seed in (0, 1, 2):
        tr = make_trace(seed)
        quick = {"seed": seed, "replications": 0, "headroom": False}  # robustness never changes the winner
        ex = advise(_space(PROOF_SPACE, strategy="exhaustive", **quick), tr, [profile], jobs=1)
        hv = advise(_space(PROOF_SPACE, **quick), tr, [profile], jobs=1)
        assert hv.search.strategy == "halving"
        assert ex.search.candidates == 108 == hv.search.candidates
        assert ex.search.statuses == {"evaluated": 108}
        # the test means something: some candidates are infeasible, some pruned, several rungs run
        assert 0 < sum(1 for c in ex.candidates if c.feasible) < 108
        assert hv.search.statuses.get("pruned", 0) > 0
        assert len(hv.search.rungs) >= 2
        assert ex.feasible and hv.feasible
        assert ex.winner is not None and hv.winner is not None
        assert hv.winner_id == ex.winner_id, (
            f"seed {seed}: halving chose {hv.winner.label}, exhaustive {ex.winner.label}"
        )
        # same candidate, same full-trace simulation: the same numbers
        assert hv.winner.metrics is not None and ex.winner.metrics is not None
        assert hv.winner.metrics.latency_s == ex.winner.metrics.latency_s
        # exhaustive's winner really is the cheapest feasible candidate (brute force over its plan)
        costs = [c.cost_per_hour_usd for c in ex.candidates if c.feasible]
        assert ex.winner.cost_per_hour_usd == pytest.approx(min(costs))
        # no pruned candidate would have met the SLO: exhaustive simulated it and it failed
        pruned = {c.id for c in hv.candidates if c.status == "pruned"}
        assert not any(c.feasible for c in ex.candidates if c.id in pruned)
        s_ex, s_hv = ex.search.simulation_s, hv.search.simulation_s
        assert s_hv < s_ex
        ratios.append(s_hv / s_ex)
        print(f"{make_trace.__name__} seed {seed}: winner {hv.winner.label}; halving simulated "
              f"{hv.search.simulations} runs in {s_hv:.2f} s, exhaustive 108 in {s_ex:.2f} s "
              f"(ratio {s_hv / s_ex:.2f})")
    record_property("halving_over_exhaustive_simulation_s", [round(r, 3) for r in ratios])
    assert float(np.mean(ratios)) < 0.8


def test_tpe_finds_the_cheapest_feasible_cost(profile: Path) -> None:
    pytest.importorskip("optuna")
    small = {**PROOF_SPACE, "replicas": {"range": [1, 4]}, "balancer": ["round_robin", "least_outstanding"],
             "batching": [None]}  # 16 candidates
    tr = _poisson(5)
    quick = {"replications": 0, "headroom": False}
    ex = advise(_space(small, strategy="exhaustive", **quick), tr, [profile], jobs=1)
    tpe = advise(_space(small, strategy="tpe", trials=60, **quick), tr, [profile], jobs=1)
    assert ex.winner is not None and tpe.winner is not None
    assert tpe.search.trials is not None and tpe.search.trials <= 60
    assert tpe.winner.feasible is True
    assert tpe.winner.cost_per_hour_usd == pytest.approx(ex.winner.cost_per_hour_usd)
    # it did not simulate more than there is to simulate
    assert tpe.search.simulations <= 16


# --------------------------------------------------------------------------- infeasible


@pytest.mark.parametrize("strategy", ["halving", "exhaustive"])
def test_infeasible_slo_gives_the_closest_candidates(profile: Path, strategy: str) -> None:
    small = {**PROOF_SPACE, "replicas": {"range": [1, 3]}, "batching": [None],
             "slo": {"p95_latency_s": 0.01, "max_rejection_ratio": 0.01}}  # below any service time (>= 15 ms)
    plan = advise(_space(small, strategy=strategy, replications=0, headroom=False), _poisson(0), [profile], jobs=1)
    assert plan.feasible is False and plan.winner is None and plan.winner_id is None
    closest = plan.closest
    assert 1 <= len(closest) <= 3
    for cid in closest:
        c = plan.candidate(cid)
        assert c.feasible is False
        b = c.binding_slo
        assert b is not None and b.name == "p95_latency_s"
        assert b.value is not None and b.value > b.limit == 0.01
    if strategy == "halving":  # the bounds show it without a single simulation
        assert plan.search.statuses == {"pruned": 18} and plan.search.simulations == 0
    else:  # the closest are the smallest SLO excesses among those simulated
        excess = sorted(c.violation for c in plan.candidates)
        assert [plan.candidate(i).violation for i in closest] == excess[: len(closest)]


def test_cli_infeasible_exits_1_naming_the_binding_slo(tmp_path: Path, profile: Path) -> None:
    space = {**PROOF_SPACE, "replicas": {"range": [1, 2]}, "batching": [None], "slo": {"p95_latency_s": 0.01},
             "search": {"replications": 0, "headroom": False}}
    s, t, out = tmp_path / "space.yaml", tmp_path / "t.csv", tmp_path / "out"
    s.write_text(yaml.safe_dump(space))
    save_trace(_poisson(0), t)
    r = CliRunner().invoke(app, ["advise", "--space", str(s), "--trace", str(t), "--profile", str(profile),
                                 "--out", str(out), "--jobs", "1", "--quiet"])
    assert r.exit_code == 1, r.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["kind"] == "plan" and plan["feasible"] is False and plan["closest"] and plan["candidates"]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("infeasible:")]
    assert len(lines) == 1 and "binding: p95_latency_s" in lines[0]
    for cid in plan["closest"]:
        label = next(c["label"] for c in plan["candidates"] if c["id"] == cid)
        assert label in lines[0]
    assert "Traceback" not in r.output
    assert not (out / "deploy").exists()


def test_cli_ranking_reads_at_80_columns(tmp_path: Path, profile: Path) -> None:
    """CI logs and pipes are 80 columns: every number whole, labels folded, nothing cut."""
    space = {**PROOF_SPACE, "replicas": {"range": [1, 3]}, "search": {"replications": 0, "headroom": False}}
    s, t, out = tmp_path / "space.yaml", tmp_path / "t.csv", tmp_path / "out"
    s.write_text(yaml.safe_dump(space))
    save_trace(_poisson(0), t)
    r = CliRunner().invoke(app, ["advise", "--space", str(s), "--trace", str(t), "--profile", str(profile),
                                 "--out", str(out), "--jobs", "1"], env={"COLUMNS": "80"})  # fmt: skip
    assert r.exit_code == 0, r.output
    plan = json.loads((out / "plan.json").read_text())
    table = r.stdout.split("\n\n")[0] if "\n\n" in r.stdout else r.stdout
    lines = r.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines), max(lines, key=len)
    assert "…" not in table
    ranked = [c for c in plan["candidates"] if c["feasible"]]
    ranked.sort(key=lambda c: c["cost_per_hour_usd"])
    assert f"{ranked[0]['cost_per_hour_usd']:,.3f}" in r.stdout
    p95_ms = f"{ranked[0]['metrics']['latency_s']['p95'] * 1000:,.1f}"
    assert p95_ms in r.stdout


# --------------------------------------------------------------------------- the plan


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def _objectives(c: Candidate) -> tuple[float, float, float]:
    m = c.metrics
    assert m is not None and c.cost_per_hour_usd is not None and m.latency_s.p99 is not None
    return (c.cost_per_hour_usd, m.latency_s.p99, m.accuracy_drift or 0.0)


@pytest.fixture
def robust_plan(profile: Path) -> tuple[Plan, Trace, Any]:
    space = {**PROOF_SPACE, "replicas": {"range": [1, 4]}, "balancer": ["round_robin", "least_outstanding"]}
    sp = _space(space, strategy="exhaustive", seed=3, replications=2, finalists=3, headroom_steps=4)
    tr = _poisson(3)
    return advise(sp, tr, [profile], jobs=1), tr, sp


def test_ranking_and_pareto_front(robust_plan: tuple[Plan, Trace, Any]) -> None:
    plan, _, _ = robust_plan
    ranked = plan.ranked()
    assert len(ranked) == 48 == len(plan.candidates)  # exhaustive: every candidate at full fidelity
    flags = [c.feasible for c in ranked]
    n_ok = sum(flags)
    assert 0 < n_ok < len(ranked)
    assert flags == [True] * n_ok + [False] * (len(ranked) - n_ok)  # feasible first
    costs = [round(c.cost_per_hour_usd, 9) for c in ranked[:n_ok]]  # billed seconds sum with round-off
    assert costs == sorted(costs)
    assert plan.winner_id == ranked[0].id
    # cost is replicas × price over the whole run
    for c in ranked:
        assert c.cost_per_hour_usd == pytest.approx(PRICE * c.deployment["replicas"], rel=1e-9)
    # the misses: smallest SLO excess first
    misses = [c.violation for c in ranked[n_ok:]]
    assert misses == sorted(misses) and all(v > 0 for v in misses)
    # Pareto front by brute force over the feasible candidates
    feasible = ranked[:n_ok]
    front = set(plan.pareto)
    # the front's cheapest point costs what the winner costs (the winner breaks cost ties by the
    # binding SLO's margin, the front by p99 latency: a same-cost sibling may be the one on it)
    assert front
    assert min(plan.candidate(i).cost_per_hour_usd for i in front) == pytest.approx(ranked[0].cost_per_hour_usd)
    for c in feasible:
        dominated = any(_dominates(_objectives(o), _objectives(c)) for o in feasible if o is not c)
        assert (c.id in front) == (not dominated), c.label
    assert front <= {c.id for c in feasible}


def test_robustness_of_the_finalists(robust_plan: tuple[Plan, Trace, Any], make_variant: Any) -> None:
    plan, tr, sp = robust_plan
    s = sp.search
    feasible = [c for c in plan.ranked() if c.feasible]
    finalists = [c for c in plan.candidates if c.robustness is not None]
    assert {c.id for c in finalists} == {c.id for c in feasible[: s.finalists]}
    assert len(finalists) == min(s.finalists, len(feasible))
    uncapped_seen = False
    for c in finalists:
        rob = c.robustness
        assert rob is not None
        assert rob.seeds == [s.seed + j for j in range(s.replications + 1)]
        assert rob.confidence == s.confidence
        dep = build_deployment(c.deployment, _variant_of(c, make_variant))
        runs = [simulate(dep, tr, seed=seed) for seed in rob.seeds]
        for name, ci in rob.metrics.items():
            assert ci.n == s.replications + 1
            assert ci.low is not None and ci.mean is not None and ci.high is not None
            assert ci.low <= ci.mean <= ci.high
            values = [_slo(r).checks[name].value for r in runs]
            assert ci.mean == pytest.approx(float(np.mean(values)), rel=1e-9)  # re-simulated independently
            assert ci.within_limit == (ci.high <= ci.limit)
        assert rob.pass_rate == pytest.approx(np.mean([_slo(r).passed for r in runs]))
        head = rob.headroom
        assert head is not None and head.rate_multiplier >= 1.0
        at = simulate(dep, tr.scale_rate(head.rate_multiplier), seed=s.seed)
        assert _slo(at).passed is True
        if head.capped:
            assert head.fails_at is None and head.rate_multiplier == s.headroom_max
        else:
            uncapped_seen = True
            assert head.fails_at is not None and 1.0 <= head.rate_multiplier < head.fails_at <= s.headroom_max
            # bisection in log space: the bracket shrinks to headroom_max^(2^-steps)
            assert head.fails_at / head.rate_multiplier <= s.headroom_max ** (2.0 ** -s.headroom_steps) * 1.001
            beyond = simulate(dep, tr.scale_rate(head.fails_at), seed=s.seed)
            assert _slo(beyond).passed is False
    assert uncapped_seen  # at 30 rps a 2-4 replica winner cannot take 4× the load
    # non-finalists get no robustness block
    assert all(c.robustness is None for c in plan.candidates if c not in finalists)


def _slo(res: SimResult) -> SloResult:
    assert res.slo is not None  # the deployment sets SLOs
    return res.slo


# --------------------------------------------------------------------------- executors


def _ranking_view(plan: Plan) -> list[tuple[Any, ...]]:
    return [(c.id, c.status, c.fidelity, c.feasible, c.cost_per_hour_usd,
             json.dumps(c.metrics.model_dump(mode="json") if c.metrics is not None else None, sort_keys=True))
            for c in plan.ranked()]


def test_parallel_local_executor_gives_the_same_plan(profile: Path) -> None:
    space = {**PROOF_SPACE, "replicas": {"range": [1, 4]}, "balancer": ["round_robin", "least_outstanding"],
             "batching": [None, {"max_batch_size": 4, "max_wait_s": 0.01}]}
    sp = _space(space, replications=1, headroom_steps=2)
    tr = poisson(rate_rps=30, duration_s=300, seed=0, tokens=TOKENS)  # two rungs
    one = advise(sp, tr, [profile], jobs=1)
    two = advise(sp, tr, [profile], jobs=2)
    assert two.search.jobs == 2 and one.search.jobs == 1
    assert len(one.search.rungs) >= 2
    assert one.winner_id == two.winner_id is not None
    assert one.ranking == two.ranking
    assert _ranking_view(one) == _ranking_view(two)
    assert one.search.statuses == two.search.statuses
    assert one.winner is not None and two.winner is not None
    assert one.winner.robustness == two.winner.robustness


@pytest.mark.slow
def test_ray_executor_gives_the_local_winner(profile: Path) -> None:
    pytest.importorskip("ray")
    space = {**PROOF_SPACE, "replicas": {"range": [1, 3]}, "balancer": ["round_robin", "least_outstanding"],
             "batching": [None]}
    sp = _space(space, strategy="exhaustive", replications=1, headroom=False)
    tr = _poisson(1)
    local = advise(sp, tr, [profile], jobs=1)
    ray_plan = advise(sp, tr, [profile], executor="ray", jobs=2)
    assert ray_plan.search.executor == "ray"
    assert ray_plan.winner_id == local.winner_id is not None
    assert _ranking_view(ray_plan) == _ranking_view(local)


# --------------------------------------------------------------------------- the CLI


def test_cli_advise_end_to_end(tmp_path: Path, profile: Path) -> None:
    space = {**PROOF_SPACE, "replicas": {"range": [1, 4]}, "batching": [None],
             "search": {"replications": 1, "headroom_steps": 2}}
    s, t, out = tmp_path / "space.yaml", tmp_path / "t.csv", tmp_path / "out"
    s.write_text(yaml.safe_dump(space))
    save_trace(_poisson(2), t)
    r = CliRunner().invoke(app, ["advise", "--space", str(s), "--trace", str(t), "--profile", str(profile),
                                 "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0, r.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["kind"] == "plan" and plan["schema_version"] == 1
    assert plan["feasible"] is True and plan["ranking"] and plan["winner"] == plan["ranking"][0]
    w = next(c for c in plan["candidates"] if c["id"] == plan["winner"])
    assert "winner:" in r.stdout and w["label"] in r.stdout
    dep = load_deployment(out / "deploy" / "deployment.yaml")
    assert dep.replicas == w["deployment"]["replicas"]
    assert dep.balancer.policy == w["deployment"]["balancer"]["policy"]
    assert dep.model is not None and dep.model.variant == w["variant"] and dep.model.resolved is not None
    assert dep.slo is not None and dep.slo.p95_latency_s == space["slo"]["p95_latency_s"]
    # the emitted deployment simulates to the plan's prediction
    res = simulate(dep, load_trace_csv(t), seed=plan["metadata"]["seed"])
    assert math.isclose(res.summary.latency_s.p95, w["metrics"]["latency_s"]["p95"], rel_tol=1e-9)


def load_trace_csv(path: Path) -> Trace:
    from servewise.trace import load_trace

    return load_trace(path)


# --------------------------------------------------------------------------- margins


def test_slo_margins_rank_by_the_one_margin_rule() -> None:
    """The advisor's margins are servewise.results.slo_margin with ranking=True: always a number."""
    from servewise.advisor._search import binding, slo_margins
    from servewise.results import slo_margin

    slo = SloResult.model_validate({"pass": False, "checks": {
        "p95_latency_s": {"limit": 0.25, "value": 0.2, "pass": True},
        "min_availability": {"limit": 0.99, "value": 0.98, "pass": False},
        "max_rejection_ratio": {"limit": 0.0, "value": 0.0, "pass": True},
        "max_failure_ratio": {"limit": 0.0, "value": 0.1, "pass": False},
        "p99_latency_s": {"limit": 1.0, "value": None, "pass": False},
    }})  # fmt: skip
    m = slo_margins(slo)
    assert m["p95_latency_s"] == pytest.approx(0.2) == slo_margin("p95_latency_s", 0.2, 0.25)
    assert m["min_availability"] == pytest.approx((0.98 - 0.99) / 0.99)
    assert m["max_rejection_ratio"] == math.inf  # a zero limit met exactly: nothing binds
    assert m["max_failure_ratio"] == pytest.approx(-0.1)  # a zero limit missed: the excess itself
    assert m["p99_latency_s"] == -math.inf  # unknown is never a pass
    # the report's reading of the same rule: no number where there is no scale or no value
    assert slo_margin("max_failure_ratio", 0.1, 0.0) is None and slo_margin("p99_latency_s", None, 1.0) is None
    assert slo_margins(None) == {} and binding(None) is None
    b = binding(slo)
    assert b == {"name": "p99_latency_s", "value": None, "limit": 1.0, "margin": None}
