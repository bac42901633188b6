"""The plan's section: the verdict, the ranked table, the Pareto plot (cost against tail
latency), the winner's binding SLO, margins and robustness, the deploy files."""

from __future__ import annotations

from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Cell, Facts, Notes, Plot, Row, Section, Table, badge, num, ok_cell, txt
from servewise.reports._plots import PALETTE, figure, time_unit, to_plot
from servewise.reports._view_common import Links, file_facts, slo_table, slo_value
from servewise.results import Binding, Candidate, Plan, Robustness

__all__ = ["plan_view", "MAX_RANKED_ROWS"]

MAX_RANKED_ROWS = 30
"""The plan's ranked table shows this many candidates; the rest are in plan.json."""

_DEPLOY_FILES = {
    "deployment.yaml": "servewise deployment (servewise serve)",
    "profile.json": "the profile the deployment uses",
    "k8s.yaml": "Kubernetes: ConfigMap, Deployment, Service, HPA",
    "kserve.yaml": "KServe InferenceService",
    "docker-compose.yaml": "Docker Compose",
    "nginx.conf": "nginx load balancer for the compose file",
    "prometheus-alerts.yaml": "Prometheus alert rules, one per SLO",
    "grafana-dashboard.json": "Grafana dashboard",
    "locustfile.py": "Locust open-loop replay",
    "trace.csv": "the trace the locustfile replays",
    "expected.json": "predicted metrics and tolerances (servewise validate --expected)",
}

_NOT_SIMULATED = {"pruned": " by an analytic bound", "static_infeasible": " by a static check (memory, drift, inventory)"}


def _pareto_plot(plan: Plan) -> Plot | None:
    pts = [(c, c.cost_per_hour_usd, c.tail_latency_s) for c in plan.candidates if c.fidelity == 1.0]
    pts_ = [(c, cost, tail) for c, cost, tail in pts if cost is not None and tail is not None]
    if not pts_:
        return None
    front = set(plan.pareto)
    unit, scale = time_unit([t for _, _, t in pts_])
    llm = any(c.metrics is not None and c.metrics.ttft_s.p99 is not None for c, _, _ in pts_)
    with figure(7.5, 3.8) as (fig, ax):
        a = ax[0, 0]
        groups = (
            ([(cost, t) for c, cost, t in pts_ if not c.feasible], dict(marker="x", color="#9ca3af", s=22, label="misses an SLO")),
            ([(cost, t) for c, cost, t in pts_ if c.feasible and c.id not in front],
             dict(color=PALETTE[0], s=22, alpha=0.7, label="meets the SLOs")),
        )  # fmt: skip
        for xy, style in groups:
            if xy:
                a.scatter([p[0] for p in xy], [p[1] * scale for p in xy], **style)  # type: ignore[arg-type]
        on_front = sorted((cost, t) for c, cost, t in pts_ if c.id in front)
        if on_front:
            a.plot([p[0] for p in on_front], [p[1] * scale for p in on_front], "-o", color=PALETTE[1], ms=5, label="Pareto front")
        w = plan.by_id.get(plan.winner_id) if plan.winner_id else None
        if w is not None and w.tail_latency_s is not None and w.cost_per_hour_usd is not None:
            a.scatter([w.cost_per_hour_usd], [w.tail_latency_s * scale], marker="*", s=220, color="#ca8a04",
                      edgecolors="#111827", zorder=6, label="winner")  # fmt: skip
        lim = plan.slo.get("p99_ttft_s" if llm else "p99_latency_s")
        if lim is not None:
            a.axhline(lim * scale, color="#dc2626", ls="--", lw=1, label="p99 SLO")
        tails = [t for _, _, t in pts_]
        if min(tails) > 0 and max(tails) / min(tails) > 30:
            a.set_yscale("log")
        a.set_xlabel("cost ($/hour)")
        a.set_ylabel(f"p99 {'TTFT' if llm else 'latency'} ({unit})")
        a.set_title("cost against tail latency, every candidate simulated on the whole trace")
        a.legend(loc="upper right")
        return to_plot(
            fig,
            alt="Pareto plot of cost against tail latency",
            caption="Each candidate simulated on the whole trace. The Pareto front is drawn among those that meet "
            "every SLO (cost, tail latency and accuracy drift); the star is the winner, the cheapest that meets them.",
        )


def _binding_cell(b: Binding | None) -> Cell:
    if b is None or b.name is None:
        return txt(None)
    text = f"{b.name}: {slo_value(b.name, b.value).text} / {slo_value(b.name, b.limit).text}"
    return txt(text + (" (bound)" if b.bound else ""))


def _search_facts(plan: Plan) -> Facts:
    srch, meta = plan.search, plan.metadata
    slos = ", ".join(f"{k} {'≥' if k.startswith('min_') else '≤'} {slo_value(k, v).text}" for k, v in plan.slo.items())
    return Facts(
        [
            ("setting", txt(plan.setting)),
            ("SLOs", txt(slos or "none")),
            ("trace", txt(meta.trace_source, limit=160)),
            ("requests", num(meta.trace_requests, fmt.count)),
            ("strategy", txt(f"{srch.strategy} on {srch.executor} ({srch.jobs} jobs)")),
            ("candidates", txt(f"{srch.candidates} of {srch.combinations} combinations; "
                               + ", ".join(f"{n} {k}" for k, n in srch.statuses.items()))),
            ("simulations", txt(f"{srch.simulations} ({fmt.seconds(srch.simulation_s)} of simulation, "
                                f"{fmt.seconds(srch.wall_s)} wall)")),
        ],
        caption="Search",
    )  # fmt: skip


def _robustness_facts(rob: Robustness) -> Facts:
    items = [("seeds", txt(", ".join(str(x) for x in rob.seeds))), ("pass rate", num(rob.pass_rate, fmt.percent))]
    head = rob.headroom
    if head is not None:
        items.append(("load headroom", txt(f"×{fmt.plain(head.rate_multiplier)} the trace's rate"
                                           + (f" (fails at ×{fmt.plain(head.fails_at)})" if head.fails_at else "")
                                           + (" (capped)" if head.capped else ""))))  # fmt: skip
    for name, m in rob.metrics.items():
        items.append((f"{name} ({fmt.percent(rob.confidence, digits=0)} CI)",
                      txt(f"{slo_value(name, m.low).text} – {slo_value(name, m.high).text}"
                          f" (limit {slo_value(name, m.limit).text})", status=None if m.within_limit else "fail")))  # fmt: skip
    return Facts(items, caption="Winner's robustness (seed replications, load headroom)")


def _closest_table(plan: Plan) -> Table:
    rows = []
    for cid in plan.closest:
        c = plan.by_id.get(cid)
        if c is None:
            continue
        rows.append(Row([txt(c.label), num(c.cost_per_hour_usd, fmt.usd), _binding_cell(c.binding_slo),
                         num(c.violation, lambda v: fmt.percent(v, digits=1))]))  # fmt: skip
    return Table("Closest candidates (none meets every SLO)", ["candidate", "cost/h", "binding SLO: value / limit",
                                                                "missed by"], rows)  # fmt: skip


def _ranking_row(plan: Plan, rank: int, c: Candidate, front: set[str]) -> Row:
    m, rob = c.metrics, c.robustness
    cls = "winner" if c.id == plan.winner_id else ("front" if c.id in front else (None if c.feasible else "muted"))
    return Row(
        [num(rank, fmt.count), txt(c.label), num(c.cost_per_hour_usd, fmt.usd),
         num(c.cost_per_million_requests_usd, fmt.usd), num(m.latency_s.p95 if m is not None else None, fmt.seconds),
         num(c.tail_latency_s, fmt.seconds), _binding_cell(c.binding_slo),
         num(c.binding_slo.margin if c.binding_slo is not None else None, lambda v: fmt.percent(v, digits=1, signed=True)),
         ok_cell(c.feasible, yes="yes", no="no"), txt("yes" if c.id in front else ""),
         num(rob.pass_rate, fmt.percent) if rob is not None else txt(None)],
        cls=cls,
    )  # fmt: skip


def _ranking_table(plan: Plan) -> Table:
    ranked = plan.ranked()
    front = set(plan.pareto)
    rows = [_ranking_row(plan, k, c, front) for k, c in enumerate(ranked[:MAX_RANKED_ROWS], 1)]
    more = len(ranked) - len(rows)
    return Table(
        "Ranking (cheapest feasible first)",
        ["#", "candidate", "cost/h", "cost/M req", "p95", "p99 (tail)", "binding SLO: value / limit", "margin",
         "meets SLOs", "Pareto", "robust pass rate"],
        rows,
        note=(f"{more} more ranked candidates in plan.json. " if more > 0 else "")
        + "Ranked by the advisor's rule: those that meet every SLO by cost, then replicas, then margin; the rest by "
        "how far they miss. Binding SLO: the one with the smallest margin.",
    )  # fmt: skip


def _not_simulated(plan: Plan) -> Notes | None:
    others: dict[str, int] = {}
    for c in plan.candidates:
        if c.status != "evaluated" or c.fidelity != 1.0:
            others[c.status] = others.get(c.status, 0) + 1
    if not others:
        return None
    return Notes([f"{n} candidates {k}{_NOT_SIMULATED.get(k, '')}" for k, n in sorted(others.items())], level="info",
                 caption="Candidates not simulated on the whole trace")  # fmt: skip


def plan_view(a: Artifact, links: Links) -> Section:
    plan = a.plan
    winner = plan.by_id.get(plan.winner_id) if plan.winner_id else None
    feasible_n = sum(1 for c in plan.candidates if c.feasible)
    if winner is not None:
        detail = f"winner {winner.label} at {fmt.usd(winner.cost_per_hour_usd)}/h"
        bind = winner.binding_slo
        if bind is not None and bind.name:
            detail += f"; binding SLO {bind.name} (margin {fmt.percent(bind.margin, digits=1)})"
    else:
        detail = "no candidate meets every SLO"
    sec = Section(
        kind="plan",
        kind_label="Plan",
        title=plan.name or a.path.parent.name,
        headline=f"{detail} · {len(plan.candidates)} candidates, {feasible_n} feasible",
        status="pass" if winner is not None else "fail",
        verdict=badge("pass" if winner is not None else "fail", detail),
    )
    sec.add(_search_facts(plan), file_facts(a, links, [("deployment files", a.folder / "deploy")]))
    if winner is not None:
        sec.add(slo_table(winner.slo, f"Winner's SLOs and margins: {winner.label}"))
        if winner.robustness is not None:
            sec.add(_robustness_facts(winner.robustness))
    elif plan.closest:
        sec.add(_closest_table(plan))
    sec.add(_ranking_table(plan), _pareto_plot(plan), _not_simulated(plan))
    deploy = a.folder / "deploy"
    if deploy.is_dir():
        files = sorted(p for p in deploy.iterdir() if p.is_file())
        sec.add(Facts([(p.name, txt(_DEPLOY_FILES.get(p.name, "file"), href=links(p))) for p in files],
                      caption="Deploy the winner"))  # fmt: skip
    return sec
