"""Traffic: requests, traces, trace files and synthetic arrival processes.

A :class:`Trace` is an immutable, columnar list of :class:`Request` sorted by arrival.
Load real traces with :func:`load_trace` (Azure LLM 2023, Mooncake, BurstGPT, generic
CSV/JSONL), generate synthetic ones (:data:`GENERATORS`), reshape them
(``window``, ``scale_rate``, ``repeat``, ``with_zipf_keys``), and summarise them with
:func:`trace_stats`. Times are seconds, rates requests per second.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servewise._trace_model import Request, Trace

if TYPE_CHECKING:
    from servewise._trace_io import FORMATS, load_trace, save_trace
    from servewise._trace_synth import GENERATORS, TokenSpec, diurnal, gamma_renewal, mmpp, poisson, servegen

# The file readers and generators need pandas; they load on first use, so a process that only
# handles Request and Trace objects (a load generator, a worker) does not import it.
_LAZY = {
    **{name: "servewise._trace_io" for name in ("FORMATS", "load_trace", "save_trace")},
    **{
        name: "servewise._trace_synth"
        for name in ("GENERATORS", "TokenSpec", "diurnal", "gamma_renewal", "mmpp", "poisson", "servegen")
    },
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'servewise.trace' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

__all__ = [
    "Request",
    "Trace",
    "FORMATS",
    "load_trace",
    "save_trace",
    "trace_stats",
    "default_trace_path",
    "TokenSpec",
    "poisson",
    "gamma_renewal",
    "diurnal",
    "mmpp",
    "servegen",
    "GENERATORS",
]

_DEFAULT_TRACE = "azure_llm_2023_conv_first10min.csv"
_PEAK_BINS_S = {"1s": 1.0, "10s": 10.0, "60s": 60.0}


def default_trace_path() -> Path:
    """The built-in default trace: the first 10 minutes of Azure LLM 2023 conv.

    An excerpt of a CC-BY-4.0 trace (Patel et al., Splitwise, ISCA 2024); see
    ``servewise/data/NOTICE.md``. Load it with :func:`load_trace`.
    """
    return Path(str(resources.files("servewise.data").joinpath(_DEFAULT_TRACE)))


def _summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "mean": float(values.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": int(values.max()),
    }


def _peak_rps(arrival_s: np.ndarray, width_s: float) -> float | None:
    if arrival_s.size == 0:
        return None
    bins = np.floor((arrival_s - arrival_s[0]) / width_s).astype(np.int64)
    return float(np.bincount(bins).max() / width_s)


def _prefix_reuse(blocks: tuple[tuple[int, ...], ...]) -> float | None:
    seen: set[int] = set()
    reused = total = 0
    for row in blocks:
        total += len(row)
        reused += sum(1 for b in row if b in seen)
        seen.update(row)
    return reused / total if total else None


def trace_stats(trace: Trace) -> dict[str, Any]:
    """A JSON-able summary of ``trace``, keys in a fixed order.

    Rates are requests/s; ``rate_peak_rps`` is the largest count in a 1/10/60-s bin
    (bins start at the first arrival) divided by the bin width. Percentiles are exact
    (numpy's linear interpolation). ``keys.reuse_ratio`` is the share of requests whose
    key appeared earlier; ``prefix_reuse_ratio`` the share of prefix blocks whose hash
    appeared in an earlier request (the hit ratio of an unbounded prefix cache).
    """
    n = len(trace)
    t = trace.arrival_s
    duration = trace.duration_s
    iat = np.diff(t)
    iat_cv = None
    if iat.size >= 2 and iat.mean() > 0:
        iat_cv = float(iat.std() / iat.mean())
    keys = None
    if trace.key is not None:
        unique = int(np.unique(trace.key).size)
        keys = {"unique": unique, "reuse_ratio": (n - unique) / n if n else None}
    counts = np.bincount(trace.traffic_class, minlength=len(trace.class_names))
    return {
        "source": trace.source,
        "requests": n,
        "duration_s": float(duration),
        "rate_mean_rps": float(n / duration) if duration > 0 else None,
        "rate_peak_rps": {k: _peak_rps(t, w) for k, w in _PEAK_BINS_S.items()},
        "iat_cv": iat_cv,
        "input_tokens": _summary(trace.input_tokens),
        "output_tokens": _summary(trace.output_tokens),
        "keys": keys,
        "prefix_reuse_ratio": (None if trace.prefix_blocks is None else _prefix_reuse(trace.prefix_blocks)),
        "classes": {name: int(c) for name, c in zip(trace.class_names, counts.tolist(), strict=True)},
        "skipped_rows": trace.skipped_rows,
    }
