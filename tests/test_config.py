"""Deployment configs: invalid ones fail with a message naming the field and what was
expected; valid ones round-trip through YAML unchanged; the shipped example loads."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from servewise.config import (
    Deployment,
    Empirical,
    ModelRef,
    Scaling,
    dump_deployment,
    load_deployment,
    parse_deployment,
)
from servewise.errors import ConfigError, ServewiseError
from servewise.policies import cache_policies, lb_policies
from servewise.simulator import simulate
from servewise.trace import Trace, poisson

ST = {"distribution": "deterministic", "mean_s": 1.0}


def base(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"replicas": 1, "service_time": ST}
    doc.update(fields)
    return doc


def error_of(doc: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_deployment(doc)
    return str(err.value)


# --------------------------------------------------------------------------- invalid documents


@pytest.mark.parametrize(
    ("doc", "field", "expected"),
    [
        (base(replicas=-1), "replicas", "greater than or equal to 0"),
        (base(replicas="two"), "replicas", "valid integer"),
        (base(concurrency=0), "concurrency", "greater than or equal to 1"),
        (base(service_time={"distribution": "exponential", "mean_s": 0}), "service_time.mean_s", "greater than 0"),
        (
            base(service_time={"distribution": "lognormal", "mean_s": 1.0, "cv": -1}),
            "service_time.cv",
            "greater than 0",
        ),
        (
            base(service_time={"distribution": "uniform", "low_s": 2, "high_s": 1}),
            "service_time",
            "high_s must be > low_s",
        ),
        (base(service_time={"distribution": "gamma", "mean_s": 1}), "service_time", "'exponential'"),
        (base(service_time={"distribution": "empirical"}), "service_time", "exactly one of samples_s or samples_file"),
        (base(service_time={"distribution": "linear"}), "service_time", "must be > 0"),
        (base(balancer={"policy": "p2c", "d": 0}), "balancer.d", "greater than or equal to 1"),
        (
            base(batching={"max_batch_size": 0, "max_wait_s": 0.1}),
            "batching.max_batch_size",
            "greater than or equal to 1",
        ),
        (base(batching={"max_batch_size": 4}), "batching.max_wait_s", "required"),
        (base(queue={"capacity": -3}), "queue.capacity", "greater than or equal to 0"),
        (base(cache={"policy": "ttl", "capacity": 10}), "cache", "needs ttl_s"),
        (base(cache={"policy": "lru", "capacity": 0}), "cache.capacity", "greater than or equal to 1"),
        (base(cache={"policy": "lfu", "capacity": 10}), "cache.policy", "'lru'"),
        (base(faults={"mtbf_s": 10, "mttr_s": 1, "on_failure": "maybe"}), "faults.on_failure", "'retry' or 'fail'"),
        (base(faults={"mtbf_s": 0, "mttr_s": 1}), "faults.mtbf_s", "greater than 0"),
        (base(slo={"max_rejection_ratio": 1.5}), "slo.max_rejection_ratio", "less than or equal to 1"),
        (base(scaling={"mode": "elastic"}), "scaling.mode", "'fixed', 'autoscale' or 'serverless'"),
        (base(scaling={"mode": "fixed", "min_replicas": 1}), "scaling", "takes no min_replicas"),
        (base(scaling={"mode": "serverless"}), "scaling", "needs max_replicas, keep_alive_s"),
        (base(scaling={"mode": "fixed", "warm_routing": "newest"}), "scaling", "takes no warm_routing"),
        (base(scaling={"mode": "autoscale", "min_replicas": 1, "max_replicas": 2, "target_in_flight": 1,
                       "warm_routing": "spread"}), "scaling", "warm_routing is for mode 'serverless'"),  # fmt: skip
        (base(scaling={"mode": "serverless", "max_replicas": 2, "keep_alive_s": 1, "warm_routing": "oldest"}),
         "scaling.warm_routing", "newest"),  # fmt: skip
        (
            base(scaling={"mode": "autoscale", "min_replicas": 0, "max_replicas": 3, "target_in_flight": 2}),
            "scaling",
            "min_replicas >= 1",
        ),
        (
            {"pools": [{"name": "a", "replicas": 1, "speed_factor": -2}], "service_time": ST},
            "pools.0.speed_factor",
            "greater than 0",
        ),
        (
            {"pools": [{"name": "a", "replicas": 1}, {"name": "b", "replicas": 1, "wieght": 2}], "service_time": ST},
            "pools.1.wieght",
            "Extra inputs are not permitted",
        ),
        (base(kind="plan"), "kind", "'deployment'"),
        ({"replicas": 1, "model": {"profile": "p.json"}}, "model.variant", "required"),
        ({"replicas": 1, "model": {"profile": "", "variant": "fp32"}}, "model.profile", "at least 1 character"),
        ({"replicas": 1, "model": {"profile": "p.json", "variant": "fp32", "dtype": "int8"}}, "model.dtype", "not permitted"),
    ],
)
def test_invalid_field_names_the_path_and_what_was_expected(doc, field, expected):
    msg = error_of(doc)
    assert f"field '{field}'" in msg, msg
    assert expected in msg, msg
    assert msg.startswith("deployment: ")
    assert "\n" not in msg  # one line, fit for the CLI


def test_negative_replicas():
    msg = error_of(base(replicas=-1))
    assert "'replicas'" in msg and "greater than or equal to 0" in msg and "-1" in msg


def test_unknown_key_is_named_and_refused():
    msg = error_of(base(replica=2))
    assert "'replica'" in msg
    assert "Extra inputs are not permitted" in msg


def test_nested_unknown_key_is_named():
    msg = error_of(base(balancer={"policy": "p2c", "dd": 2}))
    assert "'balancer.dd'" in msg and "not permitted" in msg


def test_autoscale_without_bounds_names_the_missing_fields():
    msg = error_of(base(scaling={"mode": "autoscale"}))
    assert "field 'scaling'" in msg
    for f in ("min_replicas", "max_replicas", "target_in_flight"):
        assert f in msg
    msg = error_of(base(scaling={"mode": "autoscale", "min_replicas": 1, "target_in_flight": 2}))
    assert "max_replicas" in msg and "min_replicas," not in msg


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (base(pools=[{"name": "a", "replicas": 1}]), "exactly one of 'replicas' or 'pools'"),
        ({"service_time": ST}, "exactly one of 'replicas' or 'pools'"),
        (base(replicas=0), "at least one replica"),
        ({"replicas": 1}, "exactly one of 'service_time' (a distribution) or 'model' (a profile variant), got neither"),
        (base(model={"profile": "p.json", "variant": "fp32"}), "exactly one of 'service_time'"),
        (
            {"replicas": 1, "model": {"profile": "p.json", "variant": "fp32"}, "batching": {"max_batch_size": 4, "max_wait_s": 0, "batch_cost_factor": 0.5}},
            "batching.batch_cost_factor applies to a service_time distribution only",
        ),
        ({"pools": [], "service_time": ST}, "at least one pool"),
        (
            {"pools": [{"name": "a", "replicas": 1}, {"name": "a", "replicas": 2}], "service_time": ST},
            "pool names must be unique, got 'a' twice",
        ),
        (
            base(
                replicas=5, scaling={"mode": "autoscale", "min_replicas": 1, "max_replicas": 3, "target_in_flight": 2}
            ),
            "replicas (5) must lie within [min_replicas, max_replicas] = [1, 3]",
        ),
        (
            base(
                scaling={"mode": "serverless", "max_replicas": 2, "keep_alive_s": 1}, faults={"mtbf_s": 9, "mttr_s": 1}
            ),
            "faults are not modelled for scaling mode 'serverless'",
        ),
        (
            {
                "pools": [{"name": "a", "replicas": 1}, {"name": "b", "replicas": 1}],
                "service_time": ST,
                "scaling": {"mode": "autoscale", "min_replicas": 1, "max_replicas": 3, "target_in_flight": 2},
            },
            "supports one pool, got 2",
        ),
    ],
)
def test_whole_document_rules(doc, expected):
    assert expected in error_of(doc)


def test_not_a_mapping():
    assert "expected a mapping of deployment fields, got list" in error_of([1, 2])
    assert "got NoneType" in error_of(None)


def test_errors_are_servewise_errors():
    assert issubclass(ConfigError, ServewiseError)


# --------------------------------------------------------------------------- simulate-time checks


def _trace(n: int = 3) -> Trace:
    return poisson(rate_rps=1.0, n_requests=n, seed=0)


def test_unknown_balancer_lists_the_valid_names():
    # refused when parsed or, at the latest, when simulated
    with pytest.raises(ServewiseError) as err:
        simulate(parse_deployment(base(replicas=2, balancer={"policy": "nope"})), _trace(), seed=0)
    msg = str(err.value)
    assert "'nope'" in msg
    for name in lb_policies.names():
        assert name in msg, msg
    assert "balancer" in msg


def test_balancer_parameter_the_policy_does_not_take():
    with pytest.raises(ConfigError, match="round_robin") as err:
        simulate(parse_deployment(base(replicas=2, balancer={"policy": "round_robin", "d": 2})), _trace(), seed=0)
    assert "'d'" in str(err.value)


def test_queue_smaller_than_a_batch_is_refused_naming_both_fields():
    with pytest.raises(ConfigError) as err:  # by the contract, before any simulation
        parse_deployment(base(batching={"max_batch_size": 4, "max_wait_s": 0.1}, queue={"capacity": 2}))
    msg = str(err.value)
    assert "queue.capacity" in msg and "batching.max_batch_size" in msg and "(2)" in msg and "(4)" in msg


@pytest.mark.parametrize("policy", cache_policies.names())
def test_config_accepts_every_registered_cache_policy(policy):
    cache: dict[str, Any] = {"policy": policy, "capacity": 4}
    if policy == "ttl":
        cache["ttl_s"] = 1.0
    dep = parse_deployment(base(cache=cache))
    res = simulate(dep, _trace(5).with_zipf_keys(2, 1.0, seed=0), seed=0)
    assert res.summary.requests == 5


# --------------------------------------------------------------------------- files


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "dep.yaml"
    p.write_text(
        "name: x\nreplicas: 1\nservice_time: {distribution: exponential, mean_s: 1\nbalancer:\n  policy: p2c\n"
    )
    with pytest.raises(ConfigError) as err:
        load_deployment(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:"), msg
    line = int(msg[len(str(p)) + 1 :].split(":")[0])
    assert line in (3, 4), msg  # the unclosed mapping opens on line 3, the parser trips on 4


def test_yaml_bad_indentation_names_file_and_line(tmp_path):
    p = tmp_path / "dep.yaml"
    p.write_text("name: x\nreplicas: 1\n  service_time: 3\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: "):
        load_deployment(p)


def test_invalid_field_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "dep.yaml"
    p.write_text("replicas: 1\nservice_time: {distribution: exponential, mean_s: -1}\n")
    with pytest.raises(ConfigError) as err:
        load_deployment(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: field 'service_time.mean_s'") and "greater than 0" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such deployment file"):
        load_deployment(tmp_path / "nope.yaml")


def _with_samples(tmp_path: Path, samples: str) -> Path:
    (tmp_path / "samples.txt").write_text(samples)
    p = tmp_path / "dep.yaml"
    p.write_text("replicas: 1\nservice_time:\n  distribution: empirical\n  samples_file: samples.txt\n")
    return p


def test_samples_file_with_a_bad_line_names_file_and_line(tmp_path):
    p = _with_samples(tmp_path, "# measured\n0.5\n\n0.7\nabc\n0.9\n")
    with pytest.raises(ConfigError) as err:
        load_deployment(p)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'samples.txt'}:5:"), msg
    assert "'abc'" in msg and "seconds" in msg


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_samples_file_refuses_negative_and_non_finite(tmp_path, bad):
    p = _with_samples(tmp_path, f"0.5\n{bad}\n")
    with pytest.raises(ConfigError, match=r"samples\.txt:2: expected a finite service time >= 0"):
        load_deployment(p)


def test_empty_samples_file(tmp_path):
    with pytest.raises(ConfigError, match="holds no samples"):
        load_deployment(_with_samples(tmp_path, "# nothing\n\n"))


def test_samples_file_is_read_relative_to_the_deployment(tmp_path):
    dep = load_deployment(_with_samples(tmp_path, "# measured\n0.5\n0.25\n\n1.0\n"))
    st_ = dep.service_time
    assert isinstance(st_, Empirical)
    assert st_.samples_s == (0.5, 0.25, 1.0) and st_.samples_file is None
    res = simulate(dep, _trace(50), seed=1)
    service = (res.requests["end_s"] - res.requests["start_s"]).to_numpy()
    assert set(np.round(service, 12)) <= {0.5, 0.25, 1.0}


def test_unloaded_samples_file_is_a_clear_error_at_simulate_time():
    dep = parse_deployment(base(service_time={"distribution": "empirical", "samples_file": "x.txt"}))
    with pytest.raises(ConfigError, match="samples_file"):
        simulate(dep, _trace(), seed=0)


# --------------------------------------------------------------------------- a profiled model


def _model_file(tmp_path: Path, model: dict[str, Any] | None = None, **fields: Any) -> Path:
    """A deployment file naming ``profile.json`` beside it (variant fp32 unless given)."""
    doc: dict[str, Any] = {"replicas": 1, "model": model or {"profile": "profile.json", "variant": "fp32"}}
    doc.update(fields)
    p = tmp_path / "dep.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_deployment(path)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_model_profile_is_read_relative_to_the_deployment(tmp_path, monkeypatch, make_variant, write_profile):
    fp32, int8 = make_variant("fp32"), make_variant("int8", load_time_s=4.0)
    write_profile(fp32, int8, path="conf/profiles/p.json")
    (tmp_path / "conf").mkdir(exist_ok=True)
    p = tmp_path / "conf" / "dep.yaml"
    p.write_text("replicas: 1\nmodel: {profile: profiles/p.json, variant: int8}\n")
    monkeypatch.chdir(tmp_path)  # not the deployment's folder
    dep = load_deployment(p)
    assert dep.model is not None and dep.service_time is None
    assert dep.model.profile == "profiles/p.json"  # as written: dumps stay relative
    assert dep.model.loaded() == int8
    assert dep.cold_start_s() == 4.0


def test_model_profile_may_be_an_absolute_path(tmp_path, make_variant, write_profile):
    prof = write_profile(make_variant("fp32"), path="elsewhere/p.json")
    (tmp_path / "d").mkdir()
    dep = load_deployment(_model_file(tmp_path / "d", {"profile": str(prof), "variant": "fp32"}))
    assert dep.model is not None and dep.model.loaded().name == "fp32"


def test_missing_profile_file_names_the_deployment_and_the_field(tmp_path):
    p = _model_file(tmp_path)
    msg = _load_error(p)
    assert msg.startswith(f"{p}: field 'model.profile': {tmp_path / 'profile.json'}: no such profile file"), msg


def test_a_file_that_is_not_a_profile_is_refused(tmp_path):
    (tmp_path / "profile.json").write_text('{"kind": "result", "schema_version": 1}')
    msg = _load_error(_model_file(tmp_path))
    assert "field 'model.profile'" in msg and "kind is 'result', expected 'profile'" in msg


def test_unknown_variant_lists_the_profiles_variants(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32"), make_variant("int8"))
    p = _model_file(tmp_path, {"profile": "profile.json", "variant": "int4"})
    msg = _load_error(p)
    assert msg.startswith(f"{p}: field 'model.variant': "), msg
    assert "no variant 'int4' of builtin:test-model; it holds: fp32, int8" in msg


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "skipped", "skip_reason": "no AMX on this CPU"}, "variant 'int8' of builtin:test-model is skipped (no AMX on this CPU)"),
        ({"status": "failed", "error": "out of memory"}, "is failed (out of memory)"),
        ({"status": "incomplete"}, "is incomplete (its measurement did not finish)"),
        ({"latency_model": None}, "variant 'int8' of builtin:test-model has no fitted latency model"),
    ],
)
def test_a_variant_that_cannot_give_service_times_is_refused(tmp_path, make_variant, write_profile, fields, expected):
    write_profile(make_variant("fp32"), make_variant("int8", **fields), make_variant("bf16"))
    msg = _load_error(_model_file(tmp_path, {"profile": "profile.json", "variant": "int8"}))
    assert "field 'model.variant'" in msg and expected in msg, msg
    assert msg.endswith("usable variants: fp32, bf16"), msg


def test_an_estimated_variant_is_usable(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32", estimated=True))
    dep = load_deployment(_model_file(tmp_path))
    assert dep.model is not None and dep.model.loaded().estimated


def test_a_profile_of_several_models_needs_spec(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32", model="builtin:a"), make_variant("fp32", model="builtin:b", load_time_s=9.0))
    msg = _load_error(_model_file(tmp_path))
    assert "field 'model.spec'" in msg and "holds several models (builtin:a, builtin:b); say which" in msg
    msg = _load_error(_model_file(tmp_path, {"profile": "profile.json", "variant": "fp32", "spec": "builtin:c"}))
    assert "field 'model.spec'" in msg and "has no model 'builtin:c'; it holds: builtin:a, builtin:b" in msg
    dep = load_deployment(_model_file(tmp_path, {"profile": "profile.json", "variant": "fp32", "spec": "builtin:b"}))
    assert dep.model is not None and dep.model.loaded().model == "builtin:b" and dep.cold_start_s() == 9.0


def test_resolved_is_not_for_yaml(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32"))
    p = _model_file(tmp_path, {"profile": "profile.json", "variant": "fp32", "resolved": {"name": "fp32"}})
    msg = _load_error(p)
    assert "field 'model.resolved'" in msg and "must be a servewise.profile.Variant, got dict" in msg


def test_a_resolved_variant_must_match_the_reference(make_variant):
    with pytest.raises(ValidationError, match="resolved is variant 'int8', but variant is 'fp32'"):
        ModelRef(profile="p.json", variant="fp32", resolved=make_variant("int8"))
    with pytest.raises(ValidationError, match="resolved is a variant of builtin:test-model, but spec is 'x'"):
        ModelRef(profile="p.json", variant="fp32", spec="x", resolved=make_variant("fp32"))
    with pytest.raises(ValidationError, match="is skipped .*: it cannot give service times"):
        ModelRef(profile="p.json", variant="fp32", resolved=make_variant("fp32", status="skipped", skip_reason="n/a"))


AUTOSCALE = {"mode": "autoscale", "min_replicas": 1, "max_replicas": 4, "target_in_flight": 2}


def test_cold_start_comes_from_the_profile_unless_set(make_variant):
    v = make_variant("fp32", load_time_s=2.5)

    def dep(**fields: Any) -> Deployment:
        return Deployment(replicas=1, model=ModelRef(profile="p.json", variant="fp32", resolved=v), **fields)

    assert dep().cold_start_s() == 2.5
    assert dep(scaling=Scaling(**AUTOSCALE)).cold_start_s() == 2.5
    assert dep(scaling=Scaling(**AUTOSCALE, cold_start_s=7.0)).cold_start_s() == 7.0
    assert dep(scaling=Scaling(cold_start_s=0.0)).cold_start_s() == 0.0  # set explicitly: 0 wins
    plain = parse_deployment(base(scaling={"cold_start_s": 3.0}))
    assert plain.cold_start_s() == 3.0 and parse_deployment(base()).cold_start_s() == 0.0
    unloaded = parse_deployment({"replicas": 1, "model": {"profile": "p.json", "variant": "fp32"}})
    with pytest.raises(ConfigError, match="not loaded"):
        unloaded.cold_start_s()


def test_a_variant_without_load_time_needs_cold_start_s_only_when_replicas_start_later(
    tmp_path, make_variant, write_profile
):
    write_profile(make_variant("fp32", load_time_s=None))
    assert load_deployment(_model_file(tmp_path)).cold_start_s() == 0.0  # fixed, no faults: never used
    for fields, why in [
        ({"scaling": AUTOSCALE}, "scaling mode 'autoscale'"),
        ({"replicas": 0, "scaling": {"mode": "serverless", "max_replicas": 2, "keep_alive_s": 5}}, "scaling mode 'serverless'"),
        ({"faults": {"mtbf_s": 100, "mttr_s": 1}}, "faults"),
    ]:
        p = _model_file(tmp_path, **fields)
        msg = _load_error(p)
        assert msg.startswith(f"{p}: the document: variant 'fp32' of builtin:test-model has no load_time_s"), msg
        assert f"({why}): set scaling.cold_start_s" in msg
        scaling = {**fields.get("scaling", {}), "cold_start_s": 1.5}
        assert load_deployment(_model_file(tmp_path, **{**fields, "scaling": scaling})).cold_start_s() == 1.5


def test_a_deployment_with_a_resolved_variant_is_hashable_and_compares_by_value(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32"))
    a, b = load_deployment(_model_file(tmp_path)), load_deployment(_model_file(tmp_path))
    assert a == b and hash(a) == hash(b)
    assert "latency_model" not in repr(a)  # the variant is not repeated in reprs


# --------------------------------------------------------------------------- round trip


ROUND_TRIP = [
    base(),
    base(replicas=3, concurrency=4, name="plain", instance_type="g5.xlarge", price_per_hour_usd=1.006),
    {
        "name": "pools",
        "service_time": {"distribution": "lognormal", "mean_s": 0.3, "cv": 1.7},
        "pools": [
            {
                "name": "fast",
                "instance_type": "a100",
                "replicas": 2,
                "speed_factor": 2.5,
                "price_per_hour_usd": 4.1,
                "concurrency": 8,
            },
            {"name": "slow", "replicas": 0, "weight": 0.5},
        ],
        "balancer": {"policy": "weighted"},
    },
    base(
        service_time={
            "distribution": "linear",
            "base_s": 0.05,
            "per_item_s": 0.01,
            "per_input_token_s": 2e-5,
            "per_output_token_s": 0.004,
            "noise_cv": 0.1,
        },
        batching={"max_batch_size": 8, "max_wait_s": 0.005, "batch_cost_factor": 0.3},
        queue={"capacity": 64},
    ),
    base(
        service_time={"distribution": "hyperexponential", "mean_s": 1.0, "cv": 2.0},
        cache={"policy": "lru", "capacity": 1000, "ttl_s": 60.0, "hit_latency_s": 0.002},
        balancer={"policy": "consistent_hash", "virtual_nodes": 50, "load_bound": 1.25},
    ),
    base(cache={"policy": "ttl", "capacity": 10, "ttl_s": 5}, balancer={"policy": "p2c", "d": 3}),
    base(cache={"policy": "fifo", "capacity": 3}),
    base(
        replicas=4,
        service_time={"distribution": "uniform", "low_s": 0.0, "high_s": 2.0},
        faults={"mtbf_s": 3600, "mttr_s": 60, "repair": "deterministic", "on_failure": "fail", "max_retries": 0},
        slo={"p95_latency_s": 2.0, "p99_latency_s": 4.0, "max_failure_ratio": 0.001, "min_availability": 0.999},
    ),
    base(
        replicas=2,
        scaling={
            "mode": "autoscale",
            "min_replicas": 1,
            "max_replicas": 16,
            "target_in_flight": 4.5,
            "interval_s": 15,
            "cold_start_s": 30,
            "scale_down_stabilization_s": 120,
        },
    ),
    base(
        replicas=0,
        service_time={"distribution": "empirical", "samples_s": [0.1, 0.2, 0.35]},
        scaling={
            "mode": "serverless",
            "max_replicas": 100,
            "keep_alive_s": 600,
            "cold_start_s": 2.5,
            "memory_bytes": 3 * 2**30,
            "price_per_gb_second_usd": 1.66667e-5,
            "price_per_request_usd": 2e-7,
            "billing": "instance",
        },
    ),
]


@pytest.mark.parametrize("doc", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_round_trip_through_yaml(doc):
    d = parse_deployment(doc)
    text = dump_deployment(d)
    back = parse_deployment(yaml.safe_load(text))
    assert back == d
    assert dump_deployment(back) == text


def test_round_trip_through_a_file(tmp_path):
    for k, doc in enumerate(ROUND_TRIP):
        d = parse_deployment(doc)
        p = tmp_path / f"d{k}.yaml"
        p.write_text(dump_deployment(d))
        assert load_deployment(p) == d


def test_model_deployment_round_trips_without_its_resolved_variant(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32"))
    dep = load_deployment(
        _model_file(
            tmp_path,
            {"profile": "profile.json", "variant": "fp32", "spec": "builtin:test-model"},
            scaling=AUTOSCALE,
            batching={"max_batch_size": 4, "max_wait_s": 0.01},
        )
    )
    text = dump_deployment(dep)
    data = yaml.safe_load(text)
    assert data["model"] == {"profile": "profile.json", "variant": "fp32", "spec": "builtin:test-model"}
    assert "service_time" not in data
    # derived or inapplicable defaults are not written: the cold start still comes from the profile
    assert "cold_start_s" not in data["scaling"] and "batch_cost_factor" not in data["batching"]
    back = parse_deployment(data)
    assert back.model is not None and back.model.resolved is None
    assert back == dep.model_copy(update={"model": dep.model.model_copy(update={"resolved": None})})  # type: ignore[union-attr]
    assert dump_deployment(back) == text
    (tmp_path / "again.yaml").write_text(text)
    again = load_deployment(tmp_path / "again.yaml")
    assert again == dep and again.cold_start_s() == 2.5


def test_an_explicit_cold_start_is_kept_in_the_dump(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32"))
    dep = load_deployment(_model_file(tmp_path, scaling={**AUTOSCALE, "cold_start_s": 0.0}))
    data = yaml.safe_load(dump_deployment(dep))
    assert data["scaling"]["cold_start_s"] == 0.0
    assert parse_deployment(data).scaling.model_fields_set >= {"cold_start_s"}


def test_dump_leaves_out_unset_parts():
    data = yaml.safe_load(dump_deployment(parse_deployment(base())))
    assert "pools" not in data and "cache" not in data and "batching" not in data and "faults" not in data
    assert data["kind"] == "deployment" and data["schema_version"] == 1


@settings(max_examples=50, deadline=None)
@given(
    replicas=st.integers(1, 1000),
    price=st.floats(0, 1e4, allow_nan=False, allow_infinity=False),
    mean=st.floats(1e-9, 1e6, allow_nan=False, allow_infinity=False, exclude_min=False),
    wait=st.floats(0, 10, allow_nan=False),
    name=st.text(min_size=1, max_size=20),
    ttl=st.one_of(st.none(), st.floats(1e-6, 1e6)),
)
def test_round_trip_random_values(replicas, price, mean, wait, name, ttl):
    cache: dict[str, Any] = {"policy": "lru", "capacity": 5}
    if ttl is not None:
        cache["ttl_s"] = ttl
    d = parse_deployment(
        {
            "name": name,
            "replicas": replicas,
            "price_per_hour_usd": price,
            "service_time": {"distribution": "exponential", "mean_s": mean},
            "batching": {"max_batch_size": 2, "max_wait_s": wait},
            "cache": cache,
        }
    )
    assert parse_deployment(yaml.safe_load(dump_deployment(d))) == d


def test_deployments_are_frozen():
    d = parse_deployment(base())
    with pytest.raises(ValidationError, match="frozen"):
        d.replicas = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- shipped example


def _default_path() -> Path:
    return Path(str(resources.files("servewise.data").joinpath("default_deployment.yaml")))


def test_shipped_default_deployment_loads_round_trips_and_simulates():
    dep = load_deployment(_default_path())
    assert isinstance(dep, Deployment)
    assert dep.scaling.mode == "autoscale" and dep.cache is not None and dep.slo is not None
    assert parse_deployment(yaml.safe_load(dump_deployment(dep))) == dep
    trace = poisson(rate_rps=4.0, n_requests=400, seed=1).with_zipf_keys(100, 1.0, seed=2)
    res = simulate(dep, trace, seed=0)
    assert res.summary.requests == 400
    assert res.slo is not None


def test_queue_smaller_than_a_batch_fails_deployment_check_not_only_simulate(tmp_path):
    """Cross-field rules live in the contract: `deployment check`, the library and `simulate` agree."""
    from typer.testing import CliRunner

    from servewise.cli import app

    p = tmp_path / "d.yaml"
    p.write_text(
        "replicas: 1\nservice_time: {distribution: exponential, mean_s: 0.1}\n"
        "queue: {capacity: 2}\nbatching: {max_batch_size: 4, max_wait_s: 0.01}\n"
    )
    with pytest.raises(ConfigError, match=r"queue.capacity \(2\) must be >= batching.max_batch_size \(4\)"):
        load_deployment(p)
    r = CliRunner().invoke(app, ["deployment", "check", str(p)])
    assert r.exit_code == 2 and "queue.capacity (2)" in r.stderr and r.stdout == ""
