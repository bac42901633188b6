"""`transfer_profile`: a measured profile carried to other hardware by a roofline model.

Profiles are built by hand (no torch). Expected times are worked out here from the
roofline by hand, independently of the module: a point memory-bound on both machines
scales by the bandwidth ratio, a compute-bound one by the FLOP/s ratio.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servewise.errors import ConfigError
from servewise.hardware import Accelerator, InstanceType, load_catalog
from servewise.profile import (
    Hardware,
    LatencyModel,
    LatencyStats,
    Point,
    Profile,
    Tree,
    Variant,
    load_profile,
    save_profile,
    step_features,
)
from servewise.profiler.transfer import DEFAULT_CPU_FREQ_HZ, DEFAULT_DRAM_BYTES_PER_S_PER_THREAD, transfer_profile

GIB = 1 << 30
PARAMS = 100_000_000  # 1e8 weights
W_FP32 = 4 * PARAMS  # 4e8 bytes
KV_FP32 = 80_000  # bytes per token: 2 · layers·d_model (1e4) · 4 bytes


def _stats(samples: list[float]) -> LatencyStats:
    a = np.asarray(samples)
    q25, q50, q75, q90, q99 = np.percentile(a, [25, 50, 75, 90, 99])
    return LatencyStats(
        mean=float(a.mean()),
        p50=float(q50),
        p90=float(q90),
        p99=float(q99),
        min=float(a.min()),
        max=float(a.max()),
        iqr=float(q75 - q25),
        cv=float(a.std() / a.mean()),
        n=len(a),
        ci_rel=0.01,
    )


def _point(phase: str, b: int, s: int, t: float) -> Point:
    samples = [t * f for f in (0.98, 0.99, 1.0, 1.01, 1.03)]
    return Point(phase=phase, batch_size=b, seq_len=s, status="measured", latency_s=_stats(samples), samples_s=samples)  # type: ignore[arg-type]


def _variant(name: str = "fp32", points: list[Point] | None = None, **kw: object) -> Variant:
    fields: dict[str, object] = {
        "model": "builtin:test",
        "model_kind": "decoder",
        "name": name,
        "dtype": "float32",
        "backend": "torch-eager",
        "device": "cpu",
        "status": "measured",
        "weights_bytes": W_FP32,
        "kv_bytes_per_token": KV_FP32,
        "load_time_s": 0.5,
        "peak_mem_bytes": 900_000_000,
        "base_mem_bytes": 300_000_000,
        "points": points if points is not None else [_point("decode", 1, 128, 0.01)],
    }
    fields.update(kw)
    return Variant.model_validate(fields)


def _hardware(**kw: object) -> Hardware:
    fields: dict[str, object] = {
        "cpu_model": "Test CPU",
        "cpu_count": 8,
        "threads_used": 4,
        "mem_bytes": 32 * GIB,
        "cpu_flags": ["avx2", "fma", "avx512f"],
        "python_version": "3.11.9",
        "torch_version": "2.5.0",
    }
    fields.update(kw)
    return Hardware.model_validate(fields)


def _profile(*variants: Variant, hw: Hardware | None = None) -> Profile:
    return Profile(
        status="complete",
        created_utc="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
        hardware=hw or _hardware(),
        variants=list(variants),
    )


def _machine(name: str, *, fp32: float, bw: float, kind: str = "cpu", dev_mem: int = 80 * GIB) -> InstanceType:
    return InstanceType(
        name=name,
        cloud="test",
        region="lab",
        kind=kind,  # type: ignore[arg-type]
        vcpus=8,
        mem_bytes=64 * GIB,
        accelerator=Accelerator(name=f"{name} GPU", count=1, mem_bytes=dev_mem) if kind == "gpu" else None,
        peak_fp32_flops=fp32,
        peak_bf16_flops=4 * fp32,
        peak_fp16_flops=4 * fp32,
        peak_int8_flops=8 * fp32,
        mem_bandwidth_bytes_per_s=bw,
        price_per_hour_usd=1.0,
        source="test",
    )


SRC = _machine("src", fp32=1e12, bw=1e11)


# --------------------------------------------------------------------------- the roofline


def test_memory_bound_decode_on_twice_the_bandwidth_takes_half_the_time() -> None:
    # decode b=1 over 128 tokens: 2e8 FLOPs (+5e6 attention) vs 4.1e8 bytes. Source: 0.2 ms of
    # compute, 4.1 ms of traffic; target: same compute, 2.05 ms of traffic -> memory-bound on both.
    p = _point("decode", 1, 128, 0.010)
    out = transfer_profile(_profile(_variant(points=[p])), _machine("tgt", fp32=1e12, bw=2e11), source=SRC)
    q = out.variants[0].points[0]
    assert np.allclose(q.samples_s, [x / 2 for x in p.samples_s], rtol=1e-12)
    assert q.latency_s is not None and p.latency_s is not None
    for stat in ("mean", "p50", "p90", "p99", "min", "max", "iqr"):
        assert getattr(q.latency_s, stat) == pytest.approx(getattr(p.latency_s, stat) / 2, rel=1e-12)
    assert (q.latency_s.cv, q.latency_s.ci_rel, q.latency_s.n) == (p.latency_s.cv, p.latency_s.ci_rel, p.latency_s.n)


def test_compute_bound_prefill_scales_by_the_flops_ratio() -> None:
    # prefill 8 × 512 tokens: 8.2e11 FLOPs vs 7.3e8 bytes: compute-bound on both machines.
    p = _point("prefill", 8, 512, 2.0)
    out = transfer_profile(_profile(_variant(points=[p])), _machine("tgt", fp32=3e12, bw=1e11), source=SRC)
    assert out.variants[0].points[0].samples_s == pytest.approx([x / 3 for x in p.samples_s], rel=1e-12)


def test_a_point_that_changes_regime_uses_both_rooflines() -> None:
    # An encoder forward pass of 4 tokens: 8e8 FLOPs, 4e8 bytes (no KV cache).
    # Source (1e11 FLOP/s, 1e11 B/s): compute 8 ms > memory 4 ms.
    # Target (1e13 FLOP/s, 2e11 B/s): compute 0.08 ms < memory 2 ms.  Ratio 2 / 8.
    v = _variant(model_kind="encoder", kv_bytes_per_token=None, points=[_point("forward", 1, 4, 0.016)])
    out = transfer_profile(
        _profile(v), _machine("tgt", fp32=1e13, bw=2e11), source=_machine("slow", fp32=1e11, bw=1e11)
    )
    assert out.variants[0].points[0].latency_s is not None
    assert out.variants[0].points[0].latency_s.p50 == pytest.approx(0.016 * 0.25, rel=1e-12)


def test_bf16_points_use_the_bf16_peak_and_two_bytes_a_weight() -> None:
    # bf16: 2e8 bytes of weights for the same 1e8 params; prefill 8 × 512 is compute-bound at the
    # bf16 peak (4e12 on the source, 4 × 5e12 on the target): ratio 4e12 / 2e13 = 0.2.
    v = _variant("bf16", dtype="bfloat16", weights_bytes=2 * PARAMS, kv_bytes_per_token=KV_FP32 // 2,
                 points=[_point("prefill", 8, 512, 1.0)])
    out = transfer_profile(_profile(v), _machine("tgt", fp32=5e12, bw=1e11), source=SRC)
    assert out.variants[0].points[0].latency_s is not None
    assert out.variants[0].points[0].latency_s.p50 == pytest.approx(0.2, rel=1e-12)


def test_failed_points_are_kept_as_they_were() -> None:
    bad = Point(phase="decode", batch_size=64, seq_len=1024, status="failed", error="out of memory")
    out = transfer_profile(_profile(_variant(points=[_point("decode", 1, 128, 0.01), bad])), "c7i.xlarge", source=SRC)
    assert out.variants[0].points[1] == bad


# --------------------------------------------------------------------------- the latency model


def _linear(intercept: float, coef: list[float]) -> LatencyModel:
    return LatencyModel(
        target="step_time",
        kind="linear",
        features=["prefill_tokens", "prefill_tokens_sq", "decode_seqs", "context_tokens", "prefill_active"],
        cv_mape=0.05,
        cv_folds=5,
        candidates={"linear": 0.05},
        n_points=4,
        intercept_s=intercept,
        coef_s=coef,
        noise_cv=0.02,
    )


def test_one_ratio_for_every_point_scales_a_linear_model() -> None:
    pts = [_point("decode", b, s, 0.01 * b) for b, s in ((1, 64), (2, 128), (4, 256))]
    v = _variant(points=pts, latency_model=_linear(0.002, [1e-5, 0.0, 3e-3, 1e-6, 0.0]))
    out = transfer_profile(_profile(v), _machine("tgt", fp32=1e12, bw=4e11), source=SRC)
    lm = out.variants[0].latency_model
    assert lm is not None and lm.kind == "linear"
    assert lm.intercept_s == pytest.approx(0.002 / 4)
    assert lm.coef_s == pytest.approx([1e-5 / 4, 0.0, 3e-3 / 4, 1e-6 / 4, 0.0])
    assert lm.cv_mape == 0.05


def test_different_ratios_refit_the_linear_model_to_the_transferred_points() -> None:
    # Measured times exactly linear with no intercept: prefill 1e-6 s per token, decode 2e-3 s per
    # sequence + 1e-6 s per cached token. On the target, decode (memory-bound) halves and prefill
    # (compute-bound) takes a third, so the transferred points are exactly linear again with
    # coefficients 1e-6/3, 0, 1e-3, 5e-7 — which the refit must recover.
    pts = [_point("prefill", b, s, 1e-6 * b * s) for b, s in ((1, 64), (1, 128), (2, 128), (4, 256))]
    pts += [_point("decode", b, s, 2e-3 * b + 1e-6 * b * s) for b, s in ((1, 64), (2, 128), (4, 256))]
    v = _variant(points=pts, latency_model=_linear(0.0, [1e-6, 0.0, 2e-3, 1e-6, 0.0]))
    out = transfer_profile(_profile(v), _machine("tgt", fp32=3e12, bw=2e11), source=SRC)
    var = out.variants[0]
    lm = var.latency_model
    assert lm is not None and lm.kind == "linear"
    assert lm.intercept_s == pytest.approx(0.0, abs=1e-12)
    assert lm.coef_s == pytest.approx([1e-6 / 3, 0.0, 1e-3, 5e-7, 0.0], rel=1e-6, abs=1e-15)
    assert lm.cv_mape == pytest.approx(0.0, abs=1e-9)
    assert any("refitted" in w for w in var.warnings)


def test_different_ratios_add_a_correction_tree_that_reproduces_every_point() -> None:
    # A one-split tree ensemble: log t = init + 0.1 · value(leaf); prefill and decode points with
    # different ratios (1/3 and 1/2 on this target).
    tree = Tree(left=[1, -1, -1], right=[2, -1, -1], feature=[0, -2, -2], threshold=[0.5, -2.0, -2.0], value=[0.0, -5.0, 5.0])
    lm = LatencyModel(
        target="step_time", kind="tree_ensemble", features=["prefill_tokens", "prefill_tokens_sq", "decode_seqs", "context_tokens", "prefill_active"],
        cv_mape=0.1, cv_folds=5, candidates={"tree_ensemble": 0.1}, n_points=5, init=-4.0, learning_rate=0.1, trees=[tree],
    )
    shapes = [("prefill", 1, 64), ("prefill", 4, 256), ("decode", 1, 64), ("decode", 4, 256)]
    pts = [_point(ph, b, s, 0.01) for ph, b, s in shapes]
    v = _variant(points=pts, latency_model=lm)
    out = transfer_profile(_profile(v), _machine("tgt", fp32=3e12, bw=2e11), source=SRC)
    new = out.variants[0].latency_model
    assert new is not None and new.kind == "tree_ensemble" and len(new.trees) == 2
    for (ph, b, s), want in zip(shapes, (1 / 3, 1 / 3, 1 / 2, 1 / 2), strict=True):
        x = step_features(b * s, 0, 0, b) if ph == "prefill" else step_features(0, b, b * s)
        assert new.predict(x)[0] == pytest.approx(lm.predict(x)[0] * want, rel=1e-12)


# --------------------------------------------------------------------------- devices and memory


def test_cuda_variants_on_a_cpu_target_are_skipped_with_the_reason() -> None:
    prof = _profile(
        _variant(),
        _variant("cuda-fp16", dtype="float16", device="cuda", weights_bytes=2 * PARAMS),
        hw=_hardware(gpu_name="NVIDIA A10G", gpu_mem_bytes=24 * GIB),
    )
    out = transfer_profile(prof, "c7i.2xlarge")
    fp32, cuda = out.variants
    assert fp32.status == "measured" and fp32.estimated
    assert cuda.status == "skipped" and cuda.skip_reason and "no GPU" in cuda.skip_reason
    assert cuda.points == [] and cuda.latency_model is None


def test_a_variant_larger_than_the_device_memory_does_not_fit() -> None:
    big = _variant("cuda-fp16", dtype="float16", device="cuda", weights_bytes=30 * GIB)
    prof = _profile(big, hw=_hardware(gpu_name="NVIDIA H100 80GB HBM3", gpu_mem_bytes=80 * GIB))
    out = transfer_profile(prof, "a10g")
    assert out.variants[0].status == "skipped"
    assert out.variants[0].skip_reason is not None and out.variants[0].skip_reason.startswith("does not fit")


def test_gpu_to_gpu_uses_the_catalog_entry_matched_by_gpu_name() -> None:
    cat = load_catalog()
    a10g, h100 = cat.get("a10g"), cat.get("h100")
    prof = _profile(
        _variant("cuda-fp16", dtype="float16", device="cuda", weights_bytes=2 * PARAMS, kv_bytes_per_token=40_000,
                 points=[_point("decode", 1, 128, 0.002)]),
        hw=_hardware(gpu_name="NVIDIA A10G", gpu_mem_bytes=24 * GIB),
    )
    out = transfer_profile(prof, "h100")
    # decode at batch 1 is memory-bound on both GPUs: the bandwidth ratio.
    want = 0.002 * a10g.mem_bandwidth_bytes_per_s / h100.mem_bandwidth_bytes_per_s
    assert out.variants[0].points[0].latency_s is not None
    assert out.variants[0].points[0].latency_s.p50 == pytest.approx(want, rel=1e-12)
    assert h100.accelerator is not None and out.hardware.gpu_name == h100.accelerator.name


def test_an_unknown_source_gpu_asks_for_source() -> None:
    prof = _profile(_variant("cuda-fp16", dtype="float16", device="cuda"), hw=_hardware(gpu_name="Mystery GPU 9000"))
    with pytest.raises(ConfigError, match="source="):
        transfer_profile(prof, "h100")


def test_a_cpu_only_profile_on_a_gpu_target_maps_float_torch_variants_to_cuda() -> None:
    prof = _profile(
        _variant("fp32"),
        _variant("bf16", dtype="bfloat16", weights_bytes=2 * PARAMS),
        _variant("int8", dtype="int8", backend="torchao-int8-dynamic+inductor", weights_bytes=PARAMS),
        _variant("onnx-fp32", backend="onnxruntime"),
        Variant(model="builtin:test", model_kind="decoder", name="cuda-bf16", dtype="bfloat16", backend="torch-eager",
                device="cuda", status="skipped", skip_reason="CUDA is not available on this machine"),
    )
    out = transfer_profile(prof, "a10g", source=SRC)
    by = {v.name: v for v in out.variants}
    assert list(by) == ["cuda-fp32", "cuda-bf16", "int8", "onnx-fp32"]  # the skipped cuda-bf16 is replaced
    for name in ("cuda-fp32", "cuda-bf16"):
        v = by[name]
        assert v.device == "cuda" and v.status == "measured" and v.estimated
        assert any("mapped to CUDA" in w for w in v.warnings)
        assert v.peak_mem_bytes == 600_000_000 and v.base_mem_bytes is None
    assert by["int8"].status == "skipped" and "no CUDA counterpart" in (by["int8"].skip_reason or "")
    assert by["onnx-fp32"].status == "skipped"


def test_cpu_variants_are_not_sent_to_a_gpu_when_cuda_variants_were_measured() -> None:
    prof = _profile(
        _variant("fp32"),
        _variant("cuda-fp16", dtype="float16", device="cuda", weights_bytes=2 * PARAMS),
        hw=_hardware(gpu_name="NVIDIA L4"),
    )
    out = transfer_profile(prof, "a10g")
    assert [v.status for v in out.variants] == ["skipped", "measured"]
    assert "host CPU is not modelled" in (out.variants[0].skip_reason or "")


def test_unmeasured_variants_stay_unmeasured_with_the_source_reason() -> None:
    failed = Variant(model="builtin:test", model_kind="decoder", name="onnx-int8", dtype="int8",
                     backend="onnxruntime-dynamic-quant", device="cpu", status="failed", error="export crashed")
    out = transfer_profile(_profile(_variant(), failed), "c7i.xlarge", source=SRC)
    v = out.variants[1]
    assert v.status == "skipped" and "export crashed" in (v.skip_reason or "") and v.estimated


# --------------------------------------------------------------------------- the record


def test_the_result_is_marked_estimated_and_records_how() -> None:
    prof = _profile(_variant())
    out = transfer_profile(prof, "c7i.4xlarge")
    assert out.estimated and all(v.estimated for v in out.variants)
    assert out.hardware.catalog_name == "c7i.4xlarge" and out.hardware.gpu_name is None
    t = out.transfer
    assert t is not None and t["method"] == "roofline" and t["target"] == "c7i.4xlarge"
    assert t["source_hardware"] == prof.hardware.model_dump(mode="json")
    assert isinstance(t["assumptions"], list) and any("same efficiency" in a for a in t["assumptions"])
    assert any("load_time_s" in w for w in out.variants[0].warnings)
    assert out.variants[0].load_time_s == 0.5  # carried over, not transferred


def _only_source(out: Profile) -> dict[str, Any]:
    assert out.transfer is not None
    sources = out.transfer["sources"]
    assert isinstance(sources, list) and len(sources) == 1
    return dict(sources[0])


def test_the_source_cpu_is_estimated_from_the_fingerprint() -> None:
    hw = _hardware(cpu_model="Intel(R) Xeon(R) Platinum 8480+ @ 2.00GHz", threads_used=4,
                   cpu_flags=["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"])
    out = transfer_profile(_profile(_variant(), hw=hw), "c7i.xlarge")
    assert out.transfer is not None
    src = _only_source(out)
    # 4 cores × 2 GHz × (64 fp32 | 1024 bf16 | 2048 int8 FLOP/cycle); 4 × 6.4 GB/s of DRAM
    assert src["peak_flops"]["fp32"] == pytest.approx(4 * 2e9 * 64)
    assert src["peak_flops"]["bf16"] == pytest.approx(4 * 2e9 * 1024)
    assert src["peak_flops"]["int8"] == pytest.approx(4 * 2e9 * 2048)
    assert src["mem_bandwidth_bytes_per_s"] == pytest.approx(4 * DEFAULT_DRAM_BYTES_PER_S_PER_THREAD)
    assert any("threads_used" in a for a in src["assumptions"])


def test_without_a_clock_in_the_model_name_the_default_is_assumed() -> None:
    out = transfer_profile(_profile(_variant(), hw=_hardware(cpu_model="AMD EPYC", cpu_flags=["avx2", "fma"])), "c7i.xlarge")
    assert out.transfer is not None
    src = _only_source(out)
    assert src["peak_flops"]["fp32"] == pytest.approx(4 * DEFAULT_CPU_FREQ_HZ * 32)


def test_the_result_round_trips_through_save_and_load(tmp_path: Path) -> None:
    lm = _linear(0.001, [1e-6, 0.0, 2e-3, 1e-6, 0.0])
    out = transfer_profile(_profile(_variant(latency_model=lm)), "a10g", source=SRC)
    save_profile(out, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == out


def test_an_estimated_profile_is_not_transferred_again() -> None:
    out = transfer_profile(_profile(_variant()), "c7i.xlarge", source=SRC)
    with pytest.raises(ConfigError, match="already an estimate"):
        transfer_profile(out, "c7i.2xlarge")


def test_an_unknown_target_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="Valid names: .*g5.xlarge"):
        transfer_profile(_profile(_variant()), "g9.huge")


def test_same_hardware_via_the_catalog_keeps_every_time() -> None:
    p = _point("decode", 2, 64, 0.02)
    out = transfer_profile(_profile(_variant(points=[p])), "c7i.2xlarge", source="m7i.2xlarge")
    assert out.variants[0].points[0].samples_s == pytest.approx(p.samples_s, rel=1e-12)


def test_a_source_measured_on_part_of_its_cores_counts_only_those() -> None:
    # Measured with 4 threads on a c7i.4xlarge (8 cores) = the compute and bandwidth of a
    # c7i.2xlarge (4 cores of the same CPU): the times stay.
    p = _point("prefill", 8, 512, 2.0)
    out = transfer_profile(_profile(_variant(points=[p])), "c7i.2xlarge", source="c7i.4xlarge")
    assert out.variants[0].points[0].samples_s == pytest.approx(p.samples_s, rel=1e-12)


def test_the_transfer_imports_no_torch() -> None:
    code = "import sys, servewise.profiler.transfer; sys.exit('torch' in sys.modules or 'sklearn' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
