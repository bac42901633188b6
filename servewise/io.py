"""Atomic file writes: a temp file in the same folder, fsync, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "write_json", "read_json", "read_artifact"]


def atomic_write(path: str | Path, write: Callable[[IO[str]], None]) -> None:
    """Call ``write(f)`` on a text temp file beside ``path`` and rename it over ``path``.

    An interrupted run leaves the old file (or none), never a half-written one.
    """
    _atomic(path, lambda fd: _with_text(fd, write))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""

    def write(fd: int) -> None:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write)


def _with_text(fd: int, write: Callable[[IO[str]], None]) -> None:
    with os.fdopen(fd, "w", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _atomic(path: str | Path, write_fd: Callable[[int], None]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        write_fd(fd)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(f: IO[str]) -> None:
        f.write(text)

    atomic_write(path, write)


def write_json(path: str | Path, data: Any) -> None:
    """Deterministic JSON (2-space indent, keys in insertion order, trailing newline)."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_artifact(path: str | Path, kind: str, schema_version: int, what: str) -> dict[str, Any]:
    """A JSON artifact of ``kind`` and ``schema_version``; anything else is an :class:`ArtifactError`."""
    from servewise.errors import ArtifactError

    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot read {what} ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ArtifactError(f"{path}: expected kind '{kind}', got {data.get('kind') if isinstance(data, dict) else data!r}")
    if data.get("schema_version") != schema_version:
        raise ArtifactError(
            f"{path}: unknown schema_version {data.get('schema_version')!r}; this servewise reads {schema_version}"
        )
    return data
