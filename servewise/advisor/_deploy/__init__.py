"""The advisor's ``deploy/`` folder: the winning deployment, ready to run and to watch.

:func:`write_deploy` writes, into one folder:

- ``deployment.yaml`` (+ ``profile.json``): the plan, for ``servewise serve``;
- ``k8s.yaml``: a ConfigMap, a Service, and per pool a Deployment and an HPA;
- ``kserve.yaml``: the same as KServe InferenceServices (scale to zero for serverless);
- ``docker-compose.yaml`` + ``nginx.conf``: one container per replica behind nginx,
  with the plan's balancer mapped to nginx directives;
- ``prometheus-alerts.yaml`` and ``grafana-dashboard.json``: one alert per SLO and a
  dashboard, on the metric names of :mod:`servewise.telemetry`;
- ``locustfile.py`` + ``trace.csv``: an open-loop replay of the trace the plan was judged on;
- ``expected.json``: what the simulator predicted, to compare the load test with.

Every file is written atomically; the contents are all built before the first write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servewise import __version__
from servewise.advisor._deploy._common import DEPLOYMENT_FILE, PROFILE_FILE, Target, build_target, comment
from servewise.advisor._deploy._compose import compose_yaml
from servewise.advisor._deploy._k8s import k8s_yaml
from servewise.advisor._deploy._kserve import kserve_yaml
from servewise.advisor._deploy._locust import locustfile
from servewise.advisor._deploy._nginx import nginx_conf
from servewise.advisor._deploy._observability import grafana_dashboard, prometheus_alerts
from servewise.config import Deployment, dump_deployment
from servewise.errors import ConfigError
from servewise.hardware import Catalog, load_catalog
from servewise.io import atomic_write_bytes, atomic_write_text
from servewise.trace import Trace, save_trace

__all__ = ["DeployInputs", "write_deploy", "DEPLOY_FILES"]

DEPLOY_FILES = (
    DEPLOYMENT_FILE,
    PROFILE_FILE,
    "k8s.yaml",
    "kserve.yaml",
    "docker-compose.yaml",
    "nginx.conf",
    "prometheus-alerts.yaml",
    "grafana-dashboard.json",
    "locustfile.py",
    "trace.csv",
    "expected.json",
)
"""Every file :func:`write_deploy` may write (``profile.json`` only with a profile)."""


@dataclass(frozen=True)
class DeployInputs:
    """What the deploy files are made of."""

    deployment: Deployment
    """The winning deployment; ``model.resolved`` may be set (a profiled variant)."""
    expected: dict[str, Any]
    """The content of ``expected.json``, written as given."""
    trace: Trace
    """The trace the plan was judged on (``trace.csv``; the load test replays it)."""
    profile_path: Path | None = None
    """The profile JSON the winner's model comes from: copied to ``profile.json``."""
    catalog: Catalog | None = None
    """Instance details (vCPUs, memory, accelerator); None: the packaged catalog."""
    image: str = f"ghcr.io/servewise/servewise:{__version__}"
    port: int = 8000
    namespace: str = "default"


def write_deploy(inputs: DeployInputs, out_dir: Path) -> list[Path]:
    """Write every deploy file into ``out_dir`` (created), atomically each; return the paths written."""
    out = Path(out_dir)
    deployment = _folder_deployment(inputs)
    profile = inputs.profile_path.read_bytes() if inputs.profile_path is not None else None
    target = build_target(
        inputs,
        inputs.catalog if inputs.catalog is not None else load_catalog(),
        _deployment_yaml(deployment, inputs),
        profile.decode("utf-8") if profile is not None else None,
    )
    texts = {name: emit(target) for name, emit in _TEXT_FILES}
    texts["expected.json"] = json.dumps(inputs.expected, indent=2, allow_nan=False) + "\n"  # as write_json writes it
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def path(name: str) -> Path:
        written.append(out / name)
        return out / name

    atomic_write_text(path(DEPLOYMENT_FILE), target.deployment_text)
    if profile is not None:
        atomic_write_bytes(path(PROFILE_FILE), profile)
    for name, text in texts.items():
        atomic_write_text(path(name), text)
    save_trace(inputs.trace, path("trace.csv"))
    return written


_TEXT_FILES: tuple[tuple[str, Callable[[Target], str]], ...] = (
    ("k8s.yaml", k8s_yaml),
    ("kserve.yaml", kserve_yaml),
    ("docker-compose.yaml", compose_yaml),
    ("nginx.conf", nginx_conf),
    ("prometheus-alerts.yaml", prometheus_alerts),
    ("grafana-dashboard.json", grafana_dashboard),
    ("locustfile.py", locustfile),
)


def _folder_deployment(inputs: DeployInputs) -> Deployment:
    """The deployment as written in the folder: its model's profile is the copied ``profile.json``."""
    dep = inputs.deployment
    if inputs.profile_path is None:
        return dep
    if dep.model is None:
        raise ConfigError(f"profile_path {inputs.profile_path} was given, but deployment {dep.name!r} has no model")
    return dep.model_copy(update={"model": dep.model.model_copy(update={"profile": PROFILE_FILE})})


def _deployment_yaml(dep: Deployment, inputs: DeployInputs) -> str:
    """``deployment.yaml``: the plan, with a header saying how to run it."""
    notes = [
        "servewise deployment: run with servewise serve deployment.yaml",
        f"plan {dep.name!r} written by servewise {__version__} (advise); expected.json holds its predicted results.",
    ]
    if dep.model is not None and inputs.profile_path is None:
        notes.append(f"model.profile {dep.model.profile} is not copied here: put it next to this file.")
    return comment(*notes) + dump_deployment(dep)
