"""The ``Plan`` artifact: every candidate, the ranking, the Pareto front, the winner or the closest misses."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servewise import __version__
from servewise.io import read_artifact, write_json
from servewise.space import SearchSpace
from servewise.trace import Trace

from ._candidates import Expansion
from ._search import Record, SearchOutcome, binding, rank_key, violation

__all__ = ["Plan", "PLAN_SCHEMA_VERSION", "build_plan", "load_plan", "pareto_front"]

PLAN_SCHEMA_VERSION = 1
KIND = "plan"


@dataclass(frozen=True)
class Plan:
    """The advisor's decision: ``data`` is the plan.json document."""

    data: dict[str, Any]

    @property
    def feasible(self) -> bool:
        return bool(self.data["feasible"])

    @property
    def winner(self) -> dict[str, Any] | None:
        w = self.data["winner"]
        return None if w is None else self.candidate(w)

    def candidate(self, cid: str) -> dict[str, Any]:
        for c in self.data["candidates"]:
            if c["id"] == cid:
                return c
        raise KeyError(cid)

    def ranked(self) -> list[dict[str, Any]]:
        return [self.candidate(c) for c in self.data["ranking"]]

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json(p, self.data)
        return p


def load_plan(path: str | Path) -> Plan:
    """Read a plan.json; an unknown kind or schema version is an :class:`ArtifactError`."""
    return Plan(read_artifact(path, KIND, PLAN_SCHEMA_VERSION, "plan"))


def _tail(summary: dict[str, Any]) -> float | None:
    """Tail latency for the Pareto front: p99 TTFT for an LLM engine, else p99 latency."""
    ttft = (summary.get("ttft_s") or {}).get("p99")
    return ttft if ttft is not None else (summary.get("latency_s") or {}).get("p99")


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


def _entry(rec: Record) -> dict[str, Any]:
    c = rec.cand
    res = rec.final or rec.last
    s = res["summary"] if res else None
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
        feasible = bool(res["slo"]["pass"]) if rec.final is not None else None
        bind = binding(res["slo"])
    else:
        feasible, bind = None, None
    return {
        "id": c.id,
        "label": c.label,
        "hardware": c.hardware if c.cloud_hardware is None else f"{c.hardware}+{c.cloud_hardware}",
        "variant": c.variant,
        "deployment": c.doc,
        "status": rec.status,
        "fidelity": rec.fidelity,
        "feasible": feasible,
        "cost_per_hour_usd": s.get("cost_per_hour_usd") if s else None,
        "cost_per_million_requests_usd": s.get("cost_per_million_requests_usd") if s else None,
        "binding_slo": bind,
        "violation": violation(res) if res is not None else None,
        "static": c.static,
        "bound": rec.bound,
        "pruned_by": rec.pruned_by,
        "metrics": s,
        "slo": res["slo"] if res else None,
        "rungs": [{k: r[k] for k in ("fraction", "requests", "seed", "sim_wall_s")} | {"pass": r["slo"]["pass"]}
                  for r in rec.rungs],
        "robustness": rec.robustness,
    }


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
    by_id = {e["id"]: e for e in entries}
    feasible_ids = [cid for cid in ranking if by_id[cid]["feasible"]]
    winner = feasible_ids[0] if feasible_ids else None
    closest: list[str] = []
    if winner is None:
        # the nearest misses: simulated ones by SLO excess, then those only bounds or static checks judged
        sim = sorted(
            (e for e in entries if e["status"] == "evaluated"),
            key=lambda e: (-(e["fidelity"]), e["violation"] if e["violation"] is not None else math.inf),
        )
        closest = [e["id"] for e in sim[:3]]
        if not closest:
            def excess(e: dict[str, Any]) -> float:
                b = e["binding_slo"] or {}
                v, lim = b.get("value"), b.get("limit")
                return (v / lim) if isinstance(v, int | float) and isinstance(lim, int | float) and lim else math.inf

            closest = [e["id"] for e in sorted(entries, key=excess)[:3]]
    pts = []
    for cid in feasible_ids:
        e = by_id[cid]
        tail = _tail(e["metrics"])
        drift = (e["metrics"] or {}).get("accuracy_drift")
        if e["cost_per_hour_usd"] is not None and tail is not None:
            pts.append((cid, float(e["cost_per_hour_usd"]), float(tail), float(drift or 0.0)))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
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
        "closest": closest,
        "ranking": ranking,
        "pareto": pareto_front(pts),
        "candidates": entries,
    }
    return Plan(data)
