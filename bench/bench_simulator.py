"""Simulator speed: simulated requests per wall-clock second.

Cases (issue #2):
1. 1,000,000 Poisson requests on 16 replicas with ``p2c`` (ρ = 0.9, exponential
   service). The same case also runs through the straightforward model — one SimPy
   process per request, one ``simpy.Resource`` per replica (``simulator.reference``) —
   and the bench prints the speed ratio and checks both give the same mean latency.
2. The Azure LLM 2023 conversation trace (19,366 requests, one hour) at 10× rate on an
   autoscaled deployment with a response cache.

Run: ``python bench/bench_simulator.py`` (``--quick`` for a 100k-request smoke run).
Goal: at least 100,000 simulated requests per wall-clock second on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from shared_traces import find as find_traces  # bench/ is on sys.path when run as a script

from servewise.config import parse_deployment
from servewise.simulator import simulate
from servewise.simulator._engine import Engine
from servewise.simulator.reference import reference_simulate
from servewise.trace import load_trace, poisson

AZURE_CONV = (find_traces() or Path(__file__).resolve().parents[2] / "shared" / "traces") / "azure_llm_2023_conv.csv"


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def case_p2c(n: int, ref_n: int, repeats: int) -> dict:
    replicas, mean_s, rho = 16, 1.0, 0.9
    trace = poisson(rate_rps=rho * replicas / mean_s, n_requests=n, seed=1)
    dep = parse_deployment(
        {
            "name": "bench-p2c",
            "replicas": replicas,
            "service_time": {"distribution": "exponential", "mean_s": mean_s},
            "balancer": {"policy": "p2c", "d": 2},
        }
    )
    engine_s, raw = _best_of(lambda: Engine(dep, trace, seed=7).run(), repeats)
    full_s, res = _best_of(lambda: simulate(dep, trace, seed=7), 1)
    sub = trace.window(0.0, float(trace.arrival_s[ref_n - 1]) + 1e-9, rebase=False) if ref_n < n else trace
    fast_sub_s, sub_raw = _best_of(lambda: Engine(dep, sub, seed=7).run(), repeats)
    ref_s, ref = _best_of(lambda: reference_simulate(dep, sub, seed=7), 1)
    fast_lat = sub_raw.end_s - sub.arrival_s
    ref_lat = ref.end_s - sub.arrival_s
    return {
        "case": f"{n:,} Poisson requests, 16 replicas, p2c, rho 0.9",
        "requests": n,
        "engine_s": engine_s,
        "engine_rps": n / engine_s,
        "with_summary_s": full_s,
        "with_summary_rps": n / full_s,
        "mean_latency_s": res.summary.latency_s.mean,
        "reference_requests": len(sub),
        "reference_s": ref_s,
        "reference_rps": len(sub) / ref_s,
        "fast_on_same_requests_s": fast_sub_s,
        "speedup_vs_reference": (len(sub) / fast_sub_s) / (len(sub) / ref_s),
        "max_abs_latency_diff_vs_reference_s": float(np.max(np.abs(fast_lat - ref_lat))),
    }


def case_azure(repeats: int) -> dict | None:
    if not AZURE_CONV.exists():
        return None
    trace = load_trace(AZURE_CONV).scale_rate(10.0).with_zipf_keys(20000, 0.8, seed=3)
    dep = parse_deployment(
        {
            "name": "bench-azure-autoscale",
            "replicas": 2,
            "concurrency": 8,
            "service_time": {
                "distribution": "linear",
                "base_s": 0.05,
                "per_input_token_s": 2e-5,
                "per_output_token_s": 0.004,
                "noise_cv": 0.1,
            },
            "balancer": {"policy": "p2c"},
            "cache": {"policy": "lru", "capacity": 200},
            "queue": {"capacity": 64},
            "scaling": {
                "mode": "autoscale",
                "min_replicas": 2,
                "max_replicas": 64,
                "target_in_flight": 6,
                "interval_s": 15,
                "cold_start_s": 30,
                "scale_down_stabilization_s": 120,
            },
        }
    )
    engine_s, _ = _best_of(lambda: Engine(dep, trace, seed=7).run(), repeats)
    full_s, res = _best_of(lambda: simulate(dep, trace, seed=7), 1)
    s = res.summary
    return {
        "case": "Azure LLM 2023 conv ×10 rate, autoscale 2..64 from 2, p2c, LRU cache",
        "requests": len(trace),
        "engine_s": engine_s,
        "engine_rps": len(trace) / engine_s,
        "with_summary_s": full_s,
        "with_summary_rps": len(trace) / full_s,
        "p95_latency_s": s.latency_s.p95,
        "mean_replicas": s.mean_replicas,
        "cold_starts": s.cold_starts,
        "cache_hit_ratio": s.cache_hit_ratio,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k requests instead of 1M")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument(
        "--reference-requests", type=int, default=None, help="requests through the per-request model (default: all)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="take the best of this many runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    n = args.requests or (100_000 if args.quick else 1_000_000)
    ref_n = min(args.reference_requests or n, n)
    results = [case_p2c(n, ref_n, args.repeats)]
    az = case_azure(args.repeats)
    if az is not None:
        results.append(az)
    else:
        print(f"skipped the Azure case: {AZURE_CONV} not found", file=sys.stderr)
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu'}")
    for r in results:
        print(f"\n== {r['case']}")
        for k, v in r.items():
            if k == "case":
                continue
            print(f"  {k:38s} {v:,.4f}" if isinstance(v, float) else f"  {k:38s} {v:,}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = all(r["engine_rps"] >= 100_000 for r in results)
    print("\ngoal (>= 100,000 simulated requests / s):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
