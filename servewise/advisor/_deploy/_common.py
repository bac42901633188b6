"""What every emitter shares: names, labels, the replica command, resources and YAML output.

:class:`Target` is computed once from the :class:`~advisor._deploy.DeployInputs`: the
DNS-safe names, each pool's instance type from the catalog, and the request slots of a
replica. The emitters (``_k8s``, ``_kserve``, ``_compose``, ``_nginx``,
``_observability``, ``_locust``) turn it into text and never recompute these.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from servewise.config import Deployment, Pool
from servewise.errors import ConfigError
from servewise.hardware import Catalog, InstanceType

if TYPE_CHECKING:
    from servewise.advisor._deploy import DeployInputs

CONFIG_DIR = "/etc/servewise"
"""Where a replica finds ``deployment.yaml`` (and ``profile.json``) in its container."""
DEPLOYMENT_FILE = "deployment.yaml"
PROFILE_FILE = "profile.json"
HEALTH_PATH = "/healthz"
CONFIGMAP_LIMIT_BYTES = 900_000
"""ConfigMaps hold at most 1 MiB; a bigger profile must be baked into the image."""
CPU_HEADROOM = 0.10
"""Share of an instance's vCPUs left to the kubelet, the OS and daemon sets."""
MEM_HEADROOM = 0.15
"""Share of an instance's memory left to the kubelet, the OS and eviction thresholds."""
LOCAL_CPU_REQUEST = "500m"
LOCAL_MEM_REQUEST = "512Mi"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_POOL = "servewise.dev/pool"

_DNS_BAD = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str, max_len: int = 63) -> str:
    """``text`` as an RFC 1035 label: lowercase ``[a-z0-9-]``, starting with a letter, at most ``max_len``.

    A name that had to be cut keeps a short hash of the original, so two long names that
    share a prefix stay distinct.
    """
    s = re.sub(r"-+", "-", _DNS_BAD.sub("-", text.lower())).strip("-") or "servewise"
    if not s[0].isalpha():
        s = f"sw-{s}"
    if len(s) > max_len:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        s = f"{s[: max_len - 9].rstrip('-')}-{digest}"
    return s


def unique_labels(names: Sequence[str], max_len: int = 63) -> list[str]:
    """:func:`dns_label` of each name, suffixed ``-2``, ``-3``, ... where two collide."""
    out: list[str] = []
    for name in names:
        base = dns_label(name, max_len - 3)
        label, n = base, 1
        while label in out:
            n += 1
            label = f"{base}-{n}"
        out.append(label)
    return out


def fmt(x: float) -> str:
    """A number for comments and annotations: integers without ``.0``, others shortest-exact."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def quantity(x: float) -> str:
    """A Kubernetes quantity string: ``4``, ``2500m``."""
    if float(x).is_integer():
        return str(int(x))
    return f"{round(x * 1000)}m"


def comment(*lines: str) -> str:
    """Comment lines, each starting with ``# ``."""
    return "".join(f"# {line}\n" for text in lines for line in text.splitlines() if line.strip())


class _Dumper(yaml.SafeDumper):
    """A safe dumper that writes a repeated mapping out again rather than as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(doc: Any) -> str:
    """YAML of one document, keys in the order given, no anchors."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def multi_doc(docs: Iterable[tuple[str, Any]]) -> str:
    """A multi-document YAML stream of (comment text, document) pairs."""
    parts = [f"---\n{note}{dump_yaml(doc)}" for note, doc in docs]
    return "".join(parts)


@dataclass(frozen=True)
class PoolTarget:
    """One pool as the emitters need it."""

    pool: Pool
    slug: str
    """DNS label of the pool name."""
    name: str
    """Object name of the pool's Deployment / HPA: ``<app>-<slug>``."""
    instance: InstanceType | None
    """The pool's instance type from the catalog (None for ``local`` or an unknown type)."""
    replicas: int
    """Replicas at start (fixed mode: always)."""
    slots: int
    """Requests one replica holds in service at once (concurrency × batch, or the engine's sequences)."""
    weight: float
    """Balancer weight: ``Pool.weight``, else speed_factor × concurrency."""

    @property
    def is_gpu(self) -> bool:
        return self.instance is not None and self.instance.kind == "gpu"


@dataclass(frozen=True)
class Target:
    """Everything the emitters share, computed once from the inputs."""

    inputs: DeployInputs
    app: str
    """DNS label of the deployment name: the Service, ConfigMap and instance label."""
    pools: tuple[PoolTarget, ...]
    deployment_text: str
    """The content of ``deployment.yaml``."""
    profile_text: str | None
    """The content of ``profile.json`` (None without a profile)."""
    llm: bool
    """An LLM endpoint (engine set, or a decoder model): the load test calls ``/v1/completions``."""
    model_name: str

    @property
    def dep(self) -> Deployment:
        return self.inputs.deployment

    @property
    def port(self) -> int:
        return self.inputs.port

    @property
    def profile_in_configmap(self) -> bool:
        """Whether ``profile.json`` fits in the ConfigMap next to ``deployment.yaml``."""
        if self.profile_text is None:
            return False
        size = len(self.profile_text.encode()) + len(self.deployment_text.encode())
        return size <= CONFIGMAP_LIMIT_BYTES

    @property
    def config_sha256(self) -> str:
        """Hash of the mounted files: a pod-template annotation, so a new plan rolls the pods."""
        h = hashlib.sha256(self.deployment_text.encode())
        if self.profile_text is not None:
            h.update(self.profile_text.encode())
        return h.hexdigest()

    def command(self, pool: PoolTarget) -> list[str]:
        """The container command of one replica of ``pool``."""
        return [
            "servewise",
            "serve",
            f"{CONFIG_DIR}/{DEPLOYMENT_FILE}",
            "--host",
            "0.0.0.0",
            "--port",
            str(self.port),
            "--replicas",
            "1",
            "--pool",
            pool.pool.name,
        ]

    def labels(self, pool: PoolTarget | None = None) -> dict[str, str]:
        """The recommended labels; with ``pool``, the pool label too."""
        out = {LABEL_NAME: "servewise", LABEL_INSTANCE: self.app}
        if pool is not None:
            out[LABEL_POOL] = pool.slug
        return out

    def cold_start_s(self) -> float:
        """The plan's cold start (the profile's load time unless set); 0 when it cannot be known."""
        try:
            return self.dep.cold_start_s()
        except ConfigError:
            return self.dep.scaling.cold_start_s


def slots_per_replica(dep: Deployment, pool: Pool) -> int:
    """Requests one replica of ``pool`` serves at once (not counting its queue)."""
    if dep.engine is not None:
        return dep.engine.max_num_seqs
    conc = pool.concurrency if pool.concurrency is not None else dep.concurrency
    return conc * (dep.batching.max_batch_size if dep.batching is not None else 1)


def pool_weight(dep: Deployment, pool: Pool) -> float:
    """The pool's balancer weight, as the simulator's ``weighted`` policy uses it."""
    if pool.weight is not None:
        return pool.weight
    conc = pool.concurrency if pool.concurrency is not None else dep.concurrency
    return pool.speed_factor * conc


def start_replicas(dep: Deployment, pool: Pool) -> int:
    """Replicas to start with: the pool's count (a serverless pool at 0 starts one, as its first request would)."""
    if dep.scaling.mode == "serverless":
        return max(pool.replicas, 1)
    return pool.replicas


def lookup_instance(catalog: Catalog, name: str) -> InstanceType | None:
    """The catalog's instance type ``name``; None for ``local`` or a name it does not hold."""
    if name == "local":
        return None
    try:
        return catalog.get(name)
    except ConfigError:
        return None


def is_llm(dep: Deployment) -> bool:
    """An LLM endpoint: an engine, or a profiled decoder model."""
    if dep.engine is not None:
        return True
    v = dep.model.resolved if dep.model is not None else None
    return v is not None and v.model_kind == "decoder"


def model_name(dep: Deployment) -> str:
    """The model name clients send (the profiled model's SPEC, else the deployment name)."""
    v = dep.model.resolved if dep.model is not None else None
    return str(v.model) if v is not None else dep.name


def integer_weights(weights: Sequence[float], max_error: float = 0.01) -> list[int]:
    """Positive integer weights in the ratios of ``weights`` (nginx takes integers).

    The smallest scale whose rounding is within ``max_error`` (relative) of every ratio,
    up to 100 × the smallest weight, then divided by the common divisor.
    """
    ratios = [w / min(weights) for w in weights]
    ints: list[int] = []
    for scale in range(1, 101):
        ints = [max(1, round(r * scale)) for r in ratios]
        if all(abs(i / scale - r) <= max_error * r for i, r in zip(ints, ratios, strict=True)):
            break
    g = math.gcd(*ints)
    return [i // g for i in ints]


def resources(pool: PoolTarget) -> dict[str, dict[str, str]]:
    """Container requests and limits: the instance's share per replica, less headroom.

    A replica takes one accelerator of a GPU instance, so a multi-GPU instance's vCPUs
    and memory are split over its accelerators. Requests equal limits (Guaranteed QoS:
    the latency the plan assumed is not shared with a noisy neighbour).
    """
    inst = pool.instance
    if inst is None:
        return {"requests": {"cpu": LOCAL_CPU_REQUEST, "memory": LOCAL_MEM_REQUEST}}
    share = 1 / inst.accelerator.count if inst.accelerator is not None else 1.0
    millicpu = max(100, math.floor(inst.vcpus * share * (1 - CPU_HEADROOM) * 1000))
    mem_mi = max(128, math.floor(inst.mem_bytes * share * (1 - MEM_HEADROOM) / 2**20))
    res = {"cpu": quantity(millicpu / 1000), "memory": f"{mem_mi}Mi"}
    if inst.kind == "gpu":
        res["nvidia.com/gpu"] = "1"
    return {"requests": dict(res), "limits": dict(res)}


def resources_note(pool: PoolTarget) -> str:
    """A comment on where the resources of ``pool`` come from."""
    inst = pool.instance
    name = pool.pool.instance_type
    if inst is None:
        if name == "local":
            return f"pool {pool.pool.name}: instance type local: a small request only, no nodeSelector."
        return (
            f"pool {pool.pool.name}: instance type {name} is not in the hardware catalog: "
            "set its resources and nodeSelector by hand."
        )
    per = f"1 of {inst.accelerator.count} accelerators, " if inst.accelerator is not None else ""
    return (
        f"pool {pool.pool.name}: {inst.name} ({inst.vcpus} vCPUs, {inst.mem_bytes / 2**30:g} GiB"
        f"{', ' + inst.accelerator.name if inst.accelerator is not None else ''}); a replica takes {per}"
        f"{1 - CPU_HEADROOM:.0%} of its vCPUs and {1 - MEM_HEADROOM:.0%} of its memory "
        "(the rest is headroom for the kubelet, the OS and daemon sets)."
    )


def build_target(inputs: DeployInputs, catalog: Catalog, deployment_text: str, profile_text: str | None) -> Target:
    """Compute the names, pools and endpoint kind of the deployment once."""
    dep = inputs.deployment
    app = dns_label(dep.name, 40)
    pools = dep.resolved_pools()
    slugs = unique_labels([p.name for p in pools], 20)
    targets = tuple(
        PoolTarget(
            pool=p,
            slug=slug,
            name=dns_label(f"{app}-{slug}"),
            instance=lookup_instance(catalog, p.instance_type),
            replicas=start_replicas(dep, p),
            slots=slots_per_replica(dep, p),
            weight=pool_weight(dep, p),
        )
        for p, slug in zip(pools, slugs, strict=True)
    )
    return Target(
        inputs=inputs,
        app=app,
        pools=targets,
        deployment_text=deployment_text,
        profile_text=profile_text,
        llm=is_llm(dep),
        model_name=model_name(dep),
    )


def replica_services(t: Target) -> list[tuple[PoolTarget, str]]:
    """The compose service (and host name) of every replica at start: ``replica-<pool>-<i>``."""
    return [(p, f"replica-{p.slug}-{i}") for p in t.pools for i in range(p.replicas)]
