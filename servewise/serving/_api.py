"""Request bodies of the public API, validated with pydantic (strict: wrong types are 422).

``POST /v1/completions`` takes the OpenAI completions body (one prompt, ``n == 1``);
``POST /predict`` takes ``{"inputs": ..., "key": ...}``. Unknown fields are refused with
the field's name, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

__all__ = ["CompletionBody", "PredictBody", "first_error", "prompt_tokens", "MAX_TOKEN_ID"]


MAX_TOKEN_ID = 2**31 - 1
"""Largest token id a request may send (no vocabulary is near it; a larger one is a client's bug)."""


def _check_prompt(v: str | list[int]) -> str | list[int]:
    if len(v) == 0:
        raise ValueError("must not be empty")
    if isinstance(v, list) and any(t < 0 or t > MAX_TOKEN_ID for t in v):
        bad = next(t for t in v if t < 0 or t > MAX_TOKEN_ID)
        raise ValueError(f"token ids must be in [0, {MAX_TOKEN_ID}], got {bad}")
    return v


Prompt = Annotated[str | list[int], AfterValidator(_check_prompt)]
"""A prompt: a non-empty text, or a non-empty list of token ids in ``[0, MAX_TOKEN_ID]``."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CompletionBody(_Body):
    """OpenAI ``/v1/completions``: the fields a completion server honours or may ignore."""

    model: str | None = None
    prompt: Prompt
    max_tokens: int = Field(default=16, ge=0)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    echo: bool = False
    logprobs: int | None = None
    seed: int | None = None
    user: str | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream_options: dict[str, Any] | None = None


class PredictBody(_Body):
    """Generic JSON: one input (text or token ids), an optional cache key."""

    inputs: Prompt
    key: str | int | None = None
    max_tokens: int = Field(default=16, ge=0, description="Decoders: tokens to generate.")


def first_error(err: ValidationError) -> str:
    """``field: what was expected`` for the first problem (no input echo, no URL)."""
    e = err.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("str", "list[int]", "int")))
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{loc or 'body'}: {msg}"


def prompt_tokens(prompt: str | list[int]) -> int:
    """Tokens of a prompt: the ids given, or the words of a text (a tokenizer-free estimate)."""
    if isinstance(prompt, list):
        return len(prompt)
    return max(len(prompt.split()), 1)
