"""Plots as PNG ``data:`` URIs, so a page carries its images inside and asks no server.

Figures are made on matplotlib's Agg canvas directly (no ``pyplot``, no global figure
state). Labels may hold user strings (model, variant and case names): :func:`label` escapes
mathtext's ``$``, so ``$x$`` shows as written. PNGs carry no timestamp, so a page is the
same bytes for the same artifacts.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from servewise.reports._blocks import Plot

__all__ = [
    "PALETTE",
    "figure",
    "to_plot",
    "label",
    "time_unit",
    "cdf_plot",
    "ecdf",
]

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563")
"""Colours in order of use: one per variant, side or series."""

_RC: Any = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "savefig.dpi": 100,
}


@contextmanager
def figure(width: float = 7.5, height: float = 3.4, *, nrows: int = 1, ncols: int = 1, **kw: Any) -> Iterator[tuple[Figure, np.ndarray]]:
    """A figure and its axes (always a 2-D array), drawn with the report's style."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        axes = np.atleast_2d(np.asarray(fig.subplots(nrows, ncols, squeeze=False, **kw)))
        yield fig, axes


def label(text: object) -> str:
    """A user string as a plot label: ``$`` escaped so mathtext leaves it as written."""
    return str(text).replace("$", r"\$")


def to_plot(fig: Figure, alt: str, caption: str) -> Plot:
    """Render ``fig`` to PNG and wrap it as a page block."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="png", metadata={"Software": None})
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Plot(src=uri, alt=alt, caption=caption)


def time_unit(values: Sequence[float] | np.ndarray) -> tuple[str, float]:
    """A unit for an axis of seconds: ``("ms", 1000)`` when the values are below 1 s."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    top = float(np.max(np.abs(v))) if len(v) else 0.0
    if top < 1e-3 and top > 0:
        return "µs", 1e6
    if top < 1.0:
        return "ms", 1e3
    return "s", 1.0


def ecdf(values: np.ndarray, max_points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF: sorted values and the fraction of samples at or below each.

    Above ``max_points`` samples it keeps ``max_points`` evenly spaced order statistics
    (the first and last included): the drawn curve is the same to a pixel, the PNG is
    made in milliseconds for a million requests.
    """
    x = np.sort(np.asarray(values, dtype=float))
    y = np.arange(1, len(x) + 1) / len(x)
    if len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[keep], y[keep]
    return x, y


def cdf_plot(
    series: Sequence[tuple[str, np.ndarray]],
    *,
    what: str,
    caption: str,
    limits: Sequence[tuple[str, float]] = (),
) -> Plot | None:
    """Overlaid empirical CDFs of seconds (one line per series), SLO limits as vertical lines.

    Returns None when no series has a sample.
    """
    series = [(name, np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))]) for name, v in series]
    series = [(name, v) for name, v in series if len(v)]
    if not series:
        return None
    unit, scale = time_unit(np.concatenate([v for _, v in series] + [np.array([lim for _, lim in limits])]))
    with figure(7.5, 3.4) as (fig, ax):
        a = ax[0, 0]
        for i, (name, v) in enumerate(series):
            x, y = ecdf(v)
            a.step(x * scale, y, where="post", color=PALETTE[i % len(PALETTE)], label=f"{label(name)} (n={len(v):,})")
            for q in (0.95, 0.99):
                a.plot([np.quantile(v, q) * scale], [q], marker="o", ms=3, color=PALETTE[i % len(PALETTE)])
        for j, (name, lim) in enumerate(limits):
            a.axvline(lim * scale, color="#dc2626", ls="--", lw=1)
            a.annotate(name, (lim * scale, 0.02 + 0.08 * j), color="#dc2626", fontsize=8, xytext=(3, 0), textcoords="offset points")
        lo = min(float(np.min(v)) for _, v in series)
        hi = max(float(np.max(v)) for _, v in series)
        if lo > 0 and hi / lo > 50:
            a.set_xscale("log")
        a.set_xlabel(f"{what} ({unit})")
        a.set_ylabel("fraction of requests ≤ x")
        a.set_ylim(0, 1.02)
        a.legend(loc="lower right")
        return to_plot(fig, alt=f"CDF of {what}", caption=caption)
