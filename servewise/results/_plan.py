"""``Plan``: the advisor's ``plan.json``: every candidate, the ranking, the Pareto front and the winner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from servewise.results._base import (
    ArtifactRecord,
    Bool,
    Count,
    Int,
    NonNeg,
    Number,
    OpenRecord,
    OptBool,
    OptCount,
    OptNonNeg,
    OptNumber,
    OptStr,
    Ratio,
    Record,
    Str,
)
from servewise.results._summary import Percentiles, SloResult, Summary

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "StaticCheck",
    "LowerBounds",
    "PrunedBy",
    "Binding",
    "Rung",
    "RobustMetric",
    "Headroom",
    "Robustness",
    "Candidate",
    "PlanSearch",
    "PlanMetadata",
    "Plan",
    "CANDIDATE_STATUSES",
]

CANDIDATE_STATUSES = ("candidate", "static_infeasible", "pruned", "evaluated")


def _absent_if_none(v: Any) -> bool:
    return v is None


class StaticCheck(Record):
    """Infeasible without simulating: the constraint (memory, max_accuracy_drift, inventory, compute) and why."""

    constraint: Str
    value: OptNumber
    limit: OptNumber
    detail: Str


class LowerBounds(Record):
    """Analytic lower bounds on the candidate's latency percentiles (and TTFT for an LLM engine)."""

    latency_s: Percentiles
    utilisation: NonNeg
    ttft_s: Percentiles | None = Field(default=None, exclude_if=_absent_if_none)


class PrunedBy(Record):
    """The SLO a lower bound showed the candidate cannot meet."""

    slo: Str
    bound: OptNumber
    limit: OptNumber


class Binding(Record):
    """The SLO with the smallest margin: the one that binds, or is missed by the most."""

    name: OptStr
    value: OptNumber
    limit: OptNumber
    margin: OptNumber
    """(limit − value) / limit for a limit, the reverse for a floor; None when unknown."""
    bound: OptBool = Field(default=None, exclude_if=_absent_if_none)
    """True when the value is an analytic bound, not a simulation's."""


class Rung(Record):
    """One simulation of the candidate on a prefix of the trace (successive halving's rungs)."""

    fraction: Ratio
    requests: Count
    seed: Int
    sim_wall_s: NonNeg
    passed: Bool = Field(alias="pass")


class RobustMetric(Record):
    """An SLO metric over the seed replications: mean and confidence interval, and whether its
    adverse end is within the limit."""

    mean: OptNumber
    low: OptNumber
    high: OptNumber
    n: Count
    limit: Number
    within_limit: Bool


class Headroom(Record):
    """The largest rate multiplier of the trace that still meets every SLO."""

    rate_multiplier: NonNeg
    fails_at: OptNonNeg
    capped: Bool
    """True when even the largest multiplier tried met the SLOs."""


class Robustness(Record):
    """A finalist's checks: other seeds, and load headroom."""

    seeds: list[Int]
    confidence: Ratio
    metrics: dict[str, RobustMetric]
    pass_rate: Ratio
    headroom: Headroom | None = Field(default=None, exclude_if=_absent_if_none)


class Candidate(Record):
    """One candidate deployment and what the search learned about it."""

    id: Str
    label: Str
    hardware: Str
    variant: OptStr
    deployment: dict[str, Any]
    """The deployment document (as YAML would hold it)."""
    status: Literal["candidate", "static_infeasible", "pruned", "evaluated"]
    fidelity: Ratio
    """Fraction of the trace its last simulation ran on (1.0: the whole trace)."""
    feasible: OptBool
    """Every SLO met on the whole trace; None when not simulated on all of it."""
    cost_per_hour_usd: OptNonNeg
    cost_per_million_requests_usd: OptNonNeg
    binding_slo: Binding | None
    violation: OptNonNeg
    """Largest relative SLO excess (0 when every SLO is met)."""
    static: StaticCheck | None
    bound: LowerBounds | None
    pruned_by: PrunedBy | None
    metrics: Summary | None
    """The summary of its last simulation."""
    slo: SloResult | None
    rungs: list[Rung]
    robustness: Robustness | None

    @property
    def tail_latency_s(self) -> float | None:
        """p99 TTFT for an LLM engine, else p99 latency: the Pareto front's latency axis."""
        if self.metrics is None:
            return None
        ttft = self.metrics.ttft_s.p99
        return ttft if ttft is not None else self.metrics.latency_s.p99


class PlanSearch(OpenRecord):
    """How the search ran: the strategy's settings (extra keys), and what it did."""

    strategy: Str
    executor: Str
    jobs: Count
    combinations: Count
    candidates: Count
    invalid: dict[str, Count]
    """Combinations that were no valid deployment, by reason."""
    statuses: dict[str, Count]
    rungs: list[dict[str, Any]]
    trials: OptCount
    simulations: Count
    simulation_s: NonNeg
    robustness_simulation_s: NonNeg
    search_wall_s: NonNeg
    robustness_wall_s: NonNeg
    wall_s: NonNeg


class PlanMetadata(OpenRecord):
    tool: Str
    version: Str
    created_utc: Str
    space: Str
    space_sha256: Str
    trace_source: Str
    trace_sha256: Str
    trace_requests: Count
    trace_duration_s: NonNeg
    profiles: dict[str, Str]
    seed: Int


class Plan(ArtifactRecord):
    """The advisor's decision. ``winner`` is the winning :class:`Candidate` (``winner_id`` its id)."""

    KIND: ClassVar[str] = "plan"
    WHAT: ClassVar[str] = "plan"
    FILE: ClassVar[str] = "plan.json"

    schema_version: Literal[1] = 1
    kind: Literal["plan"] = "plan"
    metadata: PlanMetadata
    name: Str
    setting: Str
    slo: dict[str, Number]
    """The SLOs the candidates were judged by (those the search space sets)."""
    search: PlanSearch
    feasible: Bool
    winner_id: OptStr = Field(alias="winner")
    closest: list[Str]
    """Without a winner: the nearest misses."""
    ranking: list[Str]
    """Ids of the candidates simulated on the whole trace, best first."""
    pareto: list[Str]
    candidates: list[Candidate]

    @model_validator(mode="after")
    def _ids(self) -> Plan:
        ids = {c.id for c in self.candidates}
        if len(ids) != len(self.candidates):
            raise ValueError("two candidates have the same id")
        named = [("winner", [self.winner_id] if self.winner_id is not None else []), ("ranking", self.ranking),
                 ("pareto", self.pareto), ("closest", self.closest)]  # fmt: skip
        for key, refs in named:
            unknown = [r for r in refs if r not in ids]
            if unknown:
                raise ValueError(f"{key} names {unknown[0]!r}, which is not the id of a candidate")
        if self.feasible != (self.winner_id is not None):
            raise ValueError(f"feasible is {str(self.feasible).lower()} but the winner is {self.winner_id!r}")
        return self

    @property
    def data(self) -> dict[str, Any]:
        """The JSON document as a dict (for code written when results were dicts)."""
        return self.to_doc()

    @property
    def by_id(self) -> dict[str, Candidate]:
        return {c.id: c for c in self.candidates}

    @property
    def winner(self) -> Candidate | None:
        return None if self.winner_id is None else self.candidate(self.winner_id)

    def candidate(self, cid: str) -> Candidate:
        for c in self.candidates:
            if c.id == cid:
                return c
        raise KeyError(cid)

    def ranked(self) -> list[Candidate]:
        by_id = self.by_id
        return [by_id[c] for c in self.ranking if c in by_id]

    def write(self, path: str | Path) -> Path:
        return self.write_json(path)

    def to_frame(self) -> pd.DataFrame:
        """One row per candidate, indexed by id: rank, what it is, cost, tail latency, SLO verdict."""
        import pandas as pd

        rank = {cid: k for k, cid in enumerate(self.ranking, 1)}
        front = set(self.pareto)
        rows = []
        for c in self.candidates:
            m = c.metrics
            b = c.binding_slo
            rows.append(
                {
                    "id": c.id,
                    "rank": rank.get(c.id),
                    "label": c.label,
                    "hardware": c.hardware,
                    "variant": c.variant,
                    "status": c.status,
                    "fidelity": c.fidelity,
                    "feasible": c.feasible,
                    "winner": c.id == self.winner_id,
                    "pareto": c.id in front,
                    "cost_per_hour_usd": c.cost_per_hour_usd,
                    "cost_per_million_requests_usd": c.cost_per_million_requests_usd,
                    "p50_latency_s": m.latency_s.p50 if m is not None else None,
                    "p95_latency_s": m.latency_s.p95 if m is not None else None,
                    "p99_latency_s": m.latency_s.p99 if m is not None else None,
                    "tail_latency_s": c.tail_latency_s,
                    "throughput_rps": m.throughput_rps if m is not None else None,
                    "mean_replicas": m.mean_replicas if m is not None else None,
                    "binding_slo": b.name if b is not None else None,
                    "binding_margin": b.margin if b is not None else None,
                    "violation": c.violation,
                    "robust_pass_rate": c.robustness.pass_rate if c.robustness is not None else None,
                }
            )
        frame = pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame(columns=["id"]).set_index("id")
        numeric = ["rank", "fidelity", "cost_per_hour_usd", "cost_per_million_requests_usd", "p50_latency_s",
                   "p95_latency_s", "p99_latency_s", "tail_latency_s", "throughput_rps", "mean_replicas",
                   "binding_margin", "violation", "robust_pass_rate"]  # fmt: skip
        for col in numeric:
            if col in frame.columns:
                frame[col] = pd.to_numeric(frame[col]).astype(float)
        return frame

