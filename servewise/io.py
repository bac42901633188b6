"""Files in and out: atomic writes (a temp file in the same folder, fsync, then rename)
and text reads whose every failure is one :class:`~servewise.errors.ServewiseError`
naming the file (and the line of a bad byte), never a bare ``OSError`` or
``UnicodeDecodeError``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from servewise.errors import ArtifactError, ServewiseError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_binary",
    "write_json",
    "read_text",
    "read_json",
    "ensure_dir",
]


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


def atomic_write_binary(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a binary temp file beside ``path`` and rename it over ``path``.

    For writers that stream (a CSV or Parquet writer): the data never has to be held
    whole in memory, and a failure midway leaves the old file (or none).
    """

    def write_fd(fd: int) -> None:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write_fd)


def _with_text(fd: int, write: Callable[[IO[str]], None]) -> None:
    with os.fdopen(fd, "w", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def ensure_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create folder ``path`` (and its parents); an :class:`ArtifactError` names it if it cannot be."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ArtifactError(f"{p}: cannot use as {what}: it is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ArtifactError(f"{p}: cannot create {what} ({_reason(err)})") from None
    return p


def _reason(err: OSError) -> str:
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err}{where}"


def _atomic(path: str | Path, write_fd: Callable[[int], None]) -> None:
    p = Path(path)
    if p.is_dir():
        raise ArtifactError(f"{p}: cannot write the file: a folder is in the way")
    ensure_dir(p.parent, "folder of the file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as err:
        raise ArtifactError(f"{p}: cannot write ({_reason(err)})") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        try:
            write_fd(fd)
            os.replace(tmp, p)
        except OSError as err:
            raise ArtifactError(f"{p}: cannot write ({_reason(err)})") from None
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


def read_text(path: str | Path, what: str = "file", error: type[ServewiseError] = ArtifactError) -> str:
    """The UTF-8 text of ``path``; ``error`` names the file (and the line of a non-UTF-8 byte)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{p}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{p}: expected a {what}, got a folder") from None
    except OSError as err:
        raise error(f"{p}: cannot read {what} ({_reason(err)})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise error(f"{p}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); expected a UTF-8 {what}") from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The JSON document in ``path``; an :class:`ArtifactError` names the file and line otherwise."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except RecursionError:
        raise ArtifactError(f"{path}: {what} nests too deeply") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
