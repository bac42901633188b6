"""``servewise serve`` for real on 127.0.0.1: the API, safety, faults, scaling, logs, versions.

Replicas run in synthetic mode (they sleep known service times) so the expected numbers
are independent of this machine's speed: a deterministic service time ``S`` and a
bounded queue give known capacities, latencies and rejection counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from _live import burst, metric, open_loop, start, write_deployment

from servewise import telemetry
from servewise.config import load_deployment

pytestmark = pytest.mark.xdist_group("serving")

HERE = Path(__file__).parent


def _det(mean_s: float) -> dict:
    return {"distribution": "deterministic", "mean_s": mean_s}


@pytest.fixture
def server(tmp_path):
    started = []

    def make(*args: str, **fields):
        dep = write_deployment(tmp_path / "deployment.yaml", **fields)
        s = start(tmp_path, dep, *args)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop(timeout_s=20)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- API


def test_completions_predict_health_and_metrics(server):
    s = server(replicas=2, service_time=_det(0.02), balancer={"policy": "p2c", "d": 2})
    r = requests.post(f"{s.url}/v1/completions", json={"model": "x", "prompt": [5, 6, 7], "max_tokens": 5}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert len(body["choices"][0]["text"].split()) == 5
    assert r.headers["X-Servewise-Cache"] == "miss"
    assert r.headers["X-Servewise-Replica"] in {str(x["id"]) for x in s.info["replicas"]}

    r = requests.post(f"{s.url}/predict", json={"inputs": "a short text to embed"}, timeout=10)
    assert r.status_code == 200, r.text
    assert "outputs" in r.json()

    h = requests.get(f"{s.url}/healthz", timeout=5)
    assert h.status_code == 200 and h.json()["replicas_ready"] == 2

    text = requests.get(f"{s.url}/metrics", timeout=5).text
    for m in telemetry.METRICS.values():  # every metric the dashboards query is exported
        assert any(line.startswith(m.name) for line in text.splitlines() if not line.startswith("#")), m.name
    assert metric(text, "servewise_requests_total", status="completed") == 2
    assert metric(text, "servewise_request_duration_seconds_count", status="completed") == 2
    assert metric(text, "servewise_replicas_ready") == 2


def test_streaming_sse_tokens_arrive_one_by_one(server):
    # a lone request of 8 output tokens takes 0.4 s (deterministic): tokens are spread over it
    s = server(replicas=1, service_time=_det(0.4))
    t0 = time.monotonic()
    arrivals = []
    with requests.post(
        f"{s.url}/v1/completions", json={"prompt": [1, 2], "max_tokens": 8, "stream": True}, stream=True, timeout=10
    ) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic() - t0, line[6:]))
    assert arrivals[-1][1] == b"[DONE]"
    tokens = [a for a in arrivals[:-1] if json.loads(a[1])["choices"][0]["text"]]
    assert len(tokens) == 8
    assert tokens[0][0] < 0.3 < tokens[-1][0]  # the first token well before the end of the 0.4 s run
    assert tokens[-1][0] >= 0.35


def test_response_cache_answers_repeated_keys(server):
    s = server(replicas=1, service_time=_det(0.2), cache={"policy": "lru", "capacity": 10})
    hdr = {"X-Servewise-Key": "k1"}
    a = requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 3}, headers=hdr, timeout=10)
    t0 = time.monotonic()
    b = requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 3}, headers=hdr, timeout=10)
    hit_s = time.monotonic() - t0
    assert a.headers["X-Servewise-Cache"] == "miss" and b.headers["X-Servewise-Cache"] == "hit"
    assert b.json()["choices"] == a.json()["choices"]
    assert hit_s < 0.1  # the replica's 0.2 s was not paid
    text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_cache_hits_total") == 1
    assert metric(text, "servewise_requests_total", status="cache_hit") == 1


# --------------------------------------------------------------------------- bad requests


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(server):
    s = server("--token", "s3cret", "--max-body-bytes", "2000", replicas=1, service_time=_det(0.01))
    ok = {"Authorization": "Bearer s3cret"}
    url = f"{s.url}/v1/completions"
    cases = [
        (requests.post(url, data=b"{not json", headers={**ok, "Content-Type": "application/json"}, timeout=5), 400),
        (requests.post(url, data=b"x" * 5000, headers=ok, timeout=5), 413),
        (requests.post(url, json={"prompt": [1], "max_tokens": "ten"}, headers=ok, timeout=5), 422),
        (requests.post(url, json={"prompt": [1], "max_tokens": 3, "temprature": 1}, headers=ok, timeout=5), 422),
        (requests.post(url, json={"prompt": [], "max_tokens": 3}, headers=ok, timeout=5), 422),
        (requests.post(url, json=[1, 2], headers=ok, timeout=5), 422),
        (requests.post(url, json={"prompt": [1], "max_tokens": 3}, timeout=5), 401),
        (requests.post(url, json={"prompt": [1], "max_tokens": 3}, headers={"Authorization": "Bearer nope"}, timeout=5), 401),
        (requests.get(f"{s.url}/metrics", timeout=5), 401),
        (requests.post(f"{s.url}/predict", json={"inputs": 12}, headers=ok, timeout=5), 422),
    ]
    for resp, want in cases:
        assert resp.status_code == want, (want, resp.text)
        assert "Traceback" not in resp.text
        if want != 413 or resp.headers.get("Content-Type", "").startswith("application/json"):
            assert resp.json()["error"]["message"]
    assert "max_tokens" in cases[2][0].json()["error"]["message"]
    assert "temprature" in cases[3][0].json()["error"]["message"]
    assert requests.get(f"{s.url}/healthz", timeout=5).status_code == 200  # probes need no token
    good = requests.post(url, json={"prompt": [1], "max_tokens": 3}, headers=ok, timeout=5)
    assert good.status_code == 200


# --------------------------------------------------------------------------- faults and overload


def test_three_times_overload_is_rejected_with_429_and_admitted_latency_stays_bounded(server):
    # 2 replicas × 1 slot × S = 0.02 s: capacity 100 req/s; queue 4 per replica.
    S, cap = 0.02, 4
    s = server(replicas=2, service_time=_det(S), queue={"capacity": cap}, balancer={"policy": "least_outstanding"})
    rss0 = _rss_kib(s.pid)
    res = open_loop(f"{s.url}/v1/completions", rate_rps=300, duration_s=4)
    codes = [r["status"] for r in res]
    assert set(codes) <= {200, 429}, sorted(set(codes))
    ok = [r for r in res if r["status"] == 200]
    rejected = [r for r in res if r["status"] == 429]
    assert all(int(r["headers"]["Retry-After"]) >= 1 for r in rejected)
    # a server at 3x its capacity admits about a third of the load (capacity / offered)
    assert 0.25 <= len(ok) / len(res) <= 0.45
    # an admitted request waits behind at most `cap` others on its replica, plus its own service:
    # (cap + 1) * S = 0.1 s; the server's own histogram (arrival at the router to the last byte)
    # must hold 99 % of them under 0.3 s (client-side connection set-up is not the server's)
    text = requests.get(f"{s.url}/metrics", timeout=5).text
    done = metric(text, "servewise_request_duration_seconds_count", status="completed")
    assert done == len(ok)
    under = metric(text, "servewise_request_duration_seconds_bucket", status="completed", le="0.3")
    assert under / done >= 0.99
    assert metric(text, "servewise_requests_total", status="rejected") == len(rejected)
    assert _rss_kib(s.pid) - rss0 < 60_000  # bounded memory (KiB)
    assert requests.get(f"{s.url}/healthz", timeout=5).status_code == 200


def test_a_killed_replica_is_ejected_its_requests_retried_and_it_is_replaced(server, tmp_path):
    s = server(replicas=2, service_time=_det(0.1), balancer={"policy": "round_robin"}, scaling={"cold_start_s": 0.5})
    victim = s.replica_pids()[0]
    res: list = []

    import threading

    t = threading.Thread(target=lambda: res.extend(open_loop(f"{s.url}/v1/completions", rate_rps=20, duration_s=4)))
    t.start()
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    t.join(30)
    assert [r["status"] for r in res].count(200) == len(res), sorted({r["status"] for r in res})  # none lost
    text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_errors_total", reason="replica_failed") >= 1
    assert metric(text, "servewise_cold_starts_total") >= 1  # the replacement
    deadline = time.monotonic() + 10
    while metric(text, "servewise_replicas_ready") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_replicas_ready") == 2


def test_scale_to_zero_then_a_burst_pays_a_visible_cold_start_and_loses_nothing(server):
    cold = 1.0
    s = server(
        replicas=0,
        concurrency=2,
        service_time=_det(0.05),
        scaling={"mode": "serverless", "max_replicas": 2, "keep_alive_s": 0.5, "cold_start_s": cold},
    )
    assert s.info["replicas"] == []  # nothing runs while idle
    res = burst(f"{s.url}/v1/completions", 6)
    assert [r["status"] for r in res] == [200] * 6
    lat = sorted(r["latency_s"] for r in res)
    assert lat[0] >= cold  # every request of the burst waited for a cold start
    text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_cold_starts_total") >= 1
    deadline = time.monotonic() + 10
    while metric(text, "servewise_replicas") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_replicas") == 0  # scaled back to zero after keep_alive_s
    again = burst(f"{s.url}/v1/completions", 2)
    assert [r["status"] for r in again] == [200, 200] and min(r["latency_s"] for r in again) >= cold


@pytest.mark.parametrize(("rule", "spread"), [("newest", False), ("most_recent", False), ("spread", True)])
def test_serverless_warm_requests_go_to_one_instance_unless_spread(server, rule, spread):
    """Three instances are warm after a burst; one request at a time then goes to one of
    them every time (``newest``, ``most_recent``: the others idle towards their expiry,
    as on AWS Lambda), or round-robin over all three (``spread``)."""
    s = server(
        replicas=0,
        concurrency=1,
        service_time=_det(0.3),
        balancer={"policy": "round_robin"},
        scaling={"mode": "serverless", "max_replicas": 3, "keep_alive_s": 60, "cold_start_s": 0.2, "warm_routing": rule},
    )
    first = burst(f"{s.url}/v1/completions", 3)
    assert [r["status"] for r in first] == [200] * 3
    assert len({r["headers"].get("X-Servewise-Replica") for r in first}) == 3  # one instance each
    seq = []
    for _ in range(6):
        (r,) = burst(f"{s.url}/v1/completions", 1)
        assert r["status"] == 200
        seq.append(r["headers"].get("X-Servewise-Replica"))
    assert len(set(seq)) == (3 if spread else 1), seq
    assert metric(requests.get(f"{s.url}/metrics", timeout=5).text, "servewise_cold_starts_total") == 3  # all warm


def test_autoscaling_adds_replicas_under_load_and_drains_them_after(server):
    s = server(
        replicas=1,
        service_time=_det(0.3),
        scaling={
            "mode": "autoscale", "min_replicas": 1, "max_replicas": 3, "target_in_flight": 1, "interval_s": 0.3,
            "cold_start_s": 0.1, "scale_down_stabilization_s": 0.6,
        },
    )  # fmt: skip
    res = open_loop(f"{s.url}/v1/completions", rate_rps=8, duration_s=3)
    assert all(r["status"] == 200 for r in res)
    text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_cold_starts_total") >= 2  # grew to 3 (in-flight ~ 8 × 0.3 = 2.4)
    deadline = time.monotonic() + 10
    while metric(text, "servewise_replicas") > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        text = requests.get(f"{s.url}/metrics", timeout=5).text
    assert metric(text, "servewise_replicas") == 1


def test_sigterm_drains_in_flight_requests_then_exits_0(server):
    s = server(replicas=1, service_time=_det(1.0))
    import threading

    out: list = []
    t = threading.Thread(
        target=lambda: out.append(requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 2}, timeout=20))
    )
    t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    try:
        late = requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 2}, timeout=5).status_code
    except requests.ConnectionError:
        late = None
    t.join(20)
    assert out and out[0].status_code == 200  # the in-flight request finished
    assert late in (503, None)  # a new one is refused while draining
    assert s.proc.wait(20) == 0
    for pid in s.replica_pids():  # no worker left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


# --------------------------------------------------------------------------- operations


def test_request_log_samples_and_redacts(server, tmp_path):
    log = tmp_path / "requests.jsonl"
    s = server("--log-requests", str(log), "--log-sample", "0.5", replicas=1, service_time=_det(0.005), queue={"capacity": 0})
    for _ in range(40):
        requests.post(f"{s.url}/v1/completions", json={"prompt": "secret words here", "max_tokens": 2}, timeout=5)
    requests.post(f"{s.url}/v1/completions", data=b"{bad", timeout=5)  # a 400: logged always, no prompt to log
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    served = [x for x in lines if x["status"] == "completed"]
    assert 10 <= len(served) <= 30  # about half of 40, seeded
    (invalid,) = [x for x in lines if x["status"] == "invalid"]
    assert invalid["http_status"] == 400 and invalid["prompt"] is None and "invalid JSON" in invalid["error"]
    assert all("prompt" not in x and len(x["prompt_sha256"]) == 64 for x in lines if x is not invalid)
    assert "secret" not in log.read_text()
    assert {"latency_s", "replica", "batch_size", "input_tokens", "output_tokens"} <= set(served[0])


def test_request_log_without_redaction_keeps_the_prompt(server, tmp_path):
    log = tmp_path / "requests.jsonl"
    s = server("--log-requests", str(log), "--no-redact", replicas=1, service_time=_det(0.005))
    requests.post(f"{s.url}/v1/completions", json={"prompt": "hello there", "max_tokens": 2}, timeout=5)
    (entry,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert entry["prompt"] == "hello there" and entry["status"] == "completed"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servewise", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_versions_history_and_rollback_reload_a_running_server(tmp_path):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.05))
    s = start(tmp_path, dep)
    state = tmp_path / "server" / "state"
    try:
        def latency() -> float:
            t0 = time.monotonic()
            assert requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 1}, timeout=10).status_code == 200
            return time.monotonic() - t0

        assert latency() < 0.2
        # a new version (0.4 s) served by the same server: record it and tell the server
        from servewise.serving import VersionStore

        store = VersionStore(state, "live-test")
        slow = write_deployment(tmp_path / "d2.yaml", replicas=1, service_time=_det(0.4))
        v2, new = store.record(load_deployment(slow), slow)
        assert new and v2.version == 2
        assert store.notify_reload() == s.pid
        deadline = time.monotonic() + 20
        while latency() < 0.35 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert latency() >= 0.35

        hist = _cli("deploy", "history", "--state-dir", str(state), cwd=tmp_path)
        assert hist.returncode == 0, hist.stderr
        assert "live-test" in hist.stdout and f"pid {s.pid}" in hist.stdout

        back = _cli("deploy", "rollback", "--state-dir", str(state), cwd=tmp_path)
        assert back.returncode == 0, back.stderr
        assert "version 3 is current (= version 1)" in back.stdout
        deadline = time.monotonic() + 20
        while latency() > 0.2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert latency() < 0.2
        assert [v.rollback_of for v in store.history()] == [None, None, 1]
        bad = _cli("deploy", "rollback", "--to", "9", "--state-dir", str(state), cwd=tmp_path)
        assert bad.returncode == 2 and "no version 9" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        assert s.stop(20) == 0


def test_serve_refuses_a_deployment_it_cannot_run(tmp_path):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.05))
    r = _cli("serve", str(dep), "--mode", "real", "--port", "0", "--state-dir", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 2 and "use --mode synthetic" in r.stderr and "Traceback" not in r.stderr
    r = _cli("serve", str(tmp_path / "missing.yaml"), "--port", "0", cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr


@pytest.mark.parametrize(
    ("cpus", "fields", "threads", "expected"),
    [
        (2, {"replicas": 2}, None, 1),  # 2 replicas on 2 cores: one thread each, not the profile's 2
        (8, {"replicas": 2}, None, 4),
        (2, {"replicas": 3}, None, 1),  # never below 1
        (16, {"replicas": 1, "scaling": {"mode": "autoscale", "min_replicas": 1, "max_replicas": 4, "target_in_flight": 2}}, None, 4),
        (16, {"replicas": 0, "scaling": {"mode": "serverless", "max_replicas": 8, "keep_alive_s": 5}}, None, 2),
        (2, {"replicas": 2}, 3, 3),  # --threads wins
    ],
)
def test_serve_threads_default_to_what_fits_the_host(monkeypatch, tmp_path, cpus, fields, threads, expected):
    from servewise.serving import ServeSettings, _plan

    monkeypatch.setattr(_plan, "usable_cpus", lambda: cpus)
    path = write_deployment(tmp_path / "deployment.yaml", service_time=_det(0.01), **fields)
    plan = _plan.make_plan(load_deployment(path), path, ServeSettings(threads=threads))
    assert {spec.threads for spec in plan.specs.values()} == {expected}
