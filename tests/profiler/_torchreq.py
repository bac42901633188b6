"""Import torch for a test module: required in CI (never a silent skip), optional locally."""

from __future__ import annotations

import os

import pytest


def require_torch() -> None:
    if os.environ.get("CI"):
        import sklearn  # noqa: F401
        import torch  # noqa: F401 - CI installs the profile extra; a missing torch must fail loudly
    else:
        pytest.importorskip("torch", reason="the profile extra is not installed (pip install -e '.[profile]')")
        pytest.importorskip("sklearn")
