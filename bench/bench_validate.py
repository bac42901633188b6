"""The issue-6 proof: validate a real CPU model, served live, against the simulator.

Real all-MiniLM-L6-v2 (fp32, one intra-op thread per replica), 2 replicas, dynamic
batching (up to 8, 5 ms), power-of-two-choices, replaying the Azure LLM 2023 *code*
trace rate-scaled to a target utilisation (default 65 %). The steps:

1. profile the model on this machine (skipped with ``--profile``);
2. build the replay trace: the first ``--requests`` requests of the Azure code trace,
   prompt lengths capped at ``--max-input-tokens`` (MiniLM reads at most 512 tokens; the
   cap keeps prompts inside the profiled grid) and no output tokens (an encoder);
3. pick ``--time-scale`` so that offered load / capacity = ``--util``, with the
   capacity computed from the profile's latency model (un-batched service times);
4. ``servewise validate``: simulate, serve for real, load test with Locust, compare.

Usage (about 4 minutes on the 2-core dev VM)::

    python bench/bench_validate.py --out /tmp/validate-proof
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from shared_traces import find as find_traces  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = (find_traces() or ROOT.parent / "shared" / "traces") / "azure_llm_2023_code_first30min.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    ap.add_argument("--profile", type=Path, default=None, help="An existing profile of builtin:minilm fp32.")
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--window", default=None, help="START:END seconds of the trace to replay (default: all of it).")
    ap.add_argument("--max-input-tokens", type=int, default=128)
    ap.add_argument("--util", type=float, default=0.65)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sw = [sys.executable, "-m", "servewise"]

    profile = args.profile
    if profile is None:
        profile = out / "minilm-fp32.json"
        if not profile.exists():
            subprocess.run(
                [*sw, "profile", "--model", "builtin:minilm", "--variants", "fp32", "--threads", "1",
                 "--batch-sizes", "1,2,4,8", "--seq-lens", "16,32,64,128", "--budget-s", "0.6", "--out", str(profile), "-q"],
                check=True,
            )  # fmt: skip

    from servewise.profile import load_profile
    from servewise.results import load_artifact
    from servewise.trace import load_trace

    src = load_trace(args.trace)
    if args.window:
        a, _, b = args.window.partition(":")
        src = src.window(float(a), float(b))
    n = min(args.requests, len(src))
    arrival = src.arrival_s[:n] - src.arrival_s[0]
    tokens = np.minimum(np.maximum(src.input_tokens[:n], 1), args.max_input_tokens)
    trace_path = out / "trace.csv"
    with open(trace_path, "w") as f:
        f.write("arrival_s,input_tokens,output_tokens\n")
        for a, t in zip(arrival.tolist(), tokens.tolist(), strict=True):
            f.write(f"{a:.6f},{t},0\n")

    variant = next(v for v in load_profile(profile).variants if v.name == "fp32" and v.status == "measured")
    mean_s = float(np.mean([variant.service_time(1, int(t), 0) for t in tokens]))
    base_rps = n / float(arrival[-1])
    capacity_rps = args.replicas / mean_s
    time_scale = args.util * capacity_rps / base_rps

    dep = {
        "kind": "deployment",
        "schema_version": 1,
        "name": "minilm-validate",
        "replicas": args.replicas,
        "concurrency": 1,
        "model": {"profile": str(profile.resolve()), "variant": "fp32"},
        "batching": {"max_batch_size": 8, "max_wait_s": 0.005},
        "balancer": {"policy": "p2c", "d": 2},
        "queue": {"capacity": 64},
    }
    dep_path = out / "deployment.yaml"
    dep_path.write_text(yaml.safe_dump(dep, sort_keys=False))
    print(
        f"{n} requests, mean un-batched service {mean_s * 1000:.1f} ms, capacity {capacity_rps:.1f} req/s, "
        f"trace rate {base_rps:.2f} req/s -> time scale {time_scale:.2f} ({n / time_scale / base_rps:.0f} s replay)",
        flush=True,
    )
    cmd = [
        *sw, "validate", "--deployment", str(dep_path), "--trace", str(trace_path), "--time-scale", f"{time_scale:.4f}",
        "--seed", str(args.seed), "--out", str(out / "validation"), "--serve-arg=--threads=1",
    ]  # fmt: skip
    print("$ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    v = load_artifact(out / "validation", "validation")
    print(f"verdict: {v.verdict}")
    for k, m in v.metrics.items():
        rel = "—" if m.relative_error is None else f"{m.relative_error:+.1%}"
        print(f"  {k:16s} predicted {m.predicted:.4f}  measured {m.measured:.4f}  error {rel}  (±{m.tolerance:.0%})")
    gen = v.generator
    print(f"  generator: valid={gen.valid} send lag p99 {gen.send_lag_s.p99}")
    print(f"  measured utilisation target {args.util:.0%}; time scale {time_scale:.3f}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
