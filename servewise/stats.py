"""Exact summary statistics from raw samples (no histogram buckets)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["PERCENTILES", "summarize", "VALIDATION_TOLERANCES"]

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
"""Percentiles every latency summary reports, as ``p50`` ... ``p99``."""


def summarize(values: np.ndarray | Sequence[float]) -> dict[str, float | None]:
    """``{mean, p50, p90, p95, p99, max}`` of the samples; all ``None`` when there are none.

    Percentiles are exact order statistics with linear interpolation between the two
    nearest ranks (numpy's default), computed on every raw sample.
    """
    a = np.asarray(values, dtype=float)
    keys = ["mean", *(f"p{p}" for p in PERCENTILES), "max"]
    if a.size == 0:
        return dict.fromkeys(keys)
    qs = np.percentile(a, PERCENTILES)
    out: dict[str, float | None] = {"mean": float(a.mean())}
    for p, q in zip(PERCENTILES, qs, strict=True):
        out[f"p{p}"] = float(q)
    out["max"] = float(a.max())
    for k, v in out.items():
        if v is not None and not math.isfinite(v):
            raise ValueError(f"non-finite {k} in samples")
    return out


#: Relative errors a live load test may show against the simulator's prediction before
#: validation fails (``servewise validate``; the advisor writes them into ``expected.json``).
#: Keys are ``summary`` paths: ``latency_s.p95`` is ``summary["latency_s"]["p95"]``.
VALIDATION_TOLERANCES: dict[str, float] = {
    "latency_s.p50": 0.10,
    "latency_s.p95": 0.15,
    "latency_s.p99": 0.25,
    "ttft_s.p50": 0.15,
    "ttft_s.p95": 0.20,
    "tpot_s.p50": 0.15,
    "throughput_rps": 0.05,
}
