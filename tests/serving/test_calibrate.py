"""``servewise calibrate``: the serving path's overhead and live service scale, fitted and charged.

The fit is checked on a hand-built per-request table whose overheads and scales are
known; the simulator's charge on a calibrated variant against the profile's own times
plus the overhead; the live run against a real model served on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from servewise.config import load_deployment
from servewise.errors import ConfigError
from servewise.loadtest.calibrate import fit_calibration, fit_idle_factors, fit_live_service, host_cpu
from servewise.profile import ServingCalibration, load_profile, tokens_fingerprint
from servewise.simulator import simulate
from servewise.trace import Trace

A, B, T, Q = 0.01, 0.02, 5e-4, 2e-6  # batch_time(b, s) = A + B·b + T·b·s + Q·b·s²


def lone(s: np.ndarray) -> np.ndarray:
    return A + B + T * s + Q * s * s


def _cal(**over: Any) -> ServingCalibration:
    doc: dict[str, Any] = {
        "overhead_samples_s": [0.004], "service_scale": 1.2, "service_cv": 0.0, "requests": 100,
        "trace_source": "t", "tokens_sha256": "x", "threads": 1, "created_utc": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    doc.update(over)
    return ServingCalibration.model_validate(doc)


def test_fit_recovers_the_overhead_and_the_live_scale(make_variant) -> None:
    v = make_variant("fp32", linear=(A, [B, T, Q]))
    rng = np.random.default_rng(0)
    n = 400
    inp = rng.integers(8, 128, n)
    scale = 1.15 * rng.lognormal(0.0, 0.1, n)
    service = lone(inp) * scale
    queue = rng.exponential(0.002, n)
    overhead = 0.003 + rng.exponential(0.001, n)
    table = pd.DataFrame({
        "status": ["completed"] * n, "latency_s": queue + service + overhead, "replica_queue_s": queue,
        "replica_service_s": service, "input_tokens": inp, "output_tokens": np.zeros(n, dtype=int),
    })  # fmt: skip
    trace = Trace(arrival_s=np.arange(n, dtype=float), input_tokens=inp, output_tokens=np.zeros(n, dtype=np.int64))
    cal = fit_calibration(v, table, trace=trace, threads=1)
    assert cal.requests == n and cal.tokens_sha256 == tokens_fingerprint(inp)
    assert np.allclose(sorted(cal.overhead_samples_s), np.sort(overhead))
    # a purely proportional slow-down: the fit finds (almost) no fixed part, the scale, and its spread
    assert cal.service_fixed_s < 0.002
    assert float(np.median(service / (cal.service_fixed_s + cal.service_scale * lone(inp)))) == pytest.approx(1.0, abs=0.02)
    assert cal.service_cv == pytest.approx(float(np.std(scale) / np.mean(scale)), rel=0.1)
    with pytest.raises(ConfigError, match="at least 20 completed requests"):
        fit_calibration(v, table.head(10), trace=trace, threads=1)


def test_live_service_fit_separates_a_fixed_part_from_the_scale() -> None:
    rng = np.random.default_rng(4)
    pred = rng.uniform(0.005, 0.05, 600)
    live = (0.003 + 1.1 * pred) * rng.lognormal(0.0, 0.05, 600)
    live[:30] *= 3.0  # 5 % outliers (a request that ran after a long idle gap, another tenant)
    fixed, scale = fit_live_service(pred, live)
    assert fixed == pytest.approx(0.003, abs=0.0006) and scale == pytest.approx(1.1, rel=0.05)
    # one ratio would over-charge the long requests and under-charge the short ones
    ratio = float(np.median(live / pred))
    assert ratio * 0.05 > 1.05 * (0.003 + 1.1 * 0.05) and ratio * 0.005 < 0.9 * (0.003 + 1.1 * 0.005)
    # shapes too alike to tell a fixed part from the scale: a pure scale, the median ratio
    narrow = rng.uniform(0.020, 0.025, 200)
    assert fit_live_service(narrow, 0.003 + 1.1 * narrow) == (0.0, pytest.approx(float(np.median((0.003 + 1.1 * narrow) / narrow))))
    # a fit that would go negative (live relatively faster on short requests) falls back too
    assert fit_live_service(pred, 1.2 * pred - 0.002)[0] == 0.0


def test_host_cpu_separates_a_rate_from_a_cost_per_request() -> None:
    """0.06 cores + 1.5 ms per request, measured over two runs at 7 and 21 requests a second."""
    runs = [(0.06 * w + 0.0015 * n, w, n, 0.04) for w, n in ((30.0, 210), (10.0, 210))]
    bg, per = host_cpu(runs)
    assert bg == pytest.approx(0.06) and per == pytest.approx(0.0015)
    # one run cannot separate them: the measured idle rate is the background, the rest per request
    bg, per = host_cpu(runs[:1])
    assert bg == 0.04 and per == pytest.approx((0.06 * 30 + 0.0015 * 210 - 0.04 * 30) / 210)
    # two runs at the same rate neither
    assert host_cpu([runs[0], runs[0]])[0] == 0.04


def test_idle_factors_are_the_median_ratio_per_idle_gap_bin() -> None:
    rng = np.random.default_rng(7)
    idle = np.concatenate([np.zeros(100), rng.uniform(0.012, 0.028, 60), rng.uniform(0.4, 0.9, 60), [5.0] * 3])
    ratio = np.where(idle < 0.002, 0.95, np.where(idle < 0.03, 1.1, 1.4)) * rng.lognormal(0.0, 0.03, len(idle))
    edges, factors = fit_idle_factors(idle, ratio)
    # empty and sparse bins merged away: back to back, ~20 ms, ~0.5 s (the 3 after 5 s join the last)
    assert len(factors) == len(edges) + 1 == 3
    assert factors == pytest.approx([0.95, 1.1, 1.4], rel=0.03)
    assert edges[0] <= 0.012 and 0.028 <= edges[1] <= 0.4
    # one bin only: no idle dependence
    assert fit_idle_factors(np.full(50, 0.05), np.ones(50)) == ([], [])


def test_a_service_after_an_idle_gap_is_charged_its_factor(tmp_path: Path, make_variant, write_profile) -> None:
    write_profile(make_variant("fp32", linear=(A, [B, T, Q]), serving=_cal(idle_edges_s=[0.01], idle_factors=[1.0, 1.5])))
    (tmp_path / "d.yaml").write_text("replicas: 1\nmodel: {profile: profile.json, variant: fp32}\n")
    dep = load_deployment(tmp_path / "d.yaml")
    inp = np.array([50, 50, 50])
    s = 1.2 * float(lone(np.array([50]))[0])
    # at 0: nothing ran before (idle 0); the second queues behind it (idle 0); the third after 10 s idle
    res = simulate(dep, Trace(arrival_s=np.array([0.0, 0.0, 10.0]), input_tokens=inp,
                              output_tokens=np.zeros(3, dtype=np.int64)), seed=0).requests  # fmt: skip
    assert res["latency_s"].tolist() == pytest.approx([s + 0.004, 2 * s + 0.004, 1.5 * s + 0.004], rel=1e-9)
    # on a shared host the same rule
    (tmp_path / "h.yaml").write_text("replicas: 1\nhost: {cores: 1}\nmodel: {profile: profile.json, variant: fp32}\n")
    res = simulate(load_deployment(tmp_path / "h.yaml"), Trace(arrival_s=np.array([0.0, 0.0, 10.0]), input_tokens=inp,
                   output_tokens=np.zeros(3, dtype=np.int64)), seed=0).requests  # fmt: skip
    assert res["latency_s"].tolist() == pytest.approx([s + 0.004, 2 * s + 0.004, 1.5 * s + 0.004], rel=1e-9)
    with pytest.raises(ValueError, match="one factor per bin"):
        _cal(idle_edges_s=[0.01], idle_factors=[1.0])


def test_a_calibrated_variant_is_charged_its_scale_and_overhead(tmp_path: Path, make_variant, write_profile) -> None:
    write_profile(make_variant("fp32", linear=(A, [B, T, Q]), serving=_cal()))
    (tmp_path / "d.yaml").write_text("replicas: 1\nmodel: {profile: profile.json, variant: fp32}\n")
    dep = load_deployment(tmp_path / "d.yaml")
    inp = np.array([10, 50, 120])
    res = simulate(dep, Trace(arrival_s=np.arange(3) * 10.0, input_tokens=inp, output_tokens=np.zeros(3, dtype=np.int64)), seed=0)
    table = res.requests
    assert table["latency_s"].tolist() == pytest.approx((1.2 * lone(inp) + 0.004).tolist(), rel=1e-9)
    assert table["overhead_s"].tolist() == pytest.approx([0.004] * 3)
    # the replica was busy for the service only: a request right behind another waits 1.2·S, not 1.2·S + overhead
    back = simulate(dep, Trace(arrival_s=np.array([0.0, 0.0]), input_tokens=np.array([50, 50]),
                               output_tokens=np.zeros(2, dtype=np.int64)), seed=0).requests  # fmt: skip
    assert back["queue_s"].tolist() == pytest.approx([0.0, 1.2 * float(lone(np.array([50]))[0])])


def test_the_fixed_part_is_charged_once_per_service(tmp_path: Path, make_variant, write_profile) -> None:
    write_profile(make_variant("fp32", linear=(A, [B, T, Q]), serving=_cal(service_fixed_s=0.002)))
    (tmp_path / "d.yaml").write_text("replicas: 1\nbatching: {max_batch_size: 2, max_wait_s: 0.5}\n"
                                     "queue: {capacity: 4}\nmodel: {profile: profile.json, variant: fp32}\n")  # fmt: skip
    dep = load_deployment(tmp_path / "d.yaml")
    inp = np.array([10, 50, 120])
    res = simulate(dep, Trace(arrival_s=np.array([0.0, 0.0, 10.0]), input_tokens=inp,
                              output_tokens=np.zeros(3, dtype=np.int64)), seed=0).requests  # fmt: skip
    batch = A + 2 * B + 2 * T * 50 + 2 * Q * 50 * 50  # the pair, padded to 50 tokens
    alone = float(lone(np.array([120]))[0])
    assert res["latency_s"].tolist() == pytest.approx([0.002 + 1.2 * batch + 0.004] * 2 + [0.5 + 0.002 + 1.2 * alone + 0.004], rel=1e-9)


def test_a_local_host_charges_the_calibrated_cpu_per_request(tmp_path: Path, make_variant, write_profile) -> None:
    """``host.cpu_per_request_s`` defaults to the calibration's: one core, 0.2 s of service,
    three arrivals a second apart at 0.1 CPU s each leave the replica 0.9, then 0.8 of the core."""
    write_profile(make_variant("fp32", linear=(A, [B, T, Q]), serving=_cal(host_cpu_per_request_s=0.1, host_background_cores=0.0)))
    (tmp_path / "d.yaml").write_text("replicas: 1\nhost: {cores: 1, threads: 1}\nmodel: {profile: profile.json, variant: fp32}\n")
    dep = load_deployment(tmp_path / "d.yaml")
    assert dep.host_cpu_per_request_s() == pytest.approx(0.1)
    inp = np.array([50, 50, 50])
    res = simulate(dep, Trace(arrival_s=np.array([0.0, 0.9, 1.8]), input_tokens=inp, output_tokens=np.zeros(3, dtype=np.int64)), seed=0)
    s = 1.2 * float(lone(np.array([50]))[0])
    assert res.requests["latency_s"].tolist() == pytest.approx([s / 0.9 + 0.004, s / 0.8 + 0.004, s / 0.8 + 0.004], rel=1e-9)
    # stated on the host, it wins over the calibration
    (tmp_path / "e.yaml").write_text("replicas: 1\nhost: {cores: 1, cpu_per_request_s: 0}\nmodel: {profile: profile.json, variant: fp32}\n")
    assert load_deployment(tmp_path / "e.yaml").host_cpu_per_request_s() == 0.0
    write_profile(make_variant("fp32", linear=(A, [B, T, Q]), serving=_cal(host_background_cores=0.25)))
    assert load_deployment(tmp_path / "e.yaml").host_background_cores() == 0.25


def test_validate_refuses_the_requests_a_variant_was_calibrated_on(tmp_path: Path, make_variant, write_profile) -> None:
    from servewise.loadtest.validate import validate

    inp = np.arange(1, 41, dtype=np.int64)
    write_profile(make_variant("fp32", linear=(A, [B, T, Q]), serving=_cal(tokens_sha256=tokens_fingerprint(inp), trace_source="win-A")))
    (tmp_path / "d.yaml").write_text("replicas: 1\nmodel: {profile: profile.json, variant: fp32}\n")
    trace = Trace(arrival_s=np.arange(40) * 0.5, input_tokens=inp, output_tokens=np.zeros(40, dtype=np.int64))
    with pytest.raises(ConfigError, match="calibrated on these very requests \\(win-A\\)"):
        validate(trace, tmp_path / "v", deployment_path=tmp_path / "d.yaml", time_scale=3.0)


@pytest.mark.slow
@pytest.mark.xdist_group("serving")
def test_calibrate_serves_minilm_live_and_records_the_serving_path(tmp_path: Path) -> None:
    from servewise.trace import save_trace

    prof = tmp_path / "p.json"
    sw = [sys.executable, "-m", "servewise"]
    r = subprocess.run([*sw, "profile", "--model", "builtin:minilm", "--variants", "fp32", "--threads", "1",
                        "--batch-sizes", "1,4", "--seq-lens", "16,64,128", "--budget-s", "0.3", "--out", str(prof), "-q"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(1)
    n = 120
    trace = Trace(arrival_s=np.cumsum(rng.exponential(1.0, n)), input_tokens=rng.integers(16, 128, n),
                  output_tokens=np.zeros(n, dtype=np.int64))  # fmt: skip
    save_trace(trace, tmp_path / "t.csv")
    before = prof.read_bytes()
    r = subprocess.run([*sw, "calibrate", "--profile", str(prof), "--variant", "fp32", "--trace", str(tmp_path / "t.csv"),
                        "--util", "0.3"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    assert "calibrated fp32 on" in r.stdout and prof.read_bytes() != before
    cal = load_profile(prof).variant("fp32").serving
    assert cal is not None and cal.requests >= 100 and cal.threads == 1
    assert cal.tokens_sha256 == tokens_fingerprint(trace.input_tokens)
    # HTTP, JSON and the router hop cost something (bounds loose enough for a shared machine)
    o = np.asarray(cal.overhead_samples_s)
    assert 0.0002 < float(np.median(o)) < 0.05
    assert 0.5 < cal.service_scale < 3.0 and 0.0 <= cal.service_cv < 1.0
    # the router and Locust spend CPU on every request: more than nothing, less than a request's latency
    assert cal.host_cpu_per_request_s is not None and 1e-5 < cal.host_cpu_per_request_s < 0.05
    assert cal.host_background_cores is not None and cal.host_background_cores < 0.5
    doc = json.loads(prof.read_text())
    assert doc["variants"][0]["serving"]["service_scale"] == pytest.approx(cal.service_scale)
