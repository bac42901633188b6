"""The load generator against a real HTTP server (tests/loadtest/_server.py) with known behaviour.

Expected numbers come from the server's injected delays and from queueing arithmetic
done here, never from the generator: a deterministic single-server queue for the open
loop, numpy percentiles of the per-request delays for the merged percentiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from servewise import loadtest
from servewise.errors import ArtifactError, ConfigError, MissingExtraError, TraceError
from servewise.loadtest import load_measured, run_loadtest
from servewise.trace import Trace

pytestmark = pytest.mark.xdist_group("loadtest")

SERVER = Path(__file__).with_name("_server.py")
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def server() -> Any:
    """Base URL of a test server on 127.0.0.1 (killed by PID at the end; exits by itself after 300 s)."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", "0", "--token", TOKEN, "--max-run-s", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "PORT n" (the server prints nothing else)
        if not line.startswith("PORT "):
            proc.kill()
            pytest.fail(f"test server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _trace(n: int, gap_s: float, *, inp: int = 8, out: int = 4, **kw: Any) -> Trace:
    return Trace(arrival_s=np.arange(n) * gap_s, input_tokens=np.full(n, inp), output_tokens=np.full(n, out), **kw)


def _csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "requests.csv", keep_default_na=True)


# -- streaming -------------------------------------------------------------------------


@pytest.mark.exclusive  # times a live server: alone on the cores
def test_streaming_ttft_itl_match_injected_delays(server: str, tmp_path: Path) -> None:
    d1, d2, k = 0.30, 0.05, 6
    doc = run_loadtest(
        f"{server}/sse?first_s={d1}&gap_s={d2}&tokens={k}", _trace(4, 0.1), out_dir=tmp_path, stream=True
    )
    s = doc.summary
    assert s.completed == 4 and s.failed == 0
    df = _csv(tmp_path)
    assert (df["tokens"] == k).all()  # comments, SSE fields, the empty final chunk and [DONE] are no tokens
    # the server cannot send earlier than told; later only by its own overhead (and the first connection)
    assert ((df["ttft_s"] >= d1) & (df["ttft_s"] < d1 + 0.05)).all(), df["ttft_s"].tolist()
    assert d1 <= s.ttft_s.p50 < d1 + 0.02
    assert ((df["tpot_s"] - d2).abs() < 0.01).all(), df["tpot_s"].tolist()
    assert abs(s.itl_s.p50 - d2) < 0.005
    assert s.itl_s.max < d2 + 0.03
    # the whole answer: first token after d1, then k - 1 gaps of d2
    assert ((df["latency_s"] - (d1 + (k - 1) * d2)).abs() < 0.05).all(), df["latency_s"].tolist()
    assert s.output_tokens_per_s == pytest.approx(4 * k / s.duration_s)
    assert doc.generator.valid, doc.generator.invalid_reasons


@pytest.mark.exclusive  # times a live server: alone on the cores
@pytest.mark.parametrize("kind", ["tiny", "ndjson"])
def test_stream_is_read_line_by_line(server: str, tmp_path: Path, kind: str) -> None:
    """20 lines of ~10 bytes, 20 ms apart: a 1 KiB-chunk reader would see them as one lump at the end."""
    d1, d2, k = 0.1, 0.02, 20
    url = f"{server}/sse?first_s={d1}&gap_s={d2}&tokens={k}&{kind}=1"
    doc = run_loadtest(url, _trace(3, 0.05), out_dir=tmp_path, stream=True)
    df = _csv(tmp_path)
    assert (df["tokens"] == k).all()
    assert ((df["ttft_s"] >= d1) & (df["ttft_s"] < d1 + 0.05)).all(), df["ttft_s"].tolist()
    itl = doc.summary.itl_s
    assert abs(itl.p50 - d2) < 0.005, itl
    assert ((df["tpot_s"] - d2).abs() < 0.008).all(), df["tpot_s"].tolist()


# -- open loop ---------------------------------------------------------------------------


@pytest.mark.exclusive  # times a live server: alone on the cores
def test_open_loop_sends_on_schedule_behind_a_slow_server(server: str, tmp_path: Path) -> None:
    """One request at a time, 0.2 s each, arrivals every 0.05 s: a deterministic D/D/1 queue.

    Request k starts service when request k-1 ends, at 0.2·k, and ends at 0.2·(k+1); from
    its scheduled time 0.05·k its latency is 0.2 + 0.15·k. A closed-loop generator would
    instead send request k only after k-1 is answered: its latency would stay 0.2 s.
    """
    service, gap, n = 0.2, 0.05, 10
    doc = run_loadtest(f"{server}/lock?service_s={service}", _trace(n, gap), out_dir=tmp_path, api="predict")
    df = _csv(tmp_path)
    expected = service + (service - gap) * df["id"]
    # the server's sleeps overshoot by a little each, and the overshoots add up along the queue
    ok = (df["latency_s"] - expected).abs() < 0.04 + 0.004 * df["id"]
    assert ok.all(), list(zip(df["latency_s"], expected, df["send_lag_s"], strict=True))
    assert (df["send_lag_s"] < 0.03).all(), df["send_lag_s"].tolist()
    gen = doc.generator
    assert gen.valid, gen.invalid_reasons
    assert gen.offered_rps == pytest.approx(n / ((n - 1) * gap))
    assert gen.achieved_ratio == pytest.approx(1.0, abs=0.03)
    assert doc.summary.latency_s.max == pytest.approx(service + (service - gap) * (n - 1), abs=0.08)
    # throughput: n answers between the first scheduled send and the last answer at 0.2·n
    assert doc.summary.throughput_rps == pytest.approx(n / (service * n), rel=0.05)


# -- exact percentiles across processes ----------------------------------------------------


@pytest.mark.exclusive  # times a live server (30 ms tolerance): alone on the cores
def test_percentiles_merge_raw_samples_across_processes(server: str, tmp_path: Path) -> None:
    """Process 0 sends the even ids (fast), process 1 the odd ones (half of them 0.4 s).

    The merged percentiles must be those of all samples together; an average of the two
    processes' percentiles would be far off (p95: ~0.23 s instead of 0.4 s).
    """
    n = 40
    doc = run_loadtest(f"{server}/by-id", _trace(n, 0.025), out_dir=tmp_path, api="predict", processes=2)
    df = _csv(tmp_path)
    assert sorted(df["id"]) == list(range(n))  # every request exactly once
    ids = np.arange(n)
    service = np.where(ids % 4 == 1, 0.4, 0.01 * (ids % 7))
    lat = df.sort_values("id")["latency_s"].to_numpy()
    assert np.all(np.abs(lat - service) < 0.03), np.c_[lat, service]
    got = doc.summary.latency_s
    for p in (50, 90, 95, 99):  # exact order statistics of all raw samples, both processes together
        assert getattr(got, f"p{p}") == pytest.approx(float(np.percentile(lat, p)), rel=1e-12), p
    overhead = float(np.median(lat - service))
    for p in (50, 90, 95):  # and those are the percentiles of the server's delays (plus a constant overhead)
        assert getattr(got, f"p{p}") == pytest.approx(float(np.percentile(service, p)) + overhead, abs=0.015), p
    assert got.max == pytest.approx(0.4, abs=0.03)
    procs = doc.generator.processes
    assert [p.requests for p in procs] == [n // 2, n // 2]
    assert doc.metadata.processes == 2
    assert doc.generator.locust_requests == n


# -- outcomes ---------------------------------------------------------------------------------


def test_outcomes_rejected_failed_cache_hit(server: str, tmp_path: Path) -> None:
    n = 20
    doc = run_loadtest(f"{server}/status", _trace(n, 0.01), out_dir=tmp_path, api="predict")
    s = doc.summary
    assert (s.requests, s.completed, s.cache_hits, s.rejected, s.failed) == (20, 10, 5, 5, 5)
    assert s.rejection_ratio == 0.25 and s.failure_ratio == 0.25 and s.cache_hit_ratio == 0.25
    assert doc.status_codes == {"200": 10, "429": 5, "500": 5}
    assert doc.replicas == {"r1": 5}
    df = _csv(tmp_path).sort_values("id")
    assert df["status"].tolist() == ["rejected", "failed", "cache_hit", "completed"] * 5
    failed = df[df["status"] == "failed"]
    assert failed["error"].str.contains("HTTP 500").all()
    assert (failed["http_status"] == 500).all()
    # latency summarises answered requests only (completed and cache hits)
    served = df[df["status"].isin(["completed", "cache_hit"])]
    assert s.latency_s.max == pytest.approx(served["latency_s"].max())
    assert s.ttft_s.p50 is None and s.output_tokens_per_s is None  # not streamed
    assert doc.generator.locust_failures == 10  # Locust's own count: the 429s and the 500s


def test_timeout_and_refused_connection_are_failures(server: str, tmp_path: Path) -> None:
    doc = run_loadtest(f"{server}/slow?sleep_s=3", _trace(2, 0.05), out_dir=tmp_path / "slow", timeout_s=0.3)
    assert doc.summary.failed == 2
    df = _csv(tmp_path / "slow")
    assert df["error"].str.contains("timeout after 0.3 s").all(), df["error"].tolist()
    assert (df["latency_s"] < 1.0).all()  # given up after 0.3 s, not after the server's 3 s

    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = run_loadtest(f"http://127.0.0.1:{port}", _trace(3, 0.01), out_dir=tmp_path / "refused", api="predict")
    assert doc.summary.failed == 3 and doc.status_codes == {}
    assert doc.summary.failure_ratio == 1.0 and doc.summary.throughput_rps == 0.0
    errors = _csv(tmp_path / "refused")["error"]
    assert errors.str.len().gt(0).all() and errors.str.contains("refused", case=False).all(), errors.tolist()


# -- generator validity -------------------------------------------------------------------------


def test_generator_that_cannot_keep_up_is_invalid(server: str, tmp_path: Path) -> None:
    """600 requests within 30 ms (20 000 req/s) is far beyond one Python process."""
    doc = run_loadtest(f"{server}/fast", _trace(600, 0.00005), out_dir=tmp_path, api="predict")
    gen = doc.generator
    assert not gen.valid
    assert gen.send_lag_s.p99 > 0.05
    assert any("send lag p99" in r for r in gen.invalid_reasons)
    assert any("achieved rate" in r for r in gen.invalid_reasons)
    assert gen.achieved_ratio < 0.95
    assert doc.summary.requests == 600


# -- request formats ---------------------------------------------------------------------------


def _log(server: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server}/_log", timeout=10) as r:
        return json.loads(r.read())


def test_predict_api_token_and_keys_reach_the_server(server: str, tmp_path: Path) -> None:
    trace = _trace(3, 0.02, inp=5, out=0, key=[0, 1, 0], key_labels=["alpha", "beta"])
    before = len(_log(server))
    doc = run_loadtest(server, trace, out_dir=tmp_path, token=TOKEN)  # no output lengths: predict
    assert doc.metadata.api == "predict" and doc.metadata.auth is True
    assert doc.summary.completed == 3, doc.errors
    seen = sorted(_log(server)[before:], key=lambda e: int(e["headers"]["X-Servewise-Request"]))
    assert [e["path"] for e in seen] == ["/predict"] * 3
    assert all(e["headers"]["Authorization"] == f"Bearer {TOKEN}" for e in seen)
    assert [e["headers"]["X-Servewise-Key"] for e in seen] == ["alpha", "beta", "alpha"]
    assert [e["body"]["key"] for e in seen] == ["alpha", "beta", "alpha"]
    assert all(len(e["body"]["inputs"]) == 5 and all(isinstance(t, int) for t in e["body"]["inputs"]) for e in seen)
    assert TOKEN not in (tmp_path / "measured.json").read_text()  # the secret is never written

    # a wrong token: the server says 401, a failure
    doc = run_loadtest(server, trace, out_dir=tmp_path / "bad", token="wrong")
    assert doc.summary.failed == 3 and doc.status_codes == {"401": 3}


def test_openai_body_text_prompt_and_streamed_completions(server: str, tmp_path: Path) -> None:
    before = len(_log(server))
    doc = run_loadtest(server, _trace(2, 0.02, inp=7, out=5), out_dir=tmp_path, token=TOKEN, prompt="text", model="m1")
    assert doc.metadata.api == "openai" and doc.summary.completed == 2, doc.errors
    seen = _log(server)[before:]
    assert [e["path"] for e in seen] == ["/v1/completions"] * 2
    body = seen[0]["body"]
    assert body["model"] == "m1" and body["max_tokens"] == 5 and body["stream"] is False and body["ignore_eos"] is True
    assert isinstance(body["prompt"], str) and len(body["prompt"].split()) == 7
    assert doc.replicas == {"r0": 2}

    doc = run_loadtest(server, _trace(2, 0.02, inp=7, out=5), out_dir=tmp_path / "s", token=TOKEN, stream=True)
    df = _csv(tmp_path / "s")
    assert (df["tokens"] == 5).all()  # the empty final chunk and [DONE] are no tokens
    assert doc.summary.tpot_s.p50 == pytest.approx(0.01, abs=0.005)


def test_max_requests_replays_the_first_n(server: str, tmp_path: Path) -> None:
    trace = _trace(10, 0.01)
    doc = run_loadtest(f"{server}/fast", trace, out_dir=tmp_path, max_requests=4, time_scale=2.0)
    assert doc.summary.requests == 4
    assert _csv(tmp_path)["id"].tolist() == [0, 1, 2, 3]
    assert _csv(tmp_path)["scheduled_s"].tolist() == pytest.approx([0.0, 0.005, 0.01, 0.015])
    md = doc.metadata
    assert md.trace_requests == 10 and md.replayed_requests == 4 and md.max_requests == 4
    assert md.trace_sha256 == trace.content_hash() and md.replayed_sha256 == trace.head(4).content_hash()


# -- the document --------------------------------------------------------------------------------


def test_measured_json_round_trips_and_lines_up_with_the_simulator(server: str, tmp_path: Path) -> None:
    from servewise.config import load_deployment
    from servewise.simulator import simulate

    doc = run_loadtest(f"{server}/fast", _trace(3, 0.01), out_dir=tmp_path)
    assert load_measured(tmp_path / "measured.json").to_doc() == doc.to_doc()
    assert doc.kind == "measured" and doc.schema_version == loadtest.SCHEMA_VERSION
    dep = load_deployment(Path(str(files("servewise") / "data" / "default_deployment.yaml")))
    sim = simulate(dep, _trace(20, 0.1).with_zipf_keys(5, 1.0, seed=1), seed=0).summary.model_dump(mode="json")
    measured = doc.summary.model_dump(mode="json")
    assert list(sim) == list(measured)  # same keys, same order
    for key, value in sim.items():  # a summary in one is a summary (same keys) in the other
        if isinstance(value, dict) and isinstance(measured[key], dict):
            assert list(value) == list(measured[key]), key

    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"kind": "sim_result", "schema_version": 1}))
    with pytest.raises(ArtifactError):
        load_measured(bad)


# -- bad inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs", "error", "match"),
    [
        ("ftp://127.0.0.1/x", {}, ConfigError, "http://"),
        ("127.0.0.1:8000", {}, ConfigError, "http://"),
        ("http://127.0.0.1:1", {"time_scale": 0}, ConfigError, "time_scale"),
        ("http://127.0.0.1:1", {"time_scale": -2.0}, ConfigError, "time_scale"),
        ("http://127.0.0.1:1", {"time_scale": float("nan")}, ConfigError, "time_scale"),
        ("http://127.0.0.1:1", {"max_requests": 0}, ConfigError, "max_requests"),
        ("http://127.0.0.1:1", {"processes": 0}, ConfigError, "processes"),
        ("http://127.0.0.1:1", {"timeout_s": 0}, ConfigError, "timeout_s"),
        ("http://127.0.0.1:1", {"api": "grpc"}, ConfigError, "api"),
        ("http://127.0.0.1:1", {"prompt": "images"}, ConfigError, "prompt"),
    ],
)
def test_bad_inputs_are_one_line_errors(
    url: str, kwargs: dict[str, Any], error: type, match: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=match) as exc:
        run_loadtest(url, _trace(3, 0.1), out_dir=tmp_path, **kwargs)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "measured.json").exists()


def test_empty_trace_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no requests") as exc:
        run_loadtest("http://127.0.0.1:1", _trace(0, 0.1), out_dir=tmp_path)
    assert "\n" not in str(exc.value)


def test_missing_locust_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "locust" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'servewise\[loadtest\]'"):
        run_loadtest("http://127.0.0.1:1", _trace(3, 0.1), out_dir=tmp_path)


def test_parent_process_never_imports_locust_or_gevent(server: str, tmp_path: Path) -> None:
    """``from servewise import loadtest`` and a whole run leave the calling process unpatched (it may run asyncio)."""
    code = (
        "import sys, numpy as np\nfrom servewise import loadtest\n"
        "from servewise.trace import Trace\n"
        "t = Trace(arrival_s=np.zeros(2), input_tokens=np.ones(2), output_tokens=np.ones(2))\n"
        f"d = loadtest.run_loadtest({server + '/fast'!r}, t, out_dir={str(tmp_path)!r})\n"
        "assert d.summary.completed == 2, d\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'locust', 'geventhttpclient'))\n"
        "print('IMPORTED', bad)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "IMPORTED []" in r.stdout


def test_progress_reports_every_request(server: str, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    t0 = time.monotonic()
    run_loadtest(f"{server}/fast", _trace(6, 0.02), out_dir=tmp_path, progress=lambda d, n: calls.append((d, n)))
    assert time.monotonic() - t0 < 20
    assert calls and calls[-1] == (6, 6)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_crashed_generator_process_is_a_load_test_error(tmp_path: Path) -> None:
    from servewise.errors import LoadTestError
    from servewise.loadtest._run import _Fleet

    plan = {"process": 0, "result": str(tmp_path / "r.json"), "itl": str(tmp_path / "i.npy")}  # no "requests"
    with pytest.raises(LoadTestError, match="generator process 0 exited before it was ready: KeyError") as exc:
        _Fleet([plan], tmp_path, span_s=0.0, timeout_s=1.0).run(1, None)
    assert "\n" not in str(exc.value)


def test_a_password_in_the_url_is_never_written() -> None:
    from servewise.loadtest._run import _redact

    assert _redact("http://user:pw@host:8000/v1/completions") == "http://user:***@host:8000/v1/completions"
    assert _redact("http://host:8000") == "http://host:8000"
