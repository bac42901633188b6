"""``prometheus-alerts.yaml`` and ``grafana-dashboard.json``: watch the plan's SLOs live.

Every query reads a metric of :mod:`servewise.telemetry` (what ``servewise serve``
exports). Each SLO field that is set becomes one alert, its limit from the plan and its
description naming what servewise predicted (``expected.json``'s ``summary``). SLO
fields without a runtime metric (e.g. an accuracy bound, a property of the profile) are
listed in a comment instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servewise import telemetry as tm
from servewise.advisor._deploy._common import Target, comment, dns_label, dump_yaml, fmt

WINDOW = "5m"
"""Rate window of the alert expressions."""
FOR = "5m"
GOODPUT_PARAMS = ("ttft_target_s", "tpot_target_s")
"""SLO fields that define goodput (what ``servewise_goodput_requests_total`` counts), not alerts of their own."""
_PERCENTILE = re.compile(r"^p(\d+)_(latency|ttft|tpot)_s$")
_HISTOGRAMS = {"latency": (tm.REQUEST_DURATION, "latency_s"), "ttft": (tm.TTFT, "ttft_s"), "tpot": (tm.TPOT, "tpot_s")}
_SERVED = f'{{{tm.STATUS}=~"{"|".join(tm.SERVED_STATUSES)}"}}'


# --------------------------------------------------------------------------- PromQL


def quantile_expr(metric: str, q: float, selector: str = "", window: str = WINDOW) -> str:
    """The ``q`` quantile of histogram ``metric`` over the last ``window``."""
    return f"histogram_quantile({fmt(q)}, sum by (le) (rate({metric}_bucket{selector}[{window}])))"


def status_ratio_expr(status: str, window: str = WINDOW) -> str:
    """The share of requests that ended with ``status``."""
    return f'sum(rate({tm.REQUESTS}{{{tm.STATUS}="{status}"}}[{window}])) / sum(rate({tm.REQUESTS}[{window}]))'


def availability_expr(window: str = WINDOW) -> str:
    """Ready replicas over launched ones (a starting replica counts as not available)."""
    return f"sum(avg_over_time({tm.REPLICAS_READY}[{window}])) / sum(avg_over_time({tm.REPLICAS}[{window}]))"


def goodput_expr(window: str = WINDOW) -> str:
    return f"sum(rate({tm.GOODPUT}[{window}]))"


# --------------------------------------------------------------------------- SLO -> alert


@dataclass(frozen=True)
class SloRule:
    """How one SLO field is watched at run time."""

    title: str
    """What is limited, e.g. ``p95 latency``."""
    expr: Callable[[], str]
    above: bool
    """True: the limit is a maximum (alert when above); False: a minimum."""
    predicted: tuple[str, str | None]
    """Where the prediction is in ``expected["summary"]``: key and sub-key."""
    unit: str
    severity: str = "warning"


def slo_rule(field: str) -> SloRule | None:
    """The rule of SLO ``field``; None when it has no runtime metric."""
    m = _PERCENTILE.match(field)
    if m:
        q, kind = int(m.group(1)), m.group(2)
        metric, key = _HISTOGRAMS[kind]
        selector = _SERVED if kind == "latency" else ""
        title = f"p{q} {'latency' if kind == 'latency' else kind.upper()}"
        return SloRule(title, lambda: quantile_expr(metric, q / 100, selector), True, (key, f"p{q}"), "s")
    rules = {
        "max_rejection_ratio": SloRule(
            "rejection ratio", lambda: status_ratio_expr("rejected"), True, ("rejection_ratio", None), ""
        ),
        "max_failure_ratio": SloRule(
            "failure ratio", lambda: status_ratio_expr("failed"), True, ("failure_ratio", None), "", "critical"
        ),
        "min_availability": SloRule("availability", availability_expr, False, ("availability", None), "", "critical"),
        "min_goodput_rps": SloRule("goodput", goodput_expr, False, ("goodput_rps", None), "requests/s"),
    }
    return rules.get(field)


def set_slo_fields(t: Target) -> dict[str, float]:
    """The SLO fields the plan sets, in declaration order."""
    slo = t.dep.slo
    if slo is None:
        return {}
    return {name: float(v) for name in type(slo).model_fields if (v := getattr(slo, name)) is not None}


def predicted(expected: dict[str, Any], where: tuple[str, str | None]) -> float | None:
    """The simulator's value of an SLO'd figure in ``expected.json``'s summary (None when absent)."""
    value: Any = expected.get("summary", {})
    for k in where:
        if k is None:
            break
        value = value.get(k) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _camel(text: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", text) if w)


def alert(t: Target, field: str, limit: float, rule: SloRule) -> dict[str, Any]:
    """The alert of one SLO field."""
    op = ">" if rule.above else "<"
    value = predicted(t.inputs.expected, rule.predicted)
    where = ".".join(k for k in rule.predicted if k is not None)
    pred = (
        f"servewise predicted {_unit(f'{value:.4g}', rule.unit)} on the plan's trace (expected.json summary.{where})."
        if value is not None
        else "expected.json holds no prediction for it."
    )
    bound = "above its maximum" if rule.above else "below its minimum"
    return {
        "alert": f"Servewise{_camel(rule.title)}{'Above' if rule.above else 'Below'}Slo",
        "expr": f"{rule.expr()} {op} {fmt(limit)}",
        "for": FOR,
        "labels": {"severity": rule.severity, "slo": field, "servewise_deployment": t.dep.name},
        "annotations": {
            "summary": f"{t.dep.name}: {rule.title} {bound} (SLO {field} = {_unit(fmt(limit), rule.unit)})",
            "description": (
                f"The {rule.title} over the last {WINDOW} is {_unit('{{ $value }}', rule.unit)}, {bound} of "
                f"{_unit(fmt(limit), rule.unit)} set by SLO {field}. {pred}"
            ),
        },
    }


def _unit(value: str, unit: str) -> str:
    return f"{value} {unit}" if unit else value


def prometheus_alerts(t: Target) -> str:
    """The ``prometheus-alerts.yaml`` rule file: one alert per SLO field set."""
    fields = set_slo_fields(t)
    rules: list[dict[str, Any]] = []
    params: list[str] = []
    unwatched: list[str] = []
    for name, limit in fields.items():
        rule = slo_rule(name)
        if rule is not None:
            rules.append(alert(t, name, limit, rule))
        elif name in GOODPUT_PARAMS:
            params.append(f"{name}={fmt(limit)}")
        else:
            unwatched.append(name)
    notes = [
        f"servewise plan {t.dep.name!r}: one alert per SLO (promtool check rules prometheus-alerts.yaml).",
        f"Queries read the metrics servewise serve exports (servewise.telemetry); rates over {WINDOW}, firing after {FOR}.",
    ]
    if not fields:
        notes.append("The plan sets no SLO: no alerts.")
    if params:
        notes.append(
            f"{', '.join(params)}: the per-request targets {tm.GOODPUT} counts against (no alert of their own)."
        )
    if unwatched:
        notes.append(f"SLO fields with no runtime metric (not alerted): {', '.join(unwatched)}.")
    doc = {"groups": [{"name": f"servewise-{dns_label(t.dep.name)}-slo", "rules": rules}]}
    return comment(*notes) + dump_yaml(doc)


# --------------------------------------------------------------------------- Grafana


DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass
class Panel:
    """One timeseries panel before layout."""

    title: str
    queries: list[tuple[str, str]]
    """(PromQL, legend) pairs."""
    unit: str
    description: str = ""
    limits: tuple[float, ...] = ()
    minimum: bool = False
    """The limits are minima (red below) rather than maxima (red above)."""


def _thresholds(limits: tuple[float, ...], minimum: bool) -> dict[str, Any]:
    if minimum:
        steps = [{"color": "red", "value": None}] + [{"color": "green", "value": v} for v in sorted(set(limits))]
    else:
        steps = [{"color": "green", "value": None}] + [{"color": "red", "value": v} for v in sorted(set(limits))]
    return {"mode": "absolute", "steps": steps}


def _panel_json(panel: Panel, pid: int, index: int) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    defaults: dict[str, Any] = {"unit": panel.unit, "custom": custom}
    if panel.limits:
        custom["thresholdsStyle"] = {"mode": "line"}
        defaults["thresholds"] = _thresholds(panel.limits, panel.minimum)
    return {
        "id": pid,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def _predicted_note(t: Target, key: str, subs: tuple[str, ...], unit: str) -> str:
    """The "servewise predicted ..." panel note from ``expected.json`` (empty when it holds no such value)."""
    if not subs:
        v = predicted(t.inputs.expected, (key, None))
        return f"servewise predicted {v:.4g} {unit} (expected.json summary.{key})." if v is not None else ""
    parts = [f"{s} {v:.4g}" for s in subs if (v := predicted(t.inputs.expected, (key, s))) is not None]
    return f"servewise predicted {', '.join(parts)} {unit} (expected.json summary.{key})." if parts else ""


def _percentile_panel(t: Target, kind: str, title: str) -> Panel:
    metric, key = _HISTOGRAMS[kind]
    selector = _SERVED if kind == "latency" else ""
    fields = set_slo_fields(t)
    limits = tuple(v for f, v in fields.items() if (m := _PERCENTILE.match(f)) and m.group(2) == kind)
    return Panel(
        title,
        [(quantile_expr(metric, q, selector, "1m"), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
        "s",
        _predicted_note(t, key, ("p50", "p95", "p99"), "s"),
        limits,
    )


def dashboard_panels(t: Target) -> list[Panel]:
    """The panels of the dashboard, in order."""
    fields = set_slo_fields(t)
    dep = t.dep
    panels = [
        Panel(
            "Requests by status", [(f"sum by ({tm.STATUS}) (rate({tm.REQUESTS}[1m]))", f"{{{{{tm.STATUS}}}}}")], "reqps"
        ),
        _percentile_panel(t, "latency", "Latency (p50, p95, p99)"),
        Panel(
            "Rejected and failed share",
            [(status_ratio_expr("rejected", "1m"), "rejected"), (status_ratio_expr("failed", "1m"), "failed")],
            "percentunit",
            limits=tuple(v for f, v in fields.items() if f in ("max_rejection_ratio", "max_failure_ratio")),
        ),
    ]
    if dep.engine is not None:
        panels += [
            _percentile_panel(t, "ttft", "Time to first token (p50, p95, p99)"),
            _percentile_panel(t, "tpot", "Time per output token (p50, p95, p99)"),
            Panel(
                "Goodput",
                [(goodput_expr("1m"), "goodput")],
                "reqps",
                _predicted_note(t, "goodput_rps", (), "requests/s"),
                tuple(v for f, v in fields.items() if f == "min_goodput_rps"),
                minimum=True,
            ),
        ]
    target = dep.scaling.target_in_flight if dep.scaling.mode == "autoscale" else None
    panels += [
        Panel(
            "In flight",
            [
                (f"sum by ({tm.POOL}) ({tm.IN_FLIGHT})", f"{{{{{tm.POOL}}}}}"),
                (f"sum({tm.IN_FLIGHT}) / sum({tm.REPLICAS_READY})", "per ready replica"),
            ],
            "short",
            "The autoscaling signal." + (f" The plan targets {fmt(target)} per replica." if target else ""),
            (target,) if target else (),
        ),
        Panel("Queue depth", [(f"sum by ({tm.POOL}) ({tm.QUEUE_DEPTH})", f"{{{{{tm.POOL}}}}}")], "short"),
        Panel(
            "Replicas",
            [
                (f"sum by ({tm.POOL}) ({tm.REPLICAS})", "{{pool}} launched"),
                (f"sum by ({tm.POOL}) ({tm.REPLICAS_READY})", "{{pool}} ready"),
            ],
            "short",
            _predicted_note(t, "mean_replicas", (), "replicas on average"),
        ),
        Panel(
            "Availability (ready / launched replicas)",
            [(availability_expr("1m"), "available")],
            "percentunit",
            _predicted_note(t, "availability", (), ""),
            tuple(v for f, v in fields.items() if f == "min_availability"),
            minimum=True,
        ),
        Panel("Cold starts", [(f"sum by ({tm.POOL}) (increase({tm.COLD_STARTS}[5m]))", "{{pool}}")], "short"),
    ]
    if dep.cache is not None:
        panels.append(
            Panel(
                "Cache hit ratio",
                [(f"sum(rate({tm.CACHE_HITS}[5m])) / sum(rate({tm.REQUESTS}[5m]))", "hit ratio")],
                "percentunit",
                _predicted_note(t, "cache_hit_ratio", (), ""),
            )
        )
    panels.append(
        Panel("Errors by reason", [(f"sum by ({tm.REASON}) (rate({tm.ERRORS}[1m]))", f"{{{{{tm.REASON}}}}}")], "reqps")
    )
    return panels


def dashboard_uid(name: str) -> str:
    """A stable Grafana uid (at most 40 characters) from the deployment name."""
    return f"servewise-{dns_label(name, 20)}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def grafana_dashboard(t: Target) -> str:
    """The ``grafana-dashboard.json`` text (import it; it asks for the Prometheus data source)."""
    panels = [_panel_json(p, i + 1, i) for i, p in enumerate(dashboard_panels(t))]
    doc: dict[str, Any] = {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes servewise serve (/metrics).",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "id": None,
        "uid": dashboard_uid(t.dep.name),
        "title": f"servewise: {t.dep.name}",
        "description": f"The servewise plan {t.dep.name!r}: its SLOs as threshold lines, the prediction in panel notes.",
        "tags": ["servewise"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": False, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": panels,
    }
    return json.dumps(doc, indent=2) + "\n"
