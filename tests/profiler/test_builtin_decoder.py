"""builtin:tiny-gpt2, every variant, measured for real in worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _torchreq import require_torch

from servewise.profile import load_profile
from servewise.profiler import VARIANTS, Grid, ProfileSettings, TimingSettings, run_profile

require_torch()
pytestmark = pytest.mark.xdist_group("tiny-gpt2")

#: Four grid points (two prefill, two decode): enough to fit a latency model, and few
#: shapes for torch.compile to specialise (the int8 variant compiles each shape).
GRID = Grid(batch_sizes=(1, 2), seq_lens=(16,), decode_batch_sizes=(1, 2), context_lens=(32,))
FAST = TimingSettings(budget_s=0.05, warmup_s=0.02, min_samples=10, rounds=2, processes=2)  # rounds over fresh processes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tiny") / "profile.json"
    events: list[str] = []
    prof = run_profile(
        ["builtin:tiny-gpt2"], list(VARIANTS), out, ProfileSettings(grid=GRID, timing=FAST, threads=1),
        on_event=lambda kind, data: events.append(kind),
    )
    return prof, out, events


def by_name(prof, name):
    return prof.variant(name)


def test_every_cpu_variant_is_measured_and_gpu_variants_are_skipped_with_reason(tiny) -> None:
    prof, out, events = tiny
    assert prof.status == "complete"
    assert [v.name for v in prof.variants] == list(VARIANTS)  # nothing silently dropped
    for name in ("fp32", "bf16", "int8", "onnx-fp32", "onnx-int8"):
        v = by_name(prof, name)
        assert v.status == "measured", (name, v.error)
        assert v.device == "cpu" and v.model_kind == "decoder"
        assert [(p.phase, p.batch_size, p.seq_len) for p in v.points] == [
            ("prefill", 1, 16), ("prefill", 2, 16), ("decode", 1, 32), ("decode", 2, 32)
        ]
        assert all(p.status == "measured" for p in v.points)
    for name in ("cuda-fp16", "cuda-bf16", "cuda-int8", "tensorrt"):
        v = by_name(prof, name)
        assert v.status == "skipped" and "CUDA" in (v.skip_reason or "")
    assert events.count("point") == 5 * 4 * FAST.rounds and "hardware" in events  # each point re-sent per round
    # What was returned is what was written.
    assert load_profile(out) == prof


def test_points_hold_raw_samples_and_exact_statistics(tiny) -> None:
    prof, _, _ = tiny
    for v in prof.variants:
        for p in v.points:
            s = np.asarray(p.samples_s)
            st = p.latency_s
            assert st is not None and st.n == len(s) >= 10
            assert st.p50 == pytest.approx(np.percentile(s, 50))
            assert st.p99 == pytest.approx(np.percentile(s, 99))
            assert st.min <= st.p50 <= st.p90 <= st.p99 <= st.max
            assert st.iqr >= 0 and st.cv >= 0
            assert p.stable == (p.instability is None)


def test_int8_weights_are_smaller_than_fp32(tiny) -> None:
    prof, _, _ = tiny
    fp32 = by_name(prof, "fp32").weights_bytes
    assert fp32 is not None and fp32 > 4 * 4_000_000  # ~4.5M parameters in fp32
    assert by_name(prof, "bf16").weights_bytes < 0.6 * fp32
    assert by_name(prof, "int8").weights_bytes < 0.5 * fp32
    assert by_name(prof, "onnx-int8").weights_bytes < 0.5 * by_name(prof, "onnx-fp32").weights_bytes


def test_load_time_memory_and_kv_cache(tiny) -> None:
    prof, _, _ = tiny
    for name in ("fp32", "bf16", "int8", "onnx-fp32", "onnx-int8"):
        v = by_name(prof, name)
        assert v.load_time_s is not None and v.load_time_s > 0
        assert v.peak_mem_bytes is not None and v.base_mem_bytes is not None
        assert v.peak_mem_bytes >= v.base_mem_bytes > 0
    # Rounds are spread over fresh processes (here 2); a compiling variant uses one.
    for name in ("fp32", "bf16", "onnx-fp32", "onnx-int8"):
        v = by_name(prof, name)
        assert len(v.load_time_samples_s) == FAST.processes == 2
        assert v.load_time_s == pytest.approx(float(np.median(v.load_time_samples_s)))
    assert len(by_name(prof, "int8").load_time_samples_s) == 1
    # The int8 cold start includes torch.compile: much longer than loading fp32.
    assert by_name(prof, "int8").load_time_s > by_name(prof, "fp32").load_time_s
    # K and V, 4 layers x 256 wide: 2 * 4 * 256 elements per token.
    assert by_name(prof, "fp32").kv_bytes_per_token == 2 * 4 * 256 * 4
    assert by_name(prof, "bf16").kv_bytes_per_token == 2 * 4 * 256 * 2
    # The context window the server clips prompts to (the simulator clips them the same way).
    assert {by_name(prof, n).window_tokens for n in ("fp32", "bf16", "int8", "onnx-fp32", "onnx-int8")} == {1024}


def test_accuracy_against_fp32(tiny) -> None:
    prof, _, _ = tiny
    ref = by_name(prof, "fp32").accuracy
    assert ref is not None and ref.top1_agreement == 1.0 and ref.mean_kl == pytest.approx(0, abs=1e-12)
    onnx = by_name(prof, "onnx-fp32").accuracy
    assert onnx is not None and onnx.top1_agreement >= 0.99 and onnx.mean_kl < 1e-6
    for name in ("bf16", "int8", "onnx-int8"):
        a = by_name(prof, name).accuracy
        assert a is not None and a.metric == "next_token" and a.n_inputs == 8
        assert 0.8 <= a.top1_agreement <= 1.0, name
        assert 0 <= a.mean_kl < 0.01, name


def test_latency_model_fitted_and_consistent_with_points(tiny) -> None:
    prof, _, _ = tiny
    for name in ("fp32", "bf16", "onnx-fp32", "onnx-int8", "int8"):
        v = by_name(prof, name)
        lm = v.latency_model
        assert lm is not None and lm.target == "step_time" and lm.n_points == 4
        assert set(lm.candidates) == {"linear", "tree_ensemble"}
        assert lm.cv_mape == min(lm.candidates.values())
        # Refitted on every point: predictions land near the measured medians.
        for p in v.points:
            pred = v.step_time(p.batch_size * p.seq_len, 0, 0, p.batch_size)[0] if p.phase == "prefill" else v.step_time(
                0, p.batch_size, p.batch_size * p.seq_len
            )[0]
            assert pred == pytest.approx(p.latency_s.p50, rel=0.5), (name, p)


def test_hardware_fingerprint(tiny) -> None:
    prof, out, _ = tiny
    hw = prof.hardware
    assert hw.cpu_model and hw.cpu_count >= 1 and hw.threads_used == 1 and hw.mem_bytes > 2**30
    assert hw.torch_version and hw.torch_version.startswith("2.") and hw.onnxruntime_version
    assert hw.gpu_name is None
    raw = json.loads(Path(out).read_text())
    assert raw["kind"] == "profile" and raw["schema_version"] == 1
    assert raw["settings"]["threads"] == 1


def test_a_profiled_variant_drives_a_simulation(tiny, tmp_path: Path) -> None:
    """End to end: profile -> deployment with `model:` -> simulator -> result.json."""
    from servewise.config import load_deployment
    from servewise.simulator import simulate
    from servewise.trace import Trace

    _, out, _ = tiny
    dep_path = tmp_path / "d.yaml"
    dep_path.write_text(f"replicas: 1\nmodel:\n  profile: {out}\n  variant: onnx-int8\n")
    dep = load_deployment(dep_path)
    v = dep.model.loaded()
    rng = np.random.default_rng(0)
    n = 400
    inp = rng.integers(8, 32, n)
    outp = rng.integers(2, 12, n)
    # Light load: 1 request per 20 x the longest service time, so queueing is negligible.
    longest = max(v.generation_time(1, int(i), int(o)) for i, o in zip(inp, outp, strict=True))
    arrival = np.cumsum(rng.exponential(20 * longest, n))
    trace = Trace(arrival_s=arrival, input_tokens=inp, output_tokens=outp)
    res = simulate(dep, trace, seed=3)
    r = res.requests
    lat = (r["end_s"] - r["start_s"]).to_numpy()  # service time; queueing is checked below
    expected = np.array([v.generation_time(1, int(i), int(o)) for i, o in zip(inp, outp, strict=True)])
    # Independent check: per-request latency is the profile's generation time times
    # log-normal noise of median 1 and sigma ~ noise_cv.
    ratio = lat / expected
    # The sample median of n log-normal draws has standard error ~1.25 sigma / sqrt(n).
    sigma = v.noise_cv
    assert np.median(ratio) == pytest.approx(1.0, abs=4 * 1.25 * sigma / np.sqrt(n) + 0.01)
    assert np.std(np.log(ratio)) == pytest.approx(sigma, rel=0.2, abs=0.01)
    assert res.summary.completed == n
    assert np.median(r["queue_s"]) == 0.0  # light load: most requests never wait
