"""``kserve.yaml``: the plan as KServe InferenceServices (Knative, serverless deployment mode).

One InferenceService per pool, its predictor the same ``servewise serve`` container as
``k8s.yaml``. Knative's autoscaler scales on concurrency: a serverless plan scales to
zero (``minReplicas: 0``) and keeps an idle instance for ``keep_alive_s``; an autoscale
plan targets ``target_in_flight`` per replica; a fixed plan pins min = max.
It reads the ConfigMap of ``k8s.yaml`` (apply that file's ConfigMap first).
"""

from __future__ import annotations

import math
from typing import Any

from servewise.advisor._deploy._common import PoolTarget, Target, comment, dns_label, fmt, multi_doc
from servewise.advisor._deploy._k8s import CONFIG_VOLUME, config_name, container, pod_placement

KSERVE_NAME_MAX = 45
"""Knative names the revision ``<name>-predictor-00001``, which must fit a 63-character label."""


def kserve_yaml(t: Target) -> str:
    """The multi-document ``kserve.yaml``."""
    fixed = t.dep.scaling.mode == "fixed"
    empty = [p.pool.name for p in t.pools if fixed and p.replicas == 0]
    docs = [(comment(*_notes(t, p)), inference_service(t, p)) for p in t.pools if p.pool.name not in empty]
    if empty:  # maxReplicas 0 would mean "no limit" to KServe
        note = f"Pools with 0 replicas in the plan have no InferenceService: {', '.join(empty)}."
        docs[0] = (docs[0][0] + comment(note), docs[0][1])
    return multi_doc(docs)


def service_name(t: Target, p: PoolTarget) -> str:
    """The InferenceService name: the app name (one pool) or ``<app>-<pool>``."""
    return dns_label(t.app if len(t.pools) == 1 else p.name, KSERVE_NAME_MAX)


def scaling(t: Target, p: PoolTarget) -> tuple[int, int, int]:
    """(minReplicas, maxReplicas, scaleTarget) of the pool's predictor."""
    s = t.dep.scaling
    if s.mode == "serverless":
        assert s.max_replicas is not None
        return 0, s.max_replicas, p.slots
    if s.mode == "autoscale":
        assert s.min_replicas is not None and s.max_replicas is not None and s.target_in_flight is not None
        return s.min_replicas, s.max_replicas, max(1, math.ceil(s.target_in_flight))
    return p.replicas, p.replicas, p.slots


def knative_annotations(t: Target) -> dict[str, str]:
    """Knative autoscaling annotations (KServe copies them onto the revision)."""
    s = t.dep.scaling
    out = {"serving.kserve.io/deploymentMode": "Serverless"}
    if s.mode == "serverless":
        assert s.keep_alive_s is not None
        out["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] = f"{fmt(s.keep_alive_s)}s"
    elif s.mode == "autoscale":
        out["autoscaling.knative.dev/scale-down-delay"] = f"{min(3600, math.ceil(s.scale_down_stabilization_s))}s"
    return out


def inference_service(t: Target, p: PoolTarget) -> dict[str, Any]:
    """The pool's ``serving.kserve.io/v1beta1`` InferenceService."""
    low, high, target = scaling(t, p)
    predictor: dict[str, Any] = {
        "minReplicas": low,
        "maxReplicas": high,
        "scaleMetric": "concurrency",
        "scaleTarget": target,
    }
    if t.dep.scaling.mode == "serverless":
        predictor["containerConcurrency"] = p.slots
    predictor |= {
        "containers": [container(t, p, knative=True)],
        "volumes": [{"name": CONFIG_VOLUME, "configMap": {"name": config_name(t)}}],
        **pod_placement(p),
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service_name(t, p),
            "namespace": t.inputs.namespace,
            "labels": t.labels(p),
            "annotations": knative_annotations(t),
        },
        "spec": {"predictor": predictor},
    }


def _notes(t: Target, p: PoolTarget) -> list[str]:
    s = t.dep.scaling
    notes = [
        f"servewise plan {t.dep.name!r}, pool {p.pool.name}, on KServe: kubectl apply -f kserve.yaml "
        "(after the ConfigMap of k8s.yaml)."
    ]
    if s.mode == "serverless":
        notes.append(
            f"serverless: scales to zero; an instance serves {p.slots} requests at once (concurrency "
            f"{t.dep.concurrency} x batch) and stays {fmt(s.keep_alive_s or 0)} s after its last request; "
            "the first request after zero waits the cold start."
        )
    elif s.mode == "autoscale":
        target = s.target_in_flight or 0
        rounded = (
            "" if float(target).is_integer() else f" (the plan's {fmt(target)}, rounded up: KServe takes integers)"
        )
        notes.append(
            f"autoscale: Knative targets {math.ceil(target)} requests in flight per replica{rounded}, "
            f"within [{s.min_replicas}, {s.max_replicas}]; scale-down is delayed by the plan's stabilization window."
        )
    else:
        notes.append(f"fixed plan: minReplicas = maxReplicas = {p.replicas}.")
    return notes
