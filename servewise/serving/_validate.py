"""Checking a request at the door: its token, its body, and what the model can serve.

Everything here raises :class:`ClientError` with the status and a message that names
the field (400 malformed, 401 token, 408 body too slow, 413 too large, 422 valid JSON
the model cannot serve); nothing a client sends reaches a replica unchecked:

- a JSON body nested too deeply for the parser is 400, not a RecursionError;
- text with a lone surrogate (``"\\ud800"``: valid JSON, not valid Unicode, so it can be
  neither tokenized nor logged as UTF-8) is 400;
- header values that are not UTF-8 are 400 (``Authorization``: 401, like a wrong token);
- ``stream: true`` to a model that generates no tokens, ``max_tokens`` beyond the model's
  context window and token ids outside its vocabulary are 422, as far as the router
  knows them (the kind from the profile; window and vocabulary from the replicas).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import ValidationError

from ._api import CompletionBody, PredictBody, first_error, prompt_tokens
from ._jobs import HEADER_CLASS, HEADER_KEY, HEADER_REQUEST_ID, ClientError, Job

__all__ = ["ModelLimits", "Door", "header", "token_ok", "parse_json"]

_MAYBE_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""A body can hold a surrogate code point only through a ``\\uD800``-``\\uDFFF`` escape (or CESU bytes)."""


@dataclass(frozen=True)
class ModelLimits:
    """What the served model accepts; None where the router does not know it."""

    kind: str | None = None
    """``decoder``, ``encoder`` or ``classic``; None for a service-time distribution (which streams placeholders)."""
    window_tokens: int | None = None
    """The context window (prompt + output), tokens, as the replica that loaded the model reports it."""
    vocab_size: int | None = None
    """Token ids must be below this."""


def header(request: web.Request, name: str) -> str | None:
    """The header's value; 400 when it is not UTF-8 (aiohttp hands such bytes on as surrogates)."""
    value = request.headers.get(name)
    if value is not None and _surrogate_at(value) is not None:
        raise ClientError(400, f"header {name}: expected UTF-8 text")
    return value


def token_ok(request: web.Request, token: str) -> bool:
    """Whether ``Authorization`` is ``Bearer token`` (compared as bytes in constant time; any bytes are fine)."""
    got = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(got, f"Bearer {token}".encode())


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def _first_surrogate(value: Any, path: str) -> tuple[str, int, str] | None:
    """(field path, index, the code point) of the first string holding a surrogate, depth first."""
    if isinstance(value, str):
        at = _surrogate_at(value)
        return (path, at, f"\\u{ord(value[at]):04x}") if at is not None else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if isinstance(k, str) and _surrogate_at(k) is not None:
            return (f"{path}.{k!r}" if path else repr(k), 0, "a key")
        found = _first_surrogate(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


def parse_json(raw: bytes) -> Any:
    """The body as JSON; 400 when it is not JSON, nests too deeply, or holds text that is not Unicode."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ClientError(400, "invalid JSON body: nested too deeply") from None
    except ValueError as err:  # UnicodeDecodeError included
        raise ClientError(400, f"invalid JSON body: {err}") from None
    if _MAYBE_SURROGATE.search(raw):
        found = _first_surrogate(data, "")
        if found is not None:
            where, at, what = found
            raise ClientError(
                400, f"{where or 'body'}: invalid Unicode: a lone surrogate ({what}) at character {at}; send UTF-8 text"
            )
    return data


class Door:
    """Turns an HTTP request into a :class:`Job`, or a :class:`ClientError`."""

    def __init__(self, *, max_body_bytes: int, body_timeout_s: float, max_tokens: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_tokens = max_tokens
        self.limits = ModelLimits()
        self.model_name = "model"
        self.cache_keys = False
        """Derive a cache key from the prompt when the request gives none (a cache is configured)."""

    async def read(self, request: web.Request) -> Any:
        """The body as JSON, read within ``body_timeout_s`` (else 408 and the connection is closed)."""
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_body_bytes, actual_size=length)
        try:
            raw = await asyncio.wait_for(request.read(), self.body_timeout_s)
        except TimeoutError:
            raise ClientError(408, f"request body not received within {self.body_timeout_s:g} s") from None
        return parse_json(raw)

    def job(self, request: web.Request, kind: Literal["completion", "predict"], data: Any) -> Job:
        """The job of a parsed body; 422 when the body or the model refuses it."""
        if not isinstance(data, dict):
            raise ClientError(422, "body: expected a JSON object")
        try:
            body: CompletionBody | PredictBody = (
                CompletionBody.model_validate(data) if kind == "completion" else PredictBody.model_validate(data)
            )
        except ValidationError as err:
            raise ClientError(422, first_error(err)) from None
        prompt = body.prompt if isinstance(body, CompletionBody) else body.inputs
        stream = isinstance(body, CompletionBody) and body.stream
        self._check_model(body.max_tokens, prompt, stream)
        key: Hashable | None = header(request, HEADER_KEY)
        if key is None and isinstance(body, PredictBody) and body.key is not None:
            key = str(body.key)
        if key is None and self.cache_keys:
            key = hashlib.sha256(json.dumps([kind, prompt, body.max_tokens]).encode()).hexdigest()
        return Job(
            id=header(request, HEADER_REQUEST_ID) or uuid.uuid4().hex[:16],
            kind=kind,
            arrived=time.monotonic(),
            input_tokens=prompt_tokens(prompt),
            output_tokens=body.max_tokens,
            token_ids=prompt if isinstance(prompt, list) else None,
            text=prompt if isinstance(prompt, str) else None,
            stream=stream,
            key=key,
            traffic_class=header(request, HEADER_CLASS),
            model=self.model_name,
            prompt=prompt,
        )

    def _check_model(self, max_tokens: int, prompt: str | list[int], stream: bool) -> None:
        if max_tokens > self.max_tokens:
            raise ClientError(422, f"max_tokens: must be <= {self.max_tokens}")
        lim = self.limits
        if stream and lim.kind is not None and lim.kind != "decoder":
            raise ClientError(422, f"stream: expected false: {lim.kind} models generate no tokens to stream")
        if lim.kind == "decoder" and lim.window_tokens is not None and max_tokens > lim.window_tokens - 1:
            w = lim.window_tokens
            raise ClientError(
                422, f"max_tokens: must be <= {w - 1} (the model's context window of {w} tokens less one prompt token)"
            )
