"""builtin:minilm (real all-MiniLM-L6-v2 weights): every CPU variant, and its accuracy drift."""

from __future__ import annotations

import os

import pytest
from _torchreq import require_torch

from servewise.profiler import CPU_VARIANTS, Grid, ProfileSettings, TimingSettings, run_profile

require_torch()
pytestmark = pytest.mark.xdist_group("minilm")

GRID = Grid(batch_sizes=(1, 2), seq_lens=(8, 16))


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("minilm") / "profile.json"
    # one round in one process per variant: these tests check what is measured, not repeatability
    # (tests/profiler/test_builtin_decoder.py checks rounds over fresh processes)
    timing = TimingSettings(budget_s=0.05, warmup_s=0.02, rounds=1, processes=1, min_time_s=0.05)
    # Run from an empty folder: ONNX export and quantisation must leave nothing in the
    # caller's working directory (they write temp files to the cwd of their process).
    cwd = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        prof = run_profile(["builtin:minilm"], list(CPU_VARIANTS), out, ProfileSettings(grid=GRID, timing=timing, threads=1))
    finally:
        os.chdir(before)
    return prof, sorted(p.name for p in cwd.iterdir())


def test_nothing_is_left_in_the_working_directory(minilm_run) -> None:
    assert minilm_run[1] == []


@pytest.fixture(scope="module")
def minilm(minilm_run):
    return minilm_run[0]


def test_every_cpu_variant_measured(minilm) -> None:
    assert [v.name for v in minilm.variants] == list(CPU_VARIANTS)
    for v in minilm.variants:
        assert v.status == "measured", (v.name, v.error)
        assert v.model_kind == "encoder" and v.kv_bytes_per_token is None
        assert [(p.phase, p.batch_size, p.seq_len) for p in v.points] == [
            ("forward", 1, 8), ("forward", 1, 16), ("forward", 2, 8), ("forward", 2, 16)
        ]
        assert v.latency_model is not None and v.latency_model.target == "batch_time"
        assert v.load_time_s is not None and v.load_time_s > 0


def test_embedding_drift_is_in_sane_ranges(minilm) -> None:
    acc = {v.name: v.accuracy for v in minilm.variants}
    assert all(a is not None and a.metric == "embedding" and a.n_inputs == 16 for a in acc.values())
    # fp32 against itself, and ONNX fp32 (same maths, other kernels): identical embeddings.
    assert acc["fp32"].cosine_min == pytest.approx(1.0, abs=1e-6)
    assert acc["onnx-fp32"].cosine_min > 0.99999
    # bf16 keeps ~3 significant digits: cosine ~0.9999 (ENVIRONMENT.md measured 0.9999).
    assert 0.999 < acc["bf16"].cosine_mean <= 1.0
    # int8 drifts more, but a real sentence embedding stays close (0.95-0.997 measured).
    for name in ("int8", "onnx-int8"):
        assert 0.9 < acc[name].cosine_min <= acc[name].cosine_mean < 0.99999, name


def test_quantised_weights_are_smaller(minilm) -> None:
    w = {v.name: v.weights_bytes for v in minilm.variants}
    assert 80e6 < w["fp32"] < 100e6  # 22.7M parameters x 4 bytes
    # torchao quantises the nn.Linear weights; the 30522 x 384 word embeddings (47 MB)
    # stay fp32, so the whole model shrinks by about a third, not by three quarters.
    embeddings = 30522 * 384 * 4
    assert w["int8"] < w["fp32"] - 0.5 * (w["fp32"] - embeddings)
    assert w["onnx-int8"] < 0.5 * w["onnx-fp32"]
