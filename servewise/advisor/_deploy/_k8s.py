"""``k8s.yaml``: the plan on plain Kubernetes.

A ConfigMap with ``deployment.yaml`` (and ``profile.json`` when it fits), a ClusterIP
Service over every pool, and per pool an ``apps/v1`` Deployment of single-replica
``servewise serve`` pods plus an ``autoscaling/v2`` HorizontalPodAutoscaler that
carries the plan's scaling: the autoscale rule on ``servewise_in_flight``, or
min = max for a fixed plan.
"""

from __future__ import annotations

import math
from typing import Any

from servewise import telemetry
from servewise.advisor._deploy._common import (
    CONFIG_DIR,
    DEPLOYMENT_FILE,
    HEALTH_PATH,
    PROFILE_FILE,
    PoolTarget,
    Target,
    comment,
    fmt,
    multi_doc,
    quantity,
    resources,
    resources_note,
)

HPA_MAX_WINDOW_S = 3600
"""The longest stabilization window the HPA API accepts."""
HPA_DEFAULT_TOLERANCE = 0.1
CONFIG_VOLUME = "servewise-config"
_AFFINITY_BALANCERS = ("consistent_hash", "prefix_affinity")


def k8s_yaml(t: Target) -> str:
    """The multi-document ``k8s.yaml``."""
    docs: list[tuple[str, Any]] = [
        (comment(_header(t), _configmap_note(t)), configmap(t)),
        (comment(*_service_notes(t)), service(t)),
    ]
    for p in t.pools:
        docs.append((comment(resources_note(p)), deployment(t, p)))
        hpa = hpa_doc(t, p)
        if hpa is not None:
            docs.append((comment(*_hpa_notes(t)), hpa))
    return multi_doc(docs)


def _header(t: Target) -> str:
    return (
        f"servewise plan {t.dep.name!r} on Kubernetes (namespace {t.inputs.namespace}): "
        f"kubectl apply -f k8s.yaml. Pods run image {t.inputs.image}."
    )


# --------------------------------------------------------------------------- ConfigMap and Service


def config_name(t: Target) -> str:
    return f"{t.app}-config"


def configmap(t: Target) -> dict[str, Any]:
    """The ConfigMap mounted at /etc/servewise: the plan (and its profile when it fits)."""
    data = {DEPLOYMENT_FILE: t.deployment_text}
    if t.profile_in_configmap and t.profile_text is not None:
        data[PROFILE_FILE] = t.profile_text
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_name(t), "namespace": t.inputs.namespace, "labels": t.labels()},
        "data": data,
    }


def _configmap_note(t: Target) -> str:
    if t.profile_text is None or t.profile_in_configmap:
        return f"The ConfigMap is mounted at {CONFIG_DIR} in every replica."
    return (
        f"profile.json ({len(t.profile_text.encode()) / 1e6:.1f} MB) is too large for a ConfigMap (1 MiB): it must be "
        f"baked into the image at {CONFIG_DIR}/{PROFILE_FILE}; only {DEPLOYMENT_FILE} is mounted (subPath)."
    )


def service(t: Target) -> dict[str, Any]:
    """A ClusterIP Service on port 80 over every pool's pods."""
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": t.labels(),
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    if t.dep.balancer.policy in _AFFINITY_BALANCERS:
        spec["sessionAffinity"] = "ClientIP"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": t.app, "namespace": t.inputs.namespace, "labels": t.labels()},
        "spec": spec,
    }


def _service_notes(t: Target) -> list[str]:
    policy = t.dep.balancer.policy
    notes = [
        f"The Service spreads connections over the pods (kube-proxy: random or round-robin), not by the plan's "
        f"balancer {policy!r}: for that, put nginx.conf's upstream (or the servewise router) in front."
    ]
    if policy in _AFFINITY_BALANCERS:
        notes.append(
            f"sessionAffinity: ClientIP approximates {policy}: it keeps a client on one pod, "
            "but keys on the client address, not the request key or prompt prefix."
        )
    return notes


# --------------------------------------------------------------------------- Deployment


def container(t: Target, p: PoolTarget, *, knative: bool = False) -> dict[str, Any]:
    """The ``servewise serve`` container of one replica of pool ``p``.

    With ``knative`` (KServe), the port is unnamed and there is no startup probe
    (Knative holds requests until the readiness probe passes).
    """
    port_ref: int | str = t.port if knative else "http"
    c: dict[str, Any] = {
        "name": "kserve-container" if knative else "servewise",
        "image": t.inputs.image,
        "command": t.command(p),
        "ports": [
            {"containerPort": t.port, "protocol": "TCP"} if knative else {"name": "http", "containerPort": t.port}
        ],
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": port_ref},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": port_ref},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": resources(p),
        "volumeMounts": volume_mounts(t),
    }
    if not knative:
        # the model loads for the cold start: liveness waits until the startup probe passed
        c["startupProbe"] = {
            "httpGet": {"path": HEALTH_PATH, "port": port_ref},
            "periodSeconds": 5,
            "failureThreshold": math.ceil(t.cold_start_s() / 5) + 12,
        }
    return c


def volume_mounts(t: Target) -> list[dict[str, Any]]:
    """The config folder; only ``deployment.yaml`` (subPath) when the profile is baked into the image."""
    if t.profile_text is not None and not t.profile_in_configmap:
        path = f"{CONFIG_DIR}/{DEPLOYMENT_FILE}"
        return [{"name": CONFIG_VOLUME, "mountPath": path, "subPath": DEPLOYMENT_FILE, "readOnly": True}]
    return [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}]


def pod_placement(p: PoolTarget) -> dict[str, Any]:
    """nodeSelector on the catalog instance type, and the GPU taint toleration."""
    out: dict[str, Any] = {}
    if p.instance is not None:
        out["nodeSelector"] = {"node.kubernetes.io/instance-type": p.instance.name}
    if p.is_gpu:
        out["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return out


def deployment(t: Target, p: PoolTarget) -> dict[str, Any]:
    """The pool's Deployment: ``replicas`` single-replica pods of ``servewise serve --pool``."""
    labels = t.labels(p)
    pod_spec: dict[str, Any] = {
        "containers": [container(t, p)],
        "volumes": [{"name": CONFIG_VOLUME, "configMap": {"name": config_name(t)}}],
        **pod_placement(p),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": p.name, "namespace": t.inputs.namespace, "labels": labels},
        "spec": {
            "replicas": p.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"servewise.dev/config-sha256": t.config_sha256}},
                "spec": pod_spec,
            },
        },
    }


# --------------------------------------------------------------------------- HorizontalPodAutoscaler


def in_flight_metric(target: float) -> dict[str, Any]:
    """A Pods metric: the average ``servewise_in_flight`` per pod."""
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": telemetry.IN_FLIGHT},
            "target": {"type": "AverageValue", "averageValue": quantity(target)},
        },
    }


def _window(seconds: float) -> int:
    return min(HPA_MAX_WINDOW_S, math.ceil(seconds))


def hpa_doc(t: Target, p: PoolTarget) -> dict[str, Any] | None:
    """The pool's HPA; None for a fixed pool of 0 replicas (an HPA needs at least 1)."""
    s = t.dep.scaling
    spec: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": p.name}}
    if s.mode == "autoscale":
        assert s.min_replicas is not None and s.max_replicas is not None and s.target_in_flight is not None
        up: dict[str, Any] = {"stabilizationWindowSeconds": _window(s.scale_up_stabilization_s)}
        down: dict[str, Any] = {"stabilizationWindowSeconds": _window(s.scale_down_stabilization_s)}
        if s.tolerance != HPA_DEFAULT_TOLERANCE:
            up["tolerance"] = down["tolerance"] = quantity(s.tolerance)
        spec |= {
            "minReplicas": s.min_replicas,
            "maxReplicas": s.max_replicas,
            "metrics": [in_flight_metric(s.target_in_flight)],
            "behavior": {"scaleUp": up, "scaleDown": down},
        }
    elif s.mode == "serverless":
        assert s.max_replicas is not None
        spec |= {"minReplicas": 1, "maxReplicas": s.max_replicas, "metrics": [in_flight_metric(p.slots)]}
    else:
        if p.replicas < 1:
            return None
        spec |= {"minReplicas": p.replicas, "maxReplicas": p.replicas}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": p.name, "namespace": t.inputs.namespace, "labels": t.labels(p)},
        "spec": spec,
    }


def _hpa_notes(t: Target) -> list[str]:
    s = t.dep.scaling
    adapter = (
        f"The {telemetry.IN_FLIGHT} Pods metric needs a Prometheus adapter (prometheus-adapter or KEDA) "
        "exposing it through the custom metrics API."
    )
    if s.mode == "autoscale":
        notes = [
            f"autoscale: ceil(in_flight / {fmt(s.target_in_flight or 0)}) replicas within "
            f"[{s.min_replicas}, {s.max_replicas}]; scale-down waits {fmt(s.scale_down_stabilization_s)} s, "
            f"scale-up {fmt(s.scale_up_stabilization_s)} s.",
            adapter,
            f"The HPA evaluates every --horizontal-pod-autoscaler-sync-period (15 s by default); the plan assumed "
            f"{fmt(s.interval_s)} s.",
        ]
        if max(s.scale_up_stabilization_s, s.scale_down_stabilization_s) > HPA_MAX_WINDOW_S:
            notes.append(f"Stabilization windows are capped at the API's {HPA_MAX_WINDOW_S} s.")
        if s.tolerance != HPA_DEFAULT_TOLERANCE:
            notes.append("A per-HPA tolerance needs the HPAConfigurableTolerance feature gate (Kubernetes 1.33+).")
        return notes
    if s.mode == "serverless":
        return [
            "serverless: a Kubernetes HPA cannot scale to zero, so this one keeps at least 1 replica; "
            "kserve.yaml scales to zero (Knative).",
            adapter,
        ]
    return ["fixed plan: minReplicas = maxReplicas = the plan's replicas; the HPA only pins the count."]
