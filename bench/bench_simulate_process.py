"""Simulator speed as a whole process: ``servewise simulate`` on 1,000,000 requests.

The case of issue 16 item 7: 1,000,000 Poisson requests (112 req/s) on 16 replicas with
``p2c``, exponential service of mean 0.1 s (ρ = 0.7). The clock runs from the start of
``python -m servewise simulate`` to its exit: the interpreter and imports, reading the
trace CSV, the simulation and its summary, writing ``result.json`` and the per-request
table. The trace file is generated beforehand (``servewise trace generate``, not timed;
kept in ``--work`` for the next run).

Reported, beside each other, in one run:

1. the whole process, per ``--requests-format`` (csv, parquet): best and median wall
   time of ``--repeats`` runs, simulated requests per wall second, and peak RSS (the
   child's ``ru_maxrss``) per request, both raw and above a 1,000-request run of the same
   command (what the requests themselves cost);
2. the split, from a worker process making the CLI's calls one at a time: imports, trace
   load, simulation (engine + summary), write;
3. the one-process-per-request SimPy model (``simulator.reference``) and the engine alone
   on the first ``--reference-requests`` requests of the same trace, their speed ratio and
   the largest latency difference between them;
4. with ``--baseline-rev REV``: the same whole-process runs of that revision's tree
   (``git archive``, imported through ``PYTHONPATH``), interleaved with the current one.

Run: ``python bench/bench_simulate_process.py [--baseline-rev HEAD] [--json FILE]``
(``--quick``: 100,000 requests). Goal: >= 100,000 simulated requests per second, whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPLICAS, MEAN_S, RATE_RPS, TRACE_SEED = 16, 0.1, 112.0, 1
DEPLOYMENT = f"""name: bench-p2c-process
replicas: {REPLICAS}
service_time:
  distribution: exponential
  mean_s: {MEAN_S}
balancer:
  policy: p2c
  d: 2
"""
GOAL_RPS = 100_000


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one child process; raises on a non-zero exit."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()}")
    return wall, int(usage.ru_maxrss) * 1024  # Linux reports KiB


def _trace(work: Path, n: int) -> Path:
    path = work / f"poisson-{n}-{RATE_RPS:g}rps-seed{TRACE_SEED}.csv"
    if not path.exists():
        cmd = [sys.executable, "-m", "servewise", "trace", "generate", "poisson", "--rate-rps", str(RATE_RPS),
               "--n-requests", str(n), "--seed", str(TRACE_SEED), "--out", str(path)]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return path


def _tree(rev: str, dest: Path) -> Path:
    """``rev``'s files in ``dest`` (the work tree is not touched)."""
    tar = dest / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(tar), rev], cwd=ROOT, check=True)
    src = dest / "src"
    with tarfile.open(tar) as t:
        t.extractall(src, filter="data")
    return src


def _simulate_cmd(dep: Path, trace: Path, out: Path, fmt: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "servewise", "simulate", "-d", str(dep), "-t", str(trace), "-o", str(out), "-q"]
    return cmd if fmt is None else [*cmd, "--requests-format", fmt]


def whole_process(
    trees: dict[str, tuple[Path, bool]], dep: Path, trace: Path, small: Path, work: Path, n: int, repeats: int
) -> list[dict[str, Any]]:
    """Every (tree, format) case, rounds interleaved so a drift of the machine hits all alike."""
    cases: list[tuple[str, Path, str | None]] = []
    for name, (src, has_formats) in trees.items():
        for fmt in ("csv", "parquet") if has_formats else (None,):
            cases.append((f"{name} {fmt or 'csv'}", src, fmt))
    walls: dict[str, list[float]] = {c[0]: [] for c in cases}
    rss: dict[str, int] = {}
    base_rss: dict[str, int] = {}
    for label, src, fmt in cases:  # the 1,000-request run: interpreter, imports, fixed costs
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
        base_rss[label] = _run(_simulate_cmd(dep, small, work / "out-small", fmt), cwd=src, env=env)[1]
    for _ in range(repeats):
        for label, src, fmt in cases:
            env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
            wall, peak = _run(_simulate_cmd(dep, trace, work / f"out-{label.replace(' ', '-')}", fmt), cwd=src, env=env)
            walls[label].append(wall)
            rss[label] = max(rss.get(label, 0), peak)
    rows = []
    for label, _, _ in cases:
        best, median = min(walls[label]), statistics.median(walls[label])
        rows.append({
            "case": label,
            "requests": n,
            "wall_s_best": best,
            "wall_s_median": median,
            "wall_s_all": walls[label],
            "rps_best": n / best,
            "rps_median": n / median,
            "peak_rss_bytes": rss[label],
            "peak_rss_per_request_bytes": rss[label] / n,
            "rss_1000_requests_bytes": base_rss[label],
            "rss_above_1000_per_request_bytes": (rss[label] - base_rss[label]) / (n - 1000),
        })  # fmt: skip
    return rows


def _stages_worker(dep_path: str, trace_path: str, out_dir: str, fmt: str) -> None:
    """The CLI's calls one at a time, timed; prints one JSON line."""
    import resource

    t0 = time.perf_counter()
    from servewise.config import load_deployment
    from servewise.simulator import simulate
    from servewise.trace import load_trace

    t1 = time.perf_counter()
    dep = load_deployment(dep_path)
    trace = load_trace(trace_path)
    t2 = time.perf_counter()
    result = simulate(dep, trace, seed=0)
    t3 = time.perf_counter()
    result.write(out_dir, fmt)
    t4 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    doc = {"format": fmt, "import_s": t1 - t0, "load_s": t2 - t1, "simulate_s": t3 - t2, "write_s": t4 - t3}
    print(json.dumps({**doc, "peak_rss_bytes": peak}))


def stages(dep: Path, trace: Path, work: Path) -> list[dict[str, Any]]:
    rows = []
    for fmt in ("csv", "parquet"):
        cmd = [sys.executable, __file__, "--worker-stages", str(dep), str(trace), str(work / "out-stages"), fmt]
        out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def reference(dep_path: Path, trace_path: Path, ref_n: int) -> dict[str, Any]:
    import numpy as np

    from servewise.config import load_deployment
    from servewise.simulator._engine import Engine
    from servewise.simulator.reference import reference_simulate
    from servewise.trace import load_trace

    dep = load_deployment(dep_path)
    full = load_trace(trace_path)
    sub = full.window(0.0, float(full.arrival_s[ref_n - 1]) + 1e-9, rebase=False) if ref_n < len(full) else full
    t = time.perf_counter()
    raw = Engine(dep, sub, seed=7).run()
    engine_s = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_simulate(dep, sub, seed=7)
    ref_s = time.perf_counter() - t
    diff = float(np.max(np.abs((raw.end_s - sub.arrival_s) - (ref.end_s - sub.arrival_s))))
    return {
        "requests": len(sub),
        "engine_s": engine_s,
        "engine_rps": len(sub) / engine_s,
        "reference_s": ref_s,
        "reference_rps": len(sub) / ref_s,
        "speedup_vs_reference": ref_s / engine_s,
        "max_abs_latency_diff_s": diff,
    }


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="trace length (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="100,000 requests")
    ap.add_argument("--repeats", type=int, default=3, help="whole-process runs per case")
    ap.add_argument("--reference-requests", type=int, default=200_000, help="requests through the per-request model")
    ap.add_argument("--baseline-rev", default=None, help="also time this git revision's tree (e.g. HEAD)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "servewise-bench-process")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--worker-stages", nargs=4, metavar=("DEP", "TRACE", "OUT", "FORMAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_stages:
        _stages_worker(*args.worker_stages)
        return 0
    n = args.requests or (100_000 if args.quick else 1_000_000)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    dep = work / "deployment.yaml"
    dep.write_text(DEPLOYMENT)
    trace, small = _trace(work, n), _trace(work, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, tuple[Path, bool]] = {"current": (ROOT, True)}
        if args.baseline_rev:
            src = _tree(args.baseline_rev, Path(tmp))
            has_formats = "--requests-format" in (src / "servewise" / "cli" / "_simulate.py").read_text()
            trees = {f"baseline {args.baseline_rev}": (src, has_formats), **trees}
        processes = whole_process(trees, dep, trace, small, work, n, args.repeats)
    split = stages(dep, trace, work)
    ref = reference(dep, trace, min(args.reference_requests, n))

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{n:,} Poisson requests at {RATE_RPS:g} req/s, {REPLICAS} replicas, p2c, exponential {MEAN_S} s")  # fmt: skip
    print("\n== whole process: python -m servewise simulate (best / median of", args.repeats, "runs)")
    for r in processes:
        print(f"  {r['case']:24s} {r['wall_s_best']:6.2f} s / {r['wall_s_median']:6.2f} s  "
              f"{r['rps_best']:>9,.0f} / {r['rps_median']:>9,.0f} req/s  peak RSS {_mib(r['peak_rss_bytes'])} "
              f"({r['peak_rss_per_request_bytes']:.0f} B/request; {r['rss_above_1000_per_request_bytes']:.0f} B/request "
              f"above a 1,000-request run)")  # fmt: skip
    print("\n== split (one worker process per format)")
    for s in split:
        print(f"  {s['format']:8s} imports {s['import_s']:.2f} s, load {s['load_s']:.2f} s, simulate {s['simulate_s']:.2f} s, "
              f"write {s['write_s']:.2f} s; peak RSS {_mib(s['peak_rss_bytes'])}")  # fmt: skip
    print(f"\n== engine vs the one-process-per-request SimPy model, first {ref['requests']:,} requests")
    print(f"  engine {ref['engine_s']:.2f} s ({ref['engine_rps']:,.0f} req/s), reference {ref['reference_s']:.2f} s "
          f"({ref['reference_rps']:,.0f} req/s): {ref['speedup_vs_reference']:.1f}x; "
          f"largest latency difference {ref['max_abs_latency_diff_s']:.3g} s")  # fmt: skip
    if args.json:
        doc = {"requests": n, "whole_process": processes, "split": split, "reference": ref}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    ok = all(r["rps_median"] >= GOAL_RPS for r in processes if r["case"].startswith("current"))
    print(f"\ngoal (>= {GOAL_RPS:,} simulated requests / s, whole process, median):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
