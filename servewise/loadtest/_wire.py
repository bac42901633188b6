"""What goes over the wire: the target URL, request bodies and headers, and stream lines.

Pure functions with no gevent or Locust in them: the parent validates with them and the
generator processes build requests and read streamed answers with them.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from servewise.errors import ConfigError

__all__ = [
    "API_PATHS",
    "CACHE_HEADER",
    "DONE",
    "ERROR",
    "INDEX_HEADER",
    "KEY_HEADER",
    "REPLICA_HEADER",
    "TIMING_HEADER",
    "SKIP",
    "TOKEN",
    "LineReader",
    "request_body",
    "target_url",
    "token_ids",
    "text_prompt",
]

Api = Literal["openai", "predict"]
Prompt = Literal["tokens", "text"]

API_PATHS: dict[str, str] = {"openai": "/v1/completions", "predict": "/predict"}
"""Where each API is posted when the URL names only the server."""
KEY_HEADER = "X-Servewise-Key"
"""The response-cache key of a request (the trace's key label), when the trace has keys."""
INDEX_HEADER = "X-Servewise-Request"
"""The request's index in the trace, so server logs can be matched with requests.csv."""
CACHE_HEADER = "x-servewise-cache"
"""A response header; ``hit`` marks an answer served from the server's response cache."""
REPLICA_HEADER = "x-servewise-replica"
"""A response header naming the replica that answered."""
TIMING_HEADER = "x-servewise-timing"
"""A response header with the replica's own times: ``queue=S;service=S;batch=N``."""

_VOCAB = 30000
_FIRST_ID = 1000
_WORDS = (
    "the quick brown fox jumps over a lazy dog while servers answer every request "
    "in time and the load generator keeps to its schedule"
).split()


def target_url(url: str, api: str) -> str:
    """The URL to POST to: ``url`` as is when it has a path, else ``url`` + the API's path.

    Raises :class:`ConfigError` (one line) for anything but an http(s) URL with a host.
    """
    if not isinstance(url, str):
        raise ConfigError(f"url must be an http:// or https:// URL string, got {url!r}")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        raise ConfigError(f"url must be an http:// or https:// URL, got {url!r} ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000, got {url!r}"
        )
    if parts.path in ("", "/"):
        parts = parts._replace(path=API_PATHS[api])
    return urllib.parse.urlunsplit(parts)


def token_ids(index: int, n: int) -> list[int]:
    """``n`` deterministic token ids for request ``index`` (at least one).

    ``1000 + (7919·index + 14729·j) mod 30000``: the first 30000 requests start with
    different ids, so the prompts share no prefix a server could cache by accident.
    """
    a = 7919 * index
    return [_FIRST_ID + (a + 14729 * j) % _VOCAB for j in range(max(n, 1))]


def text_prompt(index: int, n: int) -> str:
    """About ``n`` words of text (at least one) for request ``index``."""
    w = _WORDS
    return " ".join(w[(index + j) % len(w)] for j in range(max(n, 1)))


def request_body(
    api: str,
    *,
    index: int,
    input_tokens: int,
    output_tokens: int,
    key: str | None,
    model: str,
    stream: bool,
    prompt: str,
) -> str:
    """The JSON body of one request (see ``run_loadtest`` for the two formats)."""
    inputs: list[int] | str = token_ids(index, input_tokens) if prompt == "tokens" else text_prompt(index, input_tokens)
    doc: dict[str, Any]
    if api == "openai":
        doc = {
            "model": model,
            "prompt": inputs,
            "max_tokens": max(output_tokens, 1),
            "stream": stream,
            "ignore_eos": True,
        }
    else:
        doc = {"inputs": inputs, "key": key}
    return json.dumps(doc, separators=(",", ":"))


# -- streamed answers ------------------------------------------------------------------

TOKEN = "token"
"""A line carrying generated output: one token event."""
SKIP = "skip"
"""A line carrying nothing generated: blank, SSE comment or field, a final empty chunk."""
DONE = "done"
"""``data: [DONE]``: the end of an OpenAI stream."""
ERROR = "error"
"""An error event inside a 2xx stream."""


@dataclass
class LineReader:
    """Classifies the lines of a streamed answer: SSE (``data: ...``) or NDJSON (``{...}``).

    A data event before ``[DONE]`` is a token event unless it is an error, or an OpenAI
    chunk whose choices carry no text (e.g. the last chunk with only ``finish_reason``).
    """

    _event: str = ""

    def classify(self, raw: bytes) -> tuple[str, str | None]:
        """``(kind, error text or None)`` of one line (with or without its line break)."""
        line = raw.strip()
        if not line or line.startswith(b":"):
            if not line:
                self._event = ""  # a blank line ends an SSE event
            return SKIP, None
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return DONE, None
            if self._event == "error":
                return ERROR, payload.decode("utf-8", "replace")[:500]
        elif line.startswith((b"event:", b"id:", b"retry:")):
            if line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
            return SKIP, None
        else:
            payload = line  # NDJSON
        return _classify_payload(payload)


def _classify_payload(payload: bytes) -> tuple[str, str | None]:
    try:
        doc = json.loads(payload)
    except ValueError:
        return TOKEN, None  # plain text data
    if not isinstance(doc, dict):
        return TOKEN, None
    err = doc.get("error")
    if err:
        text = err.get("message", err) if isinstance(err, dict) else err
        return ERROR, str(text)[:500]
    choices = doc.get("choices")
    if isinstance(choices, list):
        return (TOKEN, None) if any(_has_output(c) for c in choices) else (SKIP, None)
    return TOKEN, None


def _has_output(choice: Any) -> bool:
    """Whether an OpenAI choice (completion or chat delta) carries generated output."""
    if not isinstance(choice, dict):
        return False
    if choice.get("text") or choice.get("token_ids"):
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and bool(delta.get("content") or delta.get("reasoning_content"))
