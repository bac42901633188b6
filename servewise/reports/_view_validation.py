"""The validation's section: the verdict first, predicted and measured side by side, overlaid CDFs."""

from __future__ import annotations

from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Facts, Row, Section, Table, badge, num, ok_cell, txt
from servewise.reports._plots import cdf_plot
from servewise.reports._view_common import DIST_LABELS, Links, file_facts, latency_limits, slo_table
from servewise.reports._view_run import generator_facts
from servewise.results import Summary, Validation, requests_path, served

__all__ = ["validation_view"]

_SIDE_BY_SIDE = (
    ("requests", "requests"),
    ("completed", "served"),
    ("rejection_ratio", "rejected"),
    ("failure_ratio", "failed"),
    ("throughput_rps", "throughput"),
    ("cache_hit_ratio", "cache hits"),
)


def _detail(v: Validation) -> str:
    if v.verdict == "pass":
        return f"the live deployment matched the prediction on all {len(v.metrics)} metrics, within tolerance"
    if v.verdict == "fail":
        return f"the live deployment missed the prediction on {', '.join(v.missed())}"
    return "the measurement is invalid: " + ("; ".join(v.invalid_reasons) or "no reason recorded")


def _metrics_table(v: Validation) -> Table:
    rows = []
    for k, m in v.metrics.items():
        f = fmt.seconds if k.split(".")[0].endswith("_s") else (fmt.rate if k.endswith("_rps") else fmt.plain)
        rows.append(
            Row(
                [txt(k), num(m.predicted, f), num(m.measured, f),
                 num(m.relative_error, lambda x: fmt.percent(x, digits=1, signed=True)),
                 num(m.tolerance, lambda x: "±" + fmt.percent(x, digits=0)), ok_cell(m.passed)],
                cls=None if m.passed else "fail",
            )  # fmt: skip
        )
    return Table("Predicted vs measured", ["metric", "predicted", "measured", "error", "tolerance", "result"], rows,
                 note="error: (measured − predicted) / predicted")  # fmt: skip


def _side_by_side(pred: Summary, meas: Summary) -> Table:
    rows = []
    for key, label in _SIDE_BY_SIDE:
        f = fmt.percent if key.endswith("_ratio") else (fmt.rate if key.endswith("_rps") else fmt.count)
        rows.append(Row([txt(label), num(pred.metric(key), f), num(meas.metric(key), f)]))
    for key, label in DIST_LABELS:
        p, m = pred.distribution(key), meas.distribution(key)
        for q in ("p50", "p95", "p99"):
            if p[q] is not None or m[q] is not None:
                rows.append(Row([txt(f"{label} {q}"), num(p[q], fmt.seconds), num(m[q], fmt.seconds)]))
    return Table("Both summaries side by side", ["", "predicted (simulated)", "measured (live)"], rows)


def validation_view(a: Artifact, links: Links) -> Section:
    v = a.validation
    detail = _detail(v)
    target = v.metadata.deployment or v.metadata.url or a.path.parent.name
    sec = Section(
        kind="validation",
        kind_label="Validation",
        title=str(target),
        headline=f"{v.verdict.upper()}: {detail}",
        status=v.verdict,
        verdict=badge(v.verdict, detail),
    )
    sec.add(_metrics_table(v), _side_by_side(v.predicted, v.measured))
    pred_t = a.table(requests_path(a.folder / "predicted"))
    meas_t = a.table(requests_path(a.folder / "measured"))
    sec.add(
        cdf_plot([("predicted", served(pred_t)), ("measured", served(meas_t))], what="latency",
                 caption="Latency CDFs of served requests: the simulation's prediction and the live load test.",
                 limits=latency_limits(v.slo_measured)),  # fmt: skip
    )
    pred_ttft, meas_ttft = served(pred_t, "ttft_s"), served(meas_t, "ttft_s")
    if len(pred_ttft) and len(meas_ttft):
        sec.add(cdf_plot([("predicted", pred_ttft), ("measured", meas_ttft)], what="time to first token",
                         caption="TTFT CDFs."))  # fmt: skip
    sec.add(slo_table(v.slo_measured, "The deployment's SLOs on the measured run"), generator_facts(v.generator))
    facts = [(k.replace("_", " "), txt(x, limit=160)) for k, x in v.metadata.items() if not isinstance(x, dict | list)]
    if v.server is not None:
        facts += [(f"server {k}", txt(x)) for k, x in v.server.items() if not isinstance(x, dict | list)]
    sec.add(Facts(facts, caption="Run"),
            file_facts(a, links, [("predicted", a.folder / "predicted"), ("measured", a.folder / "measured")]))  # fmt: skip
    return sec
