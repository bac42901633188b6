"""How a request ended, counted once: the Prometheus metrics and the JSONL request log.

Every request the router answers ends in exactly one of these:

- ``completed`` / ``cache_hit`` (200): ``servewise_requests_total{status}``, latency, TTFT, TPOT, goodput;
- ``rejected`` (429): ``servewise_requests_total{status="rejected"}``;
- ``failed`` (5xx): ``servewise_requests_total{status="failed"}`` and ``servewise_errors_total{reason}``;
- ``invalid`` (4xx other than 429: the client's mistake, whether the router or a replica
  found it): ``servewise_errors_total{reason="client"}`` only. It is no outcome of the
  simulator's (which never sees a malformed request), so ``servewise_requests_total`` and
  the failure ratio leave it out; it is logged with its HTTP status and message.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from ._jobs import HEADER_REQUEST_ID, Failed, Job, error_response
from ._metrics import Metrics
from ._reqlog import RequestLog
from ._warn import Throttled

__all__ = ["Outcomes", "CLIENT"]

CLIENT = "client"
"""``servewise_errors_total`` reason of a 4xx answer (the request was wrong as sent)."""


class Outcomes:
    """Counts and logs each request's outcome (see the module docstring)."""

    def __init__(self, metrics: Metrics, log: RequestLog | None) -> None:
        self.metrics = metrics
        self.log = log
        self.default_pool = "default"
        self.ttft_target_s: float | None = None
        self.tpot_target_s: float | None = None
        self._log_trouble = Throttled(10.0)

    def served(
        self,
        job: Job,
        status: str,
        answer: dict[str, Any],
        *,
        first_token: float | None = None,
        n_tokens: int = 0,
        response: Any = None,
    ) -> None:
        """A 200: ``status`` is ``completed`` or ``cache_hit``; ``first_token`` the monotonic time of the first token."""
        end = time.monotonic()
        latency = end - job.arrived
        m = self.metrics
        m.request_duration.labels(status).observe(latency)
        m.requests.labels(status).inc()
        pool = job.replica.pool if job.replica is not None else self.default_pool
        ttft = tpot = None
        if first_token is not None:
            ttft = first_token - job.arrived
            m.ttft.labels(pool).observe(ttft)
            if n_tokens > 1:
                tpot = (end - first_token) / (n_tokens - 1)
                m.tpot.labels(pool).observe(tpot)
            if status == "completed" and self._good(ttft, tpot):
                m.goodput.inc()
        self._log(job, status, 200, latency, answer=answer, ttft=ttft, tpot=tpot, response=response)

    def _good(self, ttft: float, tpot: float | None) -> bool:
        if self.ttft_target_s is None and self.tpot_target_s is None:
            return False
        return (self.ttft_target_s is None or ttft <= self.ttft_target_s) and (
            self.tpot_target_s is None or tpot is None or tpot <= self.tpot_target_s
        )

    def rejected(self, job: Job, retry_after_s: float, message: str) -> web.Response:
        latency = time.monotonic() - job.arrived
        self.metrics.request_duration.labels("rejected").observe(latency)
        self.metrics.requests.labels("rejected").inc()
        self._log(job, "rejected", 429, latency, error=message)
        retry = str(max(1, math.ceil(retry_after_s)))
        return error_response(429, message, kind="rate_limit_error", headers={"Retry-After": retry, HEADER_REQUEST_ID: job.id})

    def failed(self, job: Job, fail: Failed) -> web.Response:
        latency = time.monotonic() - job.arrived
        self.metrics.request_duration.labels("failed").observe(latency)
        self.metrics.requests.labels("failed").inc()
        self.metrics.errors.labels(fail.reason).inc()
        self._log(job, "failed", fail.http_status, latency, error=str(fail))
        return error_response(fail.http_status, str(fail), kind="server_error", headers={HEADER_REQUEST_ID: job.id})

    def invalid(
        self,
        status: int,
        message: str,
        *,
        job: Job | None = None,
        endpoint: str | None = None,
        request_id: str | None = None,
        arrived: float | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """A 4xx: counted as a client error; logged when it was a request to the API (``job`` or ``endpoint``)."""
        self.metrics.errors.labels(CLIENT).inc()
        start = job.arrived if job is not None else arrived
        latency = time.monotonic() - start if start is not None else 0.0
        if job is not None:
            self._log(job, "invalid", status, latency, error=message)
            headers = {**(headers or {}), HEADER_REQUEST_ID: job.id}
        elif endpoint is not None:
            fields = {"id": request_id, "status": "invalid", "http_status": status, "latency_s": round(latency, 6), "error": message}
            self._write({**_blank(endpoint), **fields})
            if request_id is not None:
                headers = {**(headers or {}), HEADER_REQUEST_ID: request_id}
        return error_response(status, message, kind=kind, headers=headers)

    def _log(
        self,
        job: Job,
        status: str,
        http_status: int,
        latency: float,
        *,
        answer: dict[str, Any] | None = None,
        error: str | None = None,
        ttft: float | None = None,
        tpot: float | None = None,
        response: Any = None,
    ) -> None:
        if self.log is None:
            return
        a = answer or {}
        entry = {
            **_blank(job.endpoint),
            "id": job.id,
            "status": status,
            "http_status": http_status,
            "latency_s": round(latency, 6),
            "ttft_s": None if ttft is None else round(ttft, 6),
            "tpot_s": None if tpot is None else round(tpot, 6),
            "pool": job.replica.pool if job.replica is not None else None,
            "replica": job.replica.id if job.replica is not None else None,
            "retries": job.retries,
            "batch_size": a.get("batch_size"),
            "queue_s": a.get("queue_s"),
            "service_s": a.get("service_s"),
            "input_tokens": job.input_tokens,
            "output_tokens": job.output_tokens,
            "traffic_class": job.traffic_class,
            "error": error,
            "prompt": job.prompt,
            "response": response if response is not None else (a.get("output_token_ids") if answer else None),
        }
        self._write(entry)

    def _write(self, entry: dict[str, Any]) -> None:
        if self.log is None:
            return
        try:
            self.log.record(entry)
        except (OSError, ValueError) as err:  # a full disk must not fail the request: say so, at most every 10 s
            self._log_trouble.warn(f"cannot write the request log {self.log.path}: {err}")


def _blank(endpoint: str) -> dict[str, Any]:
    """A log entry with every field, for a request that never became a job (e.g. invalid JSON)."""
    return {
        "ts_utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
        "id": None,
        "endpoint": endpoint,
        "status": None,
        "http_status": None,
        "latency_s": None,
        "ttft_s": None,
        "tpot_s": None,
        "pool": None,
        "replica": None,
        "retries": 0,
        "batch_size": None,
        "queue_s": None,
        "service_s": None,
        "input_tokens": None,
        "output_tokens": None,
        "traffic_class": None,
        "error": None,
        "prompt": None,
        "response": None,
    }
