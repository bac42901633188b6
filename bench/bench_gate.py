"""The gate's error rates on real profiles: A/A false regressions and a caught 10% slowdown.

    python bench/bench_gate.py --out bench-out/gate [--pairs 20] [--max-regression 5%]

1. Profile the same build ``2 × pairs`` times, one after the other, exactly as a CI job
   would (``servewise profile -m builtin:minilm --variants fp32``, 2 × 2 grid, 1 thread,
   1 s per point, 5 rounds over 3 fresh processes, as the README advises for a gate): real all-MiniLM-L6-v2 weights, real timings, the
   machine's own drift between runs included.
2. A/A: gate profile ``2k+1`` against profile ``2k`` (``pairs`` gates). Any exit code
   other than 0 is a false regression.
3. Injected slowdown: the same pairs, with every timing sample of the current profile
   multiplied by 1.10 (a uniform 10% slowdown of the build on top of the run's real
   noise; the calibration kernel's timings untouched). Exit code 1 is a catch.

Both are run speed-adjusted (the default) and on raw timings (``calibrate=False``).

Writes ``OUT/profiles/*.json``, ``OUT/gate_aa.json`` (every gate's checks) and prints
the counts the README quotes. Takes about 25 s per profile on the 2-core VM.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servewise.reports import run_gate  # noqa: E402

PROFILE_ARGS = [
    "-m", "builtin:minilm", "--variants", "fp32", "--batch-sizes", "1,4", "--seq-lens", "16,64",
    "--budget-s", "1", "--rounds", "5", "--threads", "1", "--quiet",
]  # fmt: skip


def _profile(path: Path) -> float:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "servewise", "profile", *PROFILE_ARGS, "--out", str(path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"profiling failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return time.perf_counter() - t


def slowed(src: Path, dest: Path, factor: float) -> None:
    """A copy of the profile ``src`` with every timing sample (and its statistics) × ``factor``;
    the calibration kernel's timings are left as measured (the machine did not change)."""
    doc = json.loads(src.read_text())
    out = copy.deepcopy(doc)
    for v in out["variants"]:
        for p in v.get("points") or []:
            p["samples_s"] = [s * factor for s in p.get("samples_s") or []]
            stats = p.get("latency_s")
            if stats:
                for k in ("mean", "p50", "p90", "p99", "min", "max", "iqr"):
                    stats[k] *= factor
    dest.write_text(json.dumps(out))


def _summary(res: Any) -> dict[str, Any]:
    reg = [c for c in res.checks if c.kind == "regression" and c.ratio is not None]
    worst = max(reg, key=lambda c: c.ci_low or 0.0) if reg else None
    return {
        "exit_code": res.exit_code,
        "failed": [c.name for c in res.checks if c.status != "pass"],
        "worst": None if worst is None else {
            "name": worst.name, "ratio": worst.ratio, "ci_low": worst.ci_low, "ci_high": worst.ci_high,
            "p_holm": worst.p_holm,
        },
        "checks": [c.to_dict() for c in res.checks],
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "gate")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--max-regression", type=float, default=0.05, help="Fraction (0.05 = 5%%).")
    ap.add_argument("--slowdown", type=float, default=1.10)
    ap.add_argument("--reuse", action="store_true", help="Reuse profiles already in OUT/profiles.")
    args = ap.parse_args()
    prof_dir = args.out / "profiles"
    prof_dir.mkdir(parents=True, exist_ok=True)
    paths = [prof_dir / f"minilm-{i:02d}.json" for i in range(2 * args.pairs)]
    for i, p in enumerate(paths):
        if args.reuse and p.is_file():
            continue
        took = _profile(p)
        print(f"profile {i + 1}/{len(paths)}: {took:.0f} s", flush=True)
    aa, injected, aa_raw, injected_raw = [], [], [], []
    for k in range(args.pairs):
        base, cur = paths[2 * k], paths[2 * k + 1]
        slow = args.out / f"slowed-{k:02d}.json"
        slowed(cur, slow, args.slowdown)
        for calibrate, a_list, i_list in ((True, aa, injected), (False, aa_raw, injected_raw)):
            kw = dict(max_regression=args.max_regression, seed=k, calibrate=calibrate)
            a_list.append(_summary(run_gate(baseline=base, current=cur, **kw)))
            i_list.append(_summary(run_gate(baseline=base, current=slow, **kw)))
    false_reg = sum(g["exit_code"] != 0 for g in aa)
    caught = sum(g["exit_code"] == 1 for g in injected)
    false_raw = sum(g["exit_code"] != 0 for g in aa_raw)
    caught_raw = sum(g["exit_code"] == 1 for g in injected_raw)
    doc = {
        "pairs": args.pairs,
        "max_regression": args.max_regression,
        "slowdown": args.slowdown,
        "profile_args": PROFILE_ARGS,
        "aa_false_regressions": false_reg,
        "injected_caught": caught,
        "raw": {"aa_false_regressions": false_raw, "injected_caught": caught_raw},
        "aa": aa,
        "injected": injected,
        "aa_raw": aa_raw,
        "injected_raw": injected_raw,
    }
    (args.out / "gate_aa.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{'gate':>4}  {'A/A exit':>8}  {'A/A worst ratio [95% CI]':<34}  {'x1.10 exit':>10}  {'x1.10 worst ratio [95% CI]'}")
    for k, (a, b) in enumerate(zip(aa, injected, strict=True)):
        def w(g: dict[str, Any]) -> str:
            x = g["worst"]
            return "—" if x is None else f"{x['ratio']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}] {x['name']}"

        print(f"{k:>4}  {a['exit_code']:>8}  {w(a):<34}  {b['exit_code']:>10}  {w(b)}")
    print(f"speed-adjusted (default): A/A {false_reg} false regressions in {args.pairs} gates; "
          f"injected x{args.slowdown:g}: caught in {caught} of {args.pairs} (max regression {args.max_regression:.0%})")
    print(f"raw timings (--no-calibration): A/A {false_raw} false regressions in {args.pairs} gates; "
          f"injected x{args.slowdown:g}: caught in {caught_raw} of {args.pairs}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
