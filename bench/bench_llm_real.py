"""Real vs simulated: an LLM decoder served for real on this CPU, against the simulator.

For ``builtin:tiny-gpt2`` (variant fp32) this bench

1. profiles the model with the real profiler (``servewise profile``, one variant, a grid
   that covers the workload's prompt lengths, decode contexts and batch sizes, with the
   same ``--threads`` as the serving loop);
2. draws a seeded Poisson workload (prompts 16–128 tokens, outputs 8–64 tokens) whose
   rate puts the utilisation of a one-at-a-time server at ``--utilisation`` by the
   profile's predicted mean service time;
3. serves it for real in a fresh process: the same model the profiler builds, warmed up,
   a loop that follows the arrival timestamps on the wall clock, FIFO, either
   ``single`` (one request at a time: a prefill of its prompt, then ``output − 1``
   greedy decode steps with the KV cache) or ``static`` (up to ``--batch`` queued
   requests at once, prompts padded to the longest, one batched prefill, then
   ``max output − 1`` batched decode steps; every member ends with the batch);
4. predicts the same with the simulator from the profile (a deployment with a ``model:``
   block; ``batching: {max_batch_size: B, max_wait_s: 0}`` for static batches; and, where
   deployments accept it, ``engine: {kind: continuous, max_num_seqs: 1}`` for ``single``),
   averaged over ``--sim-seeds`` simulator seeds;
5. prints measured vs predicted mean and p95 end-to-end latency (end − scheduled arrival)
   and passes a row when both are within ``--tolerance`` (10%).

The serving loop is made to be the replica the simulator models, and the report shows
what would break that:

- ``--keep-warm-ms`` (3): while idle the loop runs one token through the model this
  often. On this (virtualised) CPU the first ~10 ms of model work after an idle gap of
  more than ~20 ms runs 30–40% slower than the profile's back-to-back timings, about
  3–4 ms per busy period; the profile, and so the simulator, assume a warm replica.
  ``--keep-warm-ms 0`` shows the gap (mean and p95 about 11% above the prediction).
- ``--priority`` (rt): the serving process runs SCHED_FIFO where allowed (else nice −10),
  so other processes on a shared host cannot time-slice it; ``on CPU`` in the log is the
  share of its busy time it actually ran (below 97% adds a warning).
- ``--repeats`` (3): real runs per mode, each in a fresh process, modes interleaved; the
  median of their mean and p95 is compared.
- Every batch's measured prefill and decode time is set against the profile's noise-free
  prediction for it (``service_ratio``), and each serving process times two grid points
  exactly as the profiler does before and after its run (``machine vs profile``), so a
  miss can be told apart: step costs (or the host) drifted, or queueing differs.

Run (about 3 minutes on 2 cores)::

    python bench/bench_llm_real.py --out bench-out/llm-real
    python bench/bench_llm_real.py --profile bench-out/llm-real/profile.json   # reuse the profile

Exit code 0 when every compared row is within tolerance, 1 otherwise. Everything lands in
``DIR/llm_real.json`` (written atomically), with the profile and deployments beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the source tree's packages
    sys.path.insert(0, str(ROOT))

MODEL = "builtin:tiny-gpt2"
VARIANT = "fp32"
MODES = ("single", "static")
SERVE_FLAG = "--serve-job"
CONTINUOUS_KV_TOKENS = 4096
"""KV capacity of the continuous-engine prediction: many times one request (192 tokens at most)."""  # internal: the real serving loop, in a fresh process


@dataclass(frozen=True)
class Settings:
    """Everything one check depends on (the JSON report records it)."""

    requests: int = 120
    utilisation: float = 0.4
    batch: int = 4
    seed: int = 0
    threads: int = 1
    prompt_tokens: tuple[int, int] = (16, 128)
    output_tokens: tuple[int, int] = (8, 64)
    sim_seeds: int = 5
    repeats: int = 3
    """Real runs per mode (each in a fresh process); the report takes the median of their metrics."""
    warmup_s: float = 3.0
    """Seconds of warm-up generations in the serving process before its clock starts."""
    keep_warm_ms: float = 3.0
    """While idle, the serving loop runs one token through the model this often (0: it only
    sleeps). Without it, the first ~10 ms of model work after an idle gap of more than ~20 ms
    runs 30–40% slower on this machine than the profile's back-to-back timings (see the
    report's ``idle`` finding); the profile, and so the simulator, assume a warm replica."""
    priority: str = "rt"
    """Scheduling of the serving process: ``rt`` (SCHED_FIFO, else nice -10), ``nice`` or ``none``.
    The simulator models a replica that owns its CPU; on a shared host other processes
    would otherwise time-slice the loop (the profile's medians are immune to that)."""
    tolerance: float = 0.10
    modes: tuple[str, ...] = MODES
    profile_budget_s: float | None = None
    """``--budget-s`` of the profile run (None: the profiler's default)."""


@dataclass
class Row:
    mode: str
    measured: dict[str, float]
    predicted: dict[str, float] | None
    error: dict[str, float] = field(default_factory=dict)
    passed: bool | None = None
    note: str = ""


# --------------------------------------------------------------------------- profile


def _cover(lo: int, hi: int) -> list[int]:
    """Grid lengths covering [lo, hi]: powers of two from at or below ``lo``, the last at or above ``hi``."""
    x = 1
    while x * 2 <= lo:
        x *= 2
    out = [x]
    while out[-1] < hi:
        nxt = out[-1] * 2
        if nxt > hi:  # close the range with a multiple of 16 instead of overshooting to the next power
            nxt = max(-(-hi // 16) * 16, out[-1] + 1)
        out.append(nxt)
    return out


def profile_grid(s: Settings) -> dict[str, list[int]]:
    """The profile grid for the workload: prompts, decode contexts and batch sizes all inside it."""
    plo, phi = s.prompt_tokens
    olo, ohi = s.output_tokens
    sizes = list(range(1, s.batch + 1)) if s.batch <= 4 else sorted({*(2**k for k in range(s.batch.bit_length())), s.batch})
    return {
        "seq_lens": _cover(plo, phi),
        # a decode step runs over context prompt .. prompt + output − 2 (the simulator uses up to prompt + output − 1)
        "context_lens": _cover(plo, phi + ohi - 1),
        "batch_sizes": sizes,
        "decode_batch_sizes": sizes,
    }


def profile_command(out: Path, s: Settings) -> list[str]:
    g = profile_grid(s)
    cmd = [
        sys.executable, "-m", "servewise", "profile", "--model", MODEL, "--variants", VARIANT,
        "--out", str(out), "--threads", str(s.threads),
        "--seq-lens", ",".join(map(str, g["seq_lens"])),
        "--context-lens", ",".join(map(str, g["context_lens"])),
        "--batch-sizes", ",".join(map(str, g["batch_sizes"])),
        "--decode-batch-sizes", ",".join(map(str, g["decode_batch_sizes"])),
    ]
    if s.profile_budget_s is not None:
        cmd += ["--budget-s", str(s.profile_budget_s)]
    return cmd


def make_profile(out: Path, s: Settings) -> tuple[list[str], float]:
    """Profile the model with the CLI (a subprocess, like a user would); (command, wall seconds)."""
    cmd = profile_command(out, s)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"profiling failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stdout[-3000:]}")
    return cmd, wall


def load_variant(profile: Path) -> Any:
    from servewise.profile import load_profile

    return load_profile(profile).variant(VARIANT, MODEL)


def check_grid(profile: Path, s: Settings) -> list[str]:
    """Warnings when the profile's measured grid does not cover the workload (the fit would extrapolate)."""
    v = load_variant(profile)
    pts = [p for p in v.points if p.status == "measured"]
    pre = [p for p in pts if p.phase == "prefill"]
    dec = [p for p in pts if p.phase == "decode"]
    need = profile_grid(s)
    warn = []

    def rng(ps: list[Any], attr: str) -> tuple[int, int]:
        vals = [getattr(p, attr) for p in ps] or [0]
        return min(vals), max(vals)

    if rng(pre, "seq_len")[0] > s.prompt_tokens[0] or rng(pre, "seq_len")[1] < s.prompt_tokens[1]:
        warn.append(f"prefill lengths {rng(pre, 'seq_len')} do not cover prompts {s.prompt_tokens}")
    ctx_hi = s.prompt_tokens[1] + s.output_tokens[1] - 1
    if rng(dec, "seq_len")[0] > s.prompt_tokens[0] or rng(dec, "seq_len")[1] < ctx_hi:
        warn.append(f"decode contexts {rng(dec, 'seq_len')} do not cover {s.prompt_tokens[0]}..{ctx_hi}")
    bmax = max(need["batch_sizes"]) if "static" in s.modes else 1  # = --batch
    if rng(pre, "batch_size")[1] < bmax or rng(dec, "batch_size")[1] < bmax:
        warn.append(f"batch sizes (prefill {rng(pre, 'batch_size')}, decode {rng(dec, 'batch_size')}) do not reach {bmax}")
    threads = load_threads(profile)
    if threads is not None and threads != s.threads:
        warn.append(f"the profile ran with {threads} threads, the serving loop with {s.threads}")
    return warn


def load_threads(profile: Path) -> int | None:
    from servewise.profile import load_profile

    return load_profile(profile).hardware.threads_used


# --------------------------------------------------------------------------- workload


def make_workload(variant: Any, s: Settings) -> tuple[Any, dict[str, Any]]:
    """A seeded Poisson trace whose rate makes ``utilisation`` of a one-at-a-time server."""
    from servewise.trace import Trace

    rng = np.random.default_rng(s.seed)
    n = s.requests
    p = rng.integers(s.prompt_tokens[0], s.prompt_tokens[1] + 1, n)
    o = rng.integers(s.output_tokens[0], s.output_tokens[1] + 1, n)
    service = np.array([variant.generation_time(1, int(a), int(b)) for a, b in zip(p, o, strict=True)])
    mean_service = float(service.mean())
    rate = s.utilisation / mean_service
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    trace = Trace(arrival_s=arrival, input_tokens=p, output_tokens=o, source=f"bench_llm_real seed {s.seed}")
    info = {
        "requests": n,
        "rate_rps": rate,
        "utilisation_target": s.utilisation,
        "predicted_mean_service_s": mean_service,
        "duration_s": float(arrival[-1]),
        "prompt_tokens": list(s.prompt_tokens),
        "output_tokens": list(s.output_tokens),
        "mean_prompt_tokens": float(p.mean()),
        "mean_output_tokens": float(o.mean()),
        "seed": s.seed,
    }
    return trace, info


# --------------------------------------------------------------------------- the real server


def calibration_points(variant: Any, s: Settings) -> list[tuple[str, int, int]]:
    """Two measured grid points of the profile near the workload's typical prefill and decode step.

    The serving process times them as the profiler does, before and after its run: their
    ratio to the profile's medians is how much faster or slower the machine is than when
    it was profiled (a noisy shared host drifts).
    """
    pts = [p for p in variant.points if p.status == "measured" and p.batch_size == 1]
    p_mid = sum(s.prompt_tokens) / 2
    c_mid = p_mid + sum(s.output_tokens) / 4
    out = []
    for phase, mid in (("prefill", p_mid), ("decode", c_mid)):
        cand = [p for p in pts if p.phase == phase]
        if cand:
            best = min(cand, key=lambda p: abs(math.log(p.seq_len / mid)))
            out.append((phase, 1, best.seq_len))
    return out


def drift(run: dict[str, Any], variant: Any) -> dict[str, dict[str, float]]:
    """Calibration medians of a real run over the profile's medians at the same points (1.0: no drift)."""
    ref = {f"{p.phase}:{p.batch_size}:{p.seq_len}": p.latency_s.p50 for p in variant.points if p.latency_s is not None}
    return {
        when: {k: v / ref[k] for k, v in vals.items() if k in ref}
        for when, vals in (run.get("calibration") or {}).items()
    }


def run_real(
    trace: Any, mode: str, s: Settings, workdir: Path, calibration: list[tuple[str, int, int]] | None = None
) -> dict[str, Any]:
    """Serve ``trace`` for real in a fresh process; per-request start/end and per-batch timings."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd, job_path = tempfile.mkstemp(prefix=f"job-{mode}-", suffix=".json", dir=workdir)
    res_path = Path(job_path).with_suffix(".result.json")
    job = {
        "mode": mode,
        "batch": s.batch if mode == "static" else 1,
        "threads": s.threads,
        "seed": s.seed,
        "warmup_s": s.warmup_s,
        "keep_warm_s": s.keep_warm_ms / 1e3,
        "priority": s.priority,
        "calibration": calibration or [],
        "workdir": str(workdir),
        "arrival_s": trace.arrival_s.tolist(),
        "input_tokens": trace.input_tokens.tolist(),
        "output_tokens": trace.output_tokens.tolist(),
    }
    with os.fdopen(fd, "w") as f:
        json.dump(job, f)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), SERVE_FLAG, job_path, str(res_path)],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the serving process failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        out: dict[str, Any] = json.loads(res_path.read_text())
    finally:
        Path(job_path).unlink(missing_ok=True)
        res_path.unlink(missing_ok=True)
    return out


def _raise_priority(want: str, threads: int) -> str:
    """Give the serving process a replica's own CPU, as far as this host allows; says what it got.

    ``rt``: SCHED_FIFO (priority 1), so no ordinary process time-slices the loop while it
    serves (it sleeps when idle, so others still run); failing that ``nice`` -10; ``none``.
    With as many threads as usable CPUs, ``rt`` becomes ``nice``: never hold every CPU.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if want == "rt" and threads >= cpus:
        want = "nice"
    if want == "rt":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "rt"
        except (AttributeError, OSError):
            want = "nice"
    if want == "nice":
        try:
            os.nice(-10)
            return "nice"
        except OSError:
            pass
    return "none"


def _serve(job_path: str, result_path: str) -> int:
    """The serving process: load the model as the profiler does, warm up, follow the arrivals."""
    import gc

    import torch

    from servewise.profiler._models import TorchRunner, convert, load_model, materialize
    from servewise.profiler._spec import parse_spec
    from servewise.profiler._timing import TimingSettings, measure
    from servewise.profiler._variants import VARIANTS

    job = json.loads(Path(job_path).read_text())
    priority = _raise_priority(str(job.get("priority", "rt")), int(job["threads"]))
    torch.set_num_threads(int(job["threads"]))
    spec = parse_spec(MODEL)
    workdir = Path(job["workdir"])
    materialize(spec, workdir)
    loaded = load_model(spec, workdir)
    model, dtype, device, _ = convert(loaded, VARIANTS[VARIANT])
    vocab = loaded.vocab_size

    arrival = [float(x) for x in job["arrival_s"]]
    n_in = [int(x) for x in job["input_tokens"]]
    n_out = [max(int(x), 1) for x in job["output_tokens"]]
    n = len(arrival)
    B = int(job["batch"])
    period = float(job["keep_warm_s"])
    g = torch.Generator().manual_seed(int(job["seed"]) + 1)
    # The "tokenised" prompts arrive with their requests (ids from 1: 0 pads).
    prompts = [torch.randint(1, vocab, (n_in[i],), generator=g) for i in range(n)]

    def generate(ids: torch.Tensor, steps: int) -> tuple[float, float]:
        """Prefill ``ids`` [b, s], then ``steps`` greedy decode steps with the KV cache; (prefill s, decode s)."""
        t0 = time.perf_counter()
        k, v = model.empty_cache(ids.shape[0], dtype, device)
        logits, k, v = model(ids, k, v)
        tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # the first generated token
        t1 = time.perf_counter()
        for _ in range(steps):
            logits, k, v = model(tok, k, v)
            tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        return t1 - t0, time.perf_counter() - t1

    def batch_ids(members: list[int]) -> torch.Tensor:
        if len(members) == 1:
            return prompts[members[0]].unsqueeze(0)
        longest = max(n_in[m] for m in members)
        ids = torch.zeros((len(members), longest), dtype=torch.long)
        for row, m in enumerate(members):
            ids[row, longest - n_in[m]:] = prompts[m]  # left padding: every row's last token is its own
        return ids

    warm_tok = torch.ones((1, 1), dtype=torch.long)

    def keep_warm() -> None:
        """One token through the model (about a decode step): keeps the core's caches warm while idle."""
        k, v = model.empty_cache(1, dtype, device)
        model(warm_tok, k, v)

    runner = TorchRunner(loaded, model, dtype, device, {})

    def calibrate() -> dict[str, float]:
        """Median seconds of the calibration points, timed exactly as the profiler times them."""
        out = {}
        for phase, b, s in job["calibration"]:
            run, reset = getattr(runner, phase)(int(b), int(s))
            m = measure(run, TimingSettings().round(), reset=reset)
            out[f"{phase}:{b}:{s}"] = float(np.median(m.samples_s))
        return out

    rng = np.random.default_rng(int(job["seed"]) + 2)
    with torch.inference_mode():
        # Warm-up: the longest shapes first (allocator growth), then random requests of
        # the workload's kind until warmup_s has passed.
        hi_p, hi_o = max(n_in), max(n_out)
        for b in sorted({1, B}):
            generate(torch.randint(1, vocab, (b, hi_p)), hi_o - 1)
        w0 = time.perf_counter()
        while time.perf_counter() - w0 < float(job["warmup_s"]):
            b = int(rng.integers(1, B + 1))
            members = [int(x) for x in rng.integers(0, n, b)]
            generate(batch_ids(members), max(n_out[m] for m in members) - 1)
        calib_before = calibrate()
        gc.collect()

        start = [math.nan] * n
        end = [math.nan] * n
        batches: list[dict[str, Any]] = []
        warm_calls = 0
        nxt = 0
        t0 = time.perf_counter()
        last_work = t0
        while nxt < n:
            due = t0 + arrival[nxt]
            # Idle until the next arrival: sleep (the last 1.5 ms spinning, for a punctual
            # start); with keep-warm, run one token through the model every `period`.
            while True:
                now = time.perf_counter()
                if now >= due:
                    break
                if period > 0 and now - last_work >= period:
                    keep_warm()
                    warm_calls += 1
                    last_work = time.perf_counter()
                    continue
                target = min(due, last_work + period) if period > 0 else due
                if target < due:
                    time.sleep(max(target - now, 0.0))
                elif due - now > 0.002:
                    time.sleep(due - now - 0.0015)
                else:
                    while time.perf_counter() < due:
                        pass
            now = time.perf_counter() - t0
            members = [nxt]
            if B > 1:  # static batching, max_wait 0: whatever is queued now, up to B
                while len(members) < B and nxt + len(members) < n and arrival[nxt + len(members)] <= now:
                    members.append(nxt + len(members))
            nxt += len(members)
            s0 = time.perf_counter() - t0
            c0 = time.thread_time()
            t_pre, t_dec = generate(batch_ids(members), max(n_out[m] for m in members) - 1)
            cpu = time.thread_time() - c0
            last_work = time.perf_counter()
            s1 = last_work - t0
            for m in members:
                start[m] = s0
                end[m] = s1
            batches.append({"members": members, "start_s": s0, "end_s": s1, "prefill_s": t_pre, "decode_s": t_dec,
                            "cpu_s": cpu})
        calib_after = calibrate()
    Path(result_path).write_text(
        json.dumps({
            "arrival_s": arrival, "start_s": start, "end_s": end, "batches": batches, "warm_calls": warm_calls,
            "priority": priority,
            "calibration": {"before": calib_before, "after": calib_after},
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        })
    )
    return 0


# --------------------------------------------------------------------------- the simulator


def deployment_docs(profile: Path, s: Settings) -> dict[str, dict[str, Any]]:
    model = {"profile": str(profile.resolve()), "variant": VARIANT, "spec": MODEL}
    docs: dict[str, dict[str, Any]] = {}
    if "single" in s.modes:
        docs["single"] = {"name": "real-single", "replicas": 1, "model": model}
        docs["single (continuous engine)"] = {
            "name": "real-single-continuous", "replicas": 1, "model": model,
            # one sequence at a time; a KV cache far larger than one request (no preemption)
            "engine": {"kind": "continuous", "max_num_seqs": 1, "kv_capacity_tokens": CONTINUOUS_KV_TOKENS},
        }
    if "static" in s.modes:
        docs["static"] = {
            "name": "real-static", "replicas": 1, "model": model,
            "batching": {"max_batch_size": s.batch, "max_wait_s": 0},
        }
    return docs


def predict(doc: dict[str, Any], path: Path, trace: Any, s: Settings) -> dict[str, Any]:
    """Simulate one deployment (written to ``path``) over ``s.sim_seeds`` seeds; mean of their metrics."""
    import yaml

    from servewise.config import load_deployment
    from servewise.simulator import simulate
    from servewise.stats import summarize

    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    dep = load_deployment(path)
    per_seed = []
    for seed in range(s.sim_seeds):
        res = simulate(dep, trace, seed=seed)
        lat = res.requests["latency_s"].to_numpy(dtype=float)
        sm = summarize(lat)
        per_seed.append({"mean": sm["mean"], "p95": sm["p95"]})
    return {
        "mean": float(np.mean([r["mean"] for r in per_seed])),
        "p95": float(np.mean([r["p95"] for r in per_seed])),
        "per_seed": per_seed,
    }


# --------------------------------------------------------------------------- compare


def measured_metrics(run: dict[str, Any]) -> dict[str, float]:
    from servewise.stats import summarize

    lat = np.asarray(run["end_s"], dtype=float) - np.asarray(run["arrival_s"], dtype=float)
    sm = summarize(lat)
    return {"mean": float(sm["mean"]), "p95": float(sm["p95"])}


def service_check(run: dict[str, Any], variant: Any, trace: Any) -> dict[str, float]:
    """Measured service time of the run's batches against the profile's noise-free prediction."""
    p = trace.input_tokens
    o = np.maximum(trace.output_tokens, 1)
    meas_pre = meas_dec = pred_pre = pred_dec = 0.0
    for b in run["batches"]:
        m = b["members"]
        size, pl, ol = len(m), int(p[m].max()), int(o[m].max())
        pre = float(variant.step_time(size * pl, 0, 0, size)[0])
        pred_pre += pre
        pred_dec += variant.generation_time(size, pl, ol) - pre
        meas_pre += b["prefill_s"]
        meas_dec += b["decode_s"]
    steps = sum(int(o[b["members"]].max()) - 1 for b in run["batches"])
    return {
        "batches": len(run["batches"]),
        "mean_batch_size": float(np.mean([len(b["members"]) for b in run["batches"]])),
        "service_ratio": (meas_pre + meas_dec) / (pred_pre + pred_dec),
        "prefill_ratio": meas_pre / pred_pre if pred_pre else math.nan,
        "decode_ratio": meas_dec / pred_dec if pred_dec else math.nan,
        "measured_decode_step_ms": 1e3 * meas_dec / steps if steps else math.nan,
        "predicted_decode_step_ms": 1e3 * pred_dec / steps if steps else math.nan,
        "cpu_share": sum(b.get("cpu_s", math.nan) for b in run["batches"])
        / sum(b["end_s"] - b["start_s"] for b in run["batches"]),
        "busy_fraction": sum(b["end_s"] - b["start_s"] for b in run["batches"]) / max(run["end_s"][-1], 1e-9),
    }


def _rel(a: float, b: float) -> float:
    return (b - a) / a if a > 0 else math.inf


def run_check(
    out: Path, s: Settings, profile: Path | None = None, *, log: Any = print, command: str | None = None
) -> dict[str, Any]:
    """The whole check; returns the report (also written to ``out/llm_real.json``)."""
    from servewise.errors import ConfigError

    t_all = time.perf_counter()
    out = Path(out).resolve()
    profile = Path(profile).resolve() if profile is not None else None
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"settings": asdict(s), "model": MODEL, "variant": VARIANT}
    if profile is None:
        profile = out / "profile.json"
        log(f"profiling {MODEL} ({VARIANT}, {s.threads} thread(s)) -> {profile}")
        cmd, wall = make_profile(profile, s)
        report["profile"] = {"path": str(profile), "command": shlex.join(cmd), "wall_s": wall, "reused": False}
        log(f"  {wall:.0f} s: {shlex.join(cmd)}")
    else:
        report["profile"] = {"path": str(profile), "reused": True}
    warnings = check_grid(profile, s)
    for w in warnings:
        log(f"warning: {w}")
    report["warnings"] = warnings
    variant = load_variant(profile)
    lm = variant.latency_model
    report["profile"].update(kind=lm.kind, cv_mape=lm.cv_mape, noise_cv=lm.noise_cv, threads=load_threads(profile))

    trace, info = make_workload(variant, s)
    report["workload"] = info
    log(
        f"workload: {info['requests']} requests at {info['rate_rps']:.2f}/s over {info['duration_s']:.1f} s "
        f"(predicted mean service {info['predicted_mean_service_s'] * 1e3:.1f} ms, utilisation {s.utilisation:g})"
    )

    calib = calibration_points(variant, s)
    report["real"] = {mode: {"runs": []} for mode in s.modes}
    for r in range(s.repeats):  # modes interleaved: a slow drift of the host hits both alike
        for mode in s.modes:
            t0 = time.perf_counter()
            run = run_real(trace, mode, s, out / "work", calib)
            wall = time.perf_counter() - t0
            m = measured_metrics(run)
            svc = service_check(run, variant, trace)
            dr = drift(run, variant)
            if svc["cpu_share"] < 0.97:
                w = (
                    f"real {mode} #{r + 1}: the serving loop was off the CPU {1 - svc['cpu_share']:.0%} of its busy "
                    f"time (scheduling: {run.get('priority')}): other processes time-sliced it, which the simulator "
                    "does not model; run on a quieter machine or with --priority rt"
                )
                warnings.append(w)
                log(f"warning: {w}")
            report["real"][mode]["runs"].append({
                "metrics": m, "service": svc, "speed_vs_profile": dr, "warm_calls": run.get("warm_calls", 0),
                "wall_s": wall, "requests": {k: run[k] for k in ("start_s", "end_s")}, "batches": run["batches"],
            })
            cal = "; ".join(
                f"{when} " + ", ".join(f"{k.split(':')[0]} {v:.2f}x" for k, v in vals.items()) for when, vals in dr.items()
            )
            log(
                f"real {mode} #{r + 1}: mean {m['mean'] * 1e3:.1f} ms, p95 {m['p95'] * 1e3:.1f} ms; "
                f"service {svc['service_ratio']:.3f}x profile (prefill {svc['prefill_ratio']:.3f}x, decode "
                f"{svc['decode_ratio']:.3f}x: {svc['measured_decode_step_ms']:.3f} vs "
                f"{svc['predicted_decode_step_ms']:.3f} ms/step), busy {svc['busy_fraction']:.0%}, "
                f"on CPU {svc['cpu_share']:.1%} of it ({run.get('priority')}); "
                f"machine vs profile: {cal}; {wall:.0f} s"
            )
    measured: dict[str, dict[str, float]] = {}
    for mode in s.modes:
        runs = report["real"][mode]["runs"]
        measured[mode] = {k: float(np.median([x["metrics"][k] for x in runs])) for k in ("mean", "p95")}
        report["real"][mode]["median"] = measured[mode]

    rows: list[Row] = []
    dep_dir = out
    for name, doc in deployment_docs(profile, s).items():
        base = name.split(" ")[0]
        path = dep_dir / f"deployment-{name.replace(' ', '-').replace('(', '').replace(')', '')}.yaml"
        try:
            pred = predict(doc, path, trace, s)
        except Exception as err:  # noqa: BLE001 - the continuous engine is new: its row must not sink the others
            if "engine" not in doc:
                raise
            unknown_key = isinstance(err, ConfigError) and "'engine'" in str(err) and "Extra inputs" in str(err)
            why = "this servewise does not accept 'engine' yet" if unknown_key else f"{type(err).__name__}: {err}"
            note = f"skipped: the continuous-engine deployment could not be simulated ({why})"
            log(f"note: {name}: {note}")
            rows.append(Row(name, measured[base], None, note=note))
            continue
        row = Row(name, measured[base], {"mean": pred["mean"], "p95": pred["p95"]})
        row.error = {k: _rel(measured[base][k], pred[k]) for k in ("mean", "p95")}
        row.passed = all(abs(e) <= s.tolerance for e in row.error.values())
        row.note = f"{s.sim_seeds} simulator seeds; per seed: " + ", ".join(
            f"{x['mean'] * 1e3:.1f}/{x['p95'] * 1e3:.1f} ms" for x in pred["per_seed"]
        )
        rows.append(row)

    report["rows"] = [asdict(r) for r in rows]
    compared = [r for r in rows if r.passed is not None]
    report["passed"] = bool(compared) and all(r.passed for r in compared)
    report["wall_s"] = time.perf_counter() - t_all
    report["command"] = command or shlex.join([sys.executable, *sys.argv])
    from servewise.io import atomic_write_text

    atomic_write_text(out / "llm_real.json", json.dumps(report, indent=1, default=float) + "\n")
    return report


def print_table(report: dict[str, Any], tol: float) -> None:
    print()
    print(f"{'mode':<27} {'real mean':>10} {'sim mean':>10} {'err':>7} {'real p95':>10} {'sim p95':>10} {'err':>7}  pass")
    for r in report["rows"]:
        m, p = r["measured"], r["predicted"]
        if p is None:
            print(f"{r['mode']:<27} {m['mean'] * 1e3:>8.1f}ms {'-':>10} {'-':>7} {m['p95'] * 1e3:>8.1f}ms {'-':>10} {'-':>7}  skipped")
            continue
        e = r["error"]
        print(
            f"{r['mode']:<27} {m['mean'] * 1e3:>8.1f}ms {p['mean'] * 1e3:>8.1f}ms {e['mean']:>+7.1%} "
            f"{m['p95'] * 1e3:>8.1f}ms {p['p95'] * 1e3:>8.1f}ms {e['p95']:>+7.1%}  {'yes' if r['passed'] else 'NO'}"
        )
    print(f"tolerance ±{tol:.0%}; err = (simulated − real) / real; wall {report['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] == SERVE_FLAG:
        return _serve(args_in[1], args_in[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    ap.add_argument("--out", type=Path, default=Path("bench-out/llm-real"), help="Output folder.")
    ap.add_argument("--profile", type=Path, default=None, help="Reuse this profile instead of profiling.")
    ap.add_argument("--requests", type=int, default=d.requests)
    ap.add_argument("--utilisation", type=float, default=d.utilisation, help="Offered load of a one-at-a-time server.")
    ap.add_argument("--batch", type=int, default=d.batch, help="Static batches: largest batch.")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=d.threads, help="Intra-op threads of the profile and the loop.")
    ap.add_argument("--repeats", type=int, default=d.repeats, help="Real runs per mode; the median is compared.")
    ap.add_argument("--sim-seeds", type=int, default=d.sim_seeds)
    ap.add_argument("--warmup-s", type=float, default=d.warmup_s)
    ap.add_argument("--keep-warm-ms", type=float, default=d.keep_warm_ms,
                    help="Idle loop runs one token through the model this often (0: plain sleep).")
    ap.add_argument("--priority", choices=("rt", "nice", "none"), default=d.priority,
                    help="Scheduling of the serving process (rt: SCHED_FIFO where allowed, else nice -10).")
    ap.add_argument("--modes", default=",".join(d.modes), help="single,static")
    ap.add_argument("--profile-budget-s", type=float, default=None, help="--budget-s of the profile run.")
    ap.add_argument("--tolerance", type=float, default=d.tolerance)
    a = ap.parse_args(args_in)
    threads = a.threads
    if threads <= 0:
        from servewise.hardware import usable_cpus

        threads = usable_cpus()
    modes = tuple(m.strip() for m in a.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        ap.error(f"--modes: unknown {bad}; valid: {', '.join(MODES)}")
    s = Settings(
        requests=a.requests, utilisation=a.utilisation, batch=a.batch, seed=a.seed, threads=threads,
        sim_seeds=a.sim_seeds, repeats=a.repeats, warmup_s=a.warmup_s, keep_warm_ms=a.keep_warm_ms, priority=a.priority, tolerance=a.tolerance, modes=modes,
        profile_budget_s=a.profile_budget_s,
    )
    report = run_check(a.out, s, a.profile)
    print_table(report, s.tolerance)
    print(f"wrote {a.out / 'llm_real.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
