"""Test-suite settings and shared fixtures.

In CI (``CI`` set), hypothesis runs derandomized so every run draws the same examples —
failures reproduce and nothing passes or fails by luck. ``make_variant`` and
``write_profile`` build profiles by hand (linear latency models with chosen
coefficients; no torch) for the tests of deployments that name a profiled ``model``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from servewise.profile import (
    BATCH_FEATURES,
    STEP_FEATURES,
    Hardware,
    LatencyModel,
    Profile,
    Variant,
    save_profile,
)

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# --------------------------------------------------------------------------- hand-built profiles

#: Classic model: batch_time(b, s) = 0.01 + 0.02·b + 5e-4·b·s + 2e-6·b·s² seconds.
CLASSIC_LINEAR = (0.01, [0.02, 5e-4, 2e-6])
#: Decoder: step_time = 0.003 + 1e-5·prefill + 1e-8·prefill²/seqs + 0.002·decode_seqs + 1e-6·context.
DECODER_LINEAR = (0.003, [1e-5, 1e-8, 0.002, 1e-6, 0.0])


def _make_variant(
    name: str = "fp32",
    *,
    kind: str = "classic",
    model: str = "builtin:test-model",
    noise_cv: float = 0.0,
    linear: tuple[float, list[float]] | None = None,
    **fields: object,
) -> Variant:
    """A measured variant with a hand-set linear latency model (override any field)."""
    decoder = kind == "decoder"
    intercept, coef = linear or (DECODER_LINEAR if decoder else CLASSIC_LINEAR)
    lm = LatencyModel(
        target="step_time" if decoder else "batch_time",
        kind="linear",
        features=list(STEP_FEATURES if decoder else BATCH_FEATURES),
        cv_mape=0.02,
        cv_folds=5,
        candidates={"linear": 0.02},
        n_points=12,
        intercept_s=intercept,
        coef_s=coef,
        noise_cv=noise_cv,
    )
    doc: dict[str, object] = {
        "model": model,
        "model_kind": kind,
        "name": name,
        "dtype": "float32",
        "backend": "torch",
        "device": "cpu",
        "status": "measured",
        "load_time_s": 2.5,
        "latency_model": lm,
    }
    doc.update(fields)
    return Variant.model_validate(doc)


@pytest.fixture
def make_variant():
    """``make_variant(name, kind=..., noise_cv=..., **fields)``: a hand-built profile variant."""
    return _make_variant


@pytest.fixture
def write_profile(tmp_path):
    """``write_profile(*variants, path=...)``: save a profile of these variants; returns its path."""

    def write(*variants: Variant, path: str = "profile.json"):
        p = tmp_path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        hw = Hardware(cpu_model="test cpu", cpu_count=64, threads_used=1, mem_bytes=2**30)
        profile = Profile(
            status="complete",
            created_utc="2025-01-01T00:00:00Z",
            tool_version="test",
            hardware=hw,
            variants=list(variants),
        )
        save_profile(profile, p)
        return p

    return write


# --------------------------------------------------------------------------- cores to itself

#: Tests that time real work and compare the times (never two at once on 2 cores).
EXCLUSIVE = "exclusive"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{EXCLUSIVE}: times real work; runs with no other test beside it")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Keep a test marked ``exclusive`` alone on the machine under ``pytest -n N``.

    Every test holds a shared lock on ``cores`` for its whole run — setup, call and
    teardown, so a module fixture that profiles a model or builds artifacts for the next
    test counts too (a function fixture would take the lock only after those ran). An
    exclusive test holds it exclusively. The ``gate`` lock, taken first by everyone and
    kept by an exclusive test until it ends, lets a waiting exclusive test in ahead of the
    next ordinary ones. Without xdist there is one process and nothing to lock.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return (yield)
    import fcntl
    import tempfile
    from pathlib import Path

    root = Path(tempfile.gettempdir())
    exclusive = item.get_closest_marker(EXCLUSIVE) is not None
    with open(root / f"servewise-tests-{run}.gate.lock", "a") as gate, open(root / f"servewise-tests-{run}.cores.lock", "a") as cores:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(cores, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(cores, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)
