"""Where the public traces of ``../shared/traces`` lie, for the benches and the tests.

Looked for, in order: ``$SERVEWISE_TRACES``; ``shared/traces`` beside this repository or
beside any folder above it; the same beside the repository this one was cloned from (a
fresh clone elsewhere finds the traces of its origin). :func:`require` is the tests'
rule: missing traces skip a test locally and fail it in CI (``CI`` set), where they
must be present.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["find", "require"]

ROOT = Path(__file__).resolve().parents[1]
ENV = "SERVEWISE_TRACES"


def _beside(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        cand = folder / "shared" / "traces"
        if cand.is_dir():
            return cand
    return None


def _origin() -> Path | None:
    try:
        url = subprocess.run(
            ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    url = url.removeprefix("file://")
    return Path(url).resolve() if url.startswith("/") else None


def find() -> Path | None:
    """The traces folder, or None when none is found."""
    env = os.environ.get(ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    found = _beside(ROOT)
    if found is None and (origin := _origin()) is not None:
        found = _beside(origin)
    return found


def require(name: str) -> Path:
    """``TRACES/name`` for a test: skip when the traces are absent locally, fail in CI."""
    import pytest

    folder = find()
    where = f"${ENV}, shared/traces beside {ROOT} or above it, or beside its git origin"
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared traces (looked in {where})")
        pytest.skip(f"shared traces not found (looked in {where}; set ${ENV})")
    path = folder / name
    if not path.is_file():
        pytest.fail(f"{path}: a shared trace the tests read is missing")
    return path
