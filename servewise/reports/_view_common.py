"""What the views share: percentile and SLO tables, request counts, file links.

Views read typed records (:mod:`servewise.results`); strings from the artifacts go into
blocks as they are: the template escapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Cell, Facts, Row, Table, num, ok_cell, txt
from servewise.results import STATS, SloResult, Summary, slo_margin

__all__ = [
    "Links",
    "DIST_LABELS",
    "percentiles_table",
    "slo_value",
    "slo_table",
    "latency_limits",
    "file_facts",
    "counts_facts",
]

Links = Callable[[Path], str]
"""Turns a file's path into an href relative to the page."""

DIST_LABELS: tuple[tuple[str, str], ...] = (
    ("latency_s", "latency"),
    ("queue_s", "queue wait"),
    ("cold_start_s", "cold-start wait"),
    ("ttft_s", "time to first token"),
    ("tpot_s", "time per output token"),
    ("itl_s", "inter-token latency"),
)
"""The summary's distributions and what the page calls them."""

_LATENCY_SLOS = ("p50_latency_s", "p90_latency_s", "p95_latency_s", "p99_latency_s")


def percentiles_table(summary: Summary, caption: str = "Percentiles (exact, from every request)") -> Table | None:
    rows = []
    for key, label in DIST_LABELS:
        d = summary.distribution(key)
        if d.known:
            rows.append(Row([txt(label), *(num(getattr(d, s), fmt.seconds) for s in STATS)]))
    if not rows:
        return None
    return Table(caption, ["distribution", *STATS], rows)


def slo_value(name: str, v: float | None) -> Cell:
    """A value or limit of the SLO ``name`` in that SLO's unit."""
    if name.endswith("_s"):
        return num(v, fmt.seconds)
    if name.endswith("_ratio") or name == "min_availability":
        return num(v, fmt.percent)
    if name.endswith("_rps"):
        return num(v, fmt.rate)
    return num(v)


def slo_table(slo: SloResult | None, caption: str) -> Table | None:
    if slo is None or not slo.checks:
        return None
    rows = []
    for name, c in slo.checks.items():
        m = slo_margin(name, c.value, c.limit)
        rows.append(
            Row(
                [txt(name), slo_value(name, c.limit), slo_value(name, c.value),
                 num(m, lambda v: fmt.percent(v, digits=1, signed=True)), ok_cell(c.passed)],
                cls=None if c.passed else "fail",
            )  # fmt: skip
        )
    return Table(caption, ["SLO", "limit", "value", "margin", "result"], rows,
                 note="margin: how far inside the limit, as a share of the limit (negative: missed by)")  # fmt: skip


def latency_limits(slo: SloResult | None) -> list[tuple[str, float]]:
    """The latency SLOs' limits, to draw on a latency CDF."""
    if slo is None:
        return []
    return [(f"SLO {name} ≤ {fmt.seconds(c.limit)}", float(c.limit)) for name, c in slo.checks.items()
            if name in _LATENCY_SLOS]  # fmt: skip


def file_facts(a: Artifact, links: Links, extra: Sequence[tuple[str, Path]] = ()) -> Facts:
    items = [("file", txt(a.path.name, href=links(a.path)))]
    for label, p in extra:
        if p.exists():
            items.append((label, txt(p.name + ("/" if p.is_dir() else ""), href=links(p))))
    return Facts(items, caption="Files")


def _count_and_ratio(n: int | None, ratio: float | None, *, bad: bool = False) -> Cell:
    return Cell(text=f"{fmt.count(n)} ({fmt.percent(ratio)})", value=fmt.number(ratio), num=True,
                status="fail" if bad and (n or 0) > 0 else None)  # fmt: skip


def counts_facts(s: Summary) -> Facts:
    items = [
        ("requests", num(s.requests, fmt.count)),
        ("served", num(s.completed, fmt.count)),
        ("cache hits", _count_and_ratio(s.cache_hits, s.cache_hit_ratio)),
        ("rejected", _count_and_ratio(s.rejected, s.rejection_ratio, bad=True)),
        ("failed", _count_and_ratio(s.failed, s.failure_ratio, bad=True)),
        ("throughput", num(s.throughput_rps, fmt.rate)),
        ("duration", num(s.duration_s, fmt.seconds)),
    ]
    if s.output_tokens_per_s is not None:
        items.append(("output tokens", num(s.output_tokens_per_s, lambda v: fmt.rate(v, "tokens/s"))))
    if s.goodput_rps is not None:
        items.append(("goodput", num(s.goodput_rps, fmt.rate)))
    return Facts(items, caption="Requests")
