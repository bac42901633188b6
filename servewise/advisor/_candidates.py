"""From a search space and profiles to concrete candidate deployments.

Each candidate is a plain deployment document (JSON-able, the model as a profile path)
plus the key of its profiled variant, so it travels cheaply to worker processes and Ray
tasks; :func:`build_deployment` turns it back into a validated ``Deployment``. Facts
known without simulating (the variant does not fit the memory, drifts too far, or the
inventory is too small) mark a candidate infeasible before any simulation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servewise.config import SLO, Deployment, parse_deployment
from servewise.errors import ArtifactError, ConfigError
from servewise.hardware import Catalog
from servewise.profile import Profile, Variant, load_profile
from servewise.space import SearchSpace, axes

__all__ = ["Profiles", "Candidate", "load_profiles", "build_candidates", "build_deployment"]


@dataclass
class Profiles:
    """The profiles given to the advisor, keyed by the hardware they describe ('local' or a catalog name)."""

    paths: dict[str, Path] = field(default_factory=dict)  # hardware -> profile file
    profiles: dict[str, Profile] = field(default_factory=dict)

    def variant(self, hardware: str, name: str, spec: str | None) -> Variant:
        prof = self.profiles[hardware]
        return prof.variant(name, spec)

    def spec(self, wanted: str | None) -> str:
        models = sorted({m for p in self.profiles.values() for m in p.models()})
        if wanted is not None:
            if wanted not in models:
                raise ConfigError(f"spec {wanted!r} is in no profile; the profiles hold: {', '.join(models) or 'none'}")
            return wanted
        if len(models) != 1:
            raise ConfigError(f"the profiles hold several models ({', '.join(models)}); say which with spec:")
        return models[0]


def _hardware_key(prof: Profile) -> str:
    return prof.hardware.catalog_name or "local"


def load_profiles(paths: list[Path], catalog: Catalog) -> Profiles:
    """Read each profile; two profiles of the same hardware are refused (say which one to use)."""
    out = Profiles()
    for p in paths:
        try:
            prof = load_profile(p)
        except ArtifactError as err:
            raise ConfigError(str(err)) from None
        key = _hardware_key(prof)
        if key != "local":
            key = catalog.get(key).name
        if key in out.profiles:
            raise ConfigError(f"{p}: a second profile for hardware {key!r} (the first is {out.paths[key]}); pass one")
        out.paths[key] = p
        out.profiles[key] = prof
    if not out.profiles:
        raise ConfigError("advise needs at least one --profile")
    return out


@dataclass(frozen=True)
class Candidate:
    """One deployment to evaluate: its document, where its variant comes from, and static findings."""

    id: str
    label: str
    doc: dict[str, Any]
    hardware: str
    variant: str
    static: dict[str, Any] | None = None  # {"constraint", "value", "limit", "detail"} when infeasible without simulating
    cloud_hardware: str | None = None  # hybrid: the burst pool's hardware

    @property
    def variant_key(self) -> tuple[str, str]:
        return (self.hardware, self.variant)


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


def _label(doc: dict[str, Any], hardware: str, variant: str) -> str:
    parts = [hardware, variant]
    pools = doc.get("pools")
    if pools:
        parts.append("+".join(f"{p['name']}×{p['replicas']}" for p in pools))
    else:
        parts.append(f"×{doc.get('replicas')}")
    sc = doc.get("scaling") or {}
    if sc.get("mode", "fixed") != "fixed":
        mode = sc["mode"]
        parts.append(f"{mode}[{sc.get('min_replicas', 0)}-{sc.get('max_replicas')}]")
    parts.append((doc.get("balancer") or {}).get("policy", "round_robin"))
    if doc.get("concurrency", 1) != 1:
        parts.append(f"c{doc['concurrency']}")
    b = doc.get("batching")
    if b:
        parts.append(f"batch{b['max_batch_size']}/{b['max_wait_s'] * 1e3:g}ms")
    c = doc.get("cache")
    if c:
        parts.append(f"cache:{c.get('policy', 'lru')}{c['capacity']}")
    e = doc.get("engine")
    if e:
        parts.append(f"cb{e.get('max_num_seqs', 256)}/{e.get('max_batched_tokens', 8192)}")
    q = (doc.get("queue") or {}).get("capacity")
    if q is not None:
        parts.append(f"q{q}")
    return " ".join(str(p) for p in parts)


def _memory_need(v: Variant) -> int | None:
    return v.peak_mem_bytes if v.peak_mem_bytes is not None else v.weights_bytes


def _memory_limit(hardware: str, profiles: Profiles, catalog: Catalog, space: SearchSpace, v: Variant) -> int | None:
    if space.setting == "edge":
        assert space.edge is not None
        return space.edge.mem_bytes
    if hardware == "local":
        prof = profiles.profiles.get("local")
        return prof.hardware.mem_bytes if prof is not None and prof.hardware.mem_bytes > 0 else None
    inst = catalog.get(hardware)
    if inst.kind == "gpu" and v.device == "cuda":
        return inst.device_mem_bytes
    return inst.mem_bytes


def _price(hw_name: str, given: float | None, catalog: Catalog) -> float:
    if given is not None:
        return given
    if hw_name == "local":
        raise ConfigError("hardware 'local' needs a price: {name: local, price_per_hour_usd: ...}")
    return catalog.get(hw_name).price_per_device_hour_usd


@dataclass
class Expansion:
    """The candidates of a space, and the combinations that are not valid deployments (by reason)."""

    candidates: list[Candidate]
    invalid: dict[str, int]
    invalid_examples: dict[str, dict[str, Any]]
    combinations: int
    coords: dict[tuple[int, ...], int] = field(default_factory=dict)  # (hardware, variant, *axes) index -> candidate
    dims: list[int] = field(default_factory=list)


def _fix_replicas(values: dict[str, Any]) -> dict[str, Any]:
    """Autoscale / serverless: ``replicas`` is the starting count (min_replicas / 0) whatever the axis says."""
    sc = values.get("scaling")
    if not isinstance(sc, dict):
        return values
    mode = sc.get("mode", "fixed")
    if mode == "autoscale" and isinstance(sc.get("min_replicas"), int):
        return {**values, "replicas": sc["min_replicas"]}
    if mode == "serverless":
        return {**values, "replicas": 0}
    return values


def build_candidates(space: SearchSpace, profiles: Profiles, catalog: Catalog) -> Expansion:
    """Every distinct valid candidate of ``space``; invalid combinations are counted by reason."""
    spec = profiles.spec(space.spec)
    dims = axes(space)
    names = list(dims)
    hardware = _hardware_options(space, profiles, catalog)
    total = len(hardware) * len(space.variant)
    for k in names:
        total *= len(dims[k])
    if total > space.search.max_candidates:
        raise ConfigError(
            f"the space holds {total} combinations, more than search.max_candidates ({space.search.max_candidates}); "
            "narrow it or raise the limit"
        )
    seen: dict[str, int] = {}
    coords: dict[tuple[int, ...], int] = {}
    out: list[Candidate] = []
    invalid: dict[str, int] = {}
    examples: dict[str, dict[str, Any]] = {}
    for (hi, (hw, price, extra)), (vi, vname) in itertools.product(enumerate(hardware), enumerate(space.variant)):
        try:
            variant = profiles.variant(extra.get("profile_hw", hw), vname, spec)
        except ConfigError as err:
            why = f"no usable variant {vname!r} for hardware {hw!r}: {err}"
            n = 1
            for k in names:
                n *= len(dims[k])
            invalid[why] = invalid.get(why, 0) + n
            continue
        for where in itertools.product(*(range(len(dims[k])) for k in names)):
            combo = [dims[k][j] for k, j in zip(names, where, strict=True)]
            values = _fix_replicas(dict(zip(names, combo, strict=True)))
            doc = _document(space, values, hw, price, extra, vname, spec, profiles, variant, catalog)
            key = _canonical(doc)
            if key in seen:
                coords[(hi, vi, *where)] = seen[key]
                continue
            try:
                build_deployment(doc, variant)
            except ConfigError as err:
                why = str(err).split(": ", 1)[-1]
                invalid[why] = invalid.get(why, 0) + 1
                examples.setdefault(why, doc)
                continue
            seen[key] = len(out)
            coords[(hi, vi, *where)] = len(out)
            cid = hashlib.sha256(key.encode()).hexdigest()[:12]
            static = _static_check(space, doc, hw, variant, profiles, catalog)
            out.append(
                Candidate(
                    id=cid,
                    label=_label(doc, hw if space.setting != "hybrid" else f"{hw}+{extra['cloud']}", vname),
                    doc=doc,
                    hardware=extra.get("profile_hw", hw),
                    variant=vname,
                    static=static,
                    cloud_hardware=extra.get("cloud"),
                )
            )
    return Expansion(out, invalid, examples, total, coords, [len(hardware), len(space.variant), *(len(dims[k]) for k in names)])


def _hardware_options(
    space: SearchSpace, profiles: Profiles, catalog: Catalog
) -> list[tuple[str, float, dict[str, Any]]]:
    """(hardware name, price per replica-hour, extra) per hardware alternative of the setting."""
    s = space.setting
    out: list[tuple[str, float, dict[str, Any]]] = []

    def need_profile(hw: str) -> None:
        if hw not in profiles.profiles:
            have = ", ".join(sorted(profiles.profiles))
            raise ConfigError(
                f"hardware {hw!r} has no profile (the profiles cover: {have}); pass one measured on it or made with "
                f"`servewise profile transfer --to {hw}`"
            )

    if s == "cloud":
        for h in space.hardware:
            name = h.name if h.name == "local" else catalog.get(h.name).name
            need_profile(name)
            out.append((name, _price(name, h.price_per_hour_usd, catalog), {}))
    elif s == "on_prem":
        for inv in space.inventory:
            name = inv.instance_type if inv.instance_type == "local" else catalog.get(inv.instance_type).name
            need_profile(name)
            out.append((name, inv.price_per_hour_usd / inv.replicas_per_machine, {"inventory": inv}))
    elif s == "hybrid":
        inv = space.inventory[0]
        onprem = inv.instance_type if inv.instance_type == "local" else catalog.get(inv.instance_type).name
        need_profile(onprem)
        for h in space.hardware:
            name = h.name if h.name == "local" else catalog.get(h.name).name
            need_profile(name)
            out.append(
                (onprem, inv.price_per_hour_usd / inv.replicas_per_machine,
                 {"inventory": inv, "cloud": name, "cloud_price": _price(name, h.price_per_hour_usd, catalog)})
            )
    else:
        assert space.edge is not None
        need_profile(space.edge.profile_hardware)
        out.append((space.edge.device, space.edge.price_per_hour_usd, {"profile_hw": space.edge.profile_hardware}))
    return out


def _document(
    space: SearchSpace,
    values: dict[str, Any],
    hw: str,
    price: float,
    extra: dict[str, Any],
    vname: str,
    spec: str,
    profiles: Profiles,
    variant: Variant,
    catalog: Catalog,
) -> dict[str, Any]:
    profile_hw = extra.get("profile_hw", hw)
    doc: dict[str, Any] = {
        "name": space.name,
        "model": {"profile": str(profiles.paths[profile_hw]), "variant": vname, "spec": spec},
        **{k: v for k, v in values.items() if v is not None or k in ("batching", "cache", "faults", "engine")},
        "slo": space.slo.model_dump(exclude_none=True),
    }
    for k in ("batching", "cache", "faults", "engine"):
        if k in doc and doc[k] is None:
            del doc[k]
    s = space.setting
    if s in ("cloud", "on_prem"):
        doc["instance_type"] = hw
        doc["price_per_hour_usd"] = price
        doc.setdefault("replicas", 1)
        if hw == "local":
            _local_host(doc, profiles)
    elif s == "edge":
        assert space.edge is not None
        doc["instance_type"] = "local" if space.edge.profile_hardware == "local" else space.edge.profile_hardware
        doc["price_per_hour_usd"] = price
        doc["replicas"] = 1
        if space.edge.speed_factor != 1.0:
            doc.pop("instance_type")
            doc.pop("price_per_hour_usd")
            doc.pop("replicas")
            doc["pools"] = [
                {"name": "edge", "instance_type": "local", "replicas": 1, "speed_factor": space.edge.speed_factor,
                 "price_per_hour_usd": price}
            ]
    else:  # hybrid: the on-prem pool is the inventory; 'replicas' sizes the cloud burst pool
        inv = extra["inventory"]
        cloud = extra["cloud"]
        cloud_replicas = doc.pop("replicas", 1)
        pools = [{"name": "onprem", "instance_type": hw, "replicas": inv.max_replicas, "price_per_hour_usd": price}]
        if cloud_replicas > 0:
            speed = _relative_speed(profiles, hw, cloud, vname, spec)
            pools.append(
                {"name": "cloud", "instance_type": cloud, "replicas": cloud_replicas, "speed_factor": speed,
                 "price_per_hour_usd": extra["cloud_price"]}
            )
        doc["pools"] = pools
        doc["placement"] = {c: ["onprem"] for c in space.sensitive_classes}
        if hw == "local":
            _local_host(doc, profiles)
    return doc


def _local_host(doc: dict[str, Any], profiles: Profiles) -> None:
    """Replicas on 'local' share the profiled machine's cores, on the profile's threads each.

    Served here, they contend with each other, the router and the load generator; the
    simulator models that (``host``) for fixed deployments without faults, the modes it
    covers. The cores check (:func:`_static_check`) applies to every local candidate.
    """
    hw = profiles.profiles["local"].hardware
    fixed = (doc.get("scaling") or {}).get("mode", "fixed") == "fixed"
    if fixed and doc.get("faults") is None and doc.get("engine") is None:
        doc["host"] = {"cores": hw.cpu_count, "threads": hw.threads_used}


def _local_replicas(doc: dict[str, Any]) -> int:
    """The most replicas of a candidate that run at once on 'local'."""
    sc = doc.get("scaling") or {}
    if sc.get("mode", "fixed") != "fixed":
        return int(sc.get("max_replicas") or 1)
    if "pools" in doc:
        return sum(int(p["replicas"]) for p in doc["pools"] if p.get("instance_type", "local") == "local")
    return int(doc.get("replicas", 1))


def _relative_speed(profiles: Profiles, base_hw: str, other_hw: str, vname: str, spec: str) -> float:
    """How much faster ``other_hw`` runs the variant than ``base_hw`` (one pool's model gives the times)."""
    if base_hw == other_hw:
        return 1.0
    a = profiles.variant(base_hw, vname, spec)
    try:
        b = profiles.variant(other_hw, vname, spec)
    except ConfigError:
        return 1.0
    ta = float(a.service_time(1, 128, 16 if a.model_kind == "decoder" else 0))
    tb = float(b.service_time(1, 128, 16 if b.model_kind == "decoder" else 0))
    return round(ta / tb, 6) if tb > 0 else 1.0


def _static_check(
    space: SearchSpace, doc: dict[str, Any], hw: str, v: Variant, profiles: Profiles, catalog: Catalog
) -> dict[str, Any] | None:
    """Infeasibility known without simulating: accuracy drift, memory fit, inventory, edge compute."""
    slo: SLO = space.slo
    if slo.max_accuracy_drift is not None:
        drift = v.accuracy_drift
        if drift is None or drift > slo.max_accuracy_drift:
            return {"constraint": "max_accuracy_drift", "value": drift, "limit": slo.max_accuracy_drift,
                    "detail": "no accuracy measured for the variant" if drift is None else "the variant drifts too far"}
    need = _memory_need(v)
    limit = _memory_limit(hw if space.setting != "edge" else "edge", profiles, catalog, space, v)
    if need is not None and limit is not None and need > limit:
        return {"constraint": "memory", "value": need, "limit": limit,
                "detail": f"the variant needs {need / 2**30:.2f} GiB, the hardware has {limit / 2**30:.2f} GiB"}
    if hw == "local" and space.setting != "edge" and "local" in profiles.profiles:
        host = profiles.profiles["local"].hardware
        n = _local_replicas(doc)
        if n * host.threads_used > host.cpu_count:  # each replica runs on the profile's threads
            return {"constraint": "cores", "value": n * host.threads_used, "limit": host.cpu_count,
                    "detail": f"{n} replicas × {host.threads_used} threads on this host's {host.cpu_count} CPUs"}
        if need is not None and limit is not None and n * need > limit:
            return {"constraint": "memory", "value": n * need, "limit": limit,
                    "detail": f"{n} replicas need {n * need / 2**30:.2f} GiB, this host has {limit / 2**30:.2f} GiB"}
    if space.setting == "hybrid":
        cloud = doc["pools"][-1]["instance_type"] if len(doc["pools"]) > 1 else None
        if cloud is not None and cloud != "local":
            climit = _memory_limit(cloud, profiles, catalog, space, v)
            if need is not None and climit is not None and need > climit:
                return {"constraint": "memory", "value": need, "limit": climit,
                        "detail": f"the variant does not fit the cloud pool's {cloud}"}
    if space.setting == "on_prem":
        inv = next(i for i in space.inventory if (i.instance_type == hw or catalog_name(i.instance_type, catalog) == hw))
        sc = doc.get("scaling") or {}
        want = sc.get("max_replicas") if sc.get("mode", "fixed") != "fixed" else doc.get("replicas", 1)
        if want is not None and want > inv.max_replicas:
            return {"constraint": "inventory", "value": want, "limit": inv.max_replicas,
                    "detail": f"{want} replicas, the inventory holds {inv.max_replicas} on {hw}"}
    if space.setting == "edge":
        assert space.edge is not None
        conc = doc.get("concurrency", 1)
        if conc > space.edge.max_concurrency:
            return {"constraint": "compute", "value": conc, "limit": space.edge.max_concurrency,
                    "detail": f"concurrency {conc} exceeds what the device serves at once"}
    return None


def catalog_name(name: str, catalog: Catalog) -> str:
    return name if name == "local" else catalog.get(name).name


def build_deployment(doc: dict[str, Any], variant: Variant) -> Deployment:
    """The validated deployment of a candidate document with its variant in place."""
    data = {**doc, "model": {**doc["model"], "resolved": variant}}
    return parse_deployment(data, f"candidate {doc.get('name', '')}")
