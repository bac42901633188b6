"""What the router's modules share: a request on its way (:class:`Job`), its outcomes as
exceptions, the JSON error body and the SSE framing of the public API."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from ._replicas import Replica

__all__ = [
    "Job",
    "Failed",
    "Rejected",
    "ClientError",
    "error_response",
    "int_key",
    "tok_text",
    "chunk",
    "sse",
    "HEADER_KEY",
    "HEADER_CLASS",
    "HEADER_REPLICA",
    "HEADER_CACHE",
    "HEADER_REQUEST_ID",
    "HEADER_TIMING",
]

HEADER_KEY = "X-Servewise-Key"
HEADER_CLASS = "X-Servewise-Class"
HEADER_REPLICA = "X-Servewise-Replica"
HEADER_CACHE = "X-Servewise-Cache"
HEADER_REQUEST_ID = "X-Request-Id"
HEADER_TIMING = "X-Servewise-Timing"
"""The replica's own times of a request: ``queue=S;service=S;batch=N`` (seconds), so a client can
tell the time spent outside the replica slot (HTTP, parsing, hops) from queueing and service."""


@dataclass
class Job:
    """One request on its way through the router."""

    id: str
    kind: Literal["completion", "predict"]
    arrived: float
    """``time.monotonic()`` when the request reached the router."""
    input_tokens: int
    output_tokens: int
    token_ids: list[int] | None
    text: str | None
    stream: bool
    key: Hashable | None
    traffic_class: str | None
    model: str
    prompt: Any = None
    retries: int = 0
    replica: Replica | None = None

    @property
    def endpoint(self) -> str:
        return "/v1/completions" if self.kind == "completion" else "/predict"


class Failed(Exception):
    """The server could not answer (5xx); ``reason`` is the ``servewise_errors_total`` label."""

    def __init__(self, http_status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason


class Rejected(Exception):
    """A replica's queue is full (429 with ``Retry-After``)."""

    def __init__(self, retry_after_s: float, message: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientError(Exception):
    """The request is wrong as sent (a 4xx): the router's own check, or a replica's 4xx passed on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(
    status: int, message: str, *, kind: str = "invalid_request_error", headers: dict[str, str] | None = None
) -> web.Response:
    """The OpenAI-style error body ``{"error": {"message", "type", "code"}}``."""
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status, headers=headers)


def int_key(key: Hashable | None) -> int | None:
    """A request key as the int a balancer hashes (strings through BLAKE2b)."""
    if key is None:
        return None
    if isinstance(key, int):
        return key
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")


def tok_text(token_id: Any) -> str:
    return f" {token_id}"


def chunk(job: Job, text: str, finish: str | None) -> dict[str, Any]:
    """One ``text_completion`` stream chunk."""
    return {
        "id": f"cmpl-{job.id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
