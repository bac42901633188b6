"""The benchmark's section: each case's samples, and their spread around the case's median."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Facts, Plot, Row, Section, Table, num, txt
from servewise.reports._plots import PALETTE, figure, to_plot
from servewise.reports._plots import label as plot_label
from servewise.reports._view_common import Links, file_facts
from servewise.results import Case

__all__ = ["benchmark_view"]


def _with_unit(unit: str) -> Callable[[Any], str]:
    return lambda x: f"{fmt.plain(x)} {unit}"


def _case_row(c: Case) -> Row:
    v = np.asarray(c.samples, dtype=float)
    f = fmt.seconds if c.unit == "s" else _with_unit(c.unit)
    if not len(v):
        return Row([txt(c.name), *(num(None, f) for _ in range(4)), num(0, fmt.count), txt(c.better)])
    iqr = float(np.subtract(*np.quantile(v, [0.75, 0.25])))
    return Row([txt(c.name), num(float(np.median(v)), f), num(iqr, f), num(float(v.min()), f), num(float(v.max()), f),
                num(len(v), fmt.count), txt(c.better)])  # fmt: skip


def _spread_plot(cases: list[Case]) -> Plot | None:
    series = [(c.name, np.asarray(c.samples, dtype=float)) for c in cases if c.samples]
    series = [(n, v) for n, v in series if np.median(v) != 0]
    if not series:
        return None
    with figure(7.5, 0.5 + 0.45 * len(series)) as (fig, ax):
        p = ax[0, 0]
        for i, (_, v) in enumerate(series):
            p.scatter(v / np.median(v), np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), s=14,
                      color=PALETTE[i % len(PALETTE)])  # fmt: skip
        p.set_yticks(range(len(series)), [plot_label(n) for n, _ in series])
        p.invert_yaxis()
        p.axvline(1.0, color="#111827", lw=0.8)
        p.set_xlabel("sample / the case's median")
        return to_plot(fig, alt="Benchmark samples relative to each case's median",
                       caption="Each sample over its case's median: the spread the gate's test sees.")  # fmt: skip


def benchmark_view(a: Artifact, links: Links) -> Section:
    b = a.benchmark
    sec = Section(kind="benchmark", kind_label="Benchmark", title=b.name or a.path.stem, headline=f"{len(b.cases)} cases")
    meta = [(str(k), txt(v, limit=160)) for k, v in b.metadata.items() if not isinstance(v, dict | list)]
    sec.add(Facts(meta, caption="Run"), file_facts(a, links))
    sec.add(Table("Cases", ["case", "median", "IQR", "min", "max", "samples", "better"], [_case_row(c) for c in b.cases]))
    sec.add(_spread_plot(list(b.cases)))
    return sec
