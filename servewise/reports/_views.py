"""One view per artifact kind: what a reader needs to see of it, as a :class:`Section`.

- profile: the machine, a table of variants (load time, memory, drift, latency model,
  instability), latency against batch size and against sequence length per variant,
  memory and load time per variant, every instability flag with its remedy;
- sim_result: SLO checks, latency percentiles and CDF, replicas / queue / cold starts /
  cache hits over time, cost per pool;
- measured: the same for a load test, plus the generator's health;
- plan: the verdict, the ranked table, the Pareto plot (cost against tail latency), the
  winner's binding SLO and margins, the deploy files;
- validation: the verdict first, predicted and measured side by side, overlaid CDFs;
- benchmark: each case's samples.

Views read the JSON documents (and the ``requests.csv`` beside them); they never import
a stage. Strings from the artifacts go into blocks as they are: the template escapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Cell, Facts, Heading, Notes, Plot, Row, Section, Table, badge, num, ok_cell, txt
from servewise.reports._plots import PALETTE, cdf_plot, figure, time_unit, to_plot
from servewise.reports._plots import label as plot_label

__all__ = ["VIEWS", "Links", "section_for"]

Links = Callable[[Path], str]
"""Turns a file's path into an href relative to the page."""

_DISTS = (
    ("latency_s", "latency"),
    ("queue_s", "queue wait"),
    ("cold_start_s", "cold-start wait"),
    ("ttft_s", "time to first token"),
    ("tpot_s", "time per output token"),
    ("itl_s", "inter-token latency"),
)
_STATS = ("mean", "p50", "p90", "p95", "p99", "max")
_SERVED = ("completed", "cache_hit")
_SLO_LIMITS = {"p50_latency_s": "p50", "p90_latency_s": "p90", "p95_latency_s": "p95", "p99_latency_s": "p99"}
MAX_RANKED_ROWS = 30
"""The plan's ranked table shows this many candidates; the rest are in plan.json."""


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


# ----------------------------------------------------------------------------- shared pieces


def _percentiles(summary: dict[str, Any], caption: str = "Percentiles (exact, from every request)") -> Table | None:
    rows = []
    for key, label in _DISTS:
        d = summary.get(key)
        if not isinstance(d, dict) or all(d.get(s) is None for s in _STATS):
            continue
        rows.append(Row([txt(label), *(num(d.get(s), fmt.seconds) for s in _STATS)]))
    if not rows:
        return None
    return Table(caption, ["distribution", "mean", "p50", "p90", "p95", "p99", "max"], rows)


def _margin(name: str, value: Any, limit: Any) -> float | None:
    """How far inside its limit a value is, as a fraction of the limit (negative: outside)."""
    v, lim = fmt.number(value), fmt.number(limit)
    if v is None or lim is None or lim == 0:
        return None
    return (v - lim) / lim if name.startswith("min_") else (lim - v) / lim


def _slo_value(name: str, v: Any) -> Cell:
    if name.endswith("_s"):
        return num(v, fmt.seconds)
    if name.endswith("_ratio") or name == "min_availability":
        return num(v, fmt.percent)
    if name.endswith("_rps"):
        return num(v, fmt.rate)
    return num(v)


def _slo_table(slo: dict[str, Any] | None, caption: str) -> Table | None:
    checks = _get(slo, "checks")
    if not isinstance(checks, dict) or not checks:
        return None
    rows = []
    for name, c in checks.items():
        m = _margin(name, c.get("value"), c.get("limit"))
        rows.append(
            Row(
                [txt(name), _slo_value(name, c.get("limit")), _slo_value(name, c.get("value")),
                 num(m, lambda v: fmt.percent(v, digits=1, signed=True)), ok_cell(c.get("pass"))],
                cls=None if c.get("pass") else "fail",
            )  # fmt: skip
        )
    return Table(caption, ["SLO", "limit", "value", "margin", "result"], rows,
                 note="margin: how far inside the limit, as a share of the limit (negative: missed by)")  # fmt: skip


def _served(table: pd.DataFrame | None, column: str = "latency_s") -> np.ndarray:
    if table is None or column not in table.columns:
        return np.array([])
    rows = table[table["status"].isin(_SERVED)] if "status" in table.columns else table
    v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    return v[np.isfinite(v)]


def _read_requests(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, low_memory=False)
    except (OSError, ValueError):
        return None


def _latency_limits(slo: dict[str, Any] | None) -> list[tuple[str, float]]:
    out = []
    for name, c in (_get(slo, "checks") or {}).items():
        if name in _SLO_LIMITS and fmt.number(c.get("limit")) is not None:
            out.append((f"SLO {name} ≤ {fmt.seconds(c['limit'])}", float(c["limit"])))
    return out


def _file_facts(a: Artifact, links: Links, extra: Sequence[tuple[str, Path]] = ()) -> Facts:
    items = [("file", txt(a.path.name, href=links(a.path)))]
    for label, p in extra:
        if p.exists():
            items.append((label, txt(p.name + ("/" if p.is_dir() else ""), href=links(p))))
    return Facts(items, caption="Files")


# ----------------------------------------------------------------------------- profile


def _point_label(p: dict[str, Any]) -> str:
    return f"{p.get('phase')} b={p.get('batch_size')} s={p.get('seq_len')}"


def _variant_label(v: dict[str, Any], several_models: bool) -> str:
    return f"{v.get('model')} {v.get('name')}" if several_models else str(v.get("name"))


def _drift_cell(v: dict[str, Any]) -> Cell:
    acc = v.get("accuracy")
    if not isinstance(acc, dict):
        err = v.get("accuracy_error")
        return txt("—" if not err else "error", status="warn" if err else None, limit=None)
    if acc.get("mean_kl") is not None:
        return Cell(text=f"KL {acc['mean_kl']:.3g} nats", value=float(acc["mean_kl"]), num=True)
    if acc.get("cosine_mean") is not None:
        d = max(1.0 - float(acc["cosine_mean"]), 0.0)
        return Cell(text=f"1−cos {d:.3g}", value=d, num=True)
    return txt(None)


def _profile_latency_plot(variants: list[dict[str, Any]], several: bool, phase: str, x_axis: str) -> Plot | None:
    """Median latency against ``x_axis`` (batch_size or seq_len), one colour per variant,
    one line per value of the other axis; the bars span the 95% CI of the median."""
    other = "seq_len" if x_axis == "batch_size" else "batch_size"
    lines = []
    for i, v in enumerate(variants):
        pts = [p for p in v.get("points") or [] if p.get("phase") == phase and p.get("status") == "measured"]
        by_other: dict[int, list[dict[str, Any]]] = {}
        for p in pts:
            by_other.setdefault(int(p[other]), []).append(p)
        for o, group in sorted(by_other.items()):
            group.sort(key=lambda p: p[x_axis])
            x = [p[x_axis] for p in group]
            y = [p["latency_s"]["p50"] for p in group]
            err = [p["latency_s"]["p50"] * p["latency_s"].get("ci_rel", 0.0) for p in group]
            unstable = [not p.get("stable", True) for p in group]
            lines.append((i, _variant_label(v, several), o, x, y, err, unstable))
    if not lines or all(len(ln[3]) < 2 for ln in lines):
        return None
    unit, scale = time_unit([y for ln in lines for y in ln[4]])
    others = sorted({ln[2] for ln in lines})
    markers = "osD^vP*Xh"
    with figure(7.5, 3.6) as (fig, ax):
        a = ax[0, 0]
        for i, name, o, x, y, err, unstable in lines:
            k = others.index(o) % len(markers)
            colour = PALETTE[i % len(PALETTE)]
            a.errorbar(x, np.array(y) * scale, yerr=np.array(err) * scale, color=colour, marker=markers[k], ms=4,
                       lw=1.2, capsize=2, alpha=0.4 + 0.6 * (k + 1) / len(others),
                       label=f"{plot_label(name)}, {'seq' if other == 'seq_len' else 'batch'} {o}")  # fmt: skip
            bad = [(xx, yy) for xx, yy, u in zip(x, y, unstable, strict=True) if u]
            if bad:
                a.scatter([b[0] for b in bad], [b[1] * scale for b in bad], s=60, facecolors="none", edgecolors="#dc2626", zorder=5)
        a.set_xscale("log", base=2)
        a.set_xticks(sorted({xx for ln in lines for xx in ln[3]}))
        a.get_xaxis().set_major_formatter("{x:g}")
        a.set_xlabel("batch size" if x_axis == "batch_size" else "sequence length (tokens)")
        a.set_ylabel(f"median latency ({unit})")
        a.set_title(f"{phase}: latency vs {'batch size' if x_axis == 'batch_size' else 'sequence length'}")
        a.legend(loc="upper left", ncols=2 if len(lines) > 6 else 1)
        what = "batch size" if x_axis == "batch_size" else "sequence length"
        return to_plot(
            fig,
            alt=f"Median {phase} latency against {what} for each variant",
            caption=f"Median latency of one {phase} pass against {what}; bars: 95% CI of the median; "
            "red rings: points flagged unstable.",
        )


def _profile_resources_plot(variants: list[dict[str, Any]], several: bool) -> Plot | None:
    vs = [v for v in variants if v.get("peak_mem_bytes") is not None or v.get("load_time_s") is not None]
    if not vs:
        return None
    labels = [_variant_label(v, several) for v in vs]
    with figure(7.5, 2.8, ncols=2) as (fig, ax):
        mem = ax[0, 0]
        peak = np.array([v.get("peak_mem_bytes") or 0 for v in vs], float) / 2**20
        base = np.array([v.get("base_mem_bytes") or 0 for v in vs], float) / 2**20
        y = np.arange(len(vs))
        mem.barh(y, peak, color=[PALETTE[i % len(PALETTE)] for i in range(len(vs))], alpha=0.85, label="peak RSS / allocator")
        mem.barh(y, base, color="#9ca3af", label="before loading")
        mem.set_yticks(y, [plot_label(x) for x in labels])
        mem.invert_yaxis()
        mem.set_xlabel("memory (MiB)")
        mem.set_title("peak memory")
        mem.legend(loc="lower right")
        lt = ax[0, 1]
        for i, v in enumerate(vs):
            samples = v.get("load_time_samples_s") or ([v["load_time_s"]] if v.get("load_time_s") is not None else [])
            lt.scatter(samples, [i] * len(samples), color=PALETTE[i % len(PALETTE)], s=18)
            if v.get("load_time_s") is not None:
                lt.plot([v["load_time_s"]] * 2, [i - 0.3, i + 0.3], color="#111827", lw=2)
        lt.set_yticks(y, [plot_label(x) for x in labels])
        lt.invert_yaxis()
        lt.set_xlabel("load time (s)")
        lt.set_xlim(left=0)
        lt.set_title("load time (cold start)")
        return to_plot(
            fig,
            alt="Peak memory and load time per variant",
            caption="Peak memory (grey: the worker before loading the model) and load time from disk to "
            "first inference per variant (dots: each fresh process; bar: the value the simulator uses).",
        )


def profile_view(a: Artifact, links: Links) -> Section:
    d = a.data
    hw = d.get("hardware") or {}
    variants = [v for v in d.get("variants") or [] if isinstance(v, dict)]
    models = sorted({str(v.get("model")) for v in variants})
    several = len(models) > 1
    measured = [v for v in variants if v.get("status") == "measured"]
    unstable = [(v, p) for v in variants for p in v.get("points") or [] if p.get("stable") is False]
    failed = [v for v in variants if v.get("status") in ("failed", "incomplete")]
    device = hw.get("gpu_name") or hw.get("cpu_model") or "unknown hardware"
    est = " (estimated by transfer, not measured)" if d.get("estimated") else ""
    s = Section(
        kind="profile",
        kind_label="Profile",
        title=", ".join(models) or "no model",
        headline=f"{len(measured)} of {len(variants)} variants measured on {device}{est}"
        + (f"; {len(unstable)} unstable points" if unstable else ""),
        status="warn" if (unstable or failed or d.get("status") != "complete") else None,
    )
    facts = [
        ("status", txt(d.get("status"), status=None if d.get("status") == "complete" else "warn")),
        ("created", txt(d.get("created_utc"))),
        ("CPU", txt(f"{hw.get('cpu_model')} · {hw.get('cpu_count')} CPUs · {hw.get('threads_used')} thread(s) used")),
        ("memory", txt(fmt.nbytes(hw.get("mem_bytes")))),
    ]
    if hw.get("gpu_name"):
        facts.append(("GPU", txt(f"{hw['gpu_name']} · {fmt.nbytes(hw.get('gpu_mem_bytes'))} · driver {hw.get('gpu_driver')} · CUDA {hw.get('cuda_version')}")))
    if hw.get("catalog_name"):
        facts.append(("catalog hardware", txt(hw["catalog_name"])))
    facts.append(
        ("software", txt(f"Python {hw.get('python_version')} · torch {hw.get('torch_version') or '—'} · "
                         f"onnxruntime {hw.get('onnxruntime_version') or '—'} · TensorRT {hw.get('tensorrt_version') or '—'}"))
    )  # fmt: skip
    facts.append(("CPU flags", txt(", ".join(hw.get("cpu_flags") or []) or "—")))
    grid = _get(d, "settings", "grid") or {}
    if grid:
        facts.append(("grid", txt(f"batch sizes {grid.get('batch_sizes')} × sequence lengths {grid.get('seq_lens')}")))
    s.add(Facts(facts, caption="Machine and run"), _file_facts(a, links))

    rows = []
    for v in variants:
        pts = v.get("points") or []
        n_meas = sum(p.get("status") == "measured" for p in pts)
        n_unst = sum(p.get("stable") is False for p in pts)
        lm = v.get("latency_model") or {}
        status = v.get("status")
        st = {"measured": "pass", "skipped": "muted", "failed": "fail", "incomplete": "warn"}.get(str(status))
        rows.append(
            Row(
                [
                    txt(_variant_label(v, several)),
                    txt(f"{v.get('dtype')} · {v.get('backend')} · {v.get('device')}"),
                    txt(status, status=st, limit=None),
                    num(v.get("load_time_s"), fmt.seconds),
                    num(v.get("peak_mem_bytes"), fmt.nbytes),
                    num(v.get("weights_bytes"), fmt.nbytes),
                    _drift_cell(v),
                    txt(f"{lm.get('kind')} ({fmt.percent(lm.get('cv_mape'), digits=1)} CV error)" if lm else None),
                    txt(f"{n_meas}" + (f" ({n_unst} unstable)" if n_unst else ""), status="warn" if n_unst else None),
                ],
                cls="muted" if status == "skipped" else None,
            )
        )
    s.add(
        Table(
            "Variants",
            ["variant", "dtype · backend · device", "status", "load time", "peak memory", "weights", "accuracy drift",
             "latency model", "points"],
            rows,
            note="accuracy drift against the fp32 reference: decoders mean KL of the next-token distribution, "
            "encoders 1 − mean cosine of the embeddings.",
        )  # fmt: skip
    )
    reasons = [f"{_variant_label(v, several)}: {v.get('status')} — {v.get('skip_reason') or v.get('error')}"
               for v in variants if v.get("status") != "measured" and (v.get("skip_reason") or v.get("error"))]  # fmt: skip
    if reasons:
        s.add(Notes(reasons, level="info", caption="Variants not measured"))
    for model in models:
        mv = [v for v in variants if v.get("model") == model]
        phases = [ph for ph in ("forward", "prefill", "decode") if any(p.get("phase") == ph for v in mv for p in v.get("points") or [])]
        if several:
            s.add(Heading(model))
        for ph in phases:
            s.add(_profile_latency_plot(mv, several, ph, "batch_size"), _profile_latency_plot(mv, several, ph, "seq_len"))
    s.add(_profile_resources_plot(variants, several))
    flags = [f"{_variant_label(v, several)} {_point_label(p)}: {p.get('instability')}" for v, p in unstable]
    warnings = [f"{_variant_label(v, several)}: {w}" for v in variants for w in v.get("warnings") or []]
    if flags:
        s.add(Notes(flags, level="warn", caption=f"Instability flags ({len(flags)} points)"))
    if warnings:
        s.add(Notes(warnings, level="warn", caption="Warnings"))
    return s


# ----------------------------------------------------------------------------- simulation and measurement


def _mean_count(enter: np.ndarray, leave: np.ndarray, edges: np.ndarray) -> np.ndarray:
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


def _timeline_plot(d: dict[str, Any], table: pd.DataFrame | None) -> Plot | None:
    """Replicas, queued requests and served / cache-hit rates over time, one panel each."""
    tl = d.get("timeline") or {}
    t_rep, n_rep = tl.get("t_s") or [], tl.get("replicas") or []
    if table is not None and not {"arrival_s", "status"} <= set(table.columns):
        table = None
    if table is None and len(t_rep) < 2:
        return None
    t_end = float(t_rep[-1]) if t_rep else 0.0
    if table is not None:
        ends = pd.to_numeric(table["end_s"], errors="coerce") if "end_s" in table.columns else table["arrival_s"]
        t_end = max(t_end, float(np.nanmax(ends.to_numpy(dtype=float))), float(table["arrival_s"].max()))
    panels = (1 if len(t_rep) >= 2 else 0) + (2 if table is not None else 0)
    with figure(7.5, 1.7 * panels + 0.6, nrows=panels, sharex=True) as (fig, ax):
        axes = list(ax[:, 0])
        if len(t_rep) >= 2:
            a = axes.pop(0)
            a.step(t_rep, n_rep, where="post", color=PALETTE[0])
            a.set_ylabel("replicas")
            a.set_ylim(bottom=0)
            if table is not None and "cold_start_s" in table.columns:
                cs = table[pd.to_numeric(table["cold_start_s"], errors="coerce") > 0]
                if len(cs):
                    a.scatter(cs["arrival_s"], np.zeros(len(cs)), marker="|", color="#dc2626", s=40, label="request waited for a cold start")
                    a.legend(loc="upper right")
            a.set_title("replicas over time")
        if table is not None:
            width = max(t_end / 80.0, 0.25)
            edges = np.arange(0.0, t_end + width, width)
            centres = (edges[:-1] + edges[1:]) / 2
            arrival = table["arrival_s"].to_numpy(dtype=float)
            nan = pd.Series(np.nan, index=table.index)
            start = pd.to_numeric(table.get("start_s", nan), errors="coerce").to_numpy(dtype=float)
            end = pd.to_numeric(table.get("end_s", nan), errors="coerce").to_numpy(dtype=float)
            waited = np.isfinite(start)
            done = np.isfinite(end)
            a = axes.pop(0)
            a.plot(centres, _mean_count(arrival[done], end[done], edges), color=PALETTE[1], label="in the system")
            a.plot(centres, _mean_count(arrival[waited], start[waited], edges), color=PALETTE[3], label="waiting in a queue")
            a.set_ylabel("requests")
            a.set_ylim(bottom=0)
            a.legend(loc="upper right")
            a.set_title(f"requests in the system and queued (time average per {width:.3g} s)")
            a = axes.pop(0)
            status = table["status"].astype(str).to_numpy()
            served, _ = np.histogram(arrival[np.isin(status, _SERVED)], edges)
            hits, _ = np.histogram(arrival[status == "cache_hit"], edges)
            rejected, _ = np.histogram(arrival[np.isin(status, ("rejected", "failed"))], edges)
            a.plot(centres, served / width, color=PALETTE[2], label="served / s")
            if hits.any():
                a.plot(centres, hits / width, color=PALETTE[5], label="cache hits / s")
            if rejected.any():
                a.plot(centres, rejected / width, color="#dc2626", label="rejected or failed / s")
            a.set_ylabel("req/s")
            a.legend(loc="upper right")
            a.set_title(f"arrivals by outcome ({width:.3g} s windows)")
        ax[-1, 0].set_xlabel("time (s)")
        return to_plot(
            fig,
            alt="Replicas, queue and request outcomes over time",
            caption="Over the run: replicas up (red ticks: requests that waited for a cold start), requests in "
            "the system and waiting in a queue, and arrivals per second by outcome.",
        )


def _counts_table(s: dict[str, Any]) -> Facts:
    items = [
        ("requests", num(s.get("requests"), fmt.count)),
        ("served", num(s.get("completed"), fmt.count)),
        ("cache hits", Cell(text=f"{fmt.count(s.get('cache_hits'))} ({fmt.percent(s.get('cache_hit_ratio'))})",
                            value=fmt.number(s.get("cache_hit_ratio")), num=True)),  # fmt: skip
        ("rejected", Cell(text=f"{fmt.count(s.get('rejected'))} ({fmt.percent(s.get('rejection_ratio'))})",
                          value=fmt.number(s.get("rejection_ratio")), num=True,
                          status="fail" if (s.get("rejected") or 0) > 0 else None)),  # fmt: skip
        ("failed", Cell(text=f"{fmt.count(s.get('failed'))} ({fmt.percent(s.get('failure_ratio'))})",
                        value=fmt.number(s.get("failure_ratio")), num=True,
                        status="fail" if (s.get("failed") or 0) > 0 else None)),  # fmt: skip
        ("throughput", num(s.get("throughput_rps"), fmt.rate)),
        ("duration", num(s.get("duration_s"), fmt.seconds)),
    ]
    if s.get("output_tokens_per_s") is not None:
        items.append(("output tokens", num(s.get("output_tokens_per_s"), lambda v: fmt.rate(v, "tokens/s"))))
    if s.get("goodput_rps") is not None:
        items.append(("goodput", num(s.get("goodput_rps"), fmt.rate)))
    return Facts(items, caption="Requests")


def sim_view(a: Artifact, links: Links) -> Section:
    d = a.data
    s = d.get("summary") or {}
    meta = d.get("metadata") or {}
    slo = d.get("slo")
    slo_pass = _get(slo, "pass")
    lat = s.get("latency_s") or {}
    head = f"p95 {fmt.seconds(lat.get('p95'))} · {fmt.rate(s.get('throughput_rps'))} · {fmt.usd(s.get('cost_usd'))}"
    if slo_pass is not None:
        head += f" · SLOs {'met' if slo_pass else 'MISSED'}"
    sec = Section(
        kind="sim_result",
        kind_label="Simulation",
        title=str(meta.get("deployment_name") or a.path.parent.name),
        headline=head,
        status=None if slo_pass is None else ("pass" if slo_pass else "fail"),
    )
    if slo_pass is not None:
        failed = [k for k, c in (_get(slo, "checks") or {}).items() if not c.get("pass")]
        sec.verdict = badge("pass" if slo_pass else "fail", "every SLO met" if slo_pass else f"missed: {', '.join(failed)}")
    sec.add(
        Facts(
            [
                ("deployment", txt(meta.get("deployment_name"))),
                ("trace", txt(meta.get("trace_source"), limit=160)),
                ("requests in trace", num(meta.get("trace_requests"), fmt.count)),
                ("seed", txt(meta.get("seed"))),
                ("warm-up left out", num(s.get("warmup_s"), fmt.seconds)),
            ],
            caption="Run",
        ),
        _file_facts(a, links, [("per request", a.folder / "requests.csv")]),
        _counts_table(s),
        _slo_table(slo, "SLO checks"),
        _percentiles(s),
    )
    table = a.requests()
    sec.add(cdf_plot([("simulated", _served(table))], what="latency", caption="Latency CDF of served requests (dots: p95 and p99).",
                     limits=_latency_limits(slo)))  # fmt: skip
    if table is not None and "ttft_s" in table.columns and len(_served(table, "ttft_s")):
        sec.add(cdf_plot([("simulated", _served(table, "ttft_s"))], what="time to first token", caption="TTFT CDF."))
    sec.add(_timeline_plot(d, table))
    fleet = [
        ("replicas", txt(f"mean {fmt.plain(s.get('mean_replicas'))}, max {fmt.plain(s.get('max_replicas'))}")),
        ("cold starts", num(s.get("cold_starts"), fmt.count)),
        ("requests that waited for one", num(s.get("cold_start_requests"), fmt.count)),
        ("restarts / retries", txt(f"{fmt.count(s.get('restarts'))} / {fmt.count(s.get('retries'))}")),
        ("utilisation", num(s.get("utilisation"), fmt.percent)),
        ("availability", num(s.get("availability"), fmt.percent)),
        ("cache hit ratio", num(s.get("cache_hit_ratio"), fmt.percent)),
    ]
    if s.get("prefix_hit_ratio") is not None:
        fleet.append(("prefix-cache hit ratio", num(s.get("prefix_hit_ratio"), fmt.percent)))
    if s.get("preemptions") is not None:
        fleet.append(("preemptions", num(s.get("preemptions"), fmt.count)))
    sec.add(Facts(fleet, caption="Fleet"))
    cost = [
        ("cost of the run", num(s.get("cost_usd"), fmt.usd)),
        ("per hour", num(s.get("cost_per_hour_usd"), fmt.usd)),
        ("per million requests", num(s.get("cost_per_million_requests_usd"), fmt.usd)),
    ]
    sec.add(Facts(cost, caption="Cost"))
    pools = [p for p in d.get("pools") or [] if isinstance(p, dict)]
    if pools:
        sec.add(
            Table(
                "Pools",
                ["pool", "instance type", "replicas launched", "replica time", "utilisation", "requests", "cost"],
                [Row([txt(p.get("name")), txt(p.get("instance_type")), num(p.get("replicas_launched"), fmt.count),
                      num(p.get("replica_seconds"), fmt.seconds), num(p.get("utilisation"), fmt.percent),
                      num(p.get("requests"), fmt.count), num(p.get("cost_usd"), fmt.usd)]) for p in pools],
            )  # fmt: skip
        )
    return sec


def measured_view(a: Artifact, links: Links) -> Section:
    d = a.data
    s = d.get("summary") or {}
    meta = d.get("metadata") or {}
    gen = d.get("generator") or {}
    lat = s.get("latency_s") or {}
    valid = gen.get("valid")
    sec = Section(
        kind="measured",
        kind_label="Load test",
        title=str(meta.get("url") or a.path.parent.name),
        headline=f"p95 {fmt.seconds(lat.get('p95'))} · {fmt.rate(s.get('throughput_rps'))} · "
        f"{fmt.percent(s.get('rejection_ratio'))} rejected" + ("" if valid is not False else " · INVALID measurement"),
        status="invalid" if valid is False else None,
    )
    if valid is False:
        sec.verdict = badge("invalid", "; ".join(gen.get("invalid_reasons") or []) or "the load generator fell behind")
    sec.add(
        Facts([(str(k).replace("_", " "), txt(v, limit=160)) for k, v in meta.items() if not isinstance(v, dict | list)],
              caption="Run"),  # fmt: skip
        _file_facts(a, links, [("per request", a.folder / "requests.csv")]),
        _counts_table(s),
        _percentiles(s, "Percentiles (exact, from every request's raw latency)"),
    )
    table = a.requests()
    sec.add(cdf_plot([("measured", _served(table))], what="latency", caption="Latency CDF of served requests, from the scheduled send time (dots: p95 and p99)."))
    if table is not None and "ttft_s" in table.columns and len(_served(table, "ttft_s")):
        sec.add(cdf_plot([("measured", _served(table, "ttft_s"))], what="time to first token", caption="TTFT CDF."))
    sec.add(_generator_facts(gen))
    codes = d.get("status_codes") or {}
    errors = d.get("errors") or {}
    if codes:
        sec.add(Table("HTTP status codes", ["status", "responses"], [Row([txt(k), num(v, fmt.count)]) for k, v in codes.items()]))
    if errors:
        sec.add(Notes([f"{n} × {e}" for e, n in errors.items()], level="fail", caption="Errors (most common)"))
    return sec


def _generator_facts(gen: dict[str, Any]) -> Facts | None:
    if not gen:
        return None
    lag = gen.get("send_lag_s") or {}
    items = [
        ("valid", ok_cell(gen.get("valid"), yes="yes", no="NO")),
        ("offered rate", num(gen.get("offered_rps"), fmt.rate)),
        ("achieved rate", num(gen.get("achieved_rps"), fmt.rate)),
    ]
    if isinstance(lag, dict):
        items += [(f"send lag {k}", num(lag.get(k), fmt.seconds)) for k in ("p50", "p99", "max") if k in lag]
    for k, v in gen.items():
        if k in ("valid", "offered_rps", "achieved_rps", "send_lag_s", "invalid_reasons") or isinstance(v, dict | list):
            continue
        items.append((k.replace("_", " "), txt(v)))
    return Facts(items, caption="Load generator health")


# ----------------------------------------------------------------------------- validation


def validation_view(a: Artifact, links: Links) -> Section:
    d = a.data
    verdict = str(d.get("verdict"))
    metrics = d.get("metrics") or {}
    missed = [k for k, m in metrics.items() if isinstance(m, dict) and not m.get("pass")]
    meta = d.get("metadata") or {}
    target = meta.get("deployment") or meta.get("url") or a.path.parent.name
    if verdict == "pass":
        detail = f"the live deployment matched the prediction on all {len(metrics)} metrics, within tolerance"
    elif verdict == "fail":
        detail = f"the live deployment missed the prediction on {', '.join(missed)}"
    else:
        detail = "the measurement is invalid: " + ("; ".join(d.get("invalid_reasons") or []) or "no reason recorded")
    sec = Section(
        kind="validation",
        kind_label="Validation",
        title=str(target),
        headline=f"{verdict.upper()}: {detail}",
        status=verdict if verdict in ("pass", "fail", "invalid") else "unknown",
        verdict=badge(verdict, detail),
    )
    rows = []
    for k, m in metrics.items():
        if not isinstance(m, dict):
            continue
        f = fmt.seconds if k.split(".")[0].endswith("_s") else (fmt.rate if k.endswith("_rps") else fmt.plain)
        rows.append(
            Row(
                [txt(k), num(m.get("predicted"), f), num(m.get("measured"), f),
                 num(m.get("relative_error"), lambda v: fmt.percent(v, digits=1, signed=True)),
                 num(m.get("tolerance"), lambda v: "±" + fmt.percent(v, digits=0)), ok_cell(m.get("pass"))],
                cls=None if m.get("pass") else "fail",
            )  # fmt: skip
        )
    sec.add(Table("Predicted vs measured", ["metric", "predicted", "measured", "error", "tolerance", "result"], rows,
                  note="error: (measured − predicted) / predicted"))  # fmt: skip
    pred_s, meas_s = d.get("predicted") or {}, d.get("measured") or {}
    side = []
    for key, label in (("requests", "requests"), ("completed", "served"), ("rejection_ratio", "rejected"),
                       ("failure_ratio", "failed"), ("throughput_rps", "throughput"), ("cache_hit_ratio", "cache hits")):  # fmt: skip
        f = fmt.percent if key.endswith("_ratio") else (fmt.rate if key.endswith("_rps") else fmt.count)
        side.append(Row([txt(label), num(pred_s.get(key), f), num(meas_s.get(key), f)]))
    for key, label in _DISTS:
        p, m = pred_s.get(key) or {}, meas_s.get(key) or {}
        for q in ("p50", "p95", "p99"):
            if p.get(q) is not None or m.get(q) is not None:
                side.append(Row([txt(f"{label} {q}"), num(p.get(q), fmt.seconds), num(m.get(q), fmt.seconds)]))
    sec.add(Table("Both summaries side by side", ["", "predicted (simulated)", "measured (live)"], side))
    pred_t = _read_requests(a.folder / "predicted" / "requests.csv")
    meas_t = _read_requests(a.folder / "measured" / "requests.csv")
    slo_m = d.get("slo_measured")
    sec.add(
        cdf_plot([("predicted", _served(pred_t)), ("measured", _served(meas_t))], what="latency",
                 caption="Latency CDFs of served requests: the simulation's prediction and the live load test.",
                 limits=_latency_limits(slo_m)),  # fmt: skip
    )
    if len(_served(pred_t, "ttft_s")) and len(_served(meas_t, "ttft_s")):
        sec.add(cdf_plot([("predicted", _served(pred_t, "ttft_s")), ("measured", _served(meas_t, "ttft_s"))],
                         what="time to first token", caption="TTFT CDFs."))  # fmt: skip
    sec.add(_slo_table(slo_m, "The deployment's SLOs on the measured run"))
    sec.add(_generator_facts(d.get("generator") or {}))
    server = d.get("server") or {}
    facts = [(k.replace("_", " "), txt(v, limit=160)) for k, v in meta.items() if not isinstance(v, dict | list)]
    facts += [(f"server {k}", txt(v)) for k, v in server.items() if not isinstance(v, dict | list)]
    sec.add(Facts(facts, caption="Run"), _file_facts(a, links, [("predicted", a.folder / "predicted"), ("measured", a.folder / "measured")]))
    return sec


# ----------------------------------------------------------------------------- plan


def _tail(metrics: dict[str, Any] | None) -> float | None:
    """The plan's tail latency: p99 TTFT for an LLM engine, else p99 latency (as the Pareto front)."""
    t = fmt.number(_get(metrics, "ttft_s", "p99"))
    return t if t is not None else fmt.number(_get(metrics, "latency_s", "p99"))


def _pareto_plot(plan: dict[str, Any], by_id: dict[Any, dict[str, Any]]) -> Plot | None:
    pts = []
    for c in by_id.values():
        cost, tail = fmt.number(c.get("cost_per_hour_usd")), _tail(c.get("metrics"))
        if cost is None or tail is None or c.get("fidelity") != 1.0:
            continue
        pts.append((c, cost, tail))
    if not pts:
        return None
    front = set(plan.get("pareto") or [])
    winner = plan.get("winner")
    unit, scale = time_unit([t for _, _, t in pts])
    llm = any(_get(c.get("metrics"), "ttft_s", "p99") is not None for c, _, _ in pts)
    with figure(7.5, 3.8) as (fig, ax):
        a = ax[0, 0]
        infeasible = [(cost, t) for c, cost, t in pts if not c.get("feasible")]
        feasible = [(cost, t) for c, cost, t in pts if c.get("feasible") and c["id"] not in front]
        on_front = sorted((cost, t) for c, cost, t in pts if c["id"] in front)
        if infeasible:
            a.scatter([p[0] for p in infeasible], [p[1] * scale for p in infeasible], marker="x", color="#9ca3af", s=22, label="misses an SLO")
        if feasible:
            a.scatter([p[0] for p in feasible], [p[1] * scale for p in feasible], color=PALETTE[0], s=22, alpha=0.7, label="meets the SLOs")
        if on_front:
            a.plot([p[0] for p in on_front], [p[1] * scale for p in on_front], "-o", color=PALETTE[1], ms=5, label="Pareto front")
        w = by_id.get(winner) if winner else None
        if w is not None and _tail(w.get("metrics")) is not None:
            a.scatter([w["cost_per_hour_usd"]], [_tail(w["metrics"]) * scale], marker="*", s=220, color="#ca8a04",  # type: ignore[operator]
                      edgecolors="#111827", zorder=6, label="winner")  # fmt: skip
        lim = fmt.number((plan.get("slo") or {}).get("p99_ttft_s" if llm else "p99_latency_s"))
        if lim is not None:
            a.axhline(lim * scale, color="#dc2626", ls="--", lw=1, label="p99 SLO")
        tails = [t for _, _, t in pts]
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


def _binding_cell(b: dict[str, Any] | None) -> Cell:
    if not isinstance(b, dict) or b.get("name") is None:
        return txt(None)
    name = str(b["name"])
    value = b.get("value")
    text = f"{name}: {_slo_value(name, value).text} / {_slo_value(name, b.get('limit')).text}"
    if b.get("bound"):
        text += " (bound)"
    return txt(text)


def plan_view(a: Artifact, links: Links) -> Section:
    d = a.data
    cands = [c for c in d.get("candidates") or [] if isinstance(c, dict)]
    by_id = {c.get("id"): c for c in cands}
    winner = by_id.get(d.get("winner")) if d.get("winner") else None
    search = d.get("search") or {}
    feasible_n = sum(1 for c in cands if c.get("feasible"))
    if winner is not None:
        detail = f"winner {winner.get('label')} at {fmt.usd(winner.get('cost_per_hour_usd'))}/h"
        bind = winner.get("binding_slo") or {}
        if bind.get("name"):
            detail += f"; binding SLO {bind['name']} (margin {fmt.percent(bind.get('margin'), digits=1)})"
    else:
        detail = "no candidate meets every SLO"
    sec = Section(
        kind="plan",
        kind_label="Plan",
        title=str(d.get("name") or a.path.parent.name),
        headline=f"{detail} · {len(cands)} candidates, {feasible_n} feasible",
        status="pass" if winner is not None else "fail",
        verdict=badge("pass" if winner is not None else "fail", detail),
    )
    slo = d.get("slo") or {}
    meta = d.get("metadata") or {}
    sec.add(
        Facts(
            [
                ("setting", txt(d.get("setting"))),
                ("SLOs", txt(", ".join(f"{k} {'≥' if k.startswith('min_') else '≤'} {_slo_value(k, v).text}" for k, v in slo.items()) or "none")),
                ("trace", txt(meta.get("trace_source"), limit=160)),
                ("requests", num(meta.get("trace_requests"), fmt.count)),
                ("strategy", txt(f"{search.get('strategy')} on {search.get('executor')} ({search.get('jobs')} jobs)")),
                ("candidates", txt(f"{search.get('candidates')} of {search.get('combinations')} combinations; "
                                   + ", ".join(f"{n} {k}" for k, n in (search.get("statuses") or {}).items()))),  # fmt: skip
                ("simulations", txt(f"{search.get('simulations')} ({fmt.seconds(search.get('simulation_s'))} of simulation, "
                                    f"{fmt.seconds(search.get('wall_s'))} wall)")),  # fmt: skip
            ],
            caption="Search",
        ),
        _file_facts(a, links, [("deployment files", a.folder / "deploy")]),
    )
    if winner is not None:
        sec.add(_slo_table(winner.get("slo"), f"Winner's SLOs and margins: {winner.get('label')}"))
        rob = winner.get("robustness") or {}
        if rob:
            items = [("seeds", txt(", ".join(str(x) for x in rob.get("seeds") or []))), ("pass rate", num(rob.get("pass_rate"), fmt.percent))]
            head = rob.get("headroom") or {}
            if head:
                items.append(("load headroom", txt(f"×{fmt.plain(head.get('rate_multiplier'))} the trace's rate"
                                                   + (f" (fails at ×{fmt.plain(head.get('fails_at'))})" if head.get("fails_at") else "")
                                                   + (" (capped)" if head.get("capped") else ""))))  # fmt: skip
            for name, m in (rob.get("metrics") or {}).items():
                items.append((f"{name} ({fmt.percent(rob.get('confidence'), digits=0)} CI)",
                              txt(f"{_slo_value(name, m.get('low')).text} – {_slo_value(name, m.get('high')).text}"
                                  f" (limit {_slo_value(name, m.get('limit')).text})",
                                  status=None if m.get("within_limit") else "fail")))  # fmt: skip
            sec.add(Facts(items, caption="Winner's robustness (seed replications, load headroom)"))
    elif d.get("closest"):
        rows = []
        for cid in d["closest"]:
            c = by_id.get(cid) or {}
            rows.append(Row([txt(c.get("label")), num(c.get("cost_per_hour_usd"), fmt.usd), _binding_cell(c.get("binding_slo")),
                             num(c.get("violation"), lambda v: fmt.percent(v, digits=1))]))  # fmt: skip
        sec.add(Table("Closest candidates (none meets every SLO)", ["candidate", "cost/h", "binding SLO: value / limit", "missed by"], rows))
    ranking = [cid for cid in d.get("ranking") or [] if cid in by_id]
    front = set(d.get("pareto") or [])
    rows = []
    for rank, cid in enumerate(ranking[:MAX_RANKED_ROWS], 1):
        c = by_id[cid]
        m = c.get("metrics") or {}
        rob = c.get("robustness") or {}
        cls = "winner" if cid == d.get("winner") else ("front" if cid in front else (None if c.get("feasible") else "muted"))
        rows.append(
            Row(
                [num(rank, fmt.count), txt(c.get("label")), num(c.get("cost_per_hour_usd"), fmt.usd),
                 num(c.get("cost_per_million_requests_usd"), fmt.usd), num(_get(m, "latency_s", "p95"), fmt.seconds),
                 num(_tail(m), fmt.seconds), _binding_cell(c.get("binding_slo")),
                 num(_get(c, "binding_slo", "margin"), lambda v: fmt.percent(v, digits=1, signed=True)),
                 ok_cell(c.get("feasible"), yes="yes", no="no"), txt("yes" if cid in front else ""),
                 num(rob.get("pass_rate"), fmt.percent) if rob else txt(None)],
                cls=cls,
            )  # fmt: skip
        )
    more = len(ranking) - len(rows)
    sec.add(
        Table(
            "Ranking (cheapest feasible first)",
            ["#", "candidate", "cost/h", "cost/M req", "p95", "p99 (tail)", "binding SLO: value / limit", "margin",
             "meets SLOs", "Pareto", "robust pass rate"],
            rows,
            note=(f"{more} more ranked candidates in plan.json. " if more > 0 else "")
            + "Ranked by the advisor's rule: those that meet every SLO by cost, then replicas, then margin; the rest by "
            "how far they miss. Binding SLO: the one with the smallest margin.",
        )  # fmt: skip
    )
    sec.add(_pareto_plot(d, by_id))
    others: dict[str, int] = {}
    for c in cands:
        if c.get("status") != "evaluated" or c.get("fidelity") != 1.0:
            others[str(c.get("status"))] = others.get(str(c.get("status")), 0) + 1
    if others:
        sec.add(Notes([f"{n} candidates {k}" + {"pruned": " by an analytic bound", "static_infeasible": " by a static check (memory, drift, inventory)"}.get(k, "")
                       for k, n in sorted(others.items())], level="info", caption="Candidates not simulated on the whole trace"))  # fmt: skip
    deploy = a.folder / "deploy"
    if deploy.is_dir():
        files = sorted(p for p in deploy.iterdir() if p.is_file())
        sec.add(Facts([(p.name, txt(_DEPLOY_FILES.get(p.name, "file"), href=links(p))) for p in files], caption="Deploy the winner"))
    return sec


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


# ----------------------------------------------------------------------------- benchmark


def _with_unit(unit: str) -> Callable[[Any], str]:
    return lambda x: f"{fmt.plain(x)} {unit}"


def benchmark_view(a: Artifact, links: Links) -> Section:
    d = a.data
    cases = [c for c in d.get("cases") or [] if isinstance(c, dict)]
    sec = Section(
        kind="benchmark",
        kind_label="Benchmark",
        title=str(d.get("name") or a.path.stem),
        headline=f"{len(cases)} cases",
    )
    meta = d.get("metadata") or {}
    sec.add(Facts([(str(k), txt(v, limit=160)) for k, v in meta.items() if not isinstance(v, dict | list)], caption="Run"),
            _file_facts(a, links))  # fmt: skip
    rows = []
    for c in cases:
        v = np.asarray([x for x in c.get("samples") or [] if fmt.is_number(x)], dtype=float)
        unit = str(c.get("unit", "s"))
        f = fmt.seconds if unit == "s" else _with_unit(unit)
        med = float(np.median(v)) if len(v) else None
        iqr = float(np.subtract(*np.quantile(v, [0.75, 0.25]))) if len(v) else None
        rows.append(Row([txt(c.get("name")), num(med, f), num(iqr, f), num(float(v.min()) if len(v) else None, f),
                         num(float(v.max()) if len(v) else None, f), num(len(v), fmt.count), txt(c.get("better", "lower"))]))  # fmt: skip
    sec.add(Table("Cases", ["case", "median", "IQR", "min", "max", "samples", "better"], rows))
    series = [(str(c.get("name")), np.asarray(c.get("samples") or [], dtype=float)) for c in cases if c.get("samples")]
    if series:
        with figure(7.5, 0.5 + 0.45 * len(series)) as (fig, ax):
            p = ax[0, 0]
            for i, (_, v) in enumerate(series):
                p.scatter(v / np.median(v), np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), s=14, color=PALETTE[i % len(PALETTE)])
            p.set_yticks(range(len(series)), [plot_label(n) for n, _ in series])
            p.invert_yaxis()
            p.axvline(1.0, color="#111827", lw=0.8)
            p.set_xlabel("sample / the case's median")
            sec.add(to_plot(fig, alt="Benchmark samples relative to each case's median", caption="Each sample over its case's median: the spread the gate's test sees."))
    return sec


VIEWS: dict[str, Callable[[Artifact, Links], Section]] = {
    "profile": profile_view,
    "sim_result": sim_view,
    "measured": measured_view,
    "validation": validation_view,
    "plan": plan_view,
    "benchmark": benchmark_view,
}


def section_for(a: Artifact, links: Links) -> Section:
    """The section of one artifact."""
    return VIEWS[a.kind](a, links)
