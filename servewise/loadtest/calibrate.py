"""``servewise calibrate``: measure a profiled variant through the live serving path.

The profile times forward passes back to back; a served request also pays HTTP, JSON,
the router→worker hop and the encoding of its answer, and its forward runs after idle
gaps, padded, pooled and converted to lists. Calibration serves the variant for real
(one replica, one request per slot, no batching: ``servewise serve`` on 127.0.0.1) and
replays a trace window against it open loop with Locust — the same path ``validate``
measures — with the window's request shapes at Poisson arrivals offering a light load
(``util``, default 30 % of the replica; the first half of the window at half of it,
the second at 1.5×, each its own load test, so that the router's and Locust's CPU per
second and per request can be told apart), so there are idle gaps and now and then
overlapping requests, but little queueing to mistake for overhead. Each answer carries
the replica's own queue and service seconds (``X-Servewise-Timing``), so per request:

- overhead = client latency − replica queue − replica service (everything outside the
  replica slot, as the load generator sees it);
- the live service against the profile's prediction for its shape: fitted as
  fixed + scale × prediction (:func:`fit_live_service`), with its spread (CV);

and over the run, the CPU the router and the load generator spent per request: what the
replicas of a deployment served on this host share its cores with (``Deployment.host``).

The variant's ``serving`` block records the overhead sample, the median scale and the
spread (CV) of the scale, and which requests it was fitted on (their prompt lengths'
fingerprint): ``validate`` refuses to judge a prediction on those same requests.
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from servewise.errors import ConfigError, InvalidMeasurement
from servewise.profile import Profile, ServingCalibration, Variant, load_profile, save_profile, tokens_fingerprint
from servewise.trace import Trace

__all__ = [
    "calibrate",
    "fit_calibration",
    "fit_live_service",
    "fit_idle_factors",
    "host_cpu",
    "OVERHEAD_SAMPLES",
    "SPREAD_FOR_FIXED",
    "IDLE_EDGES_S",
    "IDLE_MIN_PER_BIN",
]

OVERHEAD_SAMPLES = 4000
"""Most overhead samples kept in the profile (an even subsample beyond)."""


def _predicted(variant: Variant, input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """The profile's lone service time of each request (prompts clipped as the server clips them)."""
    from servewise.service import generation_times

    out = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
    inp = variant.served_prompt(np.asarray(input_tokens, dtype=np.int64), out)
    if variant.model_kind == "decoder":
        return generation_times(variant, inp, out)
    return variant.batch_time(1, inp).astype(float)


def fit_calibration(
    variant: Variant,
    table: Any,
    *,
    trace: Trace,
    threads: int,
    host_cpu_per_request_s: float | None = None,
    background_cores: float | None = None,
) -> ServingCalibration:
    """The ``serving`` block from a measured per-request table (``measured/requests.csv``).

    Uses the completed requests that carry the replica's times; an error when there are
    fewer than 20 of them. ``host_cpu_per_request_s`` and ``background_cores``: the router's
    and load generator's CPU (:func:`host_cpu`), recorded as given.
    """
    t = table
    ok = (t["status"] == "completed").to_numpy().copy()
    for col in ("replica_queue_s", "replica_service_s"):
        if col not in t.columns:
            raise ConfigError(f"the measured table has no {col} column: the server sent no X-Servewise-Timing header")
        ok &= np.isfinite(t[col].to_numpy(dtype=float))
    n = int(ok.sum())
    if n < 20:
        raise ConfigError(f"calibration needs at least 20 completed requests with the replica's times, got {n}")
    lat = t["latency_s"].to_numpy(dtype=float)[ok]
    queue = t["replica_queue_s"].to_numpy(dtype=float)[ok]
    service = t["replica_service_s"].to_numpy(dtype=float)[ok]
    overhead = np.maximum(lat - queue - service, 0.0)
    pred = np.maximum(_predicted(variant, t["input_tokens"].to_numpy()[ok], t["output_tokens"].to_numpy()[ok]), 1e-9)
    fixed, scale = fit_live_service(pred, service)
    ratio = service / (fixed + scale * pred)  # the live spread around the fit
    edges: list[float] = []
    factors: list[float] = []
    if "replica_idle_s" in t.columns:
        idle = t["replica_idle_s"].to_numpy(dtype=float)[ok]
        if np.isfinite(idle).all():
            edges, factors = fit_idle_factors(idle, ratio)
            if factors:
                ratio = ratio / np.asarray(factors)[np.searchsorted(edges, idle, side="right")]
    if len(overhead) > OVERHEAD_SAMPLES:
        overhead = overhead[np.linspace(0, len(overhead) - 1, OVERHEAD_SAMPLES).astype(np.int64)]
    return ServingCalibration(
        overhead_samples_s=[float(x) for x in overhead],
        service_scale=scale,
        service_fixed_s=fixed,
        service_cv=float(np.std(ratio) / np.mean(ratio)),
        idle_edges_s=edges,
        idle_factors=factors,
        requests=n,
        trace_source=trace.source,
        tokens_sha256=tokens_fingerprint(trace.input_tokens),
        threads=threads,
        host_cpu_per_request_s=host_cpu_per_request_s,
        host_background_cores=background_cores,
        created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


SPREAD_FOR_FIXED = 1.5
"""The calibration's shapes must span this ratio (90th / 10th percentile of the predicted
service) for a fixed part to be told from the scale; below it the fit is a pure scale."""


def fit_live_service(predicted: np.ndarray, live: np.ndarray) -> tuple[float, float]:
    """``(fixed_s, scale)`` with live ≈ fixed_s + scale × predicted, robustly.

    The serving path adds costs that do not grow with the forward (parsing the request,
    padding, pooling, converting the answer) and costs that do: one ratio over-charges
    long requests and under-charges short ones when the calibration's shapes differ from
    the traffic's. The fit is a median regression on relative residuals (least absolute
    |live − fit| / live, by iteratively reweighted least squares): the noise is
    multiplicative, and the outliers idle gaps and other tenants cause do not pull it.
    A pure scale (the median ratio, fixed 0) when the shapes are too alike to separate
    the two (:data:`SPREAD_FOR_FIXED`), or when the fit's fixed part or slope comes out
    negative.
    """
    x = np.asarray(predicted, dtype=float)
    y = np.asarray(live, dtype=float)
    pure = (0.0, float(np.median(y / x)))
    lo, hi = np.percentile(x, [10, 90])
    if len(x) < 20 or hi < SPREAD_FOR_FIXED * lo:
        return pure
    design = np.column_stack([np.ones_like(x), x])
    w = 1.0 / y
    beta = np.zeros(2)
    for _ in range(100):
        sw = np.sqrt(w)
        beta = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0]
        rel = np.abs(y - design @ beta) / y
        w = 1.0 / (np.maximum(rel, 1e-6) * y)
    intercept, slope = float(beta[0]), float(beta[1])
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope <= 0 or intercept < 0:
        return pure
    return intercept, slope


IDLE_EDGES_S = (0.002, 0.01, 0.03, 0.1, 0.3, 1.0)
"""Idle-gap bins the calibration starts from (upper edges, seconds; the last bin is open)."""
IDLE_MIN_PER_BIN = 15
"""Services a bin needs; a sparser bin is merged into its sparser neighbour."""


def fit_idle_factors(idle_s: np.ndarray, ratio: np.ndarray) -> tuple[list[float], list[float]]:
    """``(edges, factors)``: the median of ``ratio`` (live service over the fit) per bin of
    the idle gap before each service (how long the replica had run nothing).

    A CPU that has been idle serves the next request slower (caches, branch predictors and
    the frequency cool down; measured on this VM: ×1.19 after 50 ms, ×1.41 after 0.5 s
    against back to back), so a calibration at a light load over-charges a busy
    deployment. Bins start at :data:`IDLE_EDGES_S`; one with fewer than
    :data:`IDLE_MIN_PER_BIN` services is merged with its sparser neighbour. Empty when
    fewer than two bins are left (no idle dependence is charged).
    """
    idle = np.asarray(idle_s, dtype=float)
    ratio = np.asarray(ratio, dtype=float)
    edges = list(IDLE_EDGES_S)
    while True:
        which = np.searchsorted(edges, idle, side="right")
        counts = np.bincount(which, minlength=len(edges) + 1)
        if len(edges) == 0 or counts.min() >= IDLE_MIN_PER_BIN:
            break
        k = int(np.argmin(counts))  # merge bin k with its sparser neighbour: drop the edge between them
        if k == 0:
            edges.pop(0)
        elif k == len(edges):
            edges.pop()
        else:
            edges.pop(k - 1 if counts[k - 1] <= counts[k + 1] else k)
    if not edges:
        return [], []
    which = np.searchsorted(edges, idle, side="right")
    return [float(e) for e in edges], [float(np.median(ratio[which == b])) for b in range(len(edges) + 1)]


def host_cpu(runs: list[tuple[float, float, int, float | None]]) -> tuple[float | None, float | None]:
    """``(background cores, CPU seconds per request)`` of the router and load generator from
    load tests at different rates: ``(cpu_s, seconds, requests, router idle cores)`` each.

    Their CPU is a rate while they run (the router's event loop, Locust's scheduling
    loop) plus a cost per request; one run cannot tell the two apart (at a light load
    the rate, spread over few requests, looks like a large cost per request), two at
    different rates can: cpu = a·seconds + b·requests, solved. When that fails (one run,
    rates too alike, a negative part), the router's measured idle rate is the background
    and the rest is per request.
    """
    if len(runs) >= 2:
        m = np.array([[w, n] for _, w, n, _ in runs], dtype=float)
        c = np.array([cpu for cpu, _, _, _ in runs], dtype=float)
        rates = m[:, 1] / np.maximum(m[:, 0], 1e-9)
        if rates.max() > 1.5 * rates.min():
            (a, b), *_ = np.linalg.lstsq(m, c, rcond=None)
            if a >= 0 and b >= 0:
                return float(a), float(b)
    idle = [x for *_, x in runs if x is not None]
    background = float(np.mean(idle)) if idle else 0.0
    n = sum(r[2] for r in runs)
    per_request = sum(max(cpu - background * w, 0.0) for cpu, w, _, _ in runs) / n if n else 0.0
    return (background if idle else None), per_request


def _paced(variant: Variant, trace: Trace, util: float, seed: int, rows: slice = slice(None)) -> Trace:
    """The window's requests (``rows`` of them), in order, at Poisson arrivals offering
    ``util`` of one replica.

    The trace's own gaps are bursty (the Azure code trace sends dozens in a second): at a
    light average load they would still queue requests at the router and the worker's
    event loop, and that waiting would be taken for per-request overhead. Poisson gaps at
    a light load keep idle gaps and some overlap, but little queueing.
    """
    inp, out = trace.input_tokens[rows], trace.output_tokens[rows]
    if len(inp) < 2:
        raise ConfigError(f"trace {trace.source}: calibration needs at least 2 requests")
    mean_s = float(np.mean(_predicted(variant, inp, out)))
    gaps = np.random.default_rng(seed).exponential(mean_s / util, len(inp))
    gaps[0] = 0.0
    part = "" if rows == slice(None) else f"[{rows.start or 0}:{'' if rows.stop is None else rows.stop}]"
    return Trace(arrival_s=np.cumsum(gaps), input_tokens=inp, output_tokens=out,
                 source=f"{trace.source}{part} (Poisson at {util:.0%} of one replica)")  # fmt: skip


def calibrate(
    profile_path: Path,
    variant_name: str,
    trace: Trace,
    *,
    out_path: Path | None = None,
    model: str | None = None,
    util: float = 0.3,
    threads: int = 1,
    seed: int = 0,
    work_dir: Path | None = None,
    progress: Any = None,
) -> ServingCalibration:
    """Serve ``variant_name`` of the profile, replay ``trace`` at ``util``, fit, and write the
    profile with the variant's ``serving`` block to ``out_path`` (default: the profile itself).

    The file is replaced atomically only once the calibration succeeded.
    """
    from servewise.loadtest.validate import validate

    if not (math.isfinite(util) and 0 < util < 1):
        raise ConfigError(f"--util must be in (0, 1), got {util!r}")
    prof: Profile = load_profile(profile_path)
    variant = prof.variant(variant_name, model)
    if variant.status != "measured":
        raise ConfigError(f"variant {variant.label} is {variant.status}: calibrate a measured variant")
    if variant.latency_model is None:
        raise ConfigError(f"variant {variant.label} has no fitted latency model: profile more grid points first")
    # two halves, at half and 1.5x the load, so the router's and Locust's CPU per second and per request separate
    half = len(trace) // 2
    if half >= 20:
        phases = [_paced(variant, trace, util / 2, seed, slice(None, half)),
                  _paced(variant, trace, min(1.5 * util, 0.9), seed + 1, slice(half, None))]  # fmt: skip
    else:
        phases = [_paced(variant, trace, util, seed)]
    with tempfile.TemporaryDirectory(prefix="servewise-calibrate-", dir=work_dir) as tmp:
        d = Path(tmp)
        bare = d / "profile.json"  # the variant without an earlier calibration: re-calibrating starts afresh
        save_profile(_with_serving(prof, variant, None), bare)
        dep = d / "deployment.yaml"
        dep.write_text(yaml.safe_dump({
            "kind": "deployment", "schema_version": 1, "name": f"calibrate-{variant.name}", "replicas": 1,
            "concurrency": 1, "model": {"profile": str(bare), "variant": variant.name,
                                        **({"spec": model} if model else {})},
        }, sort_keys=False))  # fmt: skip
        import pandas as pd

        from servewise.results import read_requests

        tables = []
        cpu_runs: list[tuple[float, float, int, float | None]] | None = []
        for k, paced in enumerate(phases):
            run = validate(paced, d / f"run{k}", deployment_path=dep, seed=seed,
                           serve_args=[f"--threads={threads}", "--mode=real"], progress=progress)  # fmt: skip
            if not run.generator.valid:
                raise InvalidMeasurement(f"the load generator fell behind during calibration ({'; '.join(run.generator.invalid_reasons)}); "
                                  "calibrate again with fewer programs running or a lower --util")  # fmt: skip
            tables.append(read_requests(d / f"run{k}" / "measured" / "requests.csv"))
            srv = run.server
            if (cpu_runs is not None and srv is not None and srv.router_cpu_s is not None
                    and srv.load_generator_cpu_s is not None and srv.load_s is not None):  # fmt: skip
                cpu_runs.append((srv.router_cpu_s + srv.load_generator_cpu_s, srv.load_s, len(paced),
                                 srv.router_idle_cores))  # fmt: skip
            else:
                cpu_runs = None
        table = pd.concat(tables, ignore_index=True)
    background, per_request = host_cpu(cpu_runs) if cpu_runs else (None, None)
    cal = fit_calibration(variant, table, trace=trace, threads=threads, host_cpu_per_request_s=per_request,
                          background_cores=background)  # fmt: skip
    save_profile(_with_serving(prof, variant, cal), out_path or profile_path)
    return cal


def _with_serving(prof: Profile, variant: Variant, cal: ServingCalibration | None) -> Profile:
    """``prof`` with ``variant``'s ``serving`` block set to ``cal`` (validated anew)."""
    variants = [v.model_copy(update={"serving": cal}) if v is variant else v for v in prof.variants]
    return Profile.model_validate(prof.model_copy(update={"variants": variants}).model_dump())
