"""The sections of one run: a simulation (SLO checks, latency percentiles and CDF,
replicas / queue / cold starts / cache hits over time, cost per pool) and a load test
(the same numbers, plus the generator's health and the answers it got)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Facts, Notes, Plot, Row, Section, Table, badge, num, ok_cell, txt
from servewise.reports._plots import PALETTE, cdf_plot, figure, to_plot
from servewise.reports._view_common import Links, counts_facts, file_facts, latency_limits, percentiles_table, slo_table
from servewise.results import SERVED, Generator, PoolUsage, SimResult, Summary, Timeline, requests_path, served

__all__ = ["sim_view", "measured_view", "generator_facts", "mean_count"]


def mean_count(enter: np.ndarray, leave: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-average number of intervals [enter, leave) open in each window between ``edges``.

    Exact: each interval adds its overlap with a window, over the window's width. Computed
    as the integral of the count (sum of ramps max(t - enter, 0) - max(t - leave, 0)) at
    the edges, which is O((n + m) log n) with sorting.
    """

    def integral(t: np.ndarray, events: np.ndarray) -> np.ndarray:
        # sum over events of max(t - e, 0)
        e = np.sort(events)
        k = np.searchsorted(e, t, side="right")
        csum = np.concatenate([[0.0], np.cumsum(e)])
        return k * t - csum[k]

    area = integral(edges, enter) - integral(edges, leave)
    return np.diff(area) / np.diff(edges)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table.columns:
        return np.full(len(table), np.nan)
    return table[name].to_numpy(dtype=float, na_value=np.nan)


def _replicas_panel(a: Axes, tl: Timeline, table: pd.DataFrame | None) -> None:
    a.step(tl.t_s, tl.replicas, where="post", color=PALETTE[0])
    a.set_ylabel("replicas")
    a.set_ylim(bottom=0)
    if table is not None:
        waited = _column(table, "cold_start_s") > 0
        if waited.any():
            arrival = _column(table, "arrival_s")[waited]
            a.scatter(arrival, np.zeros(len(arrival)), marker="|", color="#dc2626", s=40,
                      label="request waited for a cold start")  # fmt: skip
            a.legend(loc="upper right")
    a.set_title("replicas over time")


def _request_panels(q: Axes, r: Axes, table: pd.DataFrame, t_end: float) -> None:
    width = max(t_end / 80.0, 0.25)
    edges = np.arange(0.0, t_end + width, width)
    centres = (edges[:-1] + edges[1:]) / 2
    arrival, start, end = _column(table, "arrival_s"), _column(table, "start_s"), _column(table, "end_s")
    waited, done = np.isfinite(start), np.isfinite(end)
    q.plot(centres, mean_count(arrival[done], end[done], edges), color=PALETTE[1], label="in the system")
    q.plot(centres, mean_count(arrival[waited], start[waited], edges), color=PALETTE[3], label="waiting in a queue")
    q.set_ylabel("requests")
    q.set_ylim(bottom=0)
    q.legend(loc="upper right")
    q.set_title(f"requests in the system and queued (time average per {width:.3g} s)")
    status = table["status"].astype(str).to_numpy()
    ok, _ = np.histogram(arrival[np.isin(status, SERVED)], edges)
    hits, _ = np.histogram(arrival[status == "cache_hit"], edges)
    rejected, _ = np.histogram(arrival[np.isin(status, ("rejected", "failed"))], edges)
    r.plot(centres, ok / width, color=PALETTE[2], label="served / s")
    if hits.any():
        r.plot(centres, hits / width, color=PALETTE[5], label="cache hits / s")
    if rejected.any():
        r.plot(centres, rejected / width, color="#dc2626", label="rejected or failed / s")
    r.set_ylabel("req/s")
    r.legend(loc="upper right")
    r.set_title(f"arrivals by outcome ({width:.3g} s windows)")


def _timeline_plot(sim: SimResult, table: pd.DataFrame | None) -> Plot | None:
    """Replicas, queued requests and served / cache-hit rates over time, one panel each."""
    tl = sim.timeline
    if table is not None:
        arrival = _column(table, "arrival_s")
        if not np.isfinite(arrival).any():  # no requests (a header-only table), or no arrival times
            table = None
    steps = len(tl.t_s) >= 2 and len(tl.t_s) == len(tl.replicas)
    if table is None and not steps:
        return None
    t_end = float(tl.t_s[-1]) if tl.t_s else 0.0
    if table is not None:
        ends = np.concatenate([_column(table, "end_s"), _column(table, "arrival_s")])
        t_end = max(t_end, float(np.nanmax(ends)))
    panels = (1 if steps else 0) + (2 if table is not None else 0)
    with figure(7.5, 1.7 * panels + 0.6, nrows=panels, sharex=True) as (fig, ax):
        axes = list(ax[:, 0])
        if steps:
            _replicas_panel(axes.pop(0), tl, table)
        if table is not None:
            _request_panels(axes[0], axes[1], table, t_end)
        ax[-1, 0].set_xlabel("time (s)")
        return to_plot(
            fig,
            alt="Replicas, queue and request outcomes over time",
            caption="Over the run: replicas up (red ticks: requests that waited for a cold start), requests in "
            "the system and waiting in a queue, and arrivals per second by outcome.",
        )


def _ttft_cdf(name: str, table: pd.DataFrame | None) -> Plot | None:
    ttft = served(table, "ttft_s")
    return cdf_plot([(name, ttft)], what="time to first token", caption="TTFT CDF.") if len(ttft) else None


def _fleet_facts(s: Summary) -> Facts:
    fleet = [
        ("replicas", txt(f"mean {fmt.plain(s.mean_replicas)}, max {fmt.plain(s.max_replicas)}")),
        ("cold starts", num(s.cold_starts, fmt.count)),
        ("requests that waited for one", num(s.cold_start_requests, fmt.count)),
        ("restarts / retries", txt(f"{fmt.count(s.restarts)} / {fmt.count(s.retries)}")),
        ("utilisation", num(s.utilisation, fmt.percent)),
        ("availability", num(s.availability, fmt.percent)),
        ("cache hit ratio", num(s.cache_hit_ratio, fmt.percent)),
    ]
    if s.prefix_hit_ratio is not None:
        fleet.append(("prefix-cache hit ratio", num(s.prefix_hit_ratio, fmt.percent)))
    if s.preemptions is not None:
        fleet.append(("preemptions", num(s.preemptions, fmt.count)))
    return Facts(fleet, caption="Fleet")


def _pools_table(pools: list[PoolUsage]) -> Table | None:
    if not pools:
        return None
    return Table(
        "Pools",
        ["pool", "instance type", "replicas launched", "replica time", "utilisation", "requests", "cost"],
        [Row([txt(p.name), txt(p.instance_type), num(p.replicas_launched, fmt.count), num(p.replica_seconds, fmt.seconds),
              num(p.utilisation, fmt.percent), num(p.requests, fmt.count), num(p.cost_usd, fmt.usd)]) for p in pools],
    )  # fmt: skip


def sim_view(a: Artifact, links: Links) -> Section:
    sim = a.sim
    s, meta, slo = sim.summary, sim.metadata, sim.slo
    head = f"p95 {fmt.seconds(s.latency_s.p95)} · {fmt.rate(s.throughput_rps)} · {fmt.usd(s.cost_usd)}"
    if slo is not None:
        head += f" · SLOs {'met' if slo.passed else 'MISSED'}"
    sec = Section(
        kind="sim_result",
        kind_label="Simulation",
        title=meta.deployment_name or a.path.parent.name,
        headline=head,
        status=None if slo is None else ("pass" if slo.passed else "fail"),
    )
    if slo is not None:
        sec.verdict = badge("pass" if slo.passed else "fail",
                            "every SLO met" if slo.passed else f"missed: {', '.join(slo.failed())}")  # fmt: skip
    run = [
        ("deployment", txt(meta.deployment_name)),
        ("trace", txt(meta.trace_source, limit=160)),
        ("requests in trace", num(meta.trace_requests, fmt.count)),
        ("seed", txt(meta.seed)),
        ("warm-up left out", num(s.warmup_s, fmt.seconds)),
    ]
    sec.add(Facts(run, caption="Run"), file_facts(a, links, [("per request", requests_path(a.folder))]),
            counts_facts(s), slo_table(slo, "SLO checks"), percentiles_table(s))  # fmt: skip
    table = a.requests()
    sec.add(cdf_plot([("simulated", served(table))], what="latency", limits=latency_limits(slo),
                     caption="Latency CDF of served requests (dots: p95 and p99)."))  # fmt: skip
    sec.add(_ttft_cdf("simulated", table), _timeline_plot(sim, table), _fleet_facts(s))
    cost = [
        ("cost of the run", num(s.cost_usd, fmt.usd)),
        ("per hour", num(s.cost_per_hour_usd, fmt.usd)),
        ("per million requests", num(s.cost_per_million_requests_usd, fmt.usd)),
    ]
    sec.add(Facts(cost, caption="Cost"), _pools_table(sim.pools))
    return sec


def generator_facts(gen: Generator) -> Facts:
    items = [
        ("valid", ok_cell(gen.valid, yes="yes", no="NO")),
        ("offered rate", num(gen.offered_rps, fmt.rate)),
        ("achieved rate", num(gen.achieved_rps, fmt.rate)),
        *((f"send lag {k}", num(gen.send_lag_s[k], fmt.seconds)) for k in ("p50", "p99", "max")),
    ]
    shown = ("valid", "offered_rps", "achieved_rps", "send_lag_s", "invalid_reasons")
    for k, v in gen.items():
        if k not in shown and not isinstance(v, dict | list):
            items.append((k.replace("_", " "), txt(v)))
    return Facts(items, caption="Load generator health")


def measured_view(a: Artifact, links: Links) -> Section:
    m = a.measured
    s, gen = m.summary, m.generator
    sec = Section(
        kind="measured",
        kind_label="Load test",
        title=m.metadata.url or a.path.parent.name,
        headline=f"p95 {fmt.seconds(s.latency_s.p95)} · {fmt.rate(s.throughput_rps)} · "
        f"{fmt.percent(s.rejection_ratio)} rejected" + ("" if gen.valid else " · INVALID measurement"),
        status=None if gen.valid else "invalid",
    )
    if not gen.valid:
        sec.verdict = badge("invalid", "; ".join(gen.invalid_reasons) or "the load generator fell behind")
    run = [(str(k).replace("_", " "), txt(v, limit=160)) for k, v in m.metadata.items() if not isinstance(v, dict | list)]
    sec.add(Facts(run, caption="Run"), file_facts(a, links, [("per request", requests_path(a.folder))]),
            counts_facts(s), percentiles_table(s, "Percentiles (exact, from every request's raw latency)"))  # fmt: skip
    table = a.requests()
    sec.add(cdf_plot([("measured", served(table))], what="latency",
                     caption="Latency CDF of served requests, from the scheduled send time (dots: p95 and p99)."))  # fmt: skip
    sec.add(_ttft_cdf("measured", table), generator_facts(gen))
    if m.status_codes:
        sec.add(Table("HTTP status codes", ["status", "responses"],
                      [Row([txt(k), num(v, fmt.count)]) for k, v in m.status_codes.items()]))  # fmt: skip
    if m.errors:
        sec.add(Notes([f"{n} × {e}" for e, n in m.errors.items()], level="fail", caption="Errors (most common)"))
    return sec
