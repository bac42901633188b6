"""Serverless cold starts and instance counts against measured AWS Lambda data.

The PACS Lab measurements SimFaaS is validated on (``bench/data/aws_lambda_pacslab.csv``:
one Lambda function, Poisson arrivals from 0.0019 to 1 request/s, a warm service of
about 2 s, 10 minutes idle before an instance is recycled) give, per arrival rate, the
probability that a request meets a cold start and the time-average number of
instances. SimFaaS reports 12 % mean absolute percentage error on P(cold) and 3 % on the
instance count against them.

Each row is simulated as a ``serverless`` deployment: one request per instance at a time
(``concurrency: 1``), the row's warm service time (exponential, as SimFaaS models it, or
``--service deterministic``), a cold start of ``cold − warm`` ms, ``keep_alive_s`` 600,
no cap on instances, and Poisson arrivals at the row's rate. P(cold) is the share of
counted requests (after a warm-up of ``--warmup-keepalives`` keep-alives) that waited
for a cold start; the instance count is the time average of live instances (starting,
busy or idle) from the warm-up to the last arrival. Every warm routing rule
(``scaling.warm_routing``) is run on the same arrivals.

Usage (about a minute on 2 cores)::

    python bench/bench_serverless.py --out /tmp/serverless.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "aws_lambda_pacslab.csv"
ROUTINGS = ("newest", "most_recent", "spread")


@dataclass
class Row:
    experiment: int
    arrival_rate: float
    routing: str
    p_cold_measured: float
    p_cold_simulated: float
    p_cold_error: float
    """(simulated − measured) / measured."""
    instances_measured: float
    instances_simulated: float
    instances_error: float
    requests: int


def load_rows(path: Path = DATA) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def time_average(t_s: list[float], counts: list[int], start: float, end: float) -> float:
    """Time average over [start, end] of a step function that is ``counts[k]`` from ``t_s[k]``."""
    t = np.asarray(t_s, dtype=float)
    c = np.asarray(counts, dtype=float)
    edges = np.clip(np.append(t, np.inf), start, end)
    return float((np.diff(edges) * c).sum() / (end - start))


def simulate_row(row: pd.Series, routing: str, *, n_requests: int, warmup_keepalives: float, service: str, seed: int) -> Row:
    from servewise import simulate
    from servewise.config import parse_deployment
    from servewise.trace import poisson

    keep_s = float(row["idle_minutes"]) * 60.0
    warm_s = float(row["warm_ms"]) / 1e3
    cold_s = max(float(row["cold_ms"] - row["warm_ms"]) / 1e3, 0.0)
    dep = parse_deployment(
        {
            "replicas": 0,
            "concurrency": 1,
            "service_time": {"distribution": service, "mean_s": warm_s},
            "scaling": {"mode": "serverless", "max_replicas": 10_000, "keep_alive_s": keep_s, "cold_start_s": cold_s,
                        "warm_routing": routing},
        },  # fmt: skip
        f"experiment {row['experiment']}",
    )
    rate = float(row["arrival_rate"])
    trace = poisson(rate_rps=rate, n_requests=n_requests, seed=seed)
    warmup = warmup_keepalives * keep_s
    res = simulate(dep, trace, seed=seed + 1, warmup_s=warmup)
    s = res.summary
    assert s.requests and s.cold_start_requests is not None
    p_cold = s.cold_start_requests / s.requests
    last = float(trace.arrival_s[-1])
    inst = time_average(res.timeline.t_s, res.timeline.replicas, warmup, last)
    pm, im = float(row["p_cold"]), float(row["mean_instances"])
    return Row(
        experiment=int(row["experiment"]), arrival_rate=rate, routing=routing,
        p_cold_measured=pm, p_cold_simulated=p_cold, p_cold_error=(p_cold - pm) / pm,
        instances_measured=im, instances_simulated=inst, instances_error=(inst - im) / im, requests=int(s.requests),
    )  # fmt: skip


def run(
    *,
    routings: tuple[str, ...] = ROUTINGS,
    n_requests: int = 20_000,
    warmup_keepalives: float = 5.0,
    service: str = "exponential",
    seed: int = 0,
    experiments: list[int] | None = None,
) -> dict[str, Any]:
    data = load_rows()
    if experiments is not None:
        data = data[data["experiment"].isin(experiments)]
    rows = [
        simulate_row(r, routing, n_requests=n_requests, warmup_keepalives=warmup_keepalives, service=service, seed=seed + k)
        for routing in routings
        for k, (_, r) in enumerate(data.iterrows())
    ]
    summary = {}
    for routing in routings:
        mine = [r for r in rows if r.routing == routing]
        summary[routing] = {
            "p_cold_mape": float(np.mean([abs(r.p_cold_error) for r in mine])),
            "instances_mape": float(np.mean([abs(r.instances_error) for r in mine])),
        }
    return {
        "data": str(DATA.relative_to(ROOT)),
        "settings": {"n_requests": n_requests, "warmup_keepalives": warmup_keepalives, "service": service, "seed": seed},
        "rows": [asdict(r) for r in rows],
        "summary": summary,
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{'routing':<12}{'exp':>4}{'rate/s':>9}{'P(cold) meas':>14}{'sim':>9}{'err':>8}{'inst meas':>11}{'sim':>8}{'err':>8}")
    for r in report["rows"]:
        print(
            f"{r['routing']:<12}{r['experiment']:>4}{r['arrival_rate']:>9.4f}{r['p_cold_measured']:>14.4f}"
            f"{r['p_cold_simulated']:>9.4f}{r['p_cold_error']:>+8.1%}{r['instances_measured']:>11.2f}"
            f"{r['instances_simulated']:>8.2f}{r['instances_error']:>+8.1%}"
        )
    for routing, s in report["summary"].items():
        print(f"{routing}: MAPE P(cold) {s['p_cold_mape']:.1%}, instances {s['instances_mape']:.1%} (SimFaaS: 12 %, 3 %)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="Write the report as JSON here.")
    ap.add_argument("--requests", type=int, default=20_000, help="Requests per row.")
    ap.add_argument("--warmup-keepalives", type=float, default=5.0)
    ap.add_argument("--service", choices=("exponential", "deterministic"), default="exponential")
    ap.add_argument("--routing", choices=ROUTINGS, action="append", help="Rules to run (default: all).")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    report = run(routings=tuple(a.routing or ROUTINGS), n_requests=a.requests, warmup_keepalives=a.warmup_keepalives,
                 service=a.service, seed=a.seed)  # fmt: skip
    print_table(report)
    if a.out is not None:
        from servewise.io import write_json

        write_json(a.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
