"""The router against hostile or mistaken clients and hung replicas, for real on 127.0.0.1.

Each test is a regression test of a defect once found: a 500 where a 4xx was due, a
client's mistake answered 502 (which the OpenAI client retries), a hung replica holding
its requests for minutes, connections held open by clients that send nothing, and a
log flood when file descriptors run out. Servers are child processes stopped by PID;
every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from _live import metric, start, start_with, write_deployment

from servewise.config import load_deployment
from servewise.serving._plan import default_upstream_timeout_s
from servewise.serving._settings import ServeSettings
from servewise.serving._validate import parse_json
from servewise.serving._warn import AcceptErrorHandler

pytestmark = pytest.mark.xdist_group("serving")


def _det(mean_s: float) -> dict:
    return {"distribution": "deterministic", "mean_s": mean_s}


@pytest.fixture
def stopper():
    started = []
    yield started.append
    for s in started:
        for pid in s.replica_pids():  # a test may leave a replica stopped: let it go on
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        s.stop(timeout_s=20)


def _raw(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends back until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def _post(path: str, body: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _metrics(url: str, **headers: str) -> str:
    return requests.get(f"{url}/metrics", headers=headers, timeout=5).text


# --------------------------------------------------------------------------- 1: 4xx, never 500


def test_deeply_nested_json_is_a_logged_and_counted_400(tmp_path, stopper):
    log = tmp_path / "requests.jsonl"
    s = start(tmp_path, write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.01)), "--log-requests", str(log))
    stopper(s)
    port = int(s.url.rsplit(":", 1)[1])
    for body in (b"[" * 100_000, b'{"prompt": ' + b"[" * 50_000):
        status, data = _status_and_body(_raw(port, _post("/v1/completions", body)))
        assert status == 400 and "nested too deeply" in data["error"]["message"], data
    text = _metrics(s.url)
    assert metric(text, "servewise_errors_total", reason="client") == 2
    assert metric(text, "servewise_errors_total", reason="internal") == 0
    assert metric(text, "servewise_requests_total") == 0  # neither completed nor failed
    entries = _log(log)
    assert [(e["status"], e["http_status"], e["endpoint"]) for e in entries] == [("invalid", 400, "/v1/completions")] * 2
    assert "Traceback" not in s.stderr()


def test_a_lone_surrogate_in_a_prompt_is_refused_with_400_and_logged(tmp_path, stopper):
    log = tmp_path / "requests.jsonl"
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.01))
    s = start(tmp_path, dep, "--log-requests", str(log), "--no-redact")
    stopper(s)
    url = f"{s.url}/v1/completions"
    for stream in (False, True):
        body = b'{"prompt": "hi \\ud800 there", "max_tokens": 2, "stream": %s}' % (b"true" if stream else b"false")
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 400, r.text
        assert "lone surrogate" in r.json()["error"]["message"] and "prompt" in r.json()["error"]["message"]
    # a surrogate pair is a real character (an emoji): served and logged as usual
    ok = requests.post(url, data=b'{"prompt": "hi \\ud83d\\ude00", "max_tokens": 2}', timeout=10)
    assert ok.status_code == 200, ok.text
    text = _metrics(s.url)
    assert metric(text, "servewise_requests_total", status="completed") == 1
    assert metric(text, "servewise_errors_total", reason="client") == 2
    assert metric(text, "servewise_errors_total", reason="internal") == 0
    entries = _log(log)
    assert [(e["status"], e["http_status"]) for e in entries] == [("invalid", 400), ("invalid", 400), ("completed", 200)]
    assert entries[2]["prompt"] == "hi \U0001f600"


def test_non_utf8_header_bytes_are_401_or_400_never_500(tmp_path, stopper):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.01))
    s = start(tmp_path, dep, "--token", "s3cret")
    stopper(s)
    port = int(s.url.rsplit(":", 1)[1])
    body = b'{"prompt": [1], "max_tokens": 2}'
    status, data = _status_and_body(_raw(port, _post("/v1/completions", body, b"Authorization: Bearer \xff\xfe")))
    assert status == 401 and data["error"]["type"] == "authentication_error"
    status, _ = _status_and_body(_raw(port, _post("/v1/completions", body, b"Authorization: \xc3\x28 s3cret")))
    assert status == 401
    # the right token, but a request id that is not UTF-8 (it would be echoed in a header and logged)
    ok = b"Authorization: Bearer s3cret"
    status, data = _status_and_body(_raw(port, _post("/v1/completions", body, ok, b"X-Request-Id: \xff")))
    assert status == 400 and "X-Request-Id" in data["error"]["message"]
    status, _ = _status_and_body(_raw(port, _post("/v1/completions", body, ok)))
    assert status == 200
    text = _metrics(s.url, Authorization="Bearer s3cret")
    assert metric(text, "servewise_errors_total", reason="internal") == 0
    assert metric(text, "servewise_errors_total", reason="client") == 3
    assert "Traceback" not in s.stderr()


def test_parse_json_refuses_what_json_loads_accepts_but_cannot_serve():
    with pytest.raises(Exception, match="nested too deeply") as err:
        parse_json(b"[" * 100_000)
    assert getattr(err.value, "status", None) == 400
    with pytest.raises(Exception, match=r"stop\.1: invalid Unicode: a lone surrogate \(\\udc00\) at character 1"):
        parse_json(b'{"prompt": "ok", "stop": ["fine", "a\\udc00"]}')
    assert parse_json(b'{"prompt": "\\ud83d\\ude00"}') == {"prompt": "\U0001f600"}


# --------------------------------------------------------------------------- 2: client mistakes are 4xx


def test_client_mistakes_are_4xx_counted_as_client_errors_not_upstream_failures(tmp_path, stopper, make_variant, write_profile):
    write_profile(make_variant("fp32", kind="classic"))
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, model={"profile": "profile.json", "variant": "fp32"})
    s = start(tmp_path, dep)
    stopper(s)
    url = f"{s.url}/v1/completions"
    r = requests.post(url, json={"prompt": [1, 2], "max_tokens": 2, "stream": True}, timeout=10)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("stream: expected false: classic"), r.text
    r = requests.post(url, json={"prompt": [1, 10**20], "max_tokens": 2}, timeout=10)
    assert r.status_code == 422 and "token ids must be in" in r.json()["error"]["message"], r.text
    assert requests.post(url, json={"prompt": [1, 2], "max_tokens": 2}, timeout=10).status_code == 200
    text = _metrics(s.url)
    assert metric(text, "servewise_errors_total", reason="upstream") == 0
    assert metric(text, "servewise_errors_total", reason="client") == 2
    assert metric(text, "servewise_requests_total", status="failed") == 0


def test_a_real_models_window_is_checked_and_a_replicas_4xx_passes_through(tmp_path, stopper, make_variant, write_profile):
    from servewise.serving import start_server

    write_profile(make_variant("fp32", kind="decoder", model="builtin:tiny-gpt2"))
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, model={"profile": "profile.json", "variant": "fp32"})
    s = start_server(dep, workdir=tmp_path / "server", args=["--mode", "real"], timeout_s=180)
    stopper(s)
    url = f"{s.url}/v1/completions"
    r = requests.post(url, json={"prompt": [1, 2], "max_tokens": 4000}, timeout=30)  # beyond tiny-gpt2's window
    assert r.status_code == 422 and "context window" in r.json()["error"]["message"], r.text
    # ids beyond the vocabulary are clipped into it (traces replay other tokenizers' ids)
    r = requests.post(url, json={"prompt": [1, 10**6], "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text
    # the router cannot know this one: the replica's 422 reaches the client as it is
    r = requests.post(url, json={"prompt": "some text", "max_tokens": 2}, timeout=30)
    assert r.status_code == 422 and "no tokenizer" in r.json()["error"]["message"], r.text
    assert requests.post(url, json={"prompt": [1, 2], "max_tokens": 2}, timeout=30).status_code == 200
    text = _metrics(s.url)
    assert metric(text, "servewise_errors_total", reason="upstream") == 0
    assert metric(text, "servewise_errors_total", reason="client") == 2
    assert metric(text, "servewise_requests_total", status="failed") == 0
    assert metric(text, "servewise_replicas_ready") == 1  # a client's mistake ejects no replica


# --------------------------------------------------------------------------- 3: hung replicas


def test_a_hung_replica_times_out_is_ejected_and_its_requests_are_retried(tmp_path, stopper):
    dep = write_deployment(tmp_path / "d.yaml", replicas=2, service_time=_det(0.05), balancer={"policy": "round_robin"})
    s = start_with(tmp_path, dep, upstream_timeout_s=1.0, health_interval_s=30.0)  # only the timeout can eject it
    stopper(s)
    os.kill(s.replica_pids()[0], signal.SIGSTOP)
    t0 = time.monotonic()
    answers = [requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 2}, timeout=20) for _ in range(4)]
    took = time.monotonic() - t0
    assert [a.status_code for a in answers] == [200] * 4
    assert took < 1.0 + 4 * 0.05 + 2.0  # one wait of the 1 s timeout, then the other replica answers
    assert {a.headers["X-Servewise-Replica"] for a in answers} == {str(s.info["replicas"][1]["id"])}
    text = _metrics(s.url)
    assert metric(text, "servewise_errors_total", reason="timeout") == 1
    assert metric(text, "servewise_replicas_ready") == 1


def test_a_stream_that_stalls_is_cut_after_the_upstream_timeout(tmp_path, stopper):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(4.0))  # tokens at 1, 2, 3, 4 s
    s = start_with(tmp_path, dep, upstream_timeout_s=1.5, health_interval_s=30.0)
    stopper(s)
    lines = []
    t0 = time.monotonic()
    with requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 4, "stream": True}, stream=True, timeout=20) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                lines.append(line[6:])
                if len(lines) == 1:
                    os.kill(s.replica_pids()[0], signal.SIGSTOP)
    took = time.monotonic() - t0
    assert len(lines) == 2 and json.loads(lines[0])["choices"][0]["text"]  # one token, then the error
    err = json.loads(lines[1])["error"]
    assert err["code"] == 504 and "stalled" in err["message"]
    assert took < 1.0 + 1.5 + 1.5
    text = _metrics(s.url)
    assert metric(text, "servewise_errors_total", reason="timeout") == 1
    assert metric(text, "servewise_requests_total", status="failed") == 1


def test_the_default_upstream_timeout_follows_the_slo_then_the_profile(tmp_path, make_variant, write_profile):
    def timeout(**fields) -> float:
        return default_upstream_timeout_s(load_deployment(write_deployment(tmp_path / "d.yaml", **fields)), ServeSettings())

    assert timeout(replicas=1, service_time=_det(0.01), slo={"p99_latency_s": 5.0, "p50_latency_s": 1.0}) == 50.0
    assert timeout(replicas=1, service_time=_det(0.01), slo={"p95_latency_s": 0.5}) == 30.0  # the floor
    # 10 x a full batch (4 requests of 1024 tokens) x (1 + one full batch a queue of 4 holds ahead)
    v = make_variant("fp32", kind="classic")
    write_profile(v)
    model = {"profile": "profile.json", "variant": "fp32"}
    want = 10 * v.service_time(4, 1024, 1) * 2
    got = timeout(replicas=1, model=model, batching={"max_batch_size": 4, "max_wait_s": 0.01}, queue={"capacity": 4})
    assert got == pytest.approx(want) and want > 30
    assert timeout(replicas=1, service_time=_det(0.5), queue={"capacity": 8}) == pytest.approx(10 * 0.5 * 9)


# --------------------------------------------------------------------------- 4: slow clients, file descriptors


def test_a_connection_that_sends_nothing_or_half_a_request_is_closed_after_the_header_timeout(tmp_path, stopper):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.01))
    s = start_with(tmp_path, dep, header_timeout_s=1.0, body_timeout_s=1.0)
    stopper(s)
    port = int(s.url.rsplit(":", 1)[1])
    for sent in (b"", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"):
        t0 = time.monotonic()
        assert _raw(port, sent) == b""  # closed without an answer
        assert 0.8 <= time.monotonic() - t0 < 3.0, sent
    # headers in, the body never completes: 408 after the body timeout, and the connection closes
    t0 = time.monotonic()
    head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    out = _raw(port, head + b'{"prompt": [1], ')
    assert 0.8 <= time.monotonic() - t0 < 3.0
    status, data = _status_and_body(out)
    assert status == 408 and "body" in data["error"]["message"]
    # meanwhile and after, the server serves
    assert requests.post(f"{s.url}/v1/completions", json={"prompt": [1], "max_tokens": 2}, timeout=10).status_code == 200
    assert metric(_metrics(s.url), "servewise_errors_total", reason="client") == 1


def test_running_out_of_file_descriptors_logs_a_line_not_a_flood(tmp_path, stopper):
    dep = write_deployment(tmp_path / "d.yaml", replicas=1, service_time=_det(0.01))
    s = start_with(tmp_path, dep, nofile=128, header_timeout_s=60.0)
    stopper(s)
    port = int(s.url.rsplit(":", 1)[1])
    before = s.stderr_path.stat().st_size
    socks: list[socket.socket] = []
    try:
        for _ in range(200):  # well past 128: the server's accept() fails with EMFILE
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(3.0)
        grown = s.stderr_path.stat().st_size - before
        log = s.stderr()
    finally:
        for sock in socks:
            sock.close()
    assert grown < 5_000, f"{grown} bytes of stderr in 3 s"
    assert 1 <= log.count("cannot accept connections") <= 2
    deadline = time.monotonic() + 15  # the server accepts again once descriptors are free
    ok = False
    while not ok and time.monotonic() < deadline:
        try:
            ok = requests.get(f"{s.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            time.sleep(0.2)
    assert ok


def test_the_accept_error_handler_writes_one_line_per_interval_and_passes_other_errors_on():
    out = io.StringIO()
    handler = AcceptErrorHandler(every_s=10.0, out=out)
    other: list[dict] = []

    class Loop:
        def default_exception_handler(self, context: dict) -> None:
            other.append(context)

    ctx = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    for _ in range(10_000):
        handler(Loop(), ctx)  # type: ignore[arg-type]
    handler(Loop(), {"message": "Task exception was never retrieved"})  # type: ignore[arg-type]
    assert out.getvalue().count("\n") == 1 and "Too many open files" in out.getvalue()
    assert handler.throttle.seen == 10_000 and handler.throttle.written == 1
    assert [c["message"] for c in other] == ["Task exception was never retrieved"]

