"""The advisor's deploy/ folder: every emitted file is valid for the tool that reads it.

Kubernetes documents go through the kubernetes client's models (a missing required
field raises, an unknown one is dropped and caught by the round trip); nginx.conf passes
``nginx -t`` for every balancer; deployment.yaml loads back equal; the alerts and the
dashboard query only the metrics of ``servewise.telemetry``; the locustfile replays a
trace open loop against a real HTTP server. Expected values are computed here from the
deployment and the catalog, never copied from an earlier run.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes.client import ApiClient

from servewise import telemetry
from servewise.advisor._deploy import DEPLOY_FILES, DeployInputs, write_deploy
from servewise.config import SLO, Deployment, load_deployment, parse_deployment
from servewise.errors import ConfigError
from servewise.hardware import load_catalog
from servewise.trace import TokenSpec, Trace, load_trace, poisson

pytestmark = pytest.mark.xdist_group("advisor_deploy")

CATALOG = load_catalog()
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
K8S_MODELS = {
    "ConfigMap": "V1ConfigMap",
    "Service": "V1Service",
    "Deployment": "V1Deployment",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
}


# --------------------------------------------------------------------------- helpers


def small_trace(n: int = 20, rate: float = 10.0, seed: int = 1, keys: bool = False) -> Trace:
    tr = poisson(rate_rps=rate, n_requests=n, seed=seed, tokens=TokenSpec(input_mean=16, output_mean=4))
    return tr.with_zipf_keys(5, 1.0, seed) if keys else tr


def emit(
    out: Path,
    dep: Deployment,
    *,
    trace: Trace | None = None,
    expected: dict[str, Any] | None = None,
    profile: Path | None = None,
    **kw: Any,
) -> list[Path]:
    inputs = DeployInputs(
        deployment=dep,
        expected=expected if expected is not None else {"summary": {}},
        trace=trace if trace is not None else small_trace(),
        profile_path=profile,
        catalog=CATALOG,
        **kw,
    )
    return write_deploy(inputs, out)


def dep_of(**fields: Any) -> Deployment:
    doc: dict[str, Any] = {
        "name": "svc",
        "replicas": 2,
        "service_time": {"distribution": "exponential", "mean_s": 0.05},
    }
    doc.update(fields)
    if "pools" in fields:
        doc.pop("replicas")
    return parse_deployment(doc)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def of_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs(path) if d["kind"] == kind]


def k8s_round_trip(doc: dict[str, Any], model: str) -> Any:
    """Deserialize ``doc`` into the client model ``model`` (validating) and serialize it back."""
    api = ApiClient()
    assert api.configuration.client_side_validation
    text = json.dumps(doc)
    if "response_text" in inspect.signature(api.deserialize).parameters:  # kubernetes >= 35
        obj = api.deserialize(text, model, "application/json")
    else:  # pragma: no cover - older clients take a response object
        obj = api.deserialize(SimpleNamespace(data=text), model)  # type: ignore[call-arg, arg-type]
    assert type(obj).__name__ == model
    return api.sanitize_for_serialization(obj)


def upstream_block(conf: str) -> str:
    m = re.search(r"upstream servewise \{\n(.*?)\n    \}", conf, re.S)
    assert m, conf
    return m.group(1)


def directives(block: str) -> list[str]:
    """The directives of a block, comments and blank lines dropped."""
    return [
        line.split("#")[0].strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")
    ]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bservewise_[a-z_]+\b", expr))


def balanced(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


# --------------------------------------------------------------------------- profiled deployments


@pytest.fixture
def classic_profile(make_variant, write_profile) -> Path:
    return write_profile(make_variant("fp32"), path="prof/classic.json")


@pytest.fixture
def decoder_profile(make_variant, write_profile) -> Path:
    v = make_variant("fp32", kind="decoder", model="builtin:tiny-decoder", kv_bytes_per_token=4096, weights_bytes=10**9)
    return write_profile(v, path="prof/decoder.json")


def load_profiled(tmp_path: Path, profile: Path, **fields: Any) -> Deployment:
    """load_deployment of a YAML file next to ``profile`` naming it (model.resolved set)."""
    doc: dict[str, Any] = {"name": "profiled", "model": {"profile": profile.name, "variant": "fp32"}}
    doc.update(fields)
    path = profile.parent / "dep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_deployment(path)


@pytest.fixture
def gpu_autoscale(tmp_path, classic_profile) -> Deployment:
    return load_profiled(
        tmp_path,
        classic_profile,
        name="GPU Classifier",
        replicas=2,
        instance_type="g5.xlarge",
        concurrency=4,
        batching={"max_batch_size": 8, "max_wait_s": 0.01},
        scaling={
            "mode": "autoscale",
            "min_replicas": 1,
            "max_replicas": 6,
            "target_in_flight": 12,
            "scale_down_stabilization_s": 120,
            "scale_up_stabilization_s": 15,
        },
        slo={"p95_latency_s": 0.5, "max_rejection_ratio": 0.01},
    )


@pytest.fixture
def llm(tmp_path, decoder_profile) -> Deployment:
    return load_profiled(
        tmp_path,
        decoder_profile,
        name="chat",
        replicas=2,
        engine={"kind": "continuous", "kv_capacity_tokens": 4096},
        balancer={"policy": "least_kv"},
        slo={"p99_ttft_s": 2.0, "p95_tpot_s": 0.1, "ttft_target_s": 1.0, "tpot_target_s": 0.05, "min_goodput_rps": 3},
    )


def serverless() -> Deployment:
    return dep_of(
        replicas=0,
        concurrency=3,
        batching={"max_batch_size": 4, "max_wait_s": 0.0},
        scaling={"mode": "serverless", "max_replicas": 10, "keep_alive_s": 90, "cold_start_s": 2.5},
    )


def weighted_pools() -> Deployment:
    return dep_of(
        balancer={"policy": "weighted"},
        concurrency=2,
        pools=[
            {"name": "Big GPU", "instance_type": "g5.xlarge", "replicas": 1, "speed_factor": 2.0, "concurrency": 4},
            {"name": "cpu", "instance_type": "c7i.xlarge", "replicas": 2},
        ],
    )


def every_shape(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, tuple[Deployment, Path | None]]:
    classic = request.getfixturevalue("classic_profile")
    decoder = request.getfixturevalue("decoder_profile")
    return {
        "fixed-cpu": (dep_of(replicas=3, instance_type="c7i.xlarge"), None),
        "fixed-local": (dep_of(), None),
        "autoscale-gpu": (request.getfixturevalue("gpu_autoscale"), classic),
        "serverless": (serverless(), None),
        "llm": (request.getfixturevalue("llm"), decoder),
        "weighted-pools": (weighted_pools(), None),
    }


SHAPES = ["fixed-cpu", "fixed-local", "autoscale-gpu", "serverless", "llm", "weighted-pools"]


# =========================================================================== the folder


def test_every_file_is_written_listed_and_no_temp_file_is_left(tmp_path, gpu_autoscale, classic_profile):
    out = tmp_path / "deploy"
    written = emit(out, gpu_autoscale, profile=classic_profile, expected={"summary": {"requests": 20}})
    on_disk = sorted(p.name for p in out.iterdir())
    assert sorted(p.name for p in written) == on_disk == sorted(DEPLOY_FILES)
    assert all(p.parent == out and p.is_file() and p.stat().st_size > 0 for p in written)
    assert not [n for n in on_disk if n.startswith(".") or n.endswith(".tmp")]
    assert json.loads((out / "expected.json").read_text()) == {"summary": {"requests": 20}}
    assert (out / "profile.json").read_bytes() == classic_profile.read_bytes()


def test_without_a_profile_there_is_no_profile_json(tmp_path):
    written = emit(tmp_path / "d", dep_of())
    assert sorted(p.name for p in written) == sorted(set(DEPLOY_FILES) - {"profile.json"})


def test_a_profile_without_a_model_is_refused(tmp_path, classic_profile):
    with pytest.raises(ConfigError, match="has no model"):
        emit(tmp_path / "d", dep_of(), profile=classic_profile)
    assert not (tmp_path / "d").exists()


def test_nothing_is_written_when_a_file_cannot_be_built(tmp_path):
    with pytest.raises(ValueError):
        emit(tmp_path / "d", dep_of(), expected={"summary": {"latency_s": float("nan")}})
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("shape", SHAPES)
def test_every_generated_comment_starts_with_hash_space(tmp_path, request, shape):
    dep, profile = every_shape(tmp_path, request)[shape]
    emit(tmp_path / "d", dep, profile=profile)
    for name in (
        "deployment.yaml",
        "k8s.yaml",
        "kserve.yaml",
        "docker-compose.yaml",
        "nginx.conf",
        "prometheus-alerts.yaml",
        "locustfile.py",
    ):
        for line in (tmp_path / "d" / name).read_text().splitlines():
            if line.lstrip().startswith("#"):
                assert line.lstrip().startswith("# "), f"{name}: {line!r}"


def test_trace_csv_loads_back_as_the_trace(tmp_path):
    tr = small_trace(keys=True)
    emit(tmp_path / "d", dep_of(), trace=tr)
    back = load_trace(tmp_path / "d" / "trace.csv")
    np.testing.assert_array_equal(back.arrival_s, tr.arrival_s)
    np.testing.assert_array_equal(back.input_tokens, tr.input_tokens)
    assert back.key_labels is not None and tr.key_labels is not None
    assert [back.key_labels[k] for k in back.key] == [tr.key_labels[k] for k in tr.key]


# =========================================================================== deployment.yaml


def test_deployment_yaml_round_trips_with_the_copied_profile(tmp_path, gpu_autoscale, classic_profile):
    out = tmp_path / "deploy"
    emit(out, gpu_autoscale, profile=classic_profile)
    text = (out / "deployment.yaml").read_text()
    assert text.startswith("# servewise deployment: run with servewise serve deployment.yaml\n")
    back = load_deployment(out / "deployment.yaml")
    assert gpu_autoscale.model is not None and back.model is not None
    assert back.model.profile == "profile.json" and gpu_autoscale.model.profile == "classic.json"
    want = gpu_autoscale.model_copy(
        update={"model": gpu_autoscale.model.model_copy(update={"profile": "profile.json"})}
    )
    assert back == want
    assert back.model.resolved == gpu_autoscale.model.resolved  # the variant comes from the copied profile


@pytest.mark.parametrize("shape", ["fixed-cpu", "serverless", "weighted-pools"])
def test_deployment_yaml_round_trips_without_a_model(tmp_path, request, shape):
    dep, _ = every_shape(tmp_path, request)[shape]
    emit(tmp_path / "d", dep)
    assert load_deployment(tmp_path / "d" / "deployment.yaml") == dep


# =========================================================================== k8s.yaml


@pytest.mark.parametrize("shape", SHAPES)
def test_every_k8s_document_validates_against_the_client_models(tmp_path, request, shape):
    dep, profile = every_shape(tmp_path, request)[shape]
    emit(tmp_path / "d", dep, profile=profile)
    all_docs = docs(tmp_path / "d" / "k8s.yaml")
    kinds = [d["kind"] for d in all_docs]
    pools = dep.resolved_pools()
    assert kinds.count("ConfigMap") == kinds.count("Service") == 1
    assert kinds.count("Deployment") == len(pools)
    assert kinds.count("HorizontalPodAutoscaler") == sum(
        1 for p in pools if p.replicas > 0 or dep.scaling.mode != "fixed"
    )
    for doc in all_docs:
        assert k8s_round_trip(doc, K8S_MODELS[doc["kind"]]) == doc  # nothing unknown dropped, nothing missing
        name = doc["metadata"]["name"]
        assert DNS_1035.match(name) and len(name) <= 63, name
        assert doc["metadata"]["namespace"] == "default"


def test_a_missing_required_field_fails_the_client_validation():
    """The check above has teeth: the client models reject a Deployment without a selector."""
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {}}}
    with pytest.raises(Exception, match="selector"):
        k8s_round_trip(doc, "V1Deployment")


def test_k8s_autoscale_gpu_values(tmp_path, gpu_autoscale, classic_profile):
    emit(tmp_path / "d", gpu_autoscale, profile=classic_profile, image="registry.local/sw:1", port=9000)
    path = tmp_path / "d" / "k8s.yaml"
    (deployment,) = of_kind(path, "Deployment")
    (hpa,) = of_kind(path, "HorizontalPodAutoscaler")
    (svc,) = of_kind(path, "Service")
    (cm,) = of_kind(path, "ConfigMap")
    s = gpu_autoscale.scaling

    assert deployment["spec"]["replicas"] == gpu_autoscale.replicas == 2
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.local/sw:1"
    assert c["command"] == [
        "servewise", "serve", "/etc/servewise/deployment.yaml", "--host", "0.0.0.0", "--port", "9000",
        "--replicas", "1", "--pool", "default",
    ]  # fmt: skip
    assert c["ports"] == [{"name": "http", "containerPort": 9000}]
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    g5 = CATALOG.get("g5.xlarge")
    assert g5.accelerator is not None and g5.accelerator.count == 1
    res = c["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    cpu_m = int(res["requests"]["cpu"].removesuffix("m"))
    assert 0.8 * g5.vcpus * 1000 <= cpu_m < g5.vcpus * 1000  # all but a little headroom
    mem = int(res["requests"]["memory"].removesuffix("Mi")) * 2**20
    assert 0.8 * g5.mem_bytes <= mem < g5.mem_bytes
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert c["volumeMounts"] == [{"name": "servewise-config", "mountPath": "/etc/servewise", "readOnly": True}]
    assert pod["volumes"] == [{"name": "servewise-config", "configMap": {"name": cm["metadata"]["name"]}}]

    # the ConfigMap holds the folder's deployment.yaml and profile.json (small)
    assert cm["data"]["deployment.yaml"] == (tmp_path / "d" / "deployment.yaml").read_text()
    assert cm["data"]["profile.json"] == classic_profile.read_text()

    # the HPA carries the autoscale rule
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (s.min_replicas, s.max_replicas)
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == telemetry.IN_FLIGHT
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "12"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 15
    assert "Prometheus adapter" in path.read_text()

    # the Service selects every pool's pods
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert labels["app.kubernetes.io/name"] == "servewise" and labels["servewise.dev/pool"] == "default"
    assert labels["app.kubernetes.io/instance"] == "gpu-classifier"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert "sessionAffinity" not in svc["spec"]


def test_k8s_fixed_plan_pins_the_hpa_and_sizes_cpu_pods_from_the_catalog(tmp_path):
    dep = dep_of(replicas=3, instance_type="c7i.xlarge")
    emit(tmp_path / "d", dep)
    path = tmp_path / "d" / "k8s.yaml"
    (deployment,) = of_kind(path, "Deployment")
    (hpa,) = of_kind(path, "HorizontalPodAutoscaler")
    assert deployment["spec"]["replicas"] == 3
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)
    assert "metrics" not in hpa["spec"]
    assert "fixed plan" in path.read_text()
    inst = CATALOG.get("c7i.xlarge")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["requests"]
    cpu_m = int(c["resources"]["requests"]["cpu"].removesuffix("m"))
    assert 0.8 * inst.vcpus * 1000 <= cpu_m < inst.vcpus * 1000
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "c7i.xlarge"}


def test_k8s_local_and_unknown_instances_get_no_node_selector(tmp_path):
    dep = dep_of(
        pools=[
            {"name": "here", "instance_type": "local", "replicas": 1},
            {"name": "mine", "instance_type": "x9.huge", "replicas": 1},
        ]
    )
    emit(tmp_path / "d", dep)
    path = tmp_path / "d" / "k8s.yaml"
    for d in of_kind(path, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod and "tolerations" not in pod
        (c,) = pod["containers"]
        assert set(c["resources"]) == {"requests"} and "nvidia.com/gpu" not in c["resources"]["requests"]
    assert "x9.huge is not in the hardware catalog" in path.read_text()


def test_k8s_multi_gpu_instance_gives_each_replica_one_gpu_and_its_share(tmp_path):
    emit(tmp_path / "d", dep_of(replicas=8, instance_type="p5.48xlarge"))
    (d,) = of_kind(tmp_path / "d" / "k8s.yaml", "Deployment")
    (c,) = d["spec"]["template"]["spec"]["containers"]
    inst = CATALOG.get("p5.48xlarge")
    assert inst.accelerator is not None
    n = inst.accelerator.count
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cpu_m = int(c["resources"]["limits"]["cpu"].removesuffix("m"))
    assert 0.8 * inst.vcpus / n * 1000 <= cpu_m <= inst.vcpus / n * 1000


def test_k8s_serverless_keeps_one_replica_and_points_to_kserve(tmp_path):
    dep = serverless()
    emit(tmp_path / "d", dep)
    path = tmp_path / "d" / "k8s.yaml"
    (d,) = of_kind(path, "Deployment")
    (hpa,) = of_kind(path, "HorizontalPodAutoscaler")
    assert d["spec"]["replicas"] == 1
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, dep.scaling.max_replicas)
    per_instance = dep.concurrency * (dep.batching.max_batch_size if dep.batching else 1)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == str(per_instance)
    assert "cannot scale to zero" in path.read_text() and "kserve.yaml" in path.read_text()


@pytest.mark.parametrize("policy", ["consistent_hash", "prefix_affinity"])
def test_k8s_service_keeps_clients_on_a_pod_for_affinity_balancers(tmp_path, request, policy):
    if policy == "prefix_affinity":
        base = request.getfixturevalue("llm")
        dep = base.model_copy(update={"balancer": base.balancer.model_copy(update={"policy": policy})})
    else:
        dep = dep_of(balancer={"policy": policy})
    emit(tmp_path / "d", dep, profile=None)
    (svc,) = of_kind(tmp_path / "d" / "k8s.yaml", "Service")
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert "sessionAffinity: ClientIP approximates" in (tmp_path / "d" / "k8s.yaml").read_text()


def test_k8s_large_profile_is_left_to_the_image(tmp_path, make_variant, write_profile):
    big = write_profile(make_variant("fp32", warnings=["x" * 1000] * 1000), path="big/profile.json")
    assert big.stat().st_size > 1_000_000
    dep = load_profiled(tmp_path, big, replicas=1)
    emit(tmp_path / "d", dep, profile=big)
    path = tmp_path / "d" / "k8s.yaml"
    (cm,) = of_kind(path, "ConfigMap")
    assert set(cm["data"]) == {"deployment.yaml"}
    (d,) = of_kind(path, "Deployment")
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert c["volumeMounts"] == [
        {
            "name": "servewise-config",
            "mountPath": "/etc/servewise/deployment.yaml",
            "subPath": "deployment.yaml",
            "readOnly": True,
        }
    ]
    assert "baked into the image" in path.read_text()
    assert k8s_round_trip(d, "V1Deployment") == d


def test_names_are_dns_safe_and_distinct(tmp_path):
    long = "My Fancy_Deployment!! " * 6
    dep = dep_of(
        name=long,
        pools=[
            {"name": "GPU.Pool", "instance_type": "g5.xlarge", "replicas": 1},
            {"name": "gpu-pool", "instance_type": "c7i.xlarge", "replicas": 1},
            {"name": "9lives" * 10, "replicas": 1},
        ],
    )
    emit(tmp_path / "d", dep)
    names = [d["metadata"]["name"] for d in of_kind(tmp_path / "d" / "k8s.yaml", "Deployment")]
    assert len(set(names)) == 3
    for n in names:
        assert DNS_1035.match(n) and len(n) <= 63, n
    pool_labels = [
        d["metadata"]["labels"]["servewise.dev/pool"] for d in of_kind(tmp_path / "d" / "k8s.yaml", "Deployment")
    ]
    assert len(set(pool_labels)) == 3 and all(DNS_1035.match(x) for x in pool_labels)
    compose = yaml.safe_load((tmp_path / "d" / "docker-compose.yaml").read_text())
    assert [s for s in compose["services"] if s != "nginx"] == [f"replica-{p}-0" for p in pool_labels]


# =========================================================================== kserve.yaml


@pytest.mark.parametrize("shape", SHAPES)
def test_kserve_structure_and_containers(tmp_path, request, shape):
    dep, profile = every_shape(tmp_path, request)[shape]
    emit(tmp_path / "d", dep, profile=profile)
    services = docs(tmp_path / "d" / "kserve.yaml")
    assert len(services) == len(dep.resolved_pools())
    for isvc in services:
        assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
        assert DNS_1035.match(isvc["metadata"]["name"]) and len(isvc["metadata"]["name"]) <= 45
        pred = isvc["spec"]["predictor"]
        assert (
            pred["scaleMetric"] == "concurrency" and isinstance(pred["scaleTarget"], int) and pred["scaleTarget"] >= 1
        )
        assert 0 <= pred["minReplicas"] <= pred["maxReplicas"]
        (c,) = pred["containers"]
        assert k8s_round_trip(c, "V1Container") == c
        assert c["command"][:3] == ["servewise", "serve", "/etc/servewise/deployment.yaml"]
        for v in pred["volumes"]:
            assert k8s_round_trip(v, "V1Volume") == v


def test_kserve_serverless_scales_to_zero(tmp_path):
    dep = serverless()
    emit(tmp_path / "d", dep)
    (isvc,) = docs(tmp_path / "d" / "kserve.yaml")
    pred = isvc["spec"]["predictor"]
    per_instance = dep.concurrency * (dep.batching.max_batch_size if dep.batching else 1)
    assert pred["minReplicas"] == 0 and pred["maxReplicas"] == dep.scaling.max_replicas
    assert pred["scaleTarget"] == pred["containerConcurrency"] == per_instance == 12
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "90s"


def test_kserve_autoscale_and_fixed(tmp_path, gpu_autoscale, classic_profile):
    emit(tmp_path / "a", gpu_autoscale, profile=classic_profile)
    (isvc,) = docs(tmp_path / "a" / "kserve.yaml")
    pred = isvc["spec"]["predictor"]
    s = gpu_autoscale.scaling
    assert (pred["minReplicas"], pred["maxReplicas"], pred["scaleTarget"]) == (s.min_replicas, s.max_replicas, 12)
    assert "containerConcurrency" not in pred
    assert pred["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    emit(tmp_path / "f", dep_of(replicas=3))
    (isvc,) = docs(tmp_path / "f" / "kserve.yaml")
    assert (isvc["spec"]["predictor"]["minReplicas"], isvc["spec"]["predictor"]["maxReplicas"]) == (3, 3)


# =========================================================================== nginx.conf


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (needed in CI for the nginx.conf checks)")
        pytest.skip("nginx not installed")
    return found


def nginx_check(nginx: str, conf: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``conf``, with the compose host names and the system paths made local.

    nginx resolves upstream names at config test, so ``replica-...:PORT`` becomes
    ``127.0.0.N:PORT``; temp, cache and log paths move under ``tmp``.
    """
    hosts: dict[str, str] = {}

    def local(m: re.Match[str]) -> str:
        hosts.setdefault(m.group(1), f"127.0.0.{len(hosts) + 1}")
        return f"server {hosts[m.group(1)]}:{m.group(2)}"

    text = re.sub(r"server (replica-[a-z0-9-]+):(\d+)", local, conf)
    assert hosts, "no replica in the upstream"
    (tmp / "cache").mkdir(parents=True, exist_ok=True)
    text = text.replace("/var/cache/nginx/", f"{tmp}/cache/")
    local_paths = (
        "".join(f"    {d}_temp_path {tmp}/{d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    access_log {tmp}/access.log;\n"
    )
    text = text.replace("http {\n", "http {\n" + local_paths, 1)
    path = tmp / "nginx.conf"
    path.write_text(text)
    return subprocess.run(
        [nginx, "-t", "-p", str(tmp), "-c", str(path), "-g", f"pid {tmp}/nginx.pid; error_log {tmp}/error.log;"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def nginx_cases(request: pytest.FixtureRequest) -> dict[str, Deployment]:
    llm = request.getfixturevalue("llm")
    return {
        "round_robin": dep_of(),
        "least_outstanding": dep_of(balancer={"policy": "least_outstanding"}),
        "random": dep_of(balancer={"policy": "random"}),
        "p2c": dep_of(replicas=4, balancer={"policy": "p2c", "d": 2}),
        "p2c-d3": dep_of(replicas=5, balancer={"policy": "p2c", "d": 3}),
        "consistent_hash": dep_of(balancer={"policy": "consistent_hash", "virtual_nodes": 50, "load_bound": 1.25}),
        "weighted": weighted_pools(),
        "least_kv": llm,
        "prefix_affinity": llm.model_copy(
            update={"balancer": llm.balancer.model_copy(update={"policy": "prefix_affinity"})}
        ),
        "queue+cache+retry": dep_of(
            concurrency=4,
            queue={"capacity": 6},
            cache={"policy": "ttl", "capacity": 20000, "ttl_s": 30},
            faults={"mtbf_s": 3600, "mttr_s": 60, "max_retries": 3},
            balancer={"policy": "least_outstanding"},
        ),
        "fifo-cache+fail": dep_of(
            cache={"policy": "fifo", "capacity": 10}, faults={"mtbf_s": 3600, "mttr_s": 60, "on_failure": "fail"}
        ),
        "serverless": serverless(),
    }


NGINX_CASES = [
    "round_robin", "least_outstanding", "random", "p2c", "p2c-d3", "consistent_hash", "weighted", "least_kv",
    "prefix_affinity", "queue+cache+retry", "fifo-cache+fail", "serverless",
]  # fmt: skip


@pytest.mark.parametrize("case", NGINX_CASES)
def test_nginx_conf_passes_nginx_t(tmp_path, request, nginx_bin, case):
    dep = nginx_cases(request)[case]
    emit(tmp_path / "d", dep)
    conf = (tmp_path / "d" / "nginx.conf").read_text()
    r = nginx_check(nginx_bin, conf, tmp_path / "nginx")
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr
    for line in conf.splitlines():  # every comment starts with "# "
        body = line.strip()
        if body.startswith("#") or " #" in body:
            assert re.search(r"(^|\s)# \S", body), line
    # one upstream server per replica at start, on the replicas' port
    servers = re.findall(r"server (replica-[a-z0-9-]+):8000\b", conf)
    assert (
        len(servers)
        == len(set(servers))
        == sum(max(p.replicas, 1 if dep.scaling.mode == "serverless" else 0) for p in dep.resolved_pools())
    )


def test_nginx_check_has_teeth(tmp_path, nginx_bin):
    emit(tmp_path / "d", dep_of())
    conf = (tmp_path / "d" / "nginx.conf").read_text().replace("keepalive 64;", "keepalive sixty-four;")
    assert nginx_check(nginx_bin, conf, tmp_path / "nginx").returncode != 0


@pytest.mark.parametrize(
    ("case", "directive", "note"),
    [
        ("round_robin", None, "# round_robin: nginx's default"),
        ("least_outstanding", "least_conn;", "# least_outstanding: least_conn"),
        ("random", "random;", "# random:"),
        ("p2c", "random two least_conn;", "# p2c: random two least_conn"),
        ("p2c-d3", "random two least_conn;", "# p2c with d=3: nginx samples two replicas, not 3."),
        ("consistent_hash", "hash $servewise_hash_key consistent;", "# no nginx equivalent of load_bound=1.25"),
        ("weighted", None, "# weighted: weight=N"),
        ("least_kv", "least_conn;", "# no nginx equivalent of least_kv:"),
        ("prefix_affinity", "least_conn;", "# no nginx equivalent of prefix_affinity:"),
    ],
)
def test_nginx_balancer_mapping(tmp_path, request, case, directive, note):
    emit(tmp_path / "d", nginx_cases(request)[case])
    conf = (tmp_path / "d" / "nginx.conf").read_text()
    block = upstream_block(conf)
    methods = [d for d in directives(block) if d.split()[0] in ("least_conn;", "random", "random;", "hash", "ip_hash;")]
    assert methods == ([directive] if directive else [])
    assert note in block
    assert "weight=" not in block or case == "weighted"


def test_nginx_consistent_hash_keys_on_the_request_key_header(tmp_path, request):
    emit(tmp_path / "d", nginx_cases(request)["consistent_hash"])
    conf = (tmp_path / "d" / "nginx.conf").read_text()
    m = re.search(r"map \$http_x_servewise_key \$servewise_hash_key \{(.*?)\}", conf, re.S)
    assert m and "$request_id" in m.group(1) and "default $http_x_servewise_key;" in m.group(1)
    assert "X-Servewise-Key" in conf and "virtual_nodes=50 is not configurable" in conf


def test_nginx_weighted_servers_carry_the_pool_weights(tmp_path):
    dep = weighted_pools()
    emit(tmp_path / "d", dep)
    block = upstream_block((tmp_path / "d" / "nginx.conf").read_text())
    weights = {m.group(1): int(m.group(2)) for m in re.finditer(r"server (replica-[a-z0-9-]+):\d+ weight=(\d+)", block)}
    big, cpu = dep.resolved_pools()
    w_big = big.speed_factor * (big.concurrency or dep.concurrency)  # 2 x 4 = 8
    w_cpu = cpu.speed_factor * (cpu.concurrency or dep.concurrency)  # 1 x 2 = 2
    assert weights == {"replica-big-gpu-0": 4, "replica-cpu-0": 1, "replica-cpu-1": 1}
    assert weights["replica-big-gpu-0"] / weights["replica-cpu-0"] == w_big / w_cpu


def test_nginx_queue_capacity_cache_and_retries(tmp_path, request):
    dep = nginx_cases(request)["queue+cache+retry"]
    emit(tmp_path / "d", dep)
    conf = (tmp_path / "d" / "nginx.conf").read_text()
    assert dep.queue.capacity is not None and dep.faults is not None and dep.cache is not None
    conns = re.findall(r"max_conns=(\d+)", upstream_block(conf))
    assert conns == [str(dep.concurrency + dep.queue.capacity)] * 2
    assert "error_page 502 =429 @overloaded;" in conf and "return 429" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    assert f"proxy_next_upstream_tries {dep.faults.max_retries + 1};" in conf
    zone_mb = math.ceil(dep.cache.capacity / 8000)
    assert f"keys_zone=servewise_cache:{zone_mb}m inactive=30s" in conf
    assert "proxy_cache_valid 200 30s;" in conf and "proxy_cache_methods GET HEAD POST;" in conf
    assert "$http_x_servewise_key" in re.search(r"proxy_cache_key (.*);", conf).group(1)  # type: ignore[union-attr]
    assert "proxy_buffering off" not in conf  # nginx caches buffered responses only


def test_nginx_without_queue_faults_or_cache(tmp_path, request):
    emit(tmp_path / "d", dep_of())
    conf = (tmp_path / "d" / "nginx.conf").read_text()
    assert "max_conns=" not in conf and "error_page" not in conf and "proxy_cache" not in conf
    assert "proxy_next_upstream error timeout http_502 http_503;" in conf and "proxy_next_upstream_tries" not in conf
    emit(tmp_path / "f", nginx_cases(request)["fifo-cache+fail"])
    conf = (tmp_path / "f" / "nginx.conf").read_text()
    assert "# no nginx equivalent of fifo eviction" in conf
    assert "non_idempotent" not in conf and "proxy_next_upstream_tries" not in conf


# =========================================================================== docker-compose.yaml


def test_compose_runs_one_container_per_replica_behind_nginx(tmp_path, gpu_autoscale, classic_profile):
    emit(tmp_path / "d", gpu_autoscale, profile=classic_profile)
    doc = yaml.safe_load((tmp_path / "d" / "docker-compose.yaml").read_text())
    services = doc["services"]
    replicas = [n for n in services if n != "nginx"]
    assert replicas == ["replica-default-0", "replica-default-1"]  # the start count (replicas: 2)
    for name in replicas:
        svc = services[name]
        assert svc["command"][-2:] == ["--pool", "default"] and svc["volumes"] == [".:/etc/servewise:ro"]
        assert svc["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        assert svc["healthcheck"]["test"][0] == "CMD"
    nginx = services["nginx"]
    assert nginx["image"] == "nginx:1.27" and nginx["ports"] == ["8080:8080"]
    assert nginx["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert set(nginx["depends_on"]) == set(replicas)
    text = (tmp_path / "d" / "docker-compose.yaml").read_text()
    assert "does not scale" in text and "locust -f locustfile.py" in text


# =========================================================================== prometheus-alerts.yaml


ALL_CLASSIC_SLO = {
    "p50_latency_s": 0.1,
    "p90_latency_s": 0.2,
    "p95_latency_s": 0.25,
    "p99_latency_s": 0.5,
    "max_rejection_ratio": 0.01,
    "max_failure_ratio": 0.001,
    "min_availability": 0.999,
}
EXPECTED = {
    "summary": {
        "latency_s": {"p50": 0.04, "p90": 0.08, "p95": 0.11, "p99": 0.2},
        "rejection_ratio": 0.002,
        "failure_ratio": 0.0,
        "availability": 0.9995,
        "ttft_s": {"p99": 1.234},
        "tpot_s": {"p95": 0.0456},
        "goodput_rps": 4.5,
    }
}


def check_alerts(path: Path, slo: dict[str, float]) -> dict[str, dict[str, Any]]:
    (group,) = yaml.safe_load(path.read_text())["groups"]
    rules = group["rules"]
    by_slo = {r["labels"]["slo"]: r for r in rules}
    assert len(by_slo) == len(rules)
    known = telemetry.all_series_names()
    for name, r in by_slo.items():
        expr = r["expr"]
        assert balanced(expr), expr
        assert metric_names(expr) and metric_names(expr) <= known, expr
        m = re.fullmatch(r"(.+) ([<>]) ([0-9.e+-]+)", expr)
        assert m, expr
        assert float(m.group(3)) == slo[name]
        assert m.group(2) == ("<" if name.startswith("min_") else ">")
        assert r["for"] == "5m" and r["labels"]["severity"] in ("warning", "critical")
        assert name in r["annotations"]["summary"] and r["alert"].startswith("Servewise")
    assert len({r["alert"] for r in rules}) == len(rules)
    return by_slo


def test_one_alert_per_slo_field(tmp_path):
    dep = dep_of(slo=ALL_CLASSIC_SLO)
    emit(tmp_path / "d", dep, expected=EXPECTED)
    by_slo = check_alerts(tmp_path / "d" / "prometheus-alerts.yaml", ALL_CLASSIC_SLO)
    assert set(by_slo) == set(ALL_CLASSIC_SLO)
    p95 = by_slo["p95_latency_s"]
    assert p95["expr"].startswith(f"histogram_quantile(0.95, sum by (le) (rate({telemetry.REQUEST_DURATION}_bucket")
    assert "servewise predicted 0.11 s" in p95["annotations"]["description"]
    assert 'status="rejected"' in by_slo["max_rejection_ratio"]["expr"]
    assert 'status="failed"' in by_slo["max_failure_ratio"]["expr"]
    assert telemetry.REPLICAS_READY in by_slo["min_availability"]["expr"]
    assert "servewise predicted 0.9995" in by_slo["min_availability"]["annotations"]["description"]


def test_llm_alerts_use_ttft_tpot_and_goodput(tmp_path, llm, decoder_profile):
    emit(tmp_path / "d", llm, profile=decoder_profile, expected=EXPECTED)
    path = tmp_path / "d" / "prometheus-alerts.yaml"
    assert llm.slo is not None
    slo = {k: float(v) for k, v in llm.slo.model_dump(exclude_none=True).items()}
    by_slo = check_alerts(path, slo)
    assert set(by_slo) == {"p99_ttft_s", "p95_tpot_s", "min_goodput_rps"}  # the goodput targets are its parameters
    assert (
        f"{telemetry.TTFT}_bucket" in by_slo["p99_ttft_s"]["expr"]
        and "1.234" in by_slo["p99_ttft_s"]["annotations"]["description"]
    )
    assert f"{telemetry.TPOT}_bucket" in by_slo["p95_tpot_s"]["expr"]
    assert telemetry.GOODPUT in by_slo["min_goodput_rps"]["expr"]
    text = path.read_text()
    assert "# ttft_target_s=1, tpot_target_s=0.05: the per-request targets" in text


def test_slo_fields_without_a_runtime_metric_are_listed_not_alerted(tmp_path):
    class FutureSLO(SLO):
        max_accuracy_drift: float | None = None

    base = dep_of()
    dep = base.model_copy(update={"slo": FutureSLO(p99_latency_s=1.0, max_accuracy_drift=0.01)})
    emit(tmp_path / "d", dep)
    path = tmp_path / "d" / "prometheus-alerts.yaml"
    by_slo = check_alerts(path, {"p99_latency_s": 1.0})
    assert set(by_slo) == {"p99_latency_s"}
    assert "# SLO fields with no runtime metric (not alerted): max_accuracy_drift." in path.read_text()


def test_no_slo_no_alerts(tmp_path):
    emit(tmp_path / "d", dep_of())
    path = tmp_path / "d" / "prometheus-alerts.yaml"
    assert yaml.safe_load(path.read_text())["groups"][0]["rules"] == []
    assert "no SLO" in path.read_text()


# =========================================================================== grafana-dashboard.json


@pytest.mark.parametrize("shape", SHAPES)
def test_dashboard_is_valid_and_queries_telemetry_metrics_only(tmp_path, request, shape):
    dep, profile = every_shape(tmp_path, request)[shape]
    emit(tmp_path / "d", dep, profile=profile)
    doc = json.loads((tmp_path / "d" / "grafana-dashboard.json").read_text())
    assert doc["schemaVersion"] == 39
    assert 0 < len(doc["uid"]) <= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", doc["uid"])
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    assert doc["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    known = telemetry.all_series_names()
    titles = [p["title"] for p in doc["panels"]]
    for p in doc["panels"]:
        assert p["type"] == "timeseries" and p["targets"]
        for target in p["targets"]:
            assert balanced(target["expr"]) and metric_names(target["expr"]) <= known, target["expr"]
            assert metric_names(target["expr"])
    assert any(t.startswith("Latency") for t in titles) and "Replicas" in titles and "Errors by reason" in titles
    assert any(t.startswith("Time to first token") for t in titles) == (dep.engine is not None)
    assert ("Cache hit ratio" in titles) == (dep.cache is not None)


def test_dashboard_draws_the_slo_limits_and_the_prediction(tmp_path):
    dep = dep_of(slo={"p95_latency_s": 0.25, "p99_latency_s": 0.5}, cache={"capacity": 100})
    emit(tmp_path / "d", dep, expected=EXPECTED)
    doc = json.loads((tmp_path / "d" / "grafana-dashboard.json").read_text())
    (lat,) = [p for p in doc["panels"] if p["title"].startswith("Latency")]
    steps = lat["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.25, 0.5]
    assert "p95 0.11" in lat["description"]
    assert doc["uid"] == json.loads((tmp_path / "d" / "grafana-dashboard.json").read_text())["uid"]
    emit(tmp_path / "e", dep_of(name="other"))
    assert json.loads((tmp_path / "e" / "grafana-dashboard.json").read_text())["uid"] != doc["uid"]


# =========================================================================== locustfile.py


def locust_settings(path: Path) -> dict[str, Any]:
    text = path.read_text()
    block = re.search(r"# --- servewise settings: begin ---\n(.*?)# --- servewise settings: end ---", text, re.S)
    assert block
    env: dict[str, Any] = {}
    exec(block.group(1), env)  # the block is plain constant assignments
    return {k: v for k, v in env.items() if k.isupper()}


def test_locustfile_compiles_and_imports_only_locust_gevent_and_stdlib(tmp_path, llm, decoder_profile):
    emit(tmp_path / "d", llm, profile=decoder_profile)
    path = tmp_path / "d" / "locustfile.py"
    py_compile.compile(str(path), doraise=True)
    text = path.read_text()
    imported = set(re.findall(r"^(?:from|import) ([a-z_]+)", text, re.M))
    assert imported - {"__future__", "locust", "gevent"} <= set(sys.stdlib_module_names)
    assert "locust -f locustfile.py --headless -u 1 -r 1 --host http://127.0.0.1:8080" in text
    assert llm.model is not None and llm.model.resolved is not None
    assert locust_settings(path) == {
        "DEPLOYMENT": "chat",
        "ENDPOINT": "/v1/completions",
        "LLM": True,
        "MODEL": llm.model.resolved.model,
    }


def test_locustfile_of_a_classic_model_posts_predict(tmp_path, gpu_autoscale, classic_profile):
    emit(tmp_path / "d", gpu_autoscale, profile=classic_profile)
    settings = locust_settings(tmp_path / "d" / "locustfile.py")
    assert settings["ENDPOINT"] == "/predict" and settings["LLM"] is False


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST after ``delay_s`` with 200 JSON and records when it arrived."""

    delay_s = 0.3
    log: list[dict[str, Any]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        t = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
        with self.lock:
            self.log.append(
                {
                    "t": t,
                    "path": self.path,
                    "index": int(self.headers["X-Servewise-Request"]),
                    "key": self.headers.get("X-Servewise-Key"),
                    "body": body,
                }
            )
        time.sleep(self.delay_s)
        out = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    log: list[dict[str, Any]] = []
    handler = type("Handler", (Recorder,), {"log": log, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classic", "llm"])
def test_locustfile_replays_the_trace_open_loop(tmp_path, request, http_server, kind):
    host, log = http_server
    dep = dep_of(name="replay") if kind == "classic" else request.getfixturevalue("llm")
    trace = small_trace(n=20, rate=10.0, seed=7, keys=kind == "classic")
    assert trace.duration_s < 3.0
    out = tmp_path / "deploy"
    emit(out, dep, trace=trace)
    env = {**os.environ, "SERVEWISE_TIME_SCALE": "1"}
    env.pop("SERVEWISE_TRACE", None)
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "1", "-r", "1",
         "--host", host, "--run-time", "20s", "--csv", str(tmp_path / "res")],
        cwd=out, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    assert took < 15, "the replay did not stop the run when the trace was done"

    # every request of the trace arrived once, with its tokens and key
    assert sorted(e["index"] for e in log) == list(range(len(trace)))
    by_index = {e["index"]: e for e in log}
    for i in range(len(trace)):
        e = by_index[i]
        if kind == "llm":
            assert e["path"] == "/v1/completions"
            assert e["body"]["max_tokens"] == int(trace.output_tokens[i]) and e["body"]["stream"] is False
            assert len(e["body"]["prompt"].split()) == int(trace.input_tokens[i])
        else:
            assert e["path"] == "/predict" and len(e["body"]["inputs"].split()) == int(trace.input_tokens[i])
            assert trace.key is not None and trace.key_labels is not None
            assert e["key"] == e["body"]["key"] == trace.key_labels[int(trace.key[i])]

    # open loop: each request left at its scheduled time although the server takes 0.3 s each
    sent = np.array([by_index[i]["t"] for i in range(len(trace))])
    offsets = sent - trace.arrival_s
    drift = np.abs(offsets - statistics.median(offsets))
    assert drift.max() < 0.2, drift
    serial_finish = len(trace) * Recorder.delay_s
    assert sent[-1] - sent[0] < serial_finish / 2  # a closed loop would have needed >= 20 x 0.3 s

    # locust's statistics: every request, none failed, latency measured from the schedule (>= the 0.3 s)
    with open(tmp_path / "res_stats.csv", newline="") as f:
        agg = next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    assert int(agg["Request Count"]) == len(trace) and int(agg["Failure Count"]) == 0
    assert float(agg["Min Response Time"]) >= Recorder.delay_s * 1000
    assert "servewise: replayed 20 requests" in r.stdout + r.stderr
