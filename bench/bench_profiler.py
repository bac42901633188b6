"""Profiler repeatability and latency-model accuracy (issue #3).

Profiles ``builtin:tiny-gpt2`` twice (runs a and b alternate variant by variant, each
in fresh worker processes), on the default grid (prefill 4 batch sizes x 4 prompt lengths, decode 5 batch sizes x 4
context lengths), then reports:

1. per grid point, the relative difference of the two runs' medians
   (goal: within 3% for at least 90% of the points);
2. each variant's latency model: the held-out (cross-validated) MAPE
   (goal: at most 5%), for both runs.

Run: ``python bench/bench_profiler.py --out bench-out/profiler`` (about 10-20 minutes
on 2 cores with the int8 variant, which compiles every grid shape; ``--variants
fp32,onnx-int8`` for a quicker run; ``--reuse`` recomputes the report from existing
files; ``--refit`` refits the latency models from the stored points). Writes ``profile-a.json``, ``profile-b.json`` and ``report.json`` there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from servewise.io import write_json
from servewise.profile import Profile, load_profile
from servewise.profiler import ProfileSettings, TimingSettings, parse_variants, run_profile

DEFAULT_VARIANTS = "fp32,bf16,int8,onnx-fp32,onnx-int8"


def _medians(prof: Profile) -> dict[tuple[str, str, int, int], float]:
    return {
        (v.name, p.phase, p.batch_size, p.seq_len): p.latency_s.p50
        for v in prof.variants
        for p in v.points
        if p.status == "measured" and p.latency_s is not None
    }


def compare(a: Profile, b: Profile, tolerance: float = 0.03) -> dict[str, object]:
    ma, mb = _medians(a), _medians(b)
    keys = sorted(set(ma) & set(mb))
    diffs = {k: abs(ma[k] / mb[k] - 1.0) for k in keys}
    per_variant: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(k[0] for k in keys):
        d = np.array([diffs[k] for k in keys if k[0] == name])
        per_variant[name] = {
            "points": int(len(d)),
            "within_tolerance": float(np.mean(d <= tolerance)),
            "median_diff": float(np.median(d)),
            "max_diff": float(d.max()),
        }
    all_d = np.array(list(diffs.values()))
    models = {}
    for run, prof in (("a", a), ("b", b)):
        for v in prof.variants:
            if v.latency_model is not None:
                lm = v.latency_model
                models.setdefault(v.name, {})[run] = {"kind": lm.kind, "cv_mape": lm.cv_mape, "candidates": lm.candidates}
    unstable = {
        run: sum(1 for v in prof.variants for p in v.points if p.status == "measured" and not p.stable)
        for run, prof in (("a", a), ("b", b))
    }
    return {
        "tolerance": tolerance,
        "points_compared": int(len(all_d)),
        "points_only_in_one_run": len(set(ma) ^ set(mb)),
        "within_tolerance": float(np.mean(all_d <= tolerance)) if len(all_d) else 0.0,
        "median_diff": float(np.median(all_d)) if len(all_d) else None,
        "p90_diff": float(np.percentile(all_d, 90)) if len(all_d) else None,
        "per_variant": per_variant,
        "latency_models": models,
        "unstable_points": unstable,
    }


def _refit(prof: Profile) -> Profile:
    from servewise.profiler._fit import fit_latency_model

    variants = [
        v.model_copy(update={"latency_model": fit_latency_model(v.points, v.model_kind == "decoder")})
        if v.points
        else v
        for v in prof.variants
    ]
    return prof.model_copy(update={"variants": variants})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/profiler"))
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--budget-s", type=float, default=1.0, help="Timed seconds per grid point at most.")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="Use existing profile-a/b.json, only compare.")
    ap.add_argument("--refit", action="store_true", help="Refit latency models from the points with this code.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = parse_variants(args.variants)
    settings = ProfileSettings(timing=TimingSettings(budget_s=args.budget_s), threads=args.threads)
    paths = {run: args.out / f"profile-{run}.json" for run in ("a", "b")}
    walls: dict[str, float] = {"a": 0.0, "b": 0.0}
    if not args.reuse:
        for p in paths.values():
            p.unlink(missing_ok=True)
        # The two runs alternate variant by variant (a: fp32, b: fp32, a: bf16, ...), each
        # variant in its own fresh worker processes, so that both runs of a variant see
        # the machine in about the same state: the bench measures the profiler's
        # repeatability, not the drift of a shared host over the minutes between runs.
        for name in variants:
            for run, path in paths.items():
                t0 = time.perf_counter()
                run_profile(["builtin:tiny-gpt2"], [name], path, settings, append=True)
                walls[run] += time.perf_counter() - t0
                print(f"run {run}: {name} done ({walls[run]:.0f} s so far) -> {path}", file=sys.stderr)
    profiles = [load_profile(paths["a"]), load_profile(paths["b"])]
    if args.refit:
        profiles = [_refit(p) for p in profiles]
    report = compare(*profiles)
    report["wall_s"] = walls
    report["hardware"] = profiles[0].hardware.model_dump()
    write_json(args.out / "report.json", report)

    print(f"\nper-point median difference between two runs ({report['points_compared']} points)")
    print(f"{'variant':<10} {'points':>6} {'<=3%':>7} {'median':>8} {'max':>8}")
    for name, r in report["per_variant"].items():  # type: ignore[union-attr]
        print(f"{name:<10} {r['points']:>6} {r['within_tolerance']:>7.0%} {r['median_diff']:>8.2%} {r['max_diff']:>8.2%}")
    print(f"{'all':<10} {report['points_compared']:>6} {report['within_tolerance']:>7.0%} {report['median_diff']:>8.2%}")
    print(f"goal: >= 90% of points within 3% -> {'met' if report['within_tolerance'] >= 0.9 else 'MISSED'}")
    print("\nlatency model, held-out MAPE (5-fold CV), runs a / b")
    for name, runs in report["latency_models"].items():  # type: ignore[union-attr]
        cells = "  ".join(f"{run}: {m['kind']} {m['cv_mape']:.2%}" for run, m in runs.items())
        print(f"{name:<10} {cells}")
    print(f"unstable points: {report['unstable_points']}")
    print(f"wrote {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
