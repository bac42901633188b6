# servewise load test: replays trace.csv (next to this file) OPEN LOOP against the deployment.
# Run it against the nginx of docker-compose.yaml (or any host serving the plan):
#   locust -f locustfile.py --headless -u 1 -r 1 --host http://127.0.0.1:8080
# Add --csv results to keep the statistics, and compare them with expected.json.
# One user replays the whole trace: every request is sent at its scheduled time
# (arrival_s / SERVEWISE_TIME_SCALE after the first arrival) from a greenlet of its own,
# so a slow server does not slow the offered load. Latency is measured from the
# scheduled send time (what a client of an open system sees, queueing in the client
# included) and reported in milliseconds. The test stops when the last answer is in.
# Use -u 1 and a single process (no --processes, no workers): every user would replay
# the trace again. Environment: SERVEWISE_TIME_SCALE (default 1; 2 replays twice as
# fast), SERVEWISE_TRACE (default trace.csv here), SERVEWISE_TIMEOUT_S (default 300).
# Needs only locust (and gevent, which comes with it).
"""Open-loop replay of a servewise trace with Locust (written by servewise advise).

In the servewise package this is the template of ``deploy/locustfile.py``
(``advisor._deploy._locust`` fills in the settings block): read as text, never
imported, since importing locust monkey-patches the whole process with gevent.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from gevent.pool import Group
from locust import User, constant, events, task
from locust.exception import StopUser

# --- servewise settings: begin ---
DEPLOYMENT = "deployment"
ENDPOINT = "/predict"
LLM = False
MODEL = "deployment"
# --- servewise settings: end ---

TRACE = Path(os.environ.get("SERVEWISE_TRACE", str(Path(__file__).with_name("trace.csv"))))
TIME_SCALE = float(os.environ.get("SERVEWISE_TIME_SCALE", "1"))
TIMEOUT_S = float(os.environ.get("SERVEWISE_TIMEOUT_S", "300"))
KEY_HEADER = "X-Servewise-Key"
INDEX_HEADER = "X-Servewise-Request"
LEAD_S = 0.2
"""The first request is sent this long after the replay starts (time to set up)."""
STATS_GRACE_S = 1.5
"""Wait after the last answer before stopping: locust's --csv writer records the stats once a second."""
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "servers", "answer")


@dataclass(frozen=True)
class Row:
    """One request of the trace."""

    index: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    key: str | None
    traffic_class: str | None


def load_rows(path: Path) -> list[Row]:
    """The trace's requests (columns arrival_s, input_tokens, output_tokens[, key][, traffic_class])."""
    with open(path, newline="") as f:
        return [
            Row(
                index=i,
                arrival_s=float(r["arrival_s"]),
                input_tokens=int(r["input_tokens"]),
                output_tokens=int(r["output_tokens"]),
                key=r.get("key") or None,
                traffic_class=r.get("traffic_class") or None,
            )
            for i, r in enumerate(csv.DictReader(f))
        ]


def prompt(tokens: int) -> str:
    """About ``tokens`` words of text."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(max(tokens, 1)))


def payload(row: Row) -> dict[str, Any]:
    """The JSON body of one request."""
    if LLM:
        return {"model": MODEL, "prompt": prompt(row.input_tokens), "max_tokens": row.output_tokens, "stream": False}
    return {"inputs": prompt(row.input_tokens), "key": row.key}


class Replay:
    """Counters of one replay, printed when the test stops."""

    started = False
    sent = 0
    max_lag_s = 0.0


@events.test_start.add_listener
def _reset(**_: Any) -> None:
    Replay.started, Replay.sent, Replay.max_lag_s = False, 0, 0.0


@events.test_stop.add_listener
def _report(**_: Any) -> None:
    print(
        f"servewise: replayed {Replay.sent} requests of {DEPLOYMENT!r} (time scale {TIME_SCALE:g}); "
        f"largest send delay behind schedule {Replay.max_lag_s * 1000:.1f} ms"
    )


class TraceReplay(User):
    """Replays the trace once, open loop, then stops the run."""

    wait_time = constant(0)

    @task
    def replay(self) -> None:
        if Replay.started:  # a second user: the trace is replayed once
            raise StopUser()
        Replay.started = True
        rows = load_rows(TRACE)
        group = Group()
        first = rows[0].arrival_s if rows else 0.0
        start = time.monotonic() + LEAD_S
        for row in rows:
            due = start + (row.arrival_s - first) / TIME_SCALE
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            group.spawn(self.send, row, due)
        group.join()
        gevent.sleep(STATS_GRACE_S)
        if self.environment.runner is not None:
            self.environment.runner.quit()
        raise StopUser()

    def send(self, row: Row, due: float) -> None:
        """Send one request and report its latency from the scheduled time ``due``."""
        if not self.host:
            raise ValueError("give the server with --host, e.g. --host http://127.0.0.1:8080")
        url = urllib.parse.urlsplit(self.host)
        conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        headers = {"Content-Type": "application/json", INDEX_HEADER: str(row.index)}
        if row.key is not None:
            headers[KEY_HEADER] = row.key
        body = json.dumps(payload(row)).encode()
        Replay.max_lag_s = max(Replay.max_lag_s, time.monotonic() - due)
        Replay.sent += 1
        length = 0
        error: Exception | None = None
        try:
            conn = conn_cls(url.hostname or "127.0.0.1", url.port, timeout=TIMEOUT_S)
            try:
                conn.request("POST", url.path.rstrip("/") + ENDPOINT, body=body, headers=headers)
                resp = conn.getresponse()
                length = len(resp.read())
                if resp.status >= 400:
                    error = RuntimeError(f"HTTP {resp.status} {resp.reason}")
            finally:
                conn.close()
        except Exception as err:  # a refused connection or a timeout is a failed request, not a crash
            error = err
        self.environment.events.request.fire(
            request_type="POST",
            name=ENDPOINT if row.traffic_class is None else f"{ENDPOINT} [{row.traffic_class}]",
            response_time=(time.monotonic() - due) * 1000.0,
            response_length=length,
            response=None,
            context={"index": row.index},
            exception=error,
        )
