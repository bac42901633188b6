"""The wire format of the load generator: target URLs, request bodies, stream lines (no server)."""

from __future__ import annotations

import json

import pytest

from servewise.errors import ConfigError
from servewise.loadtest._wire import (
    DONE,
    ERROR,
    SKIP,
    TOKEN,
    LineReader,
    request_body,
    target_url,
    text_prompt,
    token_ids,
)

pytestmark = pytest.mark.xdist_group("loadtest")


@pytest.mark.parametrize(
    ("url", "api", "expected"),
    [
        ("http://127.0.0.1:8000", "openai", "http://127.0.0.1:8000/v1/completions"),
        ("http://127.0.0.1:8000/", "predict", "http://127.0.0.1:8000/predict"),
        ("https://host.example", "openai", "https://host.example/v1/completions"),
        ("http://h:1/v1/completions", "predict", "http://h:1/v1/completions"),
        ("http://h:1/custom/path?x=1", "openai", "http://h:1/custom/path?x=1"),
    ],
)
def test_target_url(url: str, api: str, expected: str) -> None:
    assert target_url(url, api) == expected


@pytest.mark.parametrize("url", ["ftp://h/x", "127.0.0.1:8000", "http://", "http://h:notaport/", "", "localhost"])
def test_bad_url_is_one_line_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        target_url(url, "openai")
    assert "\n" not in str(exc.value)
    assert "http://" in str(exc.value)


def test_token_ids_are_deterministic_distinct_and_sized() -> None:
    assert token_ids(3, 50) == token_ids(3, 50)
    assert len(token_ids(3, 50)) == 50
    assert len(token_ids(3, 0)) == 1  # a prompt is never empty
    firsts = {token_ids(i, 1)[0] for i in range(5000)}
    assert len(firsts) == 5000  # no two requests share a prefix
    assert all(1000 <= t < 31000 for t in token_ids(7, 1000))


def test_request_bodies() -> None:
    body = json.loads(
        request_body(
            "openai", index=2, input_tokens=4, output_tokens=9, key=None, model="m", stream=True, prompt="tokens"
        )
    )
    assert body == {"model": "m", "prompt": token_ids(2, 4), "max_tokens": 9, "stream": True, "ignore_eos": True}
    body = json.loads(
        request_body(
            "predict", index=1, input_tokens=3, output_tokens=0, key="k7", model="m", stream=False, prompt="text"
        )
    )
    assert body == {"inputs": text_prompt(1, 3), "key": "k7"}
    assert len(body["inputs"].split()) == 3


def _kinds(lines: list[bytes]) -> list[str]:
    reader = LineReader()
    return [reader.classify(line)[0] for line in lines]


def test_sse_lines() -> None:
    lines = [
        b": comment\n",
        b"\n",
        b"event: message\n",
        b"id: 1\n",
        b"retry: 100\n",
        b'data: {"choices": [{"text": "hi"}]}\n',
        b"\n",
        b'data: {"choices": [{"delta": {"content": "x"}}]}\r\n',
        b'data: {"choices": [{"text": "", "finish_reason": "length"}]}\n',
        b'data: {"usage": {"completion_tokens": 3}, "choices": []}\n',
        b"data: plain text token\n",
        b"data: [DONE]\n",
    ]
    assert _kinds(lines) == [SKIP, SKIP, SKIP, SKIP, SKIP, TOKEN, SKIP, TOKEN, SKIP, SKIP, TOKEN, DONE]


def test_ndjson_lines_and_errors() -> None:
    assert _kinds([b'{"text": "a"}\n', b'{"token": 5}', b"\n"]) == [TOKEN, TOKEN, SKIP]
    reader = LineReader()
    assert reader.classify(b'data: {"error": {"message": "oom"}}\n') == (ERROR, "oom")
    assert reader.classify(b"event: error\n") == (SKIP, None)
    assert reader.classify(b"data: overloaded\n") == (ERROR, "overloaded")
    assert reader.classify(b"\n") == (SKIP, None)
    assert reader.classify(b"data: fine\n") == (TOKEN, None)
