"""The advisor's input contract: a :class:`SearchSpace` of deployments and its expansion.

A search space is a YAML file whose deployment fields may hold alternatives::

    name: minilm-api
    setting: cloud                    # cloud | on_prem | hybrid | edge
    hardware: [c7i.xlarge, c7i.2xlarge, {name: local, price_per_hour_usd: 0.12}]
    variant: [fp32, int8]
    replicas: {range: [1, 8]}         # 1, 2, ..., 8 ({range: [1, 16], factor: 2}: 1, 2, 4, 8, 16)
    balancer: [round_robin, p2c]
    batching: [null, {max_batch_size: [4, 8], max_wait_s: 0.01}]
    slo: {p95_latency_s: 0.5, max_rejection_ratio: 0.01}

Every list is a set of alternatives (a field whose value is itself a list is written as a
list of lists); a mapping's alternatives are the product of its fields' alternatives;
``{range: [lo, hi], step: s}`` or ``{range: [lo, hi], factor: f}`` spans numbers. A
``balancer`` may be a policy name and a ``scaling`` a mode name. Reserved keys
(``name``, ``setting``, ``hardware``, ``variant``, ``spec``, ``inventory``, ``edge``,
``sensitive_classes``, ``slo``, ``search``) are not deployment fields; every other key is
one and is checked against :class:`~servewise.config.Deployment` when candidates are built.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from servewise.config import SLO, Deployment, Frozen, format_validation_error, read_yaml
from servewise.errors import ConfigError

__all__ = [
    "SPACE_SCHEMA_VERSION",
    "HardwareChoice",
    "Inventory",
    "Edge",
    "SearchSettings",
    "SearchSpace",
    "parse_space",
    "load_space",
    "expand",
]

SPACE_SCHEMA_VERSION = 1

#: Deployment fields a space may vary (the others are fixed by the setting or the advisor).
AXES = (
    "concurrency",
    "balancer",
    "batching",
    "cache",
    "queue",
    "scaling",
    "faults",
    "engine",
    "replicas",
)
_FIXED_BY_ADVISOR = ("kind", "schema_version", "name", "model", "service_time", "pools", "instance_type",
                     "price_per_hour_usd", "placement", "slo")


class HardwareChoice(Frozen):
    """A hardware alternative: a catalog instance type, or your own machine with a price."""

    name: str = Field(min_length=1, description="Catalog instance type (e.g. c7i.2xlarge, g5.xlarge) or 'local'.")
    price_per_hour_usd: float | None = Field(
        default=None, ge=0, description="Price of one replica per hour; default: the catalog's (per accelerator on GPU)."
    )


class Inventory(Frozen):
    """Machines you own (``on_prem``, ``hybrid``): a capacity limit and an optional amortised cost."""

    instance_type: str = Field(min_length=1, description="Catalog instance type or 'local'.")
    count: int = Field(ge=1, description="Machines of this type available.")
    replicas_per_machine: int = Field(
        default=1, ge=1, description="Replicas one machine holds (e.g. its GPU count)."
    )
    price_per_hour_usd: float = Field(default=0.0, ge=0, description="Amortised cost of one machine per hour.")

    @property
    def max_replicas(self) -> int:
        return self.count * self.replicas_per_machine


class Edge(Frozen):
    """One edge device: a single replica, the variant must fit its memory, latency from its profile."""

    device: str = Field(min_length=1, description="Device name (a label, or a catalog entry).")
    mem_bytes: int = Field(gt=0, description="Memory the model may use on the device, bytes.")
    max_concurrency: int = Field(default=1, ge=1, description="Requests the device serves at once (compute limit).")
    speed_factor: float = Field(
        default=1.0, gt=0, description="Device speed relative to the profile's hardware (1: profiled on the device)."
    )
    profile_hardware: str = Field(
        default="local",
        description="Which profiles give the device's latency: 'local' (measured on the device) or a catalog name.",
    )
    price_per_hour_usd: float = Field(default=0.0, ge=0, description="Amortised cost of the device per hour.")


class SearchSettings(Frozen):
    """How the advisor searches (``search:`` in the space file)."""

    strategy: Literal["halving", "exhaustive", "tpe"] = Field(
        default="halving",
        description="halving: analytic pruning + successive halving over trace prefixes (default); exhaustive: "
        "every candidate on the full trace; tpe: Optuna's TPE sampler on the full trace.",
    )
    eta: int = Field(default=3, ge=2, description="halving: keep 1/eta of the candidates at each rung.")
    rungs: int = Field(default=4, ge=1, description="halving: fidelity levels (trace prefixes eta^-k of the trace).")
    min_prefix_s: float = Field(default=60.0, gt=0, description="halving: shortest trace prefix, seconds.")
    min_keep: int = Field(default=4, ge=1, description="halving: fewest candidates promoted from a rung.")
    tolerance: float = Field(
        default=0.1, ge=0, description="halving: below full fidelity, an SLO miss up to this relative excess still ranks as feasible."
    )
    prune: bool = Field(default=True, description="halving, tpe: drop candidates the analytic bounds show infeasible.")
    trials: int | None = Field(default=None, ge=1, description="tpe: trials (default: a quarter of the candidates, >= 20).")
    seed: int = Field(default=0, ge=0, description="Simulation seed of the search (and of TPE).")
    finalists: int = Field(default=3, ge=1, description="Feasible candidates that get the robustness checks.")
    replications: int = Field(default=5, ge=0, description="Extra seeds per finalist for confidence intervals.")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    headroom: bool = Field(default=True, description="Find each finalist's load headroom (rate multiplier).")
    headroom_max: float = Field(default=4.0, gt=1, description="Largest rate multiplier tried.")
    headroom_steps: int = Field(default=6, ge=1, description="Bisection steps of the headroom search.")
    warmup_s: float = Field(default=0.0, ge=0, description="Requests before this time are left out of the metrics.")
    max_candidates: int = Field(default=100_000, ge=1, description="Refuse larger spaces (a typo guard).")


class SearchSpace(Frozen):
    """Deployments to search, the SLOs they must meet, and where they may run."""

    kind: Literal["search_space"] = "search_space"
    schema_version: Literal[1] = 1
    name: str = Field(default="plan", min_length=1, description="A label for the plan and the emitted files.")
    setting: Literal["cloud", "on_prem", "hybrid", "edge"] = Field(
        default="cloud",
        description="cloud: catalog prices; on_prem: the inventory's machines only; hybrid: sensitive traffic on the "
        "inventory, the rest may burst to cloud hardware; edge: one device.",
    )
    hardware: tuple[HardwareChoice, ...] = Field(
        default=(), description="Hardware alternatives (cloud, and the burst pool of hybrid)."
    )
    variant: tuple[str, ...] = Field(default=(), description="Profile variant alternatives, e.g. [fp32, int8].")
    spec: str | None = Field(default=None, description="Which model of the profiles (its SPEC), when they hold several.")
    inventory: tuple[Inventory, ...] = Field(default=(), description="on_prem: the machines; hybrid: one entry.")
    sensitive_classes: tuple[str, ...] = Field(
        default=("sensitive",), description="hybrid: traffic classes that must stay on the on-prem pool."
    )
    edge: Edge | None = Field(default=None, description="edge: the device.")
    slo: SLO = Field(description="The limits every candidate must meet.")
    search: SearchSettings = Field(default_factory=SearchSettings)
    deployment: dict[str, Any] = Field(
        default_factory=dict, description="The deployment fields with their alternatives (the file's other keys)."
    )

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware(cls, v: Any) -> Any:
        items = v if isinstance(v, list | tuple) else [v]
        return [{"name": h} if isinstance(h, str) else h for h in items]

    @field_validator("variant", "sensitive_classes", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _setting(self) -> SearchSpace:
        s = self.setting
        if s == "cloud" and not self.hardware:
            raise ValueError("setting 'cloud' needs hardware: a list of catalog instance types (or 'local' with a price)")
        if s == "on_prem":
            if not self.inventory:
                raise ValueError("setting 'on_prem' needs inventory: the machines you own")
            if self.hardware:
                raise ValueError("setting 'on_prem' takes its hardware from inventory; remove 'hardware'")
        if s == "hybrid":
            if len(self.inventory) != 1:
                raise ValueError(f"setting 'hybrid' needs inventory with exactly one entry (the on-prem pool), got {len(self.inventory)}")
            if not self.hardware:
                raise ValueError("setting 'hybrid' needs hardware: the cloud instance types traffic may burst to")
        if s == "edge":
            if self.edge is None:
                raise ValueError("setting 'edge' needs edge: {device, mem_bytes, ...}")
            if self.hardware or self.inventory:
                raise ValueError("setting 'edge' runs on the edge device only; remove 'hardware' and 'inventory'")
        elif self.edge is not None:
            raise ValueError(f"'edge' applies to setting 'edge', not {s!r}")
        if s not in ("on_prem", "hybrid") and self.inventory:
            raise ValueError(f"'inventory' applies to settings on_prem and hybrid, not {s!r}")
        if not self.variant:
            raise ValueError("variant: give the profile variants to try, e.g. [fp32, int8]")
        names = [h.name for h in self.hardware]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"hardware {sorted(dup)[0]!r} is listed twice")
        for key in self.deployment:
            if key in _FIXED_BY_ADVISOR:
                raise ValueError(f"{key!r} is set by the advisor from the space (hardware, variant, setting); remove it")
            if key not in Deployment.model_fields:
                raise ValueError(
                    f"{key!r} is not a search-space key or deployment field (deployment fields: {', '.join(AXES)})"
                )
        return self


_RESERVED = {f for f in SearchSpace.model_fields if f != "deployment"}


def parse_space(data: Any, source: str = "search space") -> SearchSpace:
    """Validate a mapping (parsed YAML) into a :class:`SearchSpace`; errors name the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of search-space fields, got {type(data).__name__}")
    fields = {k: v for k, v in data.items() if k in _RESERVED}
    dep = {k: v for k, v in data.items() if k not in _RESERVED}
    try:
        space = SearchSpace.model_validate({**fields, "deployment": dep})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source).replace("field 'deployment.", "field '")) from None
    for key, value in space.deployment.items():
        try:
            expand(_shorthand(key, value))
        except ConfigError as err:
            raise ConfigError(f"{source}: field {key!r}: {err}") from None
    return space


def load_space(path: str | Path) -> SearchSpace:
    """Read a search-space YAML file; errors name the file and the field."""
    p = Path(path)
    return parse_space(read_yaml(p, "search space"), str(p))


# --------------------------------------------------------------------------- expansion


def _is_range(v: Any) -> bool:
    return isinstance(v, dict) and "range" in v and set(v) <= {"range", "step", "factor"}


def _range(v: dict[str, Any]) -> list[Any]:
    r = v["range"]
    if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in r)):
        raise ConfigError(f"range must be [low, high] numbers, got {r!r}")
    lo, hi = r
    if hi < lo:
        raise ConfigError(f"range [{lo}, {hi}]: high must be >= low")
    if "step" in v and "factor" in v:
        raise ConfigError("a range takes step or factor, not both")
    ints = all(isinstance(x, int) for x in r)
    out: list[Any] = []
    if "factor" in v:
        f = v["factor"]
        if not (isinstance(f, int | float) and f > 1):
            raise ConfigError(f"range factor must be a number > 1, got {f!r}")
        if lo <= 0:
            raise ConfigError(f"a range with a factor needs low > 0, got {lo}")
        x = lo
        while x <= hi * (1 + 1e-12):
            out.append(round(x) if ints and float(f).is_integer() else x)
            x *= f
    else:
        step = v.get("step", 1)
        if not (isinstance(step, int | float) and step > 0):
            raise ConfigError(f"range step must be a number > 0, got {step!r}")
        n = int(math.floor((hi - lo) / step + 1e-9))
        out = [lo + k * step for k in range(n + 1)]
        if ints and isinstance(step, int):
            out = [int(x) for x in out]
        else:
            out = [round(x, 12) for x in out]
    return out


def expand(value: Any) -> list[Any]:
    """Every alternative a space value stands for (lists: each item; mappings: the product)."""
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for item in value:
            if isinstance(item, list | tuple):
                out.append(list(item))  # a list of lists: each inner list is one (list-valued) alternative
            else:
                out.extend(expand(item))
        if not out:
            raise ConfigError("an empty list has no alternatives")
        return out
    if _is_range(value):
        return _range(value)
    if isinstance(value, dict) and "range" in value:
        extra = sorted(set(value) - {"range", "step", "factor"})
        raise ConfigError(f"a range takes step or factor, not {', '.join(map(repr, extra))}")
    if isinstance(value, dict):
        keys = list(value)
        options = [expand(value[k]) for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]
    return [value]


def _shorthand(key: str, value: Any) -> Any:
    """``balancer: p2c`` means ``{policy: p2c}``; ``scaling: fixed`` means ``{mode: fixed}``."""
    name = {"balancer": "policy", "scaling": "mode"}.get(key)
    if name is None:
        return value
    if isinstance(value, str):
        return {name: value}
    if isinstance(value, list | tuple):
        return [{name: v} if isinstance(v, str) else v for v in value]
    return value


def axes(space: SearchSpace) -> dict[str, list[Any]]:
    """Each deployment field of the space with its expanded alternatives (the search dimensions)."""
    return {k: expand(_shorthand(k, v)) for k, v in space.deployment.items()}
