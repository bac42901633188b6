"""``servewise validate``: simulate + serve + load test + compare, and the URL + expected.json form.

The server runs synthetic replicas (known service times), so the simulator's prediction
and the live measurement must agree closely; each metric's relative error is checked
against the two files it was computed from, not against validate's own arithmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _live import start, write_deployment

from servewise.trace import poisson, save_trace

pytestmark = pytest.mark.xdist_group("serving")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servewise", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _trace(tmp_path: Path, rate: float, n: int) -> Path:
    p = tmp_path / "trace.csv"
    save_trace(poisson(rate_rps=rate, n_requests=n, seed=3), p)
    return p


@pytest.mark.exclusive  # compares live latencies with predicted ones: alone on the cores
def test_validate_a_deployment_end_to_end(tmp_path):
    # M/D/1 at utilisation 0.5: S = 0.05 s, 10 req/s
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time={"distribution": "deterministic", "mean_s": 0.05})
    trace = _trace(tmp_path, 10.0, 150)
    out = tmp_path / "val"
    r = _cli("validate", "--deployment", str(dep), "--trace", str(trace), "--out", str(out), "--mode", "synthetic", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads((out / "validation.json").read_text())
    assert doc["kind"] == "validation" and doc["verdict"] in ("pass", "fail")
    assert (r.returncode == 0) == (doc["verdict"] == "pass")
    predicted = json.loads((out / "predicted" / "result.json").read_text())["summary"]
    measured = json.loads((out / "measured" / "measured.json").read_text())["summary"]
    assert measured["requests"] == predicted["requests"] == 150
    assert measured["completed"] == 150
    assert {"latency_s.p50", "latency_s.p95", "latency_s.p99", "throughput_rps"} <= set(doc["metrics"])
    for key, m in doc["metrics"].items():
        top, _, sub = key.partition(".")
        p = predicted[top][sub] if sub else predicted[top]
        q = measured[top][sub] if sub else measured[top]
        assert m["predicted"] == pytest.approx(p) and m["measured"] == pytest.approx(q)
        assert m["relative_error"] == pytest.approx((q - p) / p)
        assert m["pass"] == (abs((q - p) / p) <= m["tolerance"])
    # synthetic replicas sleep the simulated service times: live and simulated medians agree closely
    assert abs(doc["metrics"]["latency_s.p50"]["relative_error"]) < 0.25
    assert doc["server"]["exit_code"] == 0  # drained and stopped
    # each answer carried the replica's own times (X-Servewise-Timing): its service is the 0.05 s sleep,
    # and what the client saw beyond queue + service is the overhead `servewise calibrate` fits
    from servewise.results import read_requests

    table = read_requests(out / "measured" / "requests.csv")
    assert table["replica_service_s"].between(0.05, 0.08).all()
    assert (table["batch_size"] == 1).all() and (table["replica_queue_s"] >= 0).all()
    overhead = table["latency_s"] - table["replica_queue_s"] - table["replica_service_s"]
    assert (overhead > 0).all() and overhead.median() < 0.05
    # and how long the replica had run nothing before it: 0 behind a queued request, else the
    # gap since the previous service ended (from the client's clock: send + queue − the previous end)
    idle = table["replica_idle_s"].to_numpy()
    assert (idle >= 0).all()
    t = table.sort_values("sent_s")
    start = (t["sent_s"] + t["replica_queue_s"]).to_numpy()
    prev_end = np.concatenate([[np.nan], start[:-1] + t["replica_service_s"].to_numpy()[:-1]])
    queued = t["replica_queue_s"].to_numpy() > 0.002
    assert (t["replica_idle_s"].to_numpy()[queued] < 0.002).all()
    gap = (start - prev_end)[1:][~queued[1:]]
    assert np.median(np.abs(t["replica_idle_s"].to_numpy()[1:][~queued[1:]] - gap)) < 0.01 and np.median(gap) > 0.02


def test_validate_an_endpoint_against_expected_json(tmp_path):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time={"distribution": "deterministic", "mean_s": 0.05})
    trace = _trace(tmp_path, 5.0, 40)
    s = start(tmp_path, dep)
    try:
        # a prediction 10x too slow: every latency metric must fail, so the exit code is 1
        expected = {
            "schema_version": 1,
            "kind": "expected",
            "summary": {"latency_s": {"p50": 0.5, "p95": 0.6, "p99": 0.7}, "throughput_rps": None},
            "tolerances": {"latency_s.p50": 0.1, "latency_s.p95": 0.15},
        }
        exp = tmp_path / "expected.json"
        exp.write_text(json.dumps(expected))
        out = tmp_path / "val"
        r = _cli("validate", "--url", s.url, "--expected", str(exp), "--trace", str(trace), "--out", str(out), cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        doc = json.loads((out / "validation.json").read_text())
        assert doc["verdict"] == "fail"
        m = doc["metrics"]["latency_s.p50"]
        assert m["predicted"] == 0.5 and 0.04 < m["measured"] < 0.2 and not m["pass"]
        assert m["tolerance"] == 0.1
        assert "throughput_rps" not in doc["metrics"]  # no prediction for it: not compared
    finally:
        s.stop()


def test_validate_refuses_bad_input_in_one_line(tmp_path):
    trace = _trace(tmp_path, 5.0, 5)
    r = _cli("validate", "--trace", str(trace), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "--deployment" in r.stderr and "Traceback" not in r.stderr
    r = _cli("validate", "--url", "http://127.0.0.1:9", "--trace", str(trace), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "--expected" in r.stderr
    bad = tmp_path / "expected.json"
    bad.write_text('{"kind": "plan", "schema_version": 1}')
    r = _cli("validate", "--url", "http://127.0.0.1:9", "--expected", str(bad), "--trace", str(trace), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "expected kind 'expected'" in r.stderr and "Traceback" not in r.stderr
