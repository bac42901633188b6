"""The advise stage: search deployments under SLOs, rank them by cost, emit the winner.

``advise(space, trace, profiles)`` expands the search space into candidate deployments,
drops those that cannot work (memory, accuracy drift, inventory; analytic queueing
bounds), simulates the rest with the chosen strategy, checks the finalists' robustness
(seeds, load headroom), and returns a :class:`Plan`. ``write_outputs`` puts
``plan.json`` and, when an SLO-meeting candidate exists, the ``deploy/`` files in a folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from servewise.errors import ConfigError
from servewise.hardware import Catalog, load_catalog
from servewise.profile import Variant
from servewise.results import Expected
from servewise.space import SearchSpace
from servewise.stats import VALIDATION_TOLERANCES
from servewise.trace import Trace

from ._candidates import Candidate, Profiles, build_candidates, load_profiles
from ._plan import PLAN_SCHEMA_VERSION, Plan, build_plan, load_plan, pareto_front
from ._run import make_executor
from ._search import Record, run_search

__all__ = [
    "advise",
    "write_outputs",
    "expected_document",
    "Plan",
    "load_plan",
    "pareto_front",
    "PLAN_SCHEMA_VERSION",
    "TOLERANCES",
]

TOLERANCES = VALIDATION_TOLERANCES
"""Relative errors the load test may show against the prediction (see :data:`servewise.stats.VALIDATION_TOLERANCES`)."""


def _refuse_unstable(variants: Iterable[Variant]) -> None:
    for v in sorted({v.label: v for v in variants if not v.estimated}.values(), key=lambda v: v.label):
        why = v.instability()
        if why is not None:
            raise ConfigError(
                f"profile variant {v.label}: {why}; profile again on a quieter machine (fewer programs running, "
                "a larger --budget-s or more --rounds), or pass --allow-unstable-profile to search with it anyway"
            )


def advise(
    space: SearchSpace,
    trace: Trace,
    profile_paths: list[Path],
    *,
    space_source: str = "search space",
    catalog: Catalog | None = None,
    executor: str = "local",
    jobs: int | None = None,
    ray_address: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    allow_unstable: bool = False,
) -> Plan:
    """Search ``space`` for the cheapest deployment meeting its SLOs on ``trace``.

    A measured variant with points the profiler flagged unstable is refused (a
    :class:`ConfigError` naming them and why) unless ``allow_unstable``: a ranking built
    on timings that moved between runs is not worth its cost."""
    t0 = time.perf_counter()
    if len(trace) == 0:
        raise ConfigError(f"trace {trace.source}: no requests to judge candidates on")
    cat = catalog or load_catalog()
    profiles: Profiles = load_profiles(profile_paths, cat)
    expansion = build_candidates(space, profiles, cat)
    if not expansion.candidates:
        reasons = "; ".join(f"{n}× {why}" for why, n in sorted(expansion.invalid.items(), key=lambda kv: -kv[1])[:3])
        raise ConfigError(f"the search space holds no valid deployment ({reasons})")
    records = [Record(c, status="static_infeasible" if c.static else "candidate") for c in expansion.candidates]
    needed = {c.variant_key for c in expansion.candidates}
    spec = profiles.spec(space.spec)
    variants = {k: profiles.variant(k[0], k[1], spec) for k in needed}
    if not allow_unstable:
        _refuse_unstable(variants.values())

    def variant_of(c: Candidate) -> Any:
        return variants[c.variant_key]

    ex = make_executor(executor, trace, variants, space.search.warmup_s, jobs=jobs, address=ray_address)
    try:
        outcome = run_search(
            records, trace, space.search, ex, variant_of, expansion.coords, expansion.dims, progress=progress
        )
    finally:
        ex.close()
    return build_plan(
        space,
        space_source,
        trace,
        profiles.paths,
        expansion,
        outcome,
        executor=ex.name,
        jobs=ex.jobs,
        wall_s=time.perf_counter() - t0,
    )


def expected_document(plan: Plan, trace: Trace) -> dict[str, Any]:
    """``expected.json``: the winner's predicted metrics the load test will be judged against.

    Built through :class:`servewise.results.Expected`, the record ``servewise validate`` reads it with.
    """
    w = plan.winner
    if w is None:
        raise ConfigError("no candidate meets the SLOs: nothing to expect")
    rob = w.robustness
    doc = {
        "plan": plan.name,
        "candidate": w.id,
        "label": w.label,
        "trace": {
            "source": trace.source,
            "sha256": trace.content_hash(),
            "requests": len(trace),
            "duration_s": trace.duration_s,
        },
        "seed": plan.metadata.seed,
        "summary": w.metrics,
        "slo": plan.slo,
        "slo_checks": w.slo,
        "confidence_intervals": {k: m.model_dump(mode="json") for k, m in rob.metrics.items()} if rob is not None else None,
        "headroom": rob.headroom.model_dump(mode="json") if rob is not None and rob.headroom is not None else None,
        "tolerances": TOLERANCES,
    }
    expected: Expected = Expected.from_doc(doc, f"expected results of plan {plan.name}")
    return expected.to_doc()


def write_outputs(plan: Plan, trace: Trace, out_dir: Path, *, image: str | None = None, port: int = 8000) -> list[Path]:
    """``plan.json``, and the winner's ``deploy/`` files when there is a winner; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plan.write(out_dir / "plan.json")]
    w = plan.winner
    if w is None:
        return written
    from servewise.config import parse_deployment
    from servewise.profile import load_profile

    from ._deploy import DeployInputs, write_deploy

    doc = w.deployment
    profile_path = Path(doc["model"]["profile"])
    prof = load_profile(profile_path)
    variant = prof.variant(doc["model"]["variant"], doc["model"].get("spec"))
    dep = parse_deployment({**doc, "model": {**doc["model"], "resolved": variant}}, f"winner {w.id}")
    kwargs: dict[str, Any] = {"port": port}
    if image:
        kwargs["image"] = image
    inputs = DeployInputs(
        deployment=dep, expected=expected_document(plan, trace), trace=trace, profile_path=profile_path, **kwargs
    )
    written += write_deploy(inputs, out_dir / "deploy")
    return written
