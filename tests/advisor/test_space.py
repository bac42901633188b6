"""The search space: expansion into candidates, one-line errors, and the four settings.

Candidate counts are products of axis sizes worked out here; the settings are checked
on what the advisor builds (prices, pools, placement, static findings) and on what the
simulator then does with the winner (every sensitive request on the on-prem pool).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from servewise.advisor import advise
from servewise.advisor._candidates import build_candidates, build_deployment, load_profiles
from servewise.cli import app
from servewise.config import parse_deployment
from servewise.errors import ConfigError
from servewise.hardware import load_catalog
from servewise.profile import Accuracy, Hardware, Profile, save_profile
from servewise.simulator import simulate
from servewise.space import axes, expand, parse_space
from servewise.trace import TokenSpec, Trace, load_trace, poisson, save_trace

pytestmark = pytest.mark.xdist_group("advisor")

CATALOG = load_catalog()
#: classic latency model of tests/conftest.py: batch_time(1, 64) = 0.01 + 0.02 + 5e-4·64 + 2e-6·64² s
D64 = 0.01 + 0.02 + 5e-4 * 64 + 2e-6 * 64**2
FAST = {"search": {"replications": 0, "headroom": False}}


def _save(path: Path, *variants: Any, catalog_name: str | None = None, mem_bytes: int = 2**34) -> Path:
    hw = Hardware(cpu_model="test cpu", cpu_count=64, threads_used=1, mem_bytes=mem_bytes, catalog_name=catalog_name)
    prof = Profile(status="complete", created_utc="2025-01-01T00:00:00Z", tool_version="test", hardware=hw,
                   variants=list(variants))
    save_profile(prof, path)
    return path


def _halved(make_variant: Any, name: str, **kw: Any) -> Any:
    """The conftest's classic model at exactly twice the speed."""
    return make_variant(name, linear=(0.005, [0.01, 2.5e-4, 1e-6]), **kw)


def _trace(rate: float, duration_s: float = 120.0, seed: int = 1) -> Trace:
    return poisson(rate_rps=rate, duration_s=duration_s, seed=seed, tokens=TokenSpec(input_mean=64, output_mean=1))


# --------------------------------------------------------------------------- expansion


def test_expand_lists_ranges_and_products() -> None:
    assert expand([1, 2, 3]) == [1, 2, 3]
    assert expand(7) == [7]
    assert expand({"range": [1, 8]}) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert expand({"range": [1, 16], "factor": 2}) == [1, 2, 4, 8, 16]
    assert expand({"range": [1, 20], "factor": 3}) == [1, 3, 9]
    assert expand({"range": [2, 10], "step": 4}) == [2, 6, 10]
    assert expand({"range": [5, 5]}) == [5]
    got = expand({"range": [0.1, 0.5], "step": 0.1})
    assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], abs=1e-12) and len(got) == 5
    assert expand({"range": [0.005, 0.02], "factor": 2}) == pytest.approx([0.005, 0.01, 0.02])
    # ints stay ints (a replica count must be an int)
    assert all(type(x) is int for x in expand({"range": [1, 16], "factor": 2}))
    # a mapping's alternatives are the product of its fields' alternatives
    got = expand({"max_batch_size": [4, 8], "max_wait_s": [0.01, 0.02]})
    assert got == [{"max_batch_size": b, "max_wait_s": w} for b in (4, 8) for w in (0.01, 0.02)]
    got = expand([None, {"max_batch_size": {"range": [2, 8], "factor": 2}, "max_wait_s": 0.01}])
    assert got == [None] + [{"max_batch_size": b, "max_wait_s": 0.01} for b in (2, 4, 8)]
    nested = expand({"a": {"b": [1, 2], "c": [3, 4, 5]}, "d": [True, False]})
    assert len(nested) == 2 * 3 * 2 and len({repr(x) for x in nested}) == 12
    # a field whose value is a list is written as a list of lists: each inner list is one alternative
    assert expand([[1, 2]]) == [[1, 2]]
    assert expand([[1, 2], [3]]) == [[1, 2], [3]]


def test_shorthand_balancer_and_scaling() -> None:
    sp = parse_space({"hardware": ["c7i.xlarge"], "variant": "fp32", "slo": {"p95_latency_s": 1},
                      "balancer": "p2c", "scaling": "fixed"})
    assert sp.variant == ("fp32",)
    ax = axes(sp)
    assert ax["balancer"] == [{"policy": "p2c"}]
    assert ax["scaling"] == [{"mode": "fixed"}]
    sp = parse_space({"hardware": ["c7i.xlarge"], "variant": ["fp32"], "slo": {"p95_latency_s": 1},
                      "balancer": ["round_robin", {"policy": "p2c", "d": [2, 3]}]})
    assert axes(sp)["balancer"] == [{"policy": "round_robin"}, {"policy": "p2c", "d": 2}, {"policy": "p2c", "d": 3}]


def test_candidate_count_is_the_product_of_the_axes(tmp_path: Path, make_variant: Any) -> None:
    fp32, int8 = make_variant("fp32"), _halved(make_variant, "int8")
    p_local = _save(tmp_path / "local.json", fp32, int8)
    p_c7 = _save(tmp_path / "c7.json", fp32, int8, catalog_name="c7i.2xlarge")
    hardware = [{"name": "local", "price_per_hour_usd": 0.1}, "c7i.2xlarge"]
    variants = ["fp32", "int8"]
    replicas = list(range(1, 5))
    policies = ["round_robin", "p2c", "least_outstanding"]
    batchings = [None] + [{"max_batch_size": b, "max_wait_s": 0.01} for b in (2, 4)]
    concurrency = [1, 2]
    sp = parse_space({
        "hardware": hardware, "variant": variants, "slo": {"p95_latency_s": 1},
        "replicas": {"range": [1, 4]}, "balancer": policies,
        "batching": [None, {"max_batch_size": [2, 4], "max_wait_s": 0.01}], "concurrency": [1, 2],
    })
    ex = build_candidates(sp, load_profiles([p_local, p_c7], CATALOG), CATALOG)
    want = len(hardware) * len(variants) * len(replicas) * len(policies) * len(batchings) * len(concurrency)
    assert want == 288
    assert ex.combinations == want and len(ex.candidates) == want and not ex.invalid
    assert len({c.id for c in ex.candidates}) == want
    got = {
        (c.doc["instance_type"], c.variant, c.doc["replicas"], c.doc["balancer"]["policy"],
         repr(c.doc.get("batching")), c.doc["concurrency"])
        for c in ex.candidates
    }
    expected = set(itertools.product(["local", "c7i.2xlarge"], variants, replicas, policies,
                                     [repr(b) for b in batchings], concurrency))
    assert got == expected
    # prices: the given one for 'local', the catalog's for c7i.2xlarge
    prices = {c.doc["instance_type"]: c.doc["price_per_hour_usd"] for c in ex.candidates}
    assert prices == {"local": 0.1, "c7i.2xlarge": CATALOG.get("c7i.2xlarge").price_per_hour_usd}
    # every candidate is a valid deployment with the variant it names
    for c in ex.candidates[:: 37]:
        dep = build_deployment(c.doc, load_profiles([p_local, p_c7], CATALOG).variant(c.hardware, c.variant, None))
        assert dep.model is not None and dep.model.variant == c.variant


def test_autoscale_duplicates_are_merged(tmp_path: Path, make_variant: Any) -> None:
    p = _save(tmp_path / "p.json", make_variant("fp32"))
    autoscale = {"mode": "autoscale", "min_replicas": 1, "max_replicas": 4, "target_in_flight": 2}
    sp = parse_space({"hardware": [{"name": "local", "price_per_hour_usd": 1}], "variant": ["fp32"],
                      "slo": {"p95_latency_s": 1}, "replicas": {"range": [1, 4]},
                      "scaling": ["fixed", autoscale, {**autoscale, "min_replicas": 2}]})
    ex = build_candidates(sp, load_profiles([p], CATALOG), CATALOG)
    assert ex.combinations == 4 * 3
    # fixed: 4 replica counts; each autoscale rule starts at its min_replicas whatever the axis says
    assert len(ex.candidates) == 4 + 1 + 1
    auto = [c for c in ex.candidates if c.doc["scaling"]["mode"] == "autoscale"]
    assert sorted(c.doc["replicas"] for c in auto) == [1, 2]
    # every combination maps to a candidate (the duplicates to the one they equal)
    assert len(ex.coords) == ex.combinations
    assert sorted(set(ex.coords.values())) == list(range(len(ex.candidates)))


# --------------------------------------------------------------------------- bad input


BASE: dict[str, Any] = {"hardware": ["c7i.xlarge"], "variant": ["fp32"], "slo": {"p95_latency_s": 1}}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"replicaz": 3}, "'replicaz'"),
        ({"model": {"profile": "p.json", "variant": "fp32"}}, "'model' is set by the advisor"),
        ({"instance_type": "c7i.xlarge"}, "'instance_type' is set by the advisor"),
        ({"balancer": []}, "field 'balancer': an empty list"),
        ({"replicas": {"range": [8, 1]}}, "field 'replicas': range [8, 1]: high must be >= low"),
        ({"replicas": {"range": [1]}}, "field 'replicas': range must be [low, high]"),
        ({"replicas": {"range": [1, 8], "step": 0}}, "field 'replicas': range step must be a number > 0"),
        ({"replicas": {"range": [1, 8], "factor": 1}}, "field 'replicas': range factor must be a number > 1"),
        ({"replicas": {"range": [0, 8], "factor": 2}}, "field 'replicas': a range with a factor needs low > 0"),
        ({"replicas": {"range": [1, 8], "step": 1, "factor": 2}}, "field 'replicas': a range takes step or factor"),
        ({"replicas": {"range": [1, 8], "stepp": 2}}, "field 'replicas': a range takes step or factor, not 'stepp'"),
        ({"variant": []}, "variant"),
        ({"slo": {"p95_latency": 1}}, "slo.p95_latency"),
        ({"search": {"strategy": "random"}}, "search.strategy"),
        ({"hardware": []}, "setting 'cloud' needs hardware"),
        ({"hardware": ["c7i.xlarge", "c7i.xlarge"]}, "listed twice"),
        ({"setting": "on_prem"}, "setting 'on_prem' needs inventory"),
        ({"setting": "hybrid", "inventory": [{"instance_type": "local", "count": 1}] * 2},
         "setting 'hybrid' needs inventory with exactly one entry"),
        ({"setting": "edge", "hardware": []}, "setting 'edge' needs edge"),
        ({"setting": "on_prem", "hardware": [], "inventory": [{"instance_type": "local", "count": 0}]},
         "inventory.0.count"),
        ({"edge": {"device": "pi", "mem_bytes": 2**30}}, "'edge' applies to setting 'edge'"),
    ],
)
def test_bad_space_is_one_line_naming_the_field(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_space({**BASE, **change}, "space.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("space.yaml: ")
    assert needle in msg


def test_bad_hardware_profiles_and_prices(tmp_path: Path, make_variant: Any) -> None:
    p = _save(tmp_path / "p.json", make_variant("fp32"))
    tr = _trace(5, 20)

    def fails(space: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as err:
            advise(parse_space({**space, **FAST}), tr, [p])
        assert "\n" not in str(err.value)
        return str(err.value)

    msg = fails({**BASE, "hardware": ["c7i.2xlarg"]})
    assert "unknown hardware 'c7i.2xlarg'" in msg and "did you mean 'c7i.2xlarge'" in msg
    msg = fails({**BASE, "hardware": ["g5.xlarge"]})
    assert "hardware 'g5.xlarge' has no profile" in msg and "profile transfer --to g5.xlarge" in msg
    msg = fails({**BASE, "hardware": ["local"]})
    assert "hardware 'local' needs a price" in msg
    msg = fails({**BASE, "hardware": [{"name": "local", "price_per_hour_usd": 1}], "variant": ["int4"]})
    assert "int4" in msg and "fp32" in msg  # what the profile holds


def test_cli_broken_space_exits_2_with_one_line(tmp_path: Path, make_variant: Any) -> None:
    p = _save(tmp_path / "p.json", make_variant("fp32"))
    t = tmp_path / "t.csv"
    save_trace(_trace(5, 20), t)
    s = tmp_path / "space.yaml"
    s.write_text(yaml.safe_dump({**BASE, "hardware": [{"name": "local", "price_per_hour_usd": 1}],
                                 "replicas": {"range": [4, 1]}}))
    r = CliRunner().invoke(app, ["advise", "--space", str(s), "--trace", str(t), "--profile", str(p),
                                 "--out", str(tmp_path / "out"), "--jobs", "1"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output and "replicas" in lines[0] and "high must be >= low" in lines[0]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- settings


def test_on_prem_inventory_limits_replicas_and_prices_amortised(tmp_path: Path, make_variant: Any) -> None:
    p = _save(tmp_path / "c7.json", make_variant("fp32"), catalog_name="c7i.2xlarge")
    machine_price, per_machine, machines = 1.2, 2, 2
    rate = 2.5 / D64  # 2.5 replicas of offered load: needs at least 3 replicas
    sp = parse_space({
        "setting": "on_prem", "variant": ["fp32"], "replicas": {"range": [1, 6]},
        "inventory": [{"instance_type": "c7i.2xlarge", "count": machines, "replicas_per_machine": per_machine,
                       "price_per_hour_usd": machine_price}],
        "balancer": ["least_outstanding"], "slo": {"p95_latency_s": 0.5}, **FAST,
    })
    tr = _trace(rate, 120)
    plan = advise(sp, tr, [p], jobs=1)
    by_replicas = {c.deployment["replicas"]: c for c in plan.candidates}
    assert sorted(by_replicas) == [1, 2, 3, 4, 5, 6]
    for r, c in by_replicas.items():
        if r > machines * per_machine:
            assert c.status == "static_infeasible" and c.feasible is False
            assert c.static.constraint == "inventory"
            assert (c.static.value, c.static.limit) == (r, machines * per_machine)
        else:
            assert c.status != "static_infeasible"
        assert c.deployment["price_per_hour_usd"] == pytest.approx(machine_price / per_machine)
    w = plan.winner
    assert w is not None
    r = w.deployment["replicas"]
    assert 3 <= r <= 4  # under 3 replicas the queue grows without bound
    assert w.cost_per_hour_usd == pytest.approx(r * machine_price / per_machine, rel=1e-9)
    # the winner is the fewest replicas that meet the SLO: one fewer does not
    variant = make_variant("fp32")
    fewer = build_deployment({**w.deployment, "replicas": r - 1}, variant)
    assert simulate(fewer, tr, seed=sp.search.seed).slo.passed is False


def _classed_trace(rate: float, sensitive_share: float, duration_s: float, seed: int) -> Trace:
    base = _trace(rate, duration_s, seed)
    rng = np.random.default_rng(seed + 100)
    codes = (rng.random(len(base)) < sensitive_share).astype(np.int32)
    return Trace(arrival_s=base.arrival_s, input_tokens=base.input_tokens, output_tokens=base.output_tokens,
                 traffic_class=codes, class_names=("default", "sensitive"), source="classed")


def test_hybrid_pins_sensitive_traffic_to_the_on_prem_pool(tmp_path: Path, make_variant: Any) -> None:
    p_local = _save(tmp_path / "local.json", make_variant("fp32"))
    p_cloud = _save(tmp_path / "c7.json", _halved(make_variant, "fp32"), catalog_name="c7i.2xlarge")
    onprem_price = 0.05
    cloud_price = CATALOG.get("c7i.2xlarge").price_per_hour_usd
    rate = 1.6 / D64  # 1.6 on-prem replicas of load: the single on-prem machine cannot take it alone
    t = tmp_path / "t.csv"
    save_trace(_classed_trace(rate, 0.2, 120, 3), t)
    tr = load_trace(t)  # the classes go through the generic CSV's traffic_class column
    assert set(tr.class_names) == {"default", "sensitive"}
    sp = parse_space({
        "setting": "hybrid", "variant": ["fp32"], "hardware": ["c7i.2xlarge"],
        "inventory": [{"instance_type": "local", "count": 1, "price_per_hour_usd": onprem_price}],
        "replicas": {"range": [0, 3]}, "balancer": ["least_outstanding"],
        "slo": {"p95_latency_s": 0.4}, **FAST,
    })
    plan = advise(sp, tr, [p_local, p_cloud], jobs=1)
    for c in plan.candidates:
        pools = c.deployment["pools"]
        assert pools[0] == {"name": "onprem", "instance_type": "local", "replicas": 1,
                            "price_per_hour_usd": onprem_price}
        assert c.deployment["placement"] == {"sensitive": ["onprem"]}
        if len(pools) > 1:
            # the cloud profile's model is exactly twice as fast: the burst pool runs at speed 2
            assert pools[1]["instance_type"] == "c7i.2xlarge" and pools[1]["speed_factor"] == pytest.approx(2.0)
            assert pools[1]["price_per_hour_usd"] == pytest.approx(cloud_price)
    w = plan.winner
    assert w is not None and len(w.deployment["pools"]) == 2
    k = w.deployment["pools"][1]["replicas"]
    assert w.cost_per_hour_usd == pytest.approx(onprem_price + k * cloud_price, rel=1e-9)
    dep = build_deployment(w.deployment, make_variant("fp32"))
    res = simulate(dep, tr, seed=0)
    req = res.requests
    sens = req[req["traffic_class"] == "sensitive"]
    other = req[req["traffic_class"] == "default"]
    assert len(sens) > 100 and len(other) > 100
    assert set(sens["pool"]) == {"onprem"}
    assert set(other["pool"]) == {"onprem", "cloud"}
    # and the same deployment without the placement does send sensitive requests to the cloud
    free = build_deployment({**w.deployment, "placement": None}, make_variant("fp32"))
    req2 = simulate(free, tr, seed=0).requests
    assert (req2[req2["traffic_class"] == "sensitive"]["pool"] == "cloud").any()


def test_edge_single_replica_memory_and_compute(tmp_path: Path, make_variant: Any) -> None:
    gib = 2**30
    big = make_variant("fp32", peak_mem_bytes=2 * gib)
    small = make_variant("int8", peak_mem_bytes=gib // 4)
    p = _save(tmp_path / "p.json", big, small)
    speed = 0.5
    sp = parse_space({
        "setting": "edge", "variant": ["fp32", "int8"],
        "edge": {"device": "pi5", "mem_bytes": gib, "max_concurrency": 2, "speed_factor": speed,
                 "price_per_hour_usd": 0.01},
        "concurrency": [1, 2, 4], "replicas": {"range": [1, 3]},
        "slo": {"p95_latency_s": 1.0}, **FAST,
    })
    tr = _trace(0.05 / D64, 300)  # a 5% load: requests hardly ever queue
    plan = advise(sp, tr, [p], jobs=1)
    assert plan.search.combinations == 2 * 3 * 3
    cands = plan.candidates
    assert len(cands) == 2 * 3  # the replicas axis collapses: one device, one replica
    for c in cands:
        pools = c.deployment["pools"]
        assert len(pools) == 1 and pools[0]["replicas"] == 1 and pools[0]["speed_factor"] == speed
        conc = c.deployment.get("concurrency", 1)
        if c.variant == "fp32":
            assert c.status == "static_infeasible" and c.static.constraint == "memory"
            assert (c.static.value, c.static.limit) == (2 * gib, gib)
        elif conc > 2:
            assert c.status == "static_infeasible" and c.static.constraint == "compute"
            assert (c.static.value, c.static.limit) == (conc, 2)
        else:
            assert c.status != "static_infeasible"
    w = plan.winner
    assert w is not None and w.variant == "int8" and w.deployment.get("concurrency", 1) <= 2
    # service on the device takes the profile's time over its speed factor
    assert w.metrics.latency_s.p50 == pytest.approx(D64 / speed, rel=1e-6)
    assert w.cost_per_hour_usd == pytest.approx(0.01)


def test_accuracy_drift_limit(tmp_path: Path, make_variant: Any) -> None:
    def acc(cos: float) -> Accuracy:
        return Accuracy(reference="fp32", metric="embedding", n_inputs=32, cosine_mean=cos)

    fp32 = make_variant("fp32", accuracy=acc(1.0))
    int8 = _halved(make_variant, "int8", accuracy=acc(0.95))  # drift 0.05, twice as fast
    bare = _halved(make_variant, "int4")  # no accuracy measured
    p = _save(tmp_path / "p.json", fp32, int8, bare)
    tr = _trace(1.5 / D64, 120)  # fp32 needs 2+ replicas, int8 1 (0.75 load)

    def plan_for(limit: float) -> Any:
        sp = parse_space({"hardware": [{"name": "local", "price_per_hour_usd": 1.0}],
                          "variant": ["fp32", "int8", "int4"], "replicas": {"range": [1, 4]},
                          "balancer": ["least_outstanding"],
                          "slo": {"p95_latency_s": 0.6, "max_accuracy_drift": limit}, **FAST})
        return advise(sp, tr, [p], jobs=1)

    strict = plan_for(0.01)
    for c in strict.candidates:
        if c.variant == "fp32":
            assert c.status != "static_infeasible"
            continue
        assert c.status == "static_infeasible" and c.feasible is False
        assert c.static.constraint == "max_accuracy_drift"
        assert c.static.limit == 0.01
        if c.variant == "int8":
            assert c.static.value == pytest.approx(0.05)
        else:
            assert c.static.value is None and "no accuracy" in c.static.detail
    assert strict.winner is not None and strict.winner.variant == "fp32"
    assert all(strict.candidate(i).variant == "fp32" for i in strict.ranking)
    loose = plan_for(0.1)
    assert loose.winner is not None and loose.winner.variant == "int8"
    assert loose.winner.cost_per_hour_usd < strict.winner.cost_per_hour_usd
    assert loose.winner.metrics.accuracy_drift == pytest.approx(0.05)
    assert math.isclose(loose.winner.slo.checks["max_accuracy_drift"].value, 0.05, rel_tol=1e-9)


def test_placement_waits_for_its_pools_reloading_replica() -> None:
    """A sensitive request arriving while its only allowed replica reloads (after a repair) waits
    for it, as it would with no other pool; it does not fail because another pool is ready."""
    base = poisson(rate_rps=5, duration_s=200, seed=1, tokens=TokenSpec(input_mean=64, output_mean=16))
    codes = (np.arange(len(base)) % 3 == 0).astype(np.int32)
    tr = Trace(arrival_s=base.arrival_s, input_tokens=base.input_tokens, output_tokens=base.output_tokens,
               traffic_class=codes, class_names=("default", "sensitive"))
    dep = parse_deployment({
        "service_time": {"distribution": "deterministic", "mean_s": 0.05},
        "pools": [{"name": "onprem", "replicas": 1}, {"name": "cloud", "replicas": 2}],
        "placement": {"sensitive": ["onprem"]},
        # a 1 ms repair, then a 5 s reload: the on-prem replica spends ~1/4 of the run reloading
        "faults": {"mtbf_s": 20, "mttr_s": 0.001, "repair": "deterministic", "max_retries": 100},
        "scaling": {"cold_start_s": 5.0},
    })
    res = simulate(dep, tr, seed=0)
    assert res.summary.restarts >= 5
    req = res.requests
    sens = req[req["traffic_class"] == "sensitive"]
    assert set(sens["pool"]) - {""} == {"onprem"}
    # failures only hit requests caught on the replica when it failed (retried into the 1 ms repair),
    # never a request that arrived during the reload
    failed = sens[sens["status"] == "failed"]
    assert (failed["retries"] >= 1).all(), failed[["arrival_s", "retries"]].head()
    waited = sens[(sens["status"] == "completed") & (sens["cold_start_s"] > 0)]
    assert len(waited) > 10


def test_placement_on_an_empty_pool_fails_those_requests_in_both_engines(make_variant: Any) -> None:
    tr = _classed_trace(5, 0.3, 60, 2)
    n_sens = int((tr.traffic_class == 1).sum())
    v = make_variant("fp16", kind="decoder", kv_bytes_per_token=1000)
    common = {"model": {"profile": "p.json", "variant": "fp16", "resolved": v},
              "pools": [{"name": "onprem", "replicas": 0}, {"name": "cloud", "replicas": 1}],
              "placement": {"sensitive": ["onprem"]}}
    for extra in ({}, {"engine": {"kind": "continuous", "kv_capacity_tokens": 100_000}}):
        res = simulate(parse_deployment({**common, **extra}), tr, seed=0)
        req = res.requests
        sens = req[req["traffic_class"] == "sensitive"]
        assert len(sens) == n_sens > 0
        assert (sens["status"] == "failed").all()
        assert (req[req["traffic_class"] == "default"]["status"] == "completed").all()
        assert res.summary.failed == n_sens


def test_local_host_limits_replicas_to_its_cores_and_models_their_contention(tmp_path: Path, make_variant: Any) -> None:
    """Replicas on 'local' share the profiled machine: no more replicas × threads than its
    CPUs, and each candidate's deployment carries the host (the simulator's CPU sharing)."""
    hw = Hardware(cpu_model="test cpu", cpu_count=2, threads_used=1, mem_bytes=2**34)
    p = tmp_path / "local.json"
    save_profile(Profile(status="complete", created_utc="2025-01-01T00:00:00Z", tool_version="test", hardware=hw,
                         variants=[make_variant("fp32")]), p)  # fmt: skip
    sp = parse_space({
        "setting": "cloud", "hardware": [{"name": "local", "price_per_hour_usd": 0.1}], "variant": ["fp32"],
        "replicas": {"range": [1, 3]}, "balancer": ["least_outstanding"], "slo": {"p95_latency_s": 0.5}, **FAST,
    })  # fmt: skip
    plan = advise(sp, _trace(0.5 / D64, 60), [p], jobs=1)
    by_replicas = {c.deployment["replicas"]: c for c in plan.candidates}
    assert sorted(by_replicas) == [1, 2, 3]
    three = by_replicas[3]
    assert three.status == "static_infeasible" and three.static.constraint == "cores"
    assert (three.static.value, three.static.limit) == (3, 2)
    for r in (1, 2):
        assert by_replicas[r].status != "static_infeasible"
        assert by_replicas[r].deployment["host"] == {"cores": 2, "threads": 1}
    # two replicas on two cores at one thread each do not contend: the same latency as without the host
    dep = build_deployment(by_replicas[2].deployment, make_variant("fp32"))
    assert dep.host is not None and dep.host_threads() == 1
    tr = _trace(1.5 / D64, 60)
    alone = build_deployment({k: v for k, v in by_replicas[2].deployment.items() if k != "host"}, make_variant("fp32"))
    a, b = simulate(dep, tr, seed=0).requests, simulate(alone, tr, seed=0).requests
    np.testing.assert_allclose(a["latency_s"], b["latency_s"], rtol=1e-12)
