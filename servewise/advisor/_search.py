"""Search strategies: exhaustive, successive halving (the default) and Optuna TPE; then robustness.

Every strategy ranks by the same rule, so they agree on what the best candidate is:
feasible candidates (every SLO met on the full trace, seed ``search.seed``) by cost per
hour, then by mean replicas, then by the widest SLO margin; infeasible ones after, the
closest (smallest relative SLO excess) first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servewise.results import SLO_FIELDS, SloResult, Summary, slo_margin
from servewise.space import SearchSettings
from servewise.trace import Trace

from ._bounds import lower_bounds, violated
from ._candidates import Candidate, build_deployment
from ._run import Executor, Task, t_quantile

__all__ = ["Record", "SearchOutcome", "run_search", "slo_margins", "rank_key"]

_MAX_SLOS = {name for name, (_, _, kind) in SLO_FIELDS.items() if kind == "max"}
"""SLOs that are upper limits (the rest are floors), as the simulator checks them."""


@dataclass
class Record:
    """What the search learned about one candidate."""

    cand: Candidate
    status: str = "candidate"  # static_infeasible | pruned | evaluated
    bound: dict[str, Any] | None = None
    pruned_by: dict[str, Any] | None = None
    rungs: list[dict[str, Any]] = field(default_factory=list)
    robustness: dict[str, Any] | None = None

    def add(self, result: dict[str, Any]) -> None:
        """Record a simulation of this candidate (at some trace fraction)."""
        self.status = "evaluated"
        self.rungs.append(result)

    @property
    def last(self) -> dict[str, Any] | None:
        return self.rungs[-1] if self.rungs else None

    @property
    def final(self) -> dict[str, Any] | None:
        last = self.last
        return last if last is not None and last["fraction"] >= 1.0 else None

    @property
    def fidelity(self) -> float:
        last = self.last
        return float(last["fraction"]) if last else 0.0


def slo_margins(slo: SloResult | None) -> dict[str, float]:
    """Each SLO check's relative margin by :func:`servewise.results.slo_margin`'s ranking rule:
    (limit − value) / limit for limits, the reverse for floors; −inf when the value is missing."""
    if slo is None:
        return {}
    return {name: slo_margin(name, c.value, c.limit, ranking=True) for name, c in slo.checks.items()}


def binding(slo: SloResult | None) -> dict[str, Any] | None:
    """The SLO with the smallest margin: the one that binds (or is missed by the most)."""
    m = slo_margins(slo)
    if not m or slo is None:
        return None
    name = min(m, key=lambda k: m[k])
    c = slo.checks[name]
    return {"name": name, "value": c.value, "limit": c.limit, "margin": m[name] if math.isfinite(m[name]) else None}


def violation(result: dict[str, Any]) -> float:
    """Largest relative SLO excess of a result (0 when every SLO is met)."""
    m = slo_margins(result["slo"])
    worst = min(m.values()) if m else 0.0
    return max(-worst, 0.0)


def _passed(result: dict[str, Any]) -> bool:
    """Every SLO met in this simulation."""
    slo: SloResult = result["slo"]
    return slo.passed


def _cost(result: dict[str, Any]) -> float:
    """The simulated cost per hour (0 when unknown)."""
    summary: Summary = result["summary"]
    return float(summary.cost_per_hour_usd or 0.0)


def rank_key(result: dict[str, Any], tolerance: float = 0.0) -> tuple[Any, ...]:
    """Sort key: plausibly feasible by cost / replicas / margin, then the rest by excess."""
    v = violation(result)
    s: Summary = result["summary"]
    cost = s.cost_per_hour_usd or 0.0
    margin = _margin(result)
    if v <= tolerance:
        return (0, round(cost, 9), round(s.mean_replicas or 0.0, 9), -margin, result["index"])
    return (1, v, round(cost, 9), 0.0, result["index"])


@dataclass
class SearchOutcome:
    records: list[Record]
    rungs: list[dict[str, Any]]
    simulations: int = 0
    simulation_s: float = 0.0
    robustness_s: float = 0.0
    search_wall_s: float = 0.0
    robustness_wall_s: float = 0.0
    trials: int | None = None


def _tasks(records: list[Record], idx: list[int], fraction: float, seed: int) -> list[Task]:
    return [Task(k, records[k].cand.doc, records[k].cand.variant_key, fraction, seed) for k in idx]


class _Runner:
    def __init__(self, executor: Executor, progress: Callable[[str, int, int], None] | None):
        self.ex = executor
        self.progress = progress
        self.simulations = 0
        self.simulation_s = 0.0

    def run(self, tasks: list[Task], what: str) -> list[dict[str, Any]]:
        done = [0]
        total = len(tasks)

        def tick(n: int) -> None:
            done[0] += n
            if self.progress:
                self.progress(what, done[0], total)

        if self.progress:
            self.progress(what, 0, total)
        results = self.ex.run(tasks, tick)
        self.simulations += len(results)
        self.simulation_s += sum(r["sim_wall_s"] for r in results)
        return results


def _prune(records: list[Record], trace: Trace, settings: SearchSettings, variants: Callable[[Candidate], Any]) -> None:
    for r in records:
        if r.status != "candidate":
            continue
        dep = build_deployment(r.cand.doc, variants(r.cand))
        r.bound = lower_bounds(dep, trace, warmup_s=settings.warmup_s)
        hit = violated(r.bound, dep.slo)
        if hit is not None:
            name, value, limit = hit
            r.status = "pruned"
            r.pruned_by = {"slo": name, "bound": value, "limit": limit}


def _fractions(trace: Trace, settings: SearchSettings) -> list[float]:
    dur = trace.duration_s
    fr = [settings.eta ** -(settings.rungs - 1 - k) for k in range(settings.rungs)]
    keep = [f for f in fr if f >= 1.0 or f * dur >= settings.min_prefix_s]
    return keep or [1.0]


def run_search(
    records: list[Record],
    trace: Trace,
    settings: SearchSettings,
    executor: Executor,
    variants: Callable[[Candidate], Any],
    coords: dict[tuple[int, ...], int] | None = None,
    dims: list[int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SearchOutcome:
    """Run the strategy of ``settings`` over ``records`` (their static findings already set)."""
    t0 = time.perf_counter()
    runner = _Runner(executor, progress)
    live = [k for k, r in enumerate(records) if r.status == "candidate"]
    rung_log: list[dict[str, Any]] = []
    trials = None
    if settings.strategy == "exhaustive":
        _evaluate(runner, records, live, 1.0, settings.seed, rung_log, "exhaustive")
    elif settings.strategy == "halving":
        if settings.prune:
            _prune(records, trace, settings, variants)
        live = [k for k in live if records[k].status == "candidate"]
        fractions = _fractions(trace, settings)
        for n, f in enumerate(fractions):
            last = n == len(fractions) - 1
            if len(live) <= max(settings.min_keep, settings.finalists) and not last:
                f = 1.0  # few enough: straight to the full trace
                last = True
            what = f"rung {n + 1}: {f:.3g} of the trace"
            if last:
                tried = [k for k, r in enumerate(records) if r.status == "evaluated"]
                _final_rung(runner, records, live, settings, rung_log, what, tried)
                break
            results = _evaluate(runner, records, live, f, settings.seed, rung_log, what)
            live = _promote(results, settings)
    else:
        if settings.prune:
            _prune(records, trace, settings, variants)
        trials = _tpe(runner, records, settings, coords or {}, dims or [], rung_log)
    search_wall = time.perf_counter() - t0
    sims, sim_s = runner.simulations, runner.simulation_s
    t1 = time.perf_counter()
    _robustness(runner, records, trace, settings)
    out = SearchOutcome(records, rung_log, sims, sim_s)
    out.robustness_s = runner.simulation_s - sim_s
    out.search_wall_s = search_wall
    out.robustness_wall_s = time.perf_counter() - t1
    out.trials = trials
    return out


def _promote(results: list[dict[str, Any]], settings: SearchSettings) -> list[int]:
    """The candidates that go on to the next (longer) trace prefix.

    A short prefix is often lighter (or heavier) than the whole trace, so it says little
    about which cost is enough — but much about which candidates of the *same* cost do
    best. Candidates are grouped by cost per hour; each group keeps its best 1/eta (at
    least one) by SLO excess then margin. Every cost level reaches the full trace with
    its most promising configurations, and the cheapest feasible one is found there.
    """
    groups: dict[float, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(round(_cost(r), 6), []).append(r)
    keep: list[int] = []
    for members in groups.values():
        order = sorted(members, key=lambda r: (_excess(r, settings.tolerance), -_margin(r), r["index"]))
        keep += [r["index"] for r in order[: max(math.ceil(len(order) / settings.eta), 1)]]
    if len(keep) < max(settings.min_keep, settings.finalists):  # a few cost levels only: keep the best overall too
        order = sorted(results, key=lambda r: rank_key(r, settings.tolerance))
        for r in order:
            if len(keep) >= max(settings.min_keep, settings.finalists):
                break
            if r["index"] not in keep:
                keep.append(r["index"])
    return sorted(keep)


def _final_rung(
    runner: _Runner,
    records: list[Record],
    live: list[int],
    settings: SearchSettings,
    log: list[dict[str, Any]],
    what: str,
    tried: list[int],
) -> None:
    """The full trace, cheapest first, until ``finalists`` candidates meet the SLOs (branch and bound on cost).

    Once that many are feasible, every candidate left costs more than all of them: none
    can win or be a finalist, so they keep the fidelity they reached. When a cost level
    turns out feasible, the rest of that level (every candidate of that cost that ran on a
    prefix) runs too: at equal cost the widest SLO margin wins, and a prefix ranks margins
    only roughly.
    """

    def key(k: int) -> tuple[Any, ...]:
        last = records[k].last
        if last is None:
            return (0.0, 0.0, 0.0, k)
        return (round(_cost(last), 6), _excess(last, settings.tolerance), -_margin(last), k)

    order = sorted(live, key=key)
    expanded: set[float] = set()
    batch = max(runner.ex.jobs, 1)
    t0 = time.perf_counter()
    done: list[dict[str, Any]] = []
    feasible_costs: list[float] = []
    pos = 0

    def enough(k: int) -> bool:
        return len(feasible_costs) >= settings.finalists and key(k)[0] > max(feasible_costs)

    ahead: dict[int, dict[str, Any]] = {}  # simulated ahead of their turn (a parallel batch)
    while pos < len(order):
        if enough(order[pos]):
            break
        if order[pos] not in ahead:
            batch_ = [k for k in order[pos:] if k not in ahead][:batch]
            for res in runner.run(_tasks(records, batch_, 1.0, settings.seed), what):
                ahead[res["index"]] = res
        # one at a time, in order: the stop and the insertions below never depend on the batch size
        r = ahead.pop(order[pos])
        pos += 1
        records[r["index"]].add(r)
        done.append(r)
        if _passed(r):
            cost = round(_cost(r), 6)
            feasible_costs.append(cost)
            if cost not in expanded:
                expanded.add(cost)
                queued = set(order)
                same = sorted((k for k in tried if k not in queued and key(k)[0] == cost), key=key)
                order[pos:pos] = same
    log.append(
        {
            "fraction": 1.0,
            "requests": done[0]["requests"] if done else 0,
            "candidates": len(done),
            "skipped_by_cost": len(order) - pos,
            "simulation_s": sum(r["sim_wall_s"] for r in done),
            "wall_s": time.perf_counter() - t0,
        }
    )


def _excess(result: dict[str, Any], tolerance: float) -> float:
    v = violation(result)
    return 0.0 if v <= tolerance else v


def _margin(result: dict[str, Any]) -> float:
    m = slo_margins(result["slo"])
    return min(m.values()) if m else 0.0


def _evaluate(
    runner: _Runner, records: list[Record], idx: list[int], fraction: float, seed: int, log: list[dict[str, Any]], what: str
) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    results = runner.run(_tasks(records, idx, fraction, seed), what)
    for r in results:
        records[r["index"]].add(r)
    log.append(
        {
            "fraction": fraction,
            "requests": results[0]["requests"] if results else 0,
            "candidates": len(idx),
            "simulation_s": sum(r["sim_wall_s"] for r in results),
            "wall_s": time.perf_counter() - t0,
        }
    )
    return results


# --------------------------------------------------------------------------- TPE


def _tpe(
    runner: _Runner,
    records: list[Record],
    settings: SearchSettings,
    coords: dict[tuple[int, ...], int],
    dims: list[int],
    log: list[dict[str, Any]],
) -> int:
    try:
        import optuna
    except ImportError:
        from servewise.errors import ConfigError

        raise ConfigError("strategy 'tpe' needs Optuna: pip install 'servewise[advise]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_live = sum(1 for r in records if r.status in ("candidate", "pruned", "static_infeasible"))
    n_trials = settings.trials or max(20, n_live // 4)

    native = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5; older ones take a constraints_func

    def constraints(trial: Any) -> tuple[float]:
        return (float(trial.user_attrs.get("violation", 1.0)),)

    def constrain(trial: Any, value: float) -> None:
        trial.set_user_attr("violation", value)
        if native:
            trial.set_constraint("slo", value)

    kw: dict[str, Any] = {} if native else {"constraints_func": constraints}
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=10, **kw)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    seen: dict[int, dict[str, Any]] = {}
    batch = max(runner.ex.jobs, 1)
    trials = 0
    t0 = time.perf_counter()
    while trials < n_trials:
        asked = []
        for _ in range(min(batch, n_trials - trials)):
            tr = study.ask()
            key = tuple(tr.suggest_int(f"d{k}", 0, n - 1) for k, n in enumerate(dims))
            asked.append((tr, coords.get(key)))
            trials += 1
        todo = sorted({k for _, k in asked if k is not None and records[k].status == "candidate" and k not in seen})
        if todo:
            for r in runner.run(_tasks(records, todo, 1.0, settings.seed), "tpe"):
                records[r["index"]].add(r)
                seen[r["index"]] = r
        for tr, k in asked:
            if k is None:
                study.tell(tr, state=optuna.trial.TrialState.PRUNED)
                continue
            rec = records[k]
            if k in seen:
                res = seen[k]
                constrain(tr, violation(res))
                study.tell(tr, _cost(res))
            else:  # known infeasible without simulating (static or bound): a feasibility violation
                constrain(tr, 1.0)
                price = float(rec.cand.doc.get("price_per_hour_usd", 0.0)) * float(rec.cand.doc.get("replicas", 1) or 1)
                study.tell(tr, price)
        if len(seen) >= sum(1 for r in records if r.status in ("candidate", "evaluated")):
            break
    log.append(
        {"fraction": 1.0, "requests": None, "candidates": len(seen), "simulation_s": runner.simulation_s,
         "wall_s": time.perf_counter() - t0, "trials": trials}
    )
    return trials


# --------------------------------------------------------------------------- robustness


def finalists(records: list[Record], n: int) -> list[int]:
    full = [(rank_key(r.final), k) for k, r in enumerate(records) if r.final is not None and _passed(r.final)]
    return [k for _, k in sorted(full)[:n]]


def _robustness(runner: _Runner, records: list[Record], trace: Trace, settings: SearchSettings) -> None:
    fin = finalists(records, settings.finalists)
    if not fin:
        return
    reps: dict[int, list[dict[str, Any]]] = {}
    for k in fin:
        f = records[k].final
        assert f is not None
        reps[k] = [f]
    if settings.replications:
        tasks = [
            Task(k, records[k].cand.doc, records[k].cand.variant_key, 1.0, settings.seed + 1 + j)
            for k in fin
            for j in range(settings.replications)
        ]
        for r in runner.run(tasks, "robustness: replications"):
            reps[r["index"]].append(r)
    head: dict[int, dict[str, Any]] = {}
    if settings.headroom:
        head = _headroom(runner, records, fin, settings)
    for k in fin:
        records[k].robustness = {
            "seeds": [r["seed"] for r in reps[k]],
            "confidence": settings.confidence,
            "metrics": _intervals(reps[k], settings.confidence),
            "pass_rate": float(np.mean([_passed(r) for r in reps[k]])),
            **({"headroom": head[k]} if k in head else {}),
        }


def _intervals(results: list[dict[str, Any]], conf: float) -> dict[str, Any]:
    """Per SLO metric: mean, confidence interval over seeds, and whether the adverse end meets the limit."""
    out: dict[str, Any] = {}
    first: SloResult | None = results[0]["slo"]
    if first is None:
        return out
    for name, c in first.checks.items():
        vals = [r["slo"].checks[name].value for r in results]
        if any(v is None for v in vals):
            out[name] = {"mean": None, "low": None, "high": None, "n": len(vals), "limit": c.limit, "within_limit": False}
            continue
        a = np.asarray(vals, dtype=float)
        n = len(a)
        mean = float(a.mean())
        half = t_quantile(conf, n - 1) * float(a.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        lo, hi = mean - half, mean + half
        adverse = hi if name in _MAX_SLOS else lo
        ok = (adverse <= c.limit) if name in _MAX_SLOS else (adverse >= c.limit)
        out[name] = {
            "mean": mean,
            "low": lo if math.isfinite(lo) else None,
            "high": hi if math.isfinite(hi) else None,
            "n": n,
            "limit": c.limit,
            "within_limit": bool(ok),
        }
    return out


def _headroom(runner: _Runner, records: list[Record], fin: list[int], settings: SearchSettings) -> dict[int, dict[str, Any]]:
    """Largest rate multiplier (≤ headroom_max) that still meets every SLO, by bisection (seed of the search)."""
    lo = dict.fromkeys(fin, 1.0)
    hi: dict[int, float | None] = dict.fromkeys(fin, None)

    def probe(rates: dict[int, float]) -> dict[int, bool]:
        tasks = [
            Task(k, records[k].cand.doc, records[k].cand.variant_key, 1.0, settings.seed, rate) for k, rate in rates.items()
        ]
        return {r["index"]: _passed(r) for r in runner.run(tasks, "robustness: headroom")}

    top = probe(dict.fromkeys(fin, settings.headroom_max))
    open_ = []
    for k in fin:
        if top[k]:
            lo[k] = settings.headroom_max
        else:
            hi[k] = settings.headroom_max
            open_.append(k)
    for _ in range(settings.headroom_steps):
        if not open_:
            break
        mids = {k: math.sqrt(lo[k] * (hi[k] or settings.headroom_max)) for k in open_}
        ok = probe(mids)
        for k in open_:
            if ok[k]:
                lo[k] = mids[k]
            else:
                hi[k] = mids[k]
    return {
        k: {
            "rate_multiplier": round(lo[k], 4),
            "fails_at": round(hk, 4) if (hk := hi[k]) is not None else None,
            "capped": hi[k] is None,
        }
        for k in fin
    }

