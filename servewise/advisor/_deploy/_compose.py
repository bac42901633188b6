"""``docker-compose.yaml``: the plan on one machine, one container per replica behind nginx.

Each replica runs ``servewise serve --replicas 1 --pool <pool>`` with this folder mounted
read-only at /etc/servewise; the ``nginx`` service publishes port 8080 and balances over
them with ``nginx.conf``. ``docker compose up``, then run the load test against
http://127.0.0.1:8080.
"""

from __future__ import annotations

import math
from typing import Any

from servewise.advisor._deploy._common import (
    CONFIG_DIR,
    HEALTH_PATH,
    PoolTarget,
    Target,
    comment,
    dump_yaml,
    replica_services,
)
from servewise.advisor._deploy._nginx import LISTEN_PORT

NGINX_IMAGE = "nginx:1.27"


def compose_yaml(t: Target) -> str:
    """The ``docker-compose.yaml`` text."""
    return comment(*_notes(t)) + dump_yaml(compose(t))


def compose(t: Target) -> dict[str, Any]:
    """The compose document: the replicas and nginx."""
    replicas = replica_services(t)
    services: dict[str, Any] = {name: replica(t, p) for p, name in replicas}
    services["nginx"] = {
        "image": NGINX_IMAGE,
        "ports": [f"{LISTEN_PORT}:{LISTEN_PORT}"],
        "volumes": ["./nginx.conf:/etc/nginx/nginx.conf:ro"],
        "depends_on": {name: {"condition": "service_healthy"} for _, name in replicas},
        "restart": "unless-stopped",
    }
    return {"name": t.app, "services": services}


def replica(t: Target, p: PoolTarget) -> dict[str, Any]:
    """One replica container of pool ``p``."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{t.port}{HEALTH_PATH}', timeout=2)"
    svc: dict[str, Any] = {
        "image": t.inputs.image,
        "command": t.command(p),
        "volumes": [f".:{CONFIG_DIR}:ro"],
        "expose": [str(t.port)],
        "healthcheck": {
            "test": ["CMD", "python", "-c", probe],
            "interval": "5s",
            "timeout": "3s",
            "retries": 3,
            "start_period": f"{math.ceil(t.cold_start_s()) + 30}s",
        },
        "restart": "unless-stopped",
    }
    if p.is_gpu:
        svc["deploy"] = {
            "resources": {"reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}
        }
    return svc


def _notes(t: Target) -> list[str]:
    s = t.dep.scaling
    total = sum(p.replicas for p in t.pools)
    notes = [
        f"servewise plan {t.dep.name!r} on one machine: docker compose up, then "
        f"locust -f locustfile.py --headless -u 1 -r 1 --host http://127.0.0.1:{LISTEN_PORT}",
        f"{total} replica container(s) ({', '.join(f'{p.pool.name}: {p.replicas}' for p in t.pools)}) "
        f"behind nginx on port {LISTEN_PORT} (nginx.conf).",
    ]
    if s.mode == "autoscale":
        notes.append(
            f"autoscale plan: compose runs the {total} replicas the plan starts with and does not scale "
            f"(the plan scales within [{s.min_replicas}, {s.max_replicas}]: see k8s.yaml)."
        )
    elif s.mode == "serverless":
        notes.append(
            f"serverless plan: compose keeps {total} replica(s) running; scale to zero needs kserve.yaml "
            f"(up to {s.max_replicas} instances)."
        )
    if any(p.is_gpu for p in t.pools):
        notes.append(
            "GPU replicas reserve one GPU each (count: 1); on a host with several GPUs set device_ids per replica."
        )
    if len(t.pools) > 1:
        notes.append("The pools' instance types are not emulated: every container runs on this host.")
    return notes
