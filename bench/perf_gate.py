"""CI performance gate: the simulator's speed at this commit against its parent, in one run.

``.ci/run`` calls this after the test suite::

    python bench/perf_gate.py --baseline-rev HEAD~1 --out .ci/perf

1. ``git archive`` the baseline revision into a temporary folder (the work tree is not
   touched);
2. time the simulator of each tree in fresh interpreters, rounds interleaved
   (A B, B A, A B, ...) so that a slow drift of the machine hits both alike; each run
   times only ``simulate()`` on a fixed synthetic trace, imported from that tree;
3. write ``baseline.json`` and ``current.json`` (``kind: benchmark``) and run
   ``servewise gate --baseline --current --max-regression`` on them: a Mann–Whitney U
   test per case plus a bootstrap interval of the median ratio. Exit code: the gate's.

The timing harness is this file (the commit under test's), so both trees are timed the
same way; it uses only ``servewise.config.parse_deployment``, ``servewise.trace.poisson``
and ``simulator.simulate``, which every commit since the simulator landed has.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CASES: dict[str, dict[str, Any]] = {
    "p2c-16-replicas": {
        "requests": 150_000,
        "rate_rps": 14.4,
        "deployment": {
            "name": "perf-p2c",
            "replicas": 16,
            "service_time": {"distribution": "exponential", "mean_s": 1.0},
            "balancer": {"policy": "p2c", "d": 2},
        },
    },
    "autoscale-cache-batching": {
        "requests": 150_000,
        "rate_rps": 40.0,
        "zipf_keys": 2000,
        "deployment": {
            "name": "perf-autoscale",
            "replicas": 2,
            "service_time": {"distribution": "lognormal", "mean_s": 0.08, "cv": 0.5},
            "balancer": {"policy": "least_outstanding"},
            "batching": {"max_batch_size": 8, "max_wait_s": 0.005},
            "cache": {"policy": "lru", "capacity": 500},
            "queue": {"capacity": 256},
            "scaling": {"mode": "autoscale", "min_replicas": 1, "max_replicas": 8, "target_in_flight": 4},
        },
    },
}
"""Fixed cases: one classic, one with most of the fleet machinery on the hot path."""

_CHILD = r"""
import json, sys, time
src, case = sys.argv[1], json.loads(sys.argv[2])
import importlib, servewise
from pathlib import Path
try:  # the layout since the one-namespace change; older revisions had a top-level package
    simulator = importlib.import_module("servewise.simulator")
except ModuleNotFoundError:
    simulator = importlib.import_module("simulator")
for mod in (simulator, servewise):
    if not Path(mod.__file__).resolve().is_relative_to(Path(src).resolve()):
        sys.exit(f"imported {mod.__name__} from {mod.__file__}, not from {src}")
from servewise.config import parse_deployment
from servewise.trace import poisson
simulate = simulator.simulate
trace = poisson(rate_rps=case["rate_rps"], n_requests=case["requests"], seed=1)
if case.get("zipf_keys"):
    trace = trace.with_zipf_keys(case["zipf_keys"], 0.9, seed=2)
dep = parse_deployment(case["deployment"])
simulate(dep, trace.head(2000), seed=7)  # warm the code paths
t = time.perf_counter()
simulate(dep, trace, seed=7)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def _time_once(src: Path, case: dict[str, Any]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), json.dumps(case)],
        cwd=src, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"perf gate: timing {src} failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
    return float(json.loads(r.stdout.strip().splitlines()[-1])["seconds"])


def _archive(rev: str, dest: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    tar = dest.with_suffix(".tar")
    subprocess.run(["git", "archive", "--format=tar", "-o", str(tar), sha], cwd=ROOT, check=True)
    dest.mkdir(parents=True)
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")
    tar.unlink()
    return sha


def _doc(name: str, rev: str, samples: dict[str, list[float]], rounds: int) -> dict[str, Any]:
    return {
        "kind": "benchmark",
        "schema_version": 1,
        "name": name,
        "metadata": {
            "revision": rev,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "rounds": rounds,
            "interleaved": True,
        },
        "cases": [
            {"name": c, "unit": "s", "better": "lower", "requests": CASES[c]["requests"], "samples": s}
            for c, s in samples.items()
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default="HEAD~1", help="Git revision to compare against (default: the parent).")
    ap.add_argument("--out", type=Path, default=ROOT / ".ci" / "perf")
    ap.add_argument("--rounds", type=int, default=11, help="Timed runs per tree and case (interleaved).")
    ap.add_argument("--max-regression", default="10%")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="servewise-perf-") as tmp:
        base_src = Path(tmp) / "baseline"
        base_sha = _archive(args.baseline_rev, base_src)
        trees = {"baseline": base_src, "current": ROOT}
        samples: dict[str, dict[str, list[float]]] = {k: {c: [] for c in CASES} for k in trees}
        t0 = time.perf_counter()
        for r in range(args.rounds):
            order = ["baseline", "current"] if r % 2 == 0 else ["current", "baseline"]
            for case_name, case in CASES.items():
                for which in order:
                    samples[which][case_name].append(_time_once(trees[which], case))
        print(f"perf gate: {args.rounds} interleaved rounds of {len(CASES)} cases in {time.perf_counter() - t0:.0f} s")
    base_doc = _doc("simulator-speed", base_sha, samples["baseline"], args.rounds)
    cur_doc = _doc("simulator-speed", head or "working tree", samples["current"], args.rounds)
    for name, doc in (("baseline.json", base_doc), ("current.json", cur_doc)):
        (args.out / name).write_text(json.dumps(doc, indent=2) + "\n")
    cmd = [
        sys.executable, "-m", "servewise", "gate",
        "--baseline", str(args.out / "baseline.json"), "--current", str(args.out / "current.json"),
        "--max-regression", args.max_regression,
        "--markdown", str(args.out / "summary.md"), "--junit", str(args.out / "junit.xml"),
    ]  # fmt: skip
    print(f"perf gate: {base_sha[:10]} (baseline) vs {(head or 'HEAD')[:10]} (current)")
    code = subprocess.run(cmd, cwd=ROOT).returncode
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write((args.out / "summary.md").read_text())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
