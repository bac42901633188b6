"""Test-suite settings: in CI (``CI`` set), hypothesis runs derandomized so every run
draws the same examples — failures reproduce and nothing passes or fails by luck."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
