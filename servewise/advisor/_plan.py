"""Building the :class:`~servewise.results.Plan`: every candidate, the ranking, the Pareto front, the winner or the closest misses."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servewise import __version__
from servewise.results import Candidate, Plan, Summary, load_artifact
from servewise.space import SearchSpace
from servewise.trace import Trace

from ._candidates import Expansion
from ._search import Record, SearchOutcome, binding, rank_key, violation

__all__ = ["Plan", "PLAN_SCHEMA_VERSION", "build_plan", "load_plan", "pareto_front"]

PLAN_SCHEMA_VERSION = Plan.SCHEMA_VERSION
KIND = Plan.KIND


def load_plan(path: str | Path) -> Plan:
    """Read a plan.json (or the folder holding it); anything else is one :class:`ArtifactError` line."""
    return load_artifact(path, "plan")


def pareto_front(points: list[tuple[str, float, float, float]]) -> list[str]:
    """Ids of the points no other point beats on cost, tail latency and drift at once (all minimised)."""
    front = []
    for cid, c, t, d in points:
        dominated = any(
            (c2 <= c and t2 <= t and d2 <= d) and (c2 < c or t2 < t or d2 < d) for _, c2, t2, d2 in points
        )
        if not dominated:
            front.append(cid)
    return front


def _entry(rec: Record) -> Candidate:
    c = rec.cand
    res = rec.final or rec.last
    s: Summary | None = res["summary"] if res else None
    feasible: bool | None
    bind: dict[str, Any] | None
    if rec.status == "static_infeasible":
        feasible = False
        bind = {"name": c.static["constraint"], "value": c.static["value"], "limit": c.static["limit"], "margin": None}  # type: ignore[index]
    elif rec.status == "pruned":
        feasible = False
        pb = rec.pruned_by or {}
        bind = {"name": pb.get("slo"), "value": pb.get("bound"), "limit": pb.get("limit"), "margin": None, "bound": True}
    elif res is not None:
        feasible = bool(res["slo"].passed) if rec.final is not None else None
        bind = binding(res["slo"])
    else:
        feasible, bind = None, None
    return Candidate.model_validate({
        "id": c.id,
        "label": c.label,
        "hardware": c.hardware if c.cloud_hardware is None else f"{c.hardware}+{c.cloud_hardware}",
        "variant": c.variant,
        "deployment": c.doc,
        "status": rec.status,
        "fidelity": rec.fidelity,
        "feasible": feasible,
        "cost_per_hour_usd": s.cost_per_hour_usd if s is not None else None,
        "cost_per_million_requests_usd": s.cost_per_million_requests_usd if s is not None else None,
        "binding_slo": bind,
        "violation": violation(res) if res is not None else None,
        "static": c.static,
        "bound": rec.bound,
        "pruned_by": rec.pruned_by,
        "metrics": s,
        "slo": res["slo"] if res else None,
        "rungs": [{k: r[k] for k in ("fraction", "requests", "seed", "sim_wall_s")} | {"pass": r["slo"].passed}
                  for r in rec.rungs],
        "robustness": rec.robustness,
    })  # fmt: skip


def _closest(entries: list[Candidate]) -> list[str]:
    """The nearest misses: simulated ones by SLO excess, then those only bounds or static checks judged."""
    sim = sorted(
        (e for e in entries if e.status == "evaluated"),
        key=lambda e: (-e.fidelity, e.violation if e.violation is not None else math.inf),
    )
    if sim:
        return [e.id for e in sim[:3]]

    def excess(e: Candidate) -> float:
        b = e.binding_slo
        if b is None or b.value is None or not b.limit:
            return math.inf
        return b.value / b.limit

    return [e.id for e in sorted(entries, key=excess)[:3]]


def _front(feasible: list[Candidate]) -> list[str]:
    pts = []
    for e in feasible:
        tail = e.tail_latency_s
        if e.cost_per_hour_usd is not None and tail is not None:
            drift = e.metrics.accuracy_drift if e.metrics is not None else None
            pts.append((e.id, float(e.cost_per_hour_usd), float(tail), float(drift or 0.0)))
    return pareto_front(pts)


def build_plan(
    space: SearchSpace,
    space_source: str,
    trace: Trace,
    profile_paths: dict[str, Path],
    expansion: Expansion,
    outcome: SearchOutcome,
    *,
    executor: str,
    jobs: int,
    wall_s: float,
) -> Plan:
    recs = outcome.records
    entries = [_entry(r) for r in recs]
    full = [(rank_key(r.final), r.cand.id) for r in recs if r.final is not None]
    ranking = [cid for _, cid in sorted(full)]
    by_id = {e.id: e for e in entries}
    feasible = [by_id[cid] for cid in ranking if by_id[cid].feasible]
    winner = feasible[0].id if feasible else None
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.status] = counts.get(e.status, 0) + 1
    s = space.search
    data: dict[str, Any] = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "kind": KIND,
        "metadata": {
            "tool": "servewise",
            "version": __version__,
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "space": space_source,
            "space_sha256": hashlib.sha256(space.model_dump_json().encode()).hexdigest(),
            "trace_source": trace.source,
            "trace_sha256": trace.content_hash(),
            "trace_requests": len(trace),
            "trace_duration_s": trace.duration_s,
            "profiles": {hw: str(p) for hw, p in profile_paths.items()},
            "seed": s.seed,
        },
        "name": space.name,
        "setting": space.setting,
        "slo": space.slo.model_dump(exclude_none=True),
        "search": {
            **s.model_dump(),
            "executor": executor,
            "jobs": jobs,
            "combinations": expansion.combinations,
            "candidates": len(recs),
            "invalid": expansion.invalid,
            "statuses": counts,
            "rungs": outcome.rungs,
            "trials": outcome.trials,
            "simulations": outcome.simulations,
            "simulation_s": outcome.simulation_s,
            "robustness_simulation_s": outcome.robustness_s,
            "search_wall_s": outcome.search_wall_s,
            "robustness_wall_s": outcome.robustness_wall_s,
            "wall_s": wall_s,
        },
        "feasible": winner is not None,
        "winner": winner,
        "closest": [] if winner is not None else _closest(entries),
        "ranking": ranking,
        "pareto": _front(feasible),
        "candidates": entries,
    }
    return Plan.from_doc(data, f"plan {space.name}")
