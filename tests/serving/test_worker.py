"""The replica worker (``python -m serving._worker``), run for real on 127.0.0.1.

Every worker is a child process started with ``--port 0`` and killed by its PID when the
test ends; every wait is bounded. Synthetic service times come from hand-built profiles
(``make_variant`` / ``write_profile`` in ``tests/conftest.py``) or distributions whose
numbers each test states; every expected time is computed here from those numbers.
Real-mode tests run the built-in models (``builtin:tiny-gpt2``, ``builtin:minilm``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.xdist_group("serving")

# decoder: step_time = A0 + P1·prefill + P2·prefill²/seqs + D·decode_seqs + C·context
A0, P1, P2, D, C = 0.003, 1e-5, 1e-8, 0.004, 1e-6
DECODER = (A0, [P1, P2, D, C, 0.0])
# classic: batch_time(b, s) = A + B·b + T·b·s + Q·b·s²
A, B, T, Q = 0.01, 0.02, 5e-4, 2e-6
CLASSIC = (A, [B, T, Q])

SLACK_S = 0.08
"""How much later than its model time a sleep may end on a loaded 2-core machine."""


def decoder_time(b: int, p: int, o: int) -> float:
    """Static generation: a prefill of b·p tokens, then o - 1 decode steps over b·(p + k) context."""
    prefill = A0 + P1 * b * p + P2 * (b * p) ** 2 / b
    steps = o - 1
    return prefill + steps * (A0 + D * b + C * b * p) + C * b * steps * (steps + 1) / 2


def classic_time(b: int, s: int) -> float:
    return A + B * b + T * b * s + Q * b * s * s


# --------------------------------------------------------------------------- workers


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    stderr: Path

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def _first_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    got: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    return got[0] if got else b""


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    """``start_worker(deployment, mode=..., pool=..., expect_ready=True)``: a running worker."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        deployment: Path, *, mode: str = "synthetic", pool: str = "default", timeout_s: float = 60.0, extra: tuple[str, ...] = ()
    ) -> Worker:
        err = tmp_path / f"worker-{len(procs)}.log"
        cmd = [
            sys.executable, "-m", "servewise.serving._worker", "--deployment", str(deployment), "--pool", pool,
            "--replica", f"r{len(procs)}", "--mode", mode, "--threads", "1", "--seed", "7",
            "--workdir", str(tmp_path / "work"), "--port", "0", *extra,
        ]  # fmt: skip
        with open(err, "wb") as err_f:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_f)
        procs.append(proc)
        line = _first_line(proc, timeout_s)
        assert line, f"no ready line within {timeout_s} s: {err.read_text(errors='replace')[-2000:]}"
        return Worker(proc, json.loads(line), err)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def write_deployment(tmp_path: Path, name: str = "deployment.yaml", **fields: Any) -> Path:
    doc: dict[str, Any] = {"replicas": 1}
    doc.update(fields)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


MODEL = {"profile": "profile.json", "variant": "fp32"}


# --------------------------------------------------------------------------- HTTP


def request(port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 30.0) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


def infer(port: int, **body: Any) -> tuple[int, dict[str, str], Any]:
    body.setdefault("id", "req")
    return request(port, "POST", "/infer", json.dumps(body).encode())


def timed_infer(port: int, **body: Any) -> tuple[float, int, dict[str, str], Any]:
    t0 = time.monotonic()
    status, headers, data = infer(port, **body)
    return time.monotonic() - t0, status, headers, data


def stream(port: int, **body: Any) -> list[tuple[float, dict[str, Any]]]:
    """Each NDJSON line with the seconds from sending the request to reading it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t0 = time.monotonic()
        conn.request("POST", "/infer", body=json.dumps({"id": "s", **body, "stream": True}).encode())
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type", "").startswith("application/x-ndjson")
        lines = []
        while line := resp.readline():
            lines.append((time.monotonic() - t0, json.loads(line)))
        return lines
    finally:
        conn.close()


def concurrently(port: int, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, str], Any]]:
    """Send every body at (nearly) the same moment; answers in the order of ``bodies``."""
    gate = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        gate.wait(10)
        return infer(port, **body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def wait_health(port: int, cond: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _status, _h, data = request(port, "GET", "/healthz")
        if cond(data):
            return data
        time.sleep(0.01)
    raise AssertionError(f"healthz never matched; last: {data}")


# --------------------------------------------------------------------------- synthetic mode


def test_synthetic_lone_request_takes_the_profile_time(tmp_path, make_variant, write_profile, start_worker):
    """A lone decoder request is served in the variant's static generation time (÷ the
    pool's speed factor); the cold start is the profile's load time."""
    write_profile(make_variant("fp32", kind="decoder", linear=DECODER, load_time_s=0.4))
    dep = write_deployment(
        tmp_path,
        replicas=None,
        pools=[{"name": "base", "replicas": 1}, {"name": "fast", "replicas": 1, "speed_factor": 2.0}],
        model=MODEL,
    )
    expected = decoder_time(1, 200, 30)
    for n, (pool, speed) in enumerate((("base", 1.0), ("fast", 2.0))):
        w = start_worker(dep, pool=pool)
        assert w.ready["event"] == "ready" and w.ready["pid"] == w.proc.pid
        assert 0.4 <= w.ready["load_s"] <= 0.4 + SLACK_S
        wall, status, _h, data = timed_infer(w.port, id="a", input_tokens=200, output_tokens=30)
        assert status == 200, data
        want = expected / speed
        assert want - 1e-3 <= data["service_s"] <= want + SLACK_S
        assert wall >= want
        assert data["batch_size"] == 1 and data["queue_s"] < SLACK_S
        assert data["id"] == "a" and data["replica"] == f"r{n}"
        assert data["output_token_ids"] == list(range(30)) and data["embedding"] is None


def test_dynamic_batching_runs_a_full_batch_at_once_and_a_lone_request_after_max_wait(
    tmp_path, make_variant, write_profile, start_worker
):
    write_profile(make_variant("fp32", kind="classic", linear=CLASSIC))
    dep = write_deployment(tmp_path, model=MODEL, batching={"max_batch_size": 4, "max_wait_s": 0.25})
    w = start_worker(dep)

    answers = concurrently(w.port, [{"id": str(n), "input_tokens": n} for n in (10, 20, 30, 40)])
    assert [a[0] for a in answers] == [200] * 4
    datas = [a[2] for a in answers]
    assert [d["batch_size"] for d in datas] == [4] * 4
    assert len({d["service_s"] for d in datas}) == 1  # one batch
    batch = classic_time(4, 40)  # padded to its longest member
    assert batch - 1e-3 <= datas[0]["service_s"] <= batch + SLACK_S
    assert max(d["queue_s"] for d in datas) < 0.25  # full before max_wait_s

    status, _h, lone = infer(w.port, id="lone", input_tokens=10)
    assert status == 200
    assert lone["batch_size"] == 1
    assert 0.25 - 1e-3 <= lone["queue_s"] <= 0.25 + SLACK_S
    assert classic_time(1, 10) - 1e-3 <= lone["service_s"] <= classic_time(1, 10) + SLACK_S


def test_bounded_queue_rejects_with_retry_after(tmp_path, start_worker):
    """One slot, two queue places: of four simultaneous requests one runs, two wait (FIFO)
    and the fourth is rejected at once."""
    service_s = 0.4
    dep = write_deployment(
        tmp_path, service_time={"distribution": "deterministic", "mean_s": service_s}, queue={"capacity": 2}
    )
    w = start_worker(dep)
    t0 = time.monotonic()
    answers = concurrently(w.port, [{"id": str(i), "input_tokens": 5} for i in range(4)])
    assert sorted(a[0] for a in answers) == [200, 200, 200, 429]
    _status, headers, rejected = next(a for a in answers if a[0] == 429)
    assert rejected["error"] == "replica queue full"
    assert 0 < rejected["retry_after_s"] <= service_s + SLACK_S
    assert int(headers["Retry-After"]) >= 1
    waits = sorted(a[2]["queue_s"] for a in answers if a[0] == 200)
    for k, q in enumerate(waits):  # FIFO on one slot: the k-th waits k service times
        assert k * service_s - 0.01 <= q <= k * service_s + SLACK_S
    assert time.monotonic() - t0 >= 3 * service_s


def test_stream_sends_each_token_when_it_exists(tmp_path, make_variant, write_profile, start_worker):
    """Prefill 0.02 s, then 0.03 s per decode step: 10 tokens spread over 0.29 s."""
    write_profile(make_variant("fp32", kind="decoder", linear=(0.02, [0.0, 0.0, 0.01, 0.0, 0.0])))
    w = start_worker(write_deployment(tmp_path, model=MODEL))
    lines = stream(w.port, input_tokens=50, output_tokens=10)
    tokens = [(t, m) for t, m in lines if "token_id" in m]
    assert [m["token_id"] for _t, m in tokens] == list(range(10))
    total = 0.02 + 9 * 0.03
    for k, (t, _m) in enumerate(tokens):  # never before its step has run (late is only load)
        assert t >= 0.02 + 0.03 * k - 0.005, (k, t)
    first, last = tokens[0][0], tokens[-1][0]
    assert first < total / 2 and last - first >= 9 * 0.03 - 0.005
    t_done, done = lines[-1]
    assert done["done"] is True and done["batch_size"] == 1 and done["replica"] == "r0"
    assert total - 1e-3 <= done["service_s"] <= total + SLACK_S
    assert t_done >= last


def test_bad_input_is_refused_without_harm(tmp_path, start_worker):
    w = start_worker(write_deployment(tmp_path, service_time={"distribution": "deterministic", "mean_s": 0.01}))
    status, _h, data = request(w.port, "POST", "/infer", b"{not json")
    assert status == 400 and data["error"].startswith("body:")
    cases = [
        ({"id": 5, "input_tokens": 3}, "id:"),
        ({"id": "a", "input_tokens": "3"}, "input_tokens:"),
        ({"id": "a", "input_tokens": 0}, "input_tokens:"),
        ({"id": "a", "input_tokens": 3, "output_tokens": -1}, "output_tokens:"),
        ({"id": "a", "input_tokens": 3, "stream": "yes"}, "stream:"),
        ({"id": "a", "input_tokens": 3, "colour": "red"}, "colour:"),
        ({"id": "a", "token_ids": [1, 2], "text": "hi"}, "token_ids:"),
        ({"id": "a"}, "input_tokens:"),
    ]
    for body, field in cases:
        status, _h, data = request(w.port, "POST", "/infer", json.dumps(body).encode())
        assert status == 422, (body, data)
        assert data["error"].startswith(field), (body, data)
    status, _h, data = request(w.port, "POST", "/infer", b"[1, 2]")
    assert status == 422
    status, _h, health = request(w.port, "GET", "/healthz")
    assert status == 200
    assert health == {"ready": True, "replica": "r0", "queued": 0, "running": 0, "pid": w.proc.pid}
    status, _h, data = infer(w.port, id="ok", token_ids=[4, 5, 6])
    assert status == 200 and data["input_tokens"] == 3


def test_sigterm_finishes_running_and_queued_work_then_exits_0(tmp_path, start_worker):
    dep = write_deployment(tmp_path, service_time={"distribution": "deterministic", "mean_s": 0.6})
    w = start_worker(dep)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(infer, w.port, id="running", input_tokens=5)
        wait_health(w.port, lambda h: h["running"] == 1)
        queued = pool.submit(infer, w.port, id="queued", input_tokens=5)
        wait_health(w.port, lambda h: h["queued"] == 1)
        os.kill(w.proc.pid, signal.SIGTERM)
        health = wait_health(w.port, lambda h: h["ready"] is False)
        assert health["running"] + health["queued"] == 2
        status, _h, data = infer(w.port, id="late", input_tokens=5)
        assert status == 503 and "draining" in data["error"]
        assert running.result(10)[0] == 200
        assert queued.result(10)[0] == 200
    assert w.proc.wait(10) == 0
    assert w.proc.stdout is not None and w.proc.stdout.read() == b""  # only the ready line on stdout


EXPONENTIAL = {"distribution": "exponential", "mean_s": 0.1}


@pytest.mark.parametrize(
    ("fields", "args", "message"),
    [
        ({"service_time": EXPONENTIAL}, ("--mode", "real"), "--mode synthetic"),
        ({"model": {**MODEL, "variant": "onnx-fp32"}}, ("--mode", "real"), "real mode supports torch variants"),
        ({"model": {**MODEL, "variant": "int8"}}, ("--mode", "real"), "compiles one graph per input shape"),
        ({"service_time": EXPONENTIAL}, ("--pool", "nope"), "no pool 'nope'"),
        ({"service_time": EXPONENTIAL}, ("--mode", "fast"), "usage"),
        (
            {"service_time": EXPONENTIAL, "queue": {"capacity": 2}, "batching": {"max_batch_size": 4, "max_wait_s": 0.1}},
            (),
            "queue.capacity (2) must be >= batching.max_batch_size (4)",
        ),
    ],
)
def test_startup_failure_is_one_error_line_and_exit_1(tmp_path, make_variant, write_profile, fields, args, message):
    write_profile(*(make_variant(name, linear=CLASSIC) for name in ("fp32", "onnx-fp32", "int8")))
    dep = write_deployment(tmp_path, **fields)
    opts = {"--pool": "default", "--mode": "synthetic", **dict(zip(args[::2], args[1::2], strict=True))}
    cmd = [sys.executable, "-m", "servewise.serving._worker", "--deployment", str(dep), "--replica", "0", "--workdir", str(tmp_path)]
    for k, v in opts.items():
        cmd += [k, v]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "error"
    assert message in event["message"]


def test_synthetic_mode_never_imports_torch(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32", kind="decoder", linear=DECODER))
    dep = write_deployment(tmp_path, model=MODEL)
    code = f"""
import asyncio, sys
from pathlib import Path
from servewise.serving import _worker
from servewise.serving._executor import Item, build_executor
from servewise.config import load_deployment
ex = build_executor(load_deployment({str(dep)!r}), mode="synthetic", speed_factor=1.0, concurrency=1, threads=1, seed=0,
                    workdir=Path("."))
asyncio.run(ex.run([Item(4, 2)], lambda i, t: None))
assert "torch" not in sys.modules, "synthetic mode imported torch"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def test_replica_without_batching_is_a_loss_system_at_capacity_0():
    """Capacity 0, two slots: a third request while both run is rejected (Erlang loss), on
    any clock: the executor finishes only when the test says so."""
    from servewise.config import Batching
    from servewise.serving._executor import Item, Output
    from servewise.serving._worker import Batcher, Job

    class Gate:
        kind = "distribution"

        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.batches: list[int] = []

        async def run(self, items: list[Item], emit: Any) -> list[Output]:
            self.batches.append(len(items))
            await self.release.wait()
            return [Output() for _ in items]

    async def scenario(batching: Batching | None, capacity: int, n: int) -> tuple[list[bool], list[int]]:
        gate = Gate()
        batcher = Batcher(gate, concurrency=2, batching=batching, capacity=capacity)  # type: ignore[arg-type]
        jobs = [Job(Item(1, 0), stream=False) for _ in range(n)]
        admitted = [batcher.submit(j) is None for j in jobs]
        await asyncio.sleep(0)
        gate.release.set()
        await asyncio.wait_for(asyncio.gather(*(j.future for j, ok in zip(jobs, admitted, strict=True) if ok)), 5)
        return admitted, gate.batches

    admitted, batches = asyncio.run(scenario(None, 0, 5))
    assert admitted == [True, True, False, False, False] and batches == [1, 1]
    # batching: the queue (not the slots) holds at most `capacity`; a full batch starts at once
    admitted, batches = asyncio.run(scenario(Batching(max_batch_size=2, max_wait_s=10.0), 2, 7))
    assert admitted == [True] * 6 + [False]
    assert batches == [2, 2, 2]


# --------------------------------------------------------------------------- real mode


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_real_tiny_gpt2_generates_greedily_and_batches_exactly(tmp_path, make_variant, write_profile, start_worker):
    write_profile(make_variant("fp32", kind="decoder", model="builtin:tiny-gpt2"))
    dep = write_deployment(tmp_path, model=MODEL, batching={"max_batch_size": 4, "max_wait_s": 0.3})
    w = start_worker(dep, mode="real", timeout_s=120)
    assert w.ready["event"] == "ready" and w.ready["load_s"] > 0
    rng = np.random.default_rng(3)
    prompts = [rng.integers(1, 2048, 12).tolist() for _ in range(4)]

    alone = []
    for p in prompts:
        status, _h, data = infer(w.port, token_ids=p, output_tokens=8)
        assert status == 200, data
        assert data["batch_size"] == 1 and data["input_tokens"] == 12
        assert len(data["output_token_ids"]) == 8 and all(0 <= t < 2048 for t in data["output_token_ids"])
        alone.append(data["output_token_ids"])
    assert infer(w.port, token_ids=prompts[0], output_tokens=8)[2]["output_token_ids"] == alone[0]  # deterministic

    answers = concurrently(w.port, [{"token_ids": p, "output_tokens": 8} for p in prompts])
    assert [a[2]["batch_size"] for a in answers] == [4] * 4
    assert [a[2]["output_token_ids"] for a in answers] == alone

    lines = stream(w.port, token_ids=prompts[1], output_tokens=8)
    assert [m["token_id"] for _t, m in lines[:-1]] == alone[1]
    assert lines[-1][1]["done"] is True

    # members stop at their own count; the batch runs to its longest member
    answers = concurrently(w.port, [{"token_ids": prompts[0], "output_tokens": 3}, {"token_ids": prompts[2], "output_tokens": 8}])
    assert [a[2]["output_token_ids"] for a in answers] == [alone[0][:3], alone[2]]


def test_real_minilm_embeds_and_pads_a_batch_correctly(tmp_path, make_variant, write_profile, start_worker):
    write_profile(make_variant("fp32", kind="encoder", model="builtin:minilm"))
    dep = write_deployment(tmp_path, model=MODEL, batching={"max_batch_size": 3, "max_wait_s": 0.3})
    w = start_worker(dep, mode="real", timeout_s=120)
    text = "Paris is the capital of France."
    status, _h, alone = infer(w.port, text=text)
    assert status == 200, alone
    assert len(alone["embedding"]) == 384 and alone["output_token_ids"] is None
    assert alone["input_tokens"] == 9  # [CLS] + 7 word pieces + [SEP]
    longer = [
        "Serving a model cheaply within its latency budget is a queueing problem, and a hard one at scale.",
        "Continuous batching schedules every iteration of the decoder, while static batching waits for the longest.",
    ]
    answers = concurrently(w.port, [{"text": text}, *({"text": t} for t in longer)])
    assert [a[2]["batch_size"] for a in answers] == [3] * 3
    assert _cosine(answers[0][2]["embedding"], alone["embedding"]) > 0.999
    assert _cosine(answers[1][2]["embedding"], alone["embedding"]) < 0.99  # a different sentence
    status, _h, data = infer(w.port, text=text, stream=True)
    assert status == 422 and data["error"].startswith("stream:")
    assert math.isfinite(sum(alone["embedding"]))


@pytest.mark.parametrize(
    "service_time",
    [
        {"distribution": "linear", "base_s": 0.01, "per_item_s": 0.002, "per_input_token_s": 1e-4, "per_output_token_s": 1e-3},
        {"distribution": "deterministic", "mean_s": 0.1},
        None,
    ],
)
def test_batch_time_of_token_counts_equals_batch_time_of_trace_indices(tmp_path, make_variant, write_profile, service_time):
    """The synthetic worker times a batch by its members' token counts; the simulator by
    trace indices: the same batch takes the same time."""
    from servewise.config import load_deployment
    from servewise.service import build_service

    write_profile(make_variant("fp32", kind="decoder", linear=DECODER))
    fields: dict[str, Any] = {"model": MODEL} if service_time is None else {"service_time": service_time}
    dep = load_deployment(write_deployment(tmp_path, batching={"max_batch_size": 4, "max_wait_s": 0.1}, **fields))
    ins, outs = np.array([30, 5, 12]), np.array([4, 9, 1])
    by_index, by_tokens = (
        build_service(dep, batch_cost_factor=0.5, rng=np.random.default_rng(1), input_tokens=ins, output_tokens=outs)
        for _ in range(2)
    )
    for members in ([0], [1, 2], [0, 1, 2]):
        want = by_index.batch_time(members)
        assert by_tokens.batch_time_of(ins[members].tolist(), outs[members].tolist()) == pytest.approx(want, rel=1e-12)
    if service_time is None:
        assert want == pytest.approx(decoder_time(3, 30, 9), rel=1e-9)


def test_real_tiny_gpt2_clips_prompts_and_refuses_outputs_as_the_simulator_does(
    tmp_path, make_variant, write_profile, start_worker
):
    """One semantics: the same requests served by the real worker and simulated from its
    profile get the same prompt tokens each (cut to ``window − output + 1``), and an
    output over the window is refused live (422) and rejected ``window`` in the simulation."""
    from servewise import load_deployment, simulate
    from servewise.trace import Trace

    window = 1024  # builtin:tiny-gpt2's n_positions
    write_profile(make_variant("fp32", kind="decoder", model="builtin:tiny-gpt2", window_tokens=window))
    dep_path = write_deployment(tmp_path, model=MODEL)
    w = start_worker(dep_path, mode="real", timeout_s=120)
    shapes = [(12, 8), (1500, 8), (1017, 8), (1018, 8), (3000, 200), (5, 1023), (40, 1024)]
    live = []
    for n_in, n_out in shapes:
        status, _h, data = infer(w.port, input_tokens=n_in, output_tokens=n_out)
        live.append((status, data.get("input_tokens") if status == 200 else data.get("error", "")))
    assert [s for s, _ in live] == [200] * 6 + [422], live
    assert [t for _, t in live[:6]] == [12, 1017, 1017, 1017, 825, 2]  # min(input, 1024 - output + 1)
    assert "output_tokens" in live[6][1]

    ins, outs = np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes])
    trace = Trace(arrival_s=np.arange(len(shapes)) * 100.0, input_tokens=ins, output_tokens=outs)
    res = simulate(load_deployment(dep_path), trace, seed=0)
    table = res.requests
    assert table["served_input_tokens"].tolist()[:6] == [t for _, t in live[:6]]
    assert table["status"].tolist() == ["completed"] * 6 + ["rejected"]
    assert table["reason"].tolist() == [""] * 6 + ["window"]
    assert res.rejections == {"window": 1} and res.summary.rejected == 1
