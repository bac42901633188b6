"""``servewise validate``: does the live deployment do what the simulator predicted?

Two ways in:

- a deployment: simulate it on the trace, serve it on this machine
  (:func:`serving.start_server`), load test it with the same trace, stop it, compare;
- an endpoint URL plus the advisor's ``expected.json``: load test the URL and compare
  with the prediction written there.

``validation.json`` holds the ``verdict`` (``pass``, ``fail``, or ``invalid`` when the
load generator fell behind and the measurement cannot be trusted) and ``metrics`` keyed
by summary path (``latency_s.p95``), each with ``predicted``, ``measured``,
``relative_error`` ((measured − predicted) / predicted), ``tolerance`` and ``pass``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from servewise import __version__
from servewise.errors import ConfigError
from servewise.io import read_artifact, write_json
from servewise.stats import VALIDATION_TOLERANCES
from servewise.trace import Trace

__all__ = ["validate", "compare", "replay_trace", "VALIDATION_KIND", "load_validation"]

VALIDATION_KIND = "validation"
_SCHEMA = 1


def replay_trace(trace: Trace, *, max_requests: int | None, time_scale: float) -> Trace:
    """The requests a validation replays: the first ``max_requests``, starting at 0, ``time_scale`` times faster."""
    if not math.isfinite(time_scale) or time_scale <= 0:
        raise ConfigError(f"--time-scale must be a number > 0, got {time_scale!r}")
    t = trace.head(max_requests) if max_requests is not None else trace
    if len(t) == 0:
        raise ConfigError(f"trace {trace.source}: no requests to replay")
    start = float(t.arrival_s[0])
    if start != 0.0:
        t = t.window(start, math.inf)
    return t.scale_rate(time_scale) if time_scale != 1.0 else t


def _get(summary: dict[str, Any], path: str) -> float | None:
    v: Any = summary
    for part in path.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(part)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def compare(predicted: dict[str, Any], measured: dict[str, Any], tolerances: dict[str, float]) -> dict[str, Any]:
    """Per metric: predicted, measured, relative error, tolerance and pass (metrics both sides have)."""
    out: dict[str, Any] = {}
    for path, tol in tolerances.items():
        p, m = _get(predicted, path), _get(measured, path)
        if p is None or m is None:
            continue
        rel = (m - p) / p if p != 0 else (0.0 if m == 0 else math.inf)
        out[path] = {
            "predicted": p,
            "measured": m,
            "relative_error": rel if math.isfinite(rel) else None,
            "tolerance": tol,
            "pass": bool(math.isfinite(rel) and abs(rel) <= tol),
        }
    return out


def _verdict(metrics: dict[str, Any], generator_valid: bool) -> str:
    if not generator_valid:
        return "invalid"
    if not metrics:
        return "invalid"
    return "pass" if all(m["pass"] for m in metrics.values()) else "fail"


def validate(
    trace: Trace,
    out_dir: Path,
    *,
    deployment_path: Path | None = None,
    url: str | None = None,
    expected_path: Path | None = None,
    max_requests: int | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    serve_args: list[str] | None = None,
    stream: bool = False,
    api: str | None = None,
    token: str | None = None,
    model: str | None = None,
    processes: int = 1,
    warmup_s: float = 0.0,
    progress: Any = None,
) -> dict[str, Any]:
    """Run a validation and write ``out_dir/validation.json`` (plus the predicted and measured files)."""
    from servewise import loadtest
    if (deployment_path is None) == (url is None):
        raise ConfigError("validate needs either a deployment (to serve and simulate) or an endpoint URL, not both")
    if url is not None and expected_path is None:
        raise ConfigError("validate --url needs --expected (the advisor's expected.json) to compare with")
    replay = replay_trace(trace, max_requests=max_requests, time_scale=time_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    server_info: dict[str, Any] | None = None
    tolerances = dict(VALIDATION_TOLERANCES)
    if deployment_path is not None:
        from servewise.config import load_deployment
        from servewise.simulator import simulate

        dep = load_deployment(deployment_path)
        _note(progress, f"simulating {len(replay)} requests")
        result = simulate(dep, replay, seed=seed, warmup_s=warmup_s)
        result.write(out_dir / "predicted")
        predicted = result.summary
        predicted_slo = dep.slo
        from servewise import serving
        _note(progress, "starting the server")
        server = serving.start_server(deployment_path, workdir=out_dir / "server", args=[*(serve_args or []), "--seed", str(seed)])
        try:
            target = server.url
            _note(progress, f"load testing {target}")
            measured_doc = loadtest.run_loadtest(
                target, replay, out_dir=out_dir / "measured", stream=stream, api=api, token=token,  # type: ignore[arg-type]
                model=model or "servewise", processes=processes,
            )  # fmt: skip
            server_info = {"url": target, "pid": server.pid, "replicas": server.info.get("replicas")}
        finally:
            code = server.stop()
            if server_info is not None:
                server_info["exit_code"] = code
    else:
        assert url is not None and expected_path is not None
        exp = read_artifact(expected_path, "expected", 1, "expected results")
        predicted = exp.get("summary") or {}
        tolerances = {**tolerances, **(exp.get("tolerances") or {})}
        predicted_slo = None
        _note(progress, f"load testing {url}")
        measured_doc = loadtest.run_loadtest(
            url, replay, out_dir=out_dir / "measured", stream=stream, api=api, token=token,  # type: ignore[arg-type]
            model=model or "servewise", processes=processes,
        )  # fmt: skip
    measured = measured_doc["summary"]
    gen = measured_doc.get("generator", {})
    metrics = compare(predicted, measured, tolerances)
    verdict = _verdict(metrics, bool(gen.get("valid", True)))
    doc: dict[str, Any] = {
        "schema_version": _SCHEMA,
        "kind": VALIDATION_KIND,
        "metadata": {
            "tool": "servewise",
            "version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "wall_s": time.time() - t0,
            "deployment": str(deployment_path) if deployment_path is not None else None,
            "url": url,
            "expected": str(expected_path) if expected_path is not None else None,
            "trace_source": replay.source,
            "trace_sha256": replay.content_hash(),
            "requests": len(replay),
            "max_requests": max_requests,
            "time_scale": time_scale,
            "seed": seed,
        },
        "verdict": verdict,
        "invalid_reasons": list(gen.get("invalid_reasons") or []) + ([] if metrics else ["no metric is available on both sides"]),
        "metrics": metrics,
        "predicted": predicted,
        "measured": measured,
        "generator": gen,
        "server": server_info,
        "slo_measured": _slo_checks(predicted_slo, measured),
    }
    write_json(out_dir / "validation.json", doc)
    return doc


def _slo_checks(slo: Any, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The deployment's SLO checked on the measured summary (the simulator's rules)."""
    if slo is None:
        return None
    from servewise.simulator import SLO_FIELDS

    checks: dict[str, Any] = {}
    for name, (path, key, direction) in SLO_FIELDS.items():
        limit = getattr(slo, name, None)
        if limit is None:
            continue
        v = summary.get(path)
        value = v.get(key) if isinstance(v, dict) and key is not None else v
        if not isinstance(value, (int, float)):
            continue
        ok = value <= limit if direction == "max" else value >= limit
        checks[name] = {"limit": limit, "value": value, "pass": bool(ok)}
    return {"pass": all(c["pass"] for c in checks.values()), "checks": checks}


def load_validation(path: str | Path) -> dict[str, Any]:
    """A ``validation.json``; ArtifactError for anything else."""
    return read_artifact(path, VALIDATION_KIND, _SCHEMA, "validation")


def _note(progress: Any, text: str) -> None:
    if progress is not None:
        progress(text)
