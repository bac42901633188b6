"""Artifacts for the report and gate tests, built by hand where the numbers must be known.

``make_profile`` writes a measured profile whose every grid point holds ``n`` timing
samples drawn (seeded) from a lognormal around a known median: the gate's statistics
are then checked against the truth that generated the samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from servewise.profile import (
    BATCH_FEATURES,
    Accuracy,
    Hardware,
    LatencyModel,
    LatencyStats,
    Point,
    Profile,
    Variant,
    save_profile,
)

GRID = ((1, 16), (1, 64), (4, 16), (4, 64))
"""(batch size, sequence length) of every hand-built point."""

HARDWARE = dict(
    cpu_model="Test CPU 9000",
    cpu_count=2,
    threads_used=1,
    mem_bytes=2**34,
    cpu_flags=["avx2", "avx512f"],
    platform="Linux-6.1.0-test-x86_64-with-glibc2.36",
    python_version="3.11.7",
    torch_version="2.13.0+cpu",
    onnxruntime_version="1.32.0",
)


def true_median_s(batch_size: int, seq_len: int) -> float:
    """The median every hand-built point is drawn around (before a variant's ``speed``)."""
    return 0.002 + 0.0005 * batch_size * seq_len / 16


def stats_of(samples: np.ndarray) -> LatencyStats:
    q = np.quantile(samples, [0.25, 0.5, 0.75, 0.9, 0.99])
    return LatencyStats(
        mean=float(samples.mean()), p50=float(q[1]), p90=float(q[3]), p99=float(q[4]),
        min=float(samples.min()), max=float(samples.max()), iqr=float(q[2] - q[0]),
        cv=float(samples.std() / samples.mean()), n=len(samples), ci_rel=0.01,
    )  # fmt: skip


CALIBRATION_S = 0.0045
"""The calibration kernel's median time on the hand-built machine (× ``machine``)."""


def _points(
    rng: np.random.Generator, speed: float, factor: float, n: int, cv: float, grid: Any, machine: float | None
) -> list[Point]:
    """``factor`` slows the model only; ``machine`` slows the model and the calibration
    kernel alike (None: no calibration recorded)."""
    out = []
    for b, s in grid:
        m = 1.0 if machine is None else machine
        samples = true_median_s(b, s) * speed * factor * m * rng.lognormal(0.0, cv, n)
        cal = [] if machine is None else list(CALIBRATION_S * machine * rng.lognormal(0.0, 0.01, 15))
        out.append(
            Point(phase="forward", batch_size=b, seq_len=s, status="measured", latency_s=stats_of(samples),
                  samples_s=[float(x) for x in samples], calibration_samples_s=[float(x) for x in cal])  # fmt: skip
        )
    return out


def make_variant(
    name: str,
    *,
    model: str = "builtin:test",
    speed: float = 1.0,
    factor: float = 1.0,
    n: int = 40,
    cv: float = 0.05,
    seed: int = 0,
    grid: Any = GRID,
    machine: float | None = None,
    **fields: Any,
) -> Variant:
    """A measured encoder variant with ``n`` samples per point (lognormal, seeded)."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    lm = LatencyModel(
        target="batch_time", kind="linear", features=list(BATCH_FEATURES), cv_mape=0.03, cv_folds=5,
        candidates={"linear": 0.03}, n_points=len(grid), intercept_s=0.002 * speed, coef_s=[0.0, 0.0005 / 16 * speed, 0.0],
    )  # fmt: skip
    doc: dict[str, Any] = dict(
        model=model, model_kind="encoder", name=name, dtype="float32" if name == "fp32" else "bfloat16",
        backend="torch-eager", device="cpu", status="measured", load_time_s=2.5 * speed,
        load_time_samples_s=[2.4 * speed, 2.6 * speed], peak_mem_bytes=int(600e6 * speed), base_mem_bytes=int(50e6),
        weights_bytes=int(90e6 * speed), points=_points(rng, speed, factor, n, cv, grid, machine), latency_model=lm,
        accuracy=None if name == "fp32" else Accuracy(reference="fp32", metric="embedding", n_inputs=16,
                                                       cosine_mean=0.9999, cosine_min=0.9998),
    )  # fmt: skip
    doc.update(fields)
    return Variant.model_validate(doc)


def make_profile(path: Path, variants: list[Variant], **hardware: Any) -> Path:
    hw = Hardware(**{**HARDWARE, **hardware})
    p = Profile(status="complete", created_utc="2026-01-01T00:00:00Z", tool_version="test", hardware=hw,
                variants=variants)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    save_profile(p, path)
    return path


def two_variant_profile(
    path: Path, *, factor: float = 1.0, seed: int = 0, model: str = "builtin:test", machine: float | None = None,
    **hardware: Any,
) -> Path:
    """fp32 and a 40%-faster bf16, every point's samples × ``factor`` (see ``_points``)."""
    return make_profile(
        path,
        [make_variant("fp32", model=model, factor=factor, seed=seed, machine=machine),
         make_variant("bf16", model=model, speed=0.6, factor=factor, seed=seed, machine=machine)],  # fmt: skip
        **hardware,
    )


def edit_json(path: Path, dest: Path, edit: Any) -> Path:
    """Copy the JSON at ``path`` to ``dest`` after ``edit(doc)`` changed it in place."""
    doc = json.loads(path.read_text())
    edit(doc)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc))
    return dest


# ----------------------------------------------------------------------------- real artifacts, made once


_BUILT: dict[str, dict[str, Path]] = {}

SPACE: dict[str, Any] = {
    "kind": "search_space",
    "schema_version": 1,
    "name": "report-test",
    "hardware": [{"name": "local", "price_per_hour_usd": 0.1}],
    "variant": ["fp32", "bf16"],
    "replicas": {"range": [1, 3]},
    "balancer": ["p2c", "least_outstanding"],
    "slo": {"p95_latency_s": 0.02, "max_rejection_ratio": 0.01},
    "search": {"replications": 2, "finalists": 2, "headroom_steps": 2},
}


def _run(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "servewise", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode in ok, f"servewise {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}"


def real_artifacts(root: Path) -> dict[str, Path]:
    """One of each kind, made by the real commands (once per test process):

    ``profile`` (hand-built, known samples), ``sim`` (the built-in autoscaled, cached
    deployment on 3 minutes of the built-in trace), ``plan`` (advise over :data:`SPACE`),
    ``validation`` (serve + Locust, synthetic replicas, 150 requests) and the
    ``predicted``/``measured`` folders inside it.
    """
    if "x" in _BUILT:
        return _BUILT["x"]
    import yaml

    from servewise.trace import TokenSpec, default_trace_path, poisson, save_trace

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    out["profile"] = two_variant_profile(root / "profile.json")
    from importlib.resources import files

    dep = Path(str(files("servewise") / "data" / "default_deployment.yaml"))
    _run("simulate", "--deployment", str(dep), "--trace", str(default_trace_path()), "--window", "0:180",
         "--zipf-keys", "500", "--zipf-alpha", "0.9", "--out", str(root / "sim"), "--quiet", cwd=root)  # fmt: skip
    out["sim"] = root / "sim"
    trace = root / "trace.csv"
    save_trace(poisson(rate_rps=40, duration_s=60, seed=1, tokens=TokenSpec(input_mean=32, input_cv=0.5, output_mean=1)), trace)
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    _run("advise", "--space", str(root / "space.yaml"), "--trace", str(trace), "--profile", str(out["profile"]),
         "--out", str(root / "plan"), "--jobs", "1", cwd=root)  # fmt: skip
    out["plan"] = root / "plan"
    dep_live = root / "live.yaml"
    dep_live.write_text(yaml.safe_dump({
        "kind": "deployment", "schema_version": 1, "name": "live-test", "replicas": 1,
        "service_time": {"distribution": "deterministic", "mean_s": 0.05},
        "slo": {"p95_latency_s": 0.5},
    }, sort_keys=False))  # fmt: skip
    small = root / "small.csv"
    save_trace(poisson(rate_rps=10, n_requests=150, seed=3), small)
    _run("validate", "--deployment", str(dep_live), "--trace", str(small), "--out", str(root / "val"),
         "--mode", "synthetic", cwd=root, ok=(0, 1))  # fmt: skip
    out["validation"] = root / "val"
    out["predicted"] = root / "val" / "predicted"
    out["measured"] = root / "val" / "measured"
    _BUILT["x"] = out
    return out
