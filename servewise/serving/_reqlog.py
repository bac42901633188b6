"""The JSONL request/response log: sampled, with prompts and answers redacted by default.

Each record is one line written with a single ``write`` on a file opened in append mode,
so a crash leaves whole lines only (at most the last one missing), and several readers
may tail the file while the server runs. Sampling is seeded: the same seed and request
order log the same requests. Failed, rejected and invalid (4xx) requests are always
logged (they are what an operator looks for); ``sample`` applies to served ones.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from pathlib import Path
from typing import Any

__all__ = ["RequestLog"]

_REDACTED_FIELDS = ("prompt", "response")


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    # the router refuses text that is not Unicode; should one still come, hash it rather than fail the request
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class RequestLog:
    """Appends one JSON object per logged request to ``path``.

    ``redact`` (default on) replaces the prompt and the response by their SHA-256 and
    length: a log can be shared without leaking user data, and identical prompts still
    group together.
    """

    def __init__(self, path: Path, *, sample: float = 1.0, redact: bool = True, seed: int = 0) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"log sample must be in [0, 1], got {sample}")
        self.path = path
        self.sample = sample
        self.redact = redact
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.written = 0

    def record(self, entry: dict[str, Any]) -> bool:
        """Log ``entry`` if sampled (errors always); returns whether it was written."""
        served = entry.get("status") in ("completed", "cache_hit")
        if served and self.sample < 1.0 and self._rng.random() >= self.sample:
            return False
        out = dict(entry)
        if self.redact:
            for field in _REDACTED_FIELDS:
                if field in out and out[field] is not None:
                    value = out.pop(field)
                    out[f"{field}_sha256"] = _digest(value)
                    out[f"{field}_chars"] = len(value) if isinstance(value, str) else len(json.dumps(value))
        line = json.dumps(out, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            self._f.write(line)
            self.written += 1
        return True

    def close(self) -> None:
        with self._lock:
            self._f.close()
