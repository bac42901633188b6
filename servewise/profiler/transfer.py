"""Transfer a measured profile to catalog hardware by a roofline model.

A profile measured on one machine (the *source*) becomes an *estimated* profile for a
catalog instance type (the *target*). No torch: numpy and servewise only.

The model, per measured grid point of every variant:

1. Estimate the point's work from the variant's size: ``params = weights_bytes /
   bytes_per_param(dtype)``; FLOPs ``≈ 2·params·tokens`` plus attention
   (``4·layers·d_model`` FLOPs per query–key pair, with ``layers·d_model`` read off
   ``kv_bytes_per_token``); bytes moved ``= weights_bytes`` (every weight read once per
   forward pass or decode step) plus the KV cache read (decode) or written (prefill).
2. The roofline time of a machine is ``max(FLOPs / peak_flops[dtype], bytes / bandwidth)``.
3. **Assumption:** the variant reaches the same fraction of the roofline (the same
   efficiency) on the target as it did on the source, so
   ``t_target = t_measured · roofline_target / roofline_source``.

Every sample of a point is multiplied by that point's ratio, so every statistic of the
point scales by it too (``cv`` and ``ci_rel`` are scale-free and stay). The latency
model follows the points: one ratio for every point scales it exactly (linear:
intercept and coefficients; trees: ``init + log ratio``); ratios that differ between
points (a point compute-bound on one machine and memory-bound on the other) refit a
linear model to the transferred points, or add one correction tree of ``log ratio`` to
a tree ensemble, which reproduces every transferred point exactly.

What is not modelled is said so in the result's ``transfer`` record and in each
variant's ``warnings``: fixed overheads (Python dispatch, kernel launches) are scaled
like the rest; load time, accuracy drift and peak memory are the source's.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

import servewise
from servewise.errors import ConfigError
from servewise.hardware import Catalog, InstanceType, cpu_peak_flops, load_catalog
from servewise.profile import (
    BATCH_FEATURES,
    STEP_FEATURES,
    Hardware,
    LatencyModel,
    LatencyStats,
    Point,
    Profile,
    Tree,
    Variant,
    batch_features,
    step_features,
)

__all__ = [
    "transfer_profile",
    "Machine",
    "source_cpu_from_fingerprint",
    "DEFAULT_CPU_FREQ_HZ",
    "DEFAULT_DRAM_BYTES_PER_S_PER_THREAD",
]

#: Clock assumed for the measured CPU when its model name carries none ("@ 2.50GHz").
DEFAULT_CPU_FREQ_HZ = 2.5e9
#: DRAM bandwidth assumed for the measured CPU, per thread used: a physical core's share of
#: a server socket (8 × DDR5-4800 over 48 cores), the basis of the catalog's CPU entries.
DEFAULT_DRAM_BYTES_PER_S_PER_THREAD = 6.4e9
#: Below this fraction of its roofline, a measured point is called overhead-dominated.
LOW_EFFICIENCY = 0.05

_BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0}
_MEASURED = ("measured", "incomplete")
_GIB = float(1 << 30)


@dataclass(frozen=True)
class Machine:
    """The peaks of one compute device, as the roofline sees it."""

    name: str
    device: Literal["cpu", "cuda"]
    peak_flops: dict[str, float]
    """FLOP/s per dtype class (fp32, bf16, fp16, int8)."""
    mem_bandwidth_bytes_per_s: float
    origin: str
    """Where the numbers come from: a catalog entry, an explicit argument, a fingerprint."""
    assumptions: tuple[str, ...] = field(default=())

    @classmethod
    def from_instance(cls, inst: InstanceType, origin: str) -> Machine:
        return cls(
            name=inst.name,
            device=inst.device,
            peak_flops={k: inst.peak_flops(k) for k in _BYTES_PER_PARAM},
            mem_bandwidth_bytes_per_s=inst.mem_bandwidth_bytes_per_s,
            origin=origin,
        )

    def roofline_s(self, flops: float, bytes_moved: float, dtype_class: str) -> float:
        """Seconds of the work at peak: the slower of compute and memory traffic."""
        return max(flops / self.peak_flops[dtype_class], bytes_moved / self.mem_bandwidth_bytes_per_s)

    def record(self) -> dict[str, object]:
        return {
            "name": self.name,
            "device": self.device,
            "origin": self.origin,
            "peak_flops": dict(self.peak_flops),
            "mem_bandwidth_bytes_per_s": self.mem_bandwidth_bytes_per_s,
            **({"assumptions": list(self.assumptions)} if self.assumptions else {}),
        }


def _threads_share(m: Machine, inst: InstanceType, threads: int) -> Machine:
    """A CPU source measured with fewer threads than its cores: that share of its peaks."""
    if inst.cores is None or threads >= inst.cores:
        return m
    f = threads / inst.cores
    return Machine(
        name=m.name,
        device=m.device,
        peak_flops={k: v * f for k, v in m.peak_flops.items()},
        mem_bandwidth_bytes_per_s=m.mem_bandwidth_bytes_per_s * f,
        origin=m.origin,
        assumptions=(
            f"measured with {threads} threads of its {inst.cores} cores: that share of its peaks and bandwidth",
        ),
    )


def source_cpu_from_fingerprint(hw: Hardware) -> Machine:
    """Peaks of the measured CPU, estimated from the profile's fingerprint.

    ``threads_used`` intra-op threads, each taken as one physical core; the clock from
    the model name (``@ 2.50GHz``, the base clock) or :data:`DEFAULT_CPU_FREQ_HZ`;
    FLOP per cycle from the ISA flags (:func:`servewise.hardware.cpu_flop_per_cycle`);
    :data:`DEFAULT_DRAM_BYTES_PER_S_PER_THREAD` of DRAM bandwidth per thread. A laptop or
    workstation has more bandwidth per core than that: name it with a catalog entry.
    """
    m = re.search(r"@\s*([0-9]+(?:\.[0-9]+)?)\s*GHz", hw.cpu_model, flags=re.I)
    if m:
        freq = float(m.group(1)) * 1e9
        clock = f"clock {freq / 1e9:g} GHz read from the CPU model name (its base clock; turbo is higher)"
    else:
        freq = DEFAULT_CPU_FREQ_HZ
        clock = f"clock unknown, assumed {freq / 1e9:g} GHz"
    flags = sorted(hw.cpu_flags) or ["none recorded"]
    bw = hw.threads_used * DEFAULT_DRAM_BYTES_PER_S_PER_THREAD
    return Machine(
        name=hw.cpu_model or "source CPU",
        device="cpu",
        peak_flops=cpu_peak_flops(hw.threads_used, freq, hw.cpu_flags),
        mem_bandwidth_bytes_per_s=bw,
        origin="estimated from the profile's hardware fingerprint",
        assumptions=(
            f"{hw.threads_used} threads_used taken as {hw.threads_used} physical cores",
            clock,
            f"FLOP per cycle from the ISA flags ({', '.join(flags)})",
            f"DRAM bandwidth assumed {DEFAULT_DRAM_BYTES_PER_S_PER_THREAD / 1e9:g} GB/s per thread = {bw / 1e9:g} GB/s "
            "(a server core's share; pass source= a catalog entry of the measured machine to override)",
        ),
    )


# --------------------------------------------------------------------------- work of a point


@dataclass(frozen=True)
class _Numerics:
    """How a variant computes: the peak it runs at and the bytes of its tensors."""

    compute: str  # dtype class whose peak applies
    param_bytes: float  # bytes per weight
    kv_elem_bytes: float  # bytes per cached K/V element (the activation dtype)


def _numerics(v: Variant) -> _Numerics | None:
    d = v.dtype.lower()
    if "int8" in d or "qint8" in d:
        if "weight-only" in v.backend or "weight_only" in v.backend:  # int8 weights, bf16 math
            return _Numerics("bf16", 1.0, 2.0)
        return _Numerics("int8", 1.0, 4.0)  # dynamic quantisation: int8 math, fp32 activations
    if "bfloat16" in d or "bf16" in d:
        return _Numerics("bf16", 2.0, 2.0)
    if "float16" in d or "fp16" in d or d == "half":
        return _Numerics("fp16", 2.0, 2.0)
    if "float32" in d or "fp32" in d or d == "float":
        return _Numerics("fp32", 4.0, 4.0)
    return None


def _work(p: Point, weights_bytes: float, kv_bytes_per_token: float, num: _Numerics) -> tuple[float, float]:
    """(FLOPs, bytes moved) of one grid point."""
    params = weights_bytes / num.param_bytes
    pair_flops = 2.0 * kv_bytes_per_token / num.kv_elem_bytes  # 4·layers·d_model per query–key pair
    b, s = float(p.batch_size), float(p.seq_len)
    if p.phase == "decode":  # b new tokens over b·s cached ones
        return 2 * params * b + pair_flops * b * s, weights_bytes + kv_bytes_per_token * b * (s + 1)
    if p.phase == "prefill":  # causal: s(s+1)/2 pairs per sequence; the KV cache is written
        return 2 * params * b * s + pair_flops * b * s * (s + 1) / 2, weights_bytes + kv_bytes_per_token * b * s
    return 2 * params * b * s + pair_flops * b * s * s, weights_bytes


# --------------------------------------------------------------------------- latency model


def _features(p: Point, target: str) -> np.ndarray | None:
    b, s = p.batch_size, p.seq_len
    if target == "batch_time":
        return batch_features(b, s)[0] if p.phase == "forward" else None
    if p.phase == "prefill":
        return step_features(b * s, 0, 0, b)[0]
    if p.phase == "decode":
        return step_features(0, b, b * s)[0]
    return None


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[intercept, coef...] >= 0`` minimising Σ((a + x·c − y) / y)²: exact, by supports.

    With a handful of features every support is tried: the NNLS optimum is the
    least-squares solution on its own support, and it is the best non-negative one.
    """
    a = np.column_stack([np.ones(len(x)), x]) / y[:, None]
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
    a = a / scale
    best: tuple[float, int, np.ndarray] | None = None
    k = a.shape[1]
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        sol, *_ = np.linalg.lstsq(a[:, cols], np.ones(len(y)), rcond=None)
        if (sol < -1e-12 * max(1.0, float(np.abs(sol).max()))).any():
            continue
        full = np.zeros(k)
        full[cols] = np.maximum(sol, 0.0)
        ssr = float(((a @ full - 1.0) ** 2).sum())
        if best is None or ssr < best[0] * (1 - 1e-12) or (ssr <= best[0] * (1 + 1e-12) and len(cols) < best[1]):
            best = (ssr, len(cols), full)
    assert best is not None  # a single column always gives a non-negative fit (y > 0)
    return best[2] / scale


def _refit_linear(lm: LatencyModel, x: np.ndarray, y: np.ndarray) -> LatencyModel:
    coef = _nnls_relative(x, y)
    k = max(2, min(lm.cv_folds, len(y)))
    pred = np.empty_like(y)
    folds = np.arange(len(y)) % k
    for f in range(k):
        test = folds == f
        c = _nnls_relative(x[~test], y[~test])
        pred[test] = np.maximum(c[0] + x[test] @ c[1:], 1e-9)
    mape = float(np.mean(np.abs(pred - y) / y))
    return lm.model_copy(
        update={
            "intercept_s": float(coef[0]),
            "coef_s": [float(c) for c in coef[1:]],
            "cv_mape": mape,
            "cv_folds": k,
            "candidates": {"linear": mape},
            "n_points": len(y),
        }
    )


def _fit_tree(x: np.ndarray, t: np.ndarray) -> tuple[list[int], list[int], list[int], list[float], list[float]]:
    """A regression tree (scikit-learn's layout) grown until every leaf is pure in ``t``."""
    left: list[int] = []
    right: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    value: list[float] = []

    def grow(idx: np.ndarray) -> int:
        node = len(left)
        left.append(-1)
        right.append(-1)
        feature.append(-2)
        threshold.append(-2.0)
        value.append(float(t[idx].mean()))
        if np.ptp(t[idx]) <= 1e-12:
            return node
        best: tuple[float, int, float] | None = None
        for f in range(x.shape[1]):
            vals = np.unique(x[idx, f])
            for lo, hi in zip(vals[:-1], vals[1:], strict=True):
                thr = float(lo + (hi - lo) / 2)
                go = x[idx, f] <= thr
                sse = float(
                    ((t[idx][go] - t[idx][go].mean()) ** 2).sum() + ((t[idx][~go] - t[idx][~go].mean()) ** 2).sum()
                )
                if best is None or sse < best[0]:
                    best = (sse, f, thr)
        if best is None:  # identical features, different ratios: keep their mean
            return node
        _, f, thr = best
        go = x[idx, f] <= thr
        feature[node] = f
        threshold[node] = thr
        left[node] = grow(idx[go])
        right[node] = grow(idx[~go])
        return node

    grow(np.arange(len(t)))
    return left, right, feature, threshold, value


def _transfer_model(lm: LatencyModel, x: np.ndarray, y: np.ndarray, ratio: np.ndarray) -> tuple[LatencyModel, str]:
    """The latency model of the transferred points, and how it was obtained."""
    if float(ratio.max() - ratio.min()) <= 1e-9 * float(ratio.max()):
        r = float(ratio.mean())
        if lm.kind == "linear":
            scaled = lm.model_copy(update={"intercept_s": lm.intercept_s * r, "coef_s": [c * r for c in lm.coef_s]})
            return scaled, "scaled (one ratio for every point)"
        shifted = lm.model_copy(update={"init": lm.init + math.log(r)})
        return shifted, "scaled: init + log(ratio) (one ratio for every point)"
    if lm.kind == "linear":
        return _refit_linear(lm, x, y), "refitted: linear, non-negative, relative error, on the transferred points"
    if lm.learning_rate <= 0:
        r = float(np.exp(np.mean(np.log(ratio))))
        return lm.model_copy(update={"init": lm.init + math.log(r)}), "scaled by the geometric mean ratio"
    left, right, feat, thr, val = _fit_tree(x, np.log(ratio))
    corr = Tree(left=left, right=right, feature=feat, threshold=thr, value=[v / lm.learning_rate for v in val])
    return lm.model_copy(update={"trees": [*lm.trees, corr]}), "correction tree of log(ratio) appended"


# --------------------------------------------------------------------------- variants


def _scale_point(p: Point, r: float) -> Point:
    assert p.latency_s is not None
    s = p.latency_s
    stats = LatencyStats(
        mean=s.mean * r,
        p50=s.p50 * r,
        p90=s.p90 * r,
        p99=s.p99 * r,
        min=s.min * r,
        max=s.max * r,
        iqr=s.iqr * r,
        cv=s.cv,
        n=s.n,
        ci_rel=s.ci_rel,
    )
    return p.model_copy(update={"latency_s": stats, "samples_s": [x * r for x in p.samples_s]})


def _skipped(v: Variant, reason: str, **update: object) -> Variant:
    return v.model_copy(
        update={
            "status": "skipped",
            "skip_reason": reason,
            "error": None,
            "estimated": True,
            "points": [],
            "latency_model": None,
            **update,
        }
    )


def _gib(n: float) -> str:
    return f"{n / _GIB:.3g} GiB"


@dataclass
class _Plan:
    """What happens to one variant: transfer it from ``src`` (possibly renamed) or skip it."""

    src: Machine | None = None
    skip: str | None = None
    mapped_to_cuda: bool = False


@dataclass
class _Scaled:
    """A variant's points on the target, and what the transfer learnt from each measured one."""

    points: list[Point] = field(default_factory=list)  # every point; measured ones scaled
    ratios: list[float] = field(default_factory=list)  # roofline time target / source of each measured point
    effs: list[float] = field(default_factory=list)  # source efficiency: roofline time / measured p50
    fit_x: list[np.ndarray] = field(default_factory=list)  # the latency model's features, target p50
    fit_y: list[float] = field(default_factory=list)  # and ratio of each point the model can be fitted to
    fit_r: list[float] = field(default_factory=list)


def _untransferable(v: Variant, num: _Numerics | None, inst: InstanceType) -> str | None:
    """Why the measured variant ``v`` cannot be transferred to ``inst``; None if it can."""
    if num is None:
        return f"dtype {v.dtype!r} is unknown to the roofline model (expected float32, bfloat16, float16 or int8)"
    if v.weights_bytes is None or v.weights_bytes <= 0:
        return "cannot transfer: weights_bytes is unknown (the roofline needs the model size)"
    where = f"{inst.accelerator.name} memory" if inst.accelerator is not None else "host memory"
    if v.weights_bytes > inst.device_mem_bytes:
        return (
            f"does not fit: weights {_gib(v.weights_bytes)} > {_gib(inst.device_mem_bytes)} of {where} on {inst.name}"
        )
    if not any(p.status == "measured" and p.latency_s is not None for p in v.points):
        return "no measured points to transfer"
    return None


def _scale_points(v: Variant, num: _Numerics, src: Machine, tgt: Machine) -> _Scaled:
    """Every measured point of ``v`` times its roofline ratio from ``src`` to ``tgt``."""
    kv = float(v.kv_bytes_per_token or 0)
    assert v.weights_bytes is not None  # checked by _untransferable
    w = float(v.weights_bytes)
    lm = v.latency_model
    out = _Scaled()
    for p in v.points:
        if p.status != "measured" or p.latency_s is None:
            out.points.append(p)
            continue
        flops, moved = _work(p, w, kv, num)
        t_src = src.roofline_s(flops, moved, num.compute)
        r = tgt.roofline_s(flops, moved, num.compute) / t_src
        scaled = _scale_point(p, r)
        out.points.append(scaled)
        out.ratios.append(r)
        out.effs.append(t_src / max(p.latency_s.p50, 1e-15))
        feats = _features(p, lm.target) if lm is not None else None
        if feats is not None and scaled.latency_s is not None:
            out.fit_x.append(feats)
            out.fit_y.append(scaled.latency_s.p50)
            out.fit_r.append(r)
    return out


def _transfer_warnings(v: Variant, src: Machine, inst: InstanceType, sc: _Scaled) -> list[str]:
    """``v``'s warnings, then what the transfer's estimate rests on and where it is weak."""
    warnings = list(v.warnings)
    ratio = np.asarray(sc.ratios)
    warnings.append(
        f"estimated, not measured: roofline transfer from {src.name} to {inst.name}; "
        f"each point's time × roofline ratio {ratio.min():.3g}–{ratio.max():.3g}"
    )
    if v.load_time_s is not None:
        warnings.append("load_time_s is the source machine's measurement, not transferred")
    if min(sc.effs) < LOW_EFFICIENCY:
        warnings.append(
            f"the source ran some points at {min(sc.effs):.1%} of its roofline: overhead-dominated time "
            "(Python dispatch, kernel launches) is scaled like compute, so on faster hardware the "
            "estimate is likely optimistic"
        )
    if max(sc.effs) > 1.0:
        warnings.append(
            f"some points ran {max(sc.effs):.2g}× faster than the source roofline (weights held in cache, or "
            "the source peaks are underestimated): their transferred times are unreliable"
        )
    return warnings


def _transferred_model(lm: LatencyModel, sc: _Scaled, warnings: list[str]) -> tuple[LatencyModel | None, str]:
    """The latency model of the transferred points (None: dropped) and how it was made;
    appends to ``warnings`` what a dropped or refitted model means."""
    names = BATCH_FEATURES if lm.target == "batch_time" else STEP_FEATURES
    if tuple(lm.features) != names or not sc.fit_y:
        warnings.append("the latency model's features are unknown to the transfer; it was dropped")
        return None, "dropped"
    new, how = _transfer_model(lm, np.asarray(sc.fit_x), np.asarray(sc.fit_y), np.asarray(sc.fit_r))
    if how.startswith("refitted"):
        warnings.append(
            "latency model refitted to the transferred points (their ratios differ): its cv_mape is "
            "the refit's held-out error on those points, not the error of the transfer"
        )
    return new, how


def _as_cuda(v: Variant) -> dict[str, object]:
    """The fields that make the CPU variant ``v`` its ``cuda-<name>`` counterpart; its peak
    memory is the CPU run's memory growth (the weights where that is unknown)."""
    return {
        "name": f"cuda-{v.name}",
        "device": "cuda",
        "base_mem_bytes": None,
        "peak_mem_bytes": (
            max(v.peak_mem_bytes - v.base_mem_bytes, 0)
            if v.peak_mem_bytes is not None and v.base_mem_bytes is not None
            else v.weights_bytes
        ),
    }


def _transfer_variant(v: Variant, plan: _Plan, tgt: Machine, inst: InstanceType, record: dict[str, object]) -> Variant:
    if plan.skip is not None:
        return _skipped(v, plan.skip)
    src = plan.src
    assert src is not None
    num = _numerics(v)
    reason = _untransferable(v, num, inst)
    if reason is not None:
        return _skipped(v, reason)
    assert num is not None
    sc = _scale_points(v, num, src, tgt)
    warnings = _transfer_warnings(v, src, inst, sc)
    update: dict[str, object] = {"points": sc.points, "warnings": warnings, "estimated": True}
    how = "none"
    if v.latency_model is not None:
        update["latency_model"], how = _transferred_model(v.latency_model, sc, warnings)
    if plan.mapped_to_cuda:
        update.update(_as_cuda(v))
        warnings.append(
            f"measured on the CPU as {v.name!r} and mapped to CUDA: GPU kernel-launch overheads are not "
            "modelled; accuracy drift is the CPU run's; peak_mem_bytes is the CPU run's memory growth"
        )
    ratio = np.asarray(sc.ratios)
    record.update(
        source_machine=src.name,
        ratio_min=float(ratio.min()),
        ratio_max=float(ratio.max()),
        source_efficiency_min=float(min(sc.effs)),
        source_efficiency_max=float(max(sc.effs)),
        latency_model=how,
    )
    return v.model_copy(update=update)


def _target_hardware(inst: InstanceType, src: Hardware) -> Hardware:
    acc = inst.accelerator
    return Hardware(
        cpu_model=inst.cpu_model or f"{inst.name} host CPU",
        cpu_count=inst.vcpus,
        threads_used=inst.cores or inst.vcpus,
        mem_bytes=inst.mem_bytes,
        cpu_flags=list(inst.cpu_flags),
        gpu_name=acc.name if acc is not None else None,
        gpu_mem_bytes=acc.mem_bytes if acc is not None else None,
        python_version=src.python_version,
        torch_version=src.torch_version,
        onnxruntime_version=src.onnxruntime_version,
        tensorrt_version=src.tensorrt_version,
        catalog_name=inst.name,
    )


_ASSUMPTIONS = (
    "same efficiency: each point reaches the same fraction of the roofline on the target as on the source, "
    "so t_target = t_measured × roofline_target / roofline_source",
    "roofline time = max(FLOPs / peak FLOP/s of the variant's dtype, bytes moved / memory bandwidth)",
    "FLOPs ≈ 2 × params × tokens (params = weights_bytes / bytes per weight of the dtype, embeddings included) "
    "plus attention, 4 × layers × d_model per query-key pair with layers × d_model from kv_bytes_per_token "
    "(no attention term where kv_bytes_per_token is unknown)",
    "bytes moved = weights_bytes once per forward pass or decode step, plus the KV cache read (decode) or "
    "written (prefill); activations are not counted",
    "peaks are dense datasheet numbers (GPU) or ISA estimates (CPU); a CPU target is used with all its cores, "
    "a GPU target with one of its accelerators",
    "load_time_s, accuracy drift and peak memory are carried over from the source, not transferred",
    "fixed overheads (Python dispatch, kernel launches) are scaled like the rest of the time",
)


@dataclass(frozen=True)
class _Sources:
    """The machines a profile was measured on: the ``source`` instance when one is given,
    else the CPU estimated from the profile's fingerprint and its GPU found in the catalog."""

    profile: Profile
    catalog: Catalog
    inst: InstanceType | None = None
    origin: str = ""

    @classmethod
    def of(cls, source: str | InstanceType | None, catalog: Catalog, profile: Profile) -> _Sources:
        if isinstance(source, InstanceType):
            return cls(profile, catalog, source, "explicit")
        if source is not None:
            inst = catalog.get(source)
            return cls(profile, catalog, inst, f"catalog entry {inst.name}")
        return cls(profile, catalog)

    def cpu(self) -> Machine:
        if self.inst is not None and self.inst.kind == "cpu":
            m = Machine.from_instance(self.inst, self.origin)
            return _threads_share(m, self.inst, self.profile.hardware.threads_used)
        return source_cpu_from_fingerprint(self.profile.hardware)

    def gpu(self, v: Variant) -> Machine:
        if self.inst is not None and self.inst.kind == "gpu":
            return Machine.from_instance(self.inst, self.origin)
        name = self.profile.hardware.gpu_name
        found = self.catalog.find_accelerator(name) if name else None
        if found is None:
            raise ConfigError(
                f"variant {v.label} ran on the GPU {name or '(unnamed in the profile)'!r}, which is not in the "
                "catalog; name the measured machine with source=<a catalog instance with that GPU>"
            )
        return Machine.from_instance(found, f"catalog entry {found.name}, matched by the profile's gpu_name {name!r}")


def _plan(v: Variant, inst: InstanceType, sources: _Sources, measured_cuda: bool) -> _Plan:
    """Whether and from which machine ``v`` goes to ``inst``. With no measured cuda variant
    in the profile, a float PyTorch CPU variant stands in for a GPU target's."""
    if v.status not in _MEASURED:
        was = v.skip_reason if v.status == "skipped" else v.error
        return _Plan(skip=f"not measured on the source machine ({v.status}: {was})")
    if v.device == "cuda":
        if inst.kind == "cpu":
            return _Plan(skip=f"{inst.name} has no GPU; a cuda variant cannot run there")
        return _Plan(src=sources.gpu(v))
    if inst.kind == "cpu":
        return _Plan(src=sources.cpu())
    if measured_cuda:
        return _Plan(
            skip=f"{inst.name} is a GPU instance and its host CPU is not modelled; "
            "the profile's measured cuda variants are transferred instead"
        )
    num = _numerics(v)
    if num is not None and num.compute != "int8" and v.backend.startswith("torch") and "onnx" not in v.backend:
        return _Plan(src=sources.cpu(), mapped_to_cuda=True)
    return _Plan(
        skip=f"{inst.name} is a GPU instance; {v.name} ({v.backend}, {v.dtype}) has no CUDA counterpart "
        "in the transfer model (transfer it to a CPU instance)"
    )


def _transfer_variants(
    profile: Profile, plans: list[_Plan], tgt: Machine, inst: InstanceType
) -> tuple[list[Variant], list[dict[str, object]]]:
    """Every variant transferred or skipped by its plan, each with its record."""
    # A CPU variant mapped to `cuda-<name>` replaces an unmeasured variant of that name.
    mapped = {(v.model, f"cuda-{v.name}") for v, p in zip(profile.variants, plans, strict=True) if p.mapped_to_cuda}
    variants: list[Variant] = []
    records: list[dict[str, object]] = []
    for v, plan in zip(profile.variants, plans, strict=True):
        if (v.model, v.name) in mapped and not plan.mapped_to_cuda:
            continue
        rec: dict[str, object] = {"model": v.model, "variant": v.name}
        out = _transfer_variant(v, plan, tgt, inst, rec)
        rec["status"] = out.status
        if out.name != v.name:
            rec["as"] = out.name
        if out.status == "skipped":
            rec["reason"] = out.skip_reason
        variants.append(out)
        records.append(rec)
    return variants, records


def _transfer_record(
    profile: Profile,
    target: str | InstanceType,
    inst: InstanceType,
    tgt: Machine,
    plans: list[_Plan],
    records: list[dict[str, object]],
) -> dict[str, object]:
    """The estimated profile's ``transfer`` record: target, sources, assumptions, variants."""
    sources = {p.src.name: p.src.record() for p in plans if p.src is not None}
    return {
        "method": "roofline",
        "target": inst.name,
        "target_requested": target if isinstance(target, str) else inst.name,
        "target_cloud": inst.cloud,
        "target_region": inst.region,
        "target_price_per_hour_usd": inst.price_per_hour_usd,
        "target_peaks": tgt.record(),
        "sources": list(sources.values()),
        "source_hardware": profile.hardware.model_dump(mode="json"),
        "source_created_utc": profile.created_utc,
        "source_tool_version": profile.tool_version,
        "assumptions": list(_ASSUMPTIONS),
        "variants": records,
    }


def transfer_profile(
    profile: Profile,
    target: str | InstanceType,
    *,
    catalog: Catalog | None = None,
    source: str | InstanceType | None = None,
) -> Profile:
    """An estimated copy of ``profile`` for the catalog hardware ``target``.

    ``target`` is a catalog instance name or alias (``g5.xlarge``, ``a10g``) or an
    :class:`~servewise.hardware.InstanceType`. ``source`` names the machine the profile
    was measured on (a catalog entry, or an ``InstanceType`` with its peaks); without it
    the CPU's peaks are estimated from the profile's fingerprint and a GPU is looked up
    in the catalog by its ``gpu_name``. ``catalog`` defaults to the packaged one.

    CPU variants go to CPU targets and cuda variants to GPU targets. A profile with no
    measured cuda variant sent to a GPU target maps its float PyTorch CPU variants to
    ``cuda-<name>`` (with a warning); every other variant that cannot run on the target,
    or whose weights exceed the target device's memory, is skipped with its reason.
    Raises :class:`~servewise.errors.ConfigError` for an unknown name, an already
    estimated profile, or a GPU source that cannot be identified.
    """
    if profile.estimated:
        done = (profile.transfer or {}).get("target", profile.hardware.catalog_name)
        raise ConfigError(
            f"the profile is already an estimate (transferred to {done}); transfer the measured profile instead"
        )
    cat = catalog if catalog is not None else load_catalog()
    inst = target if isinstance(target, InstanceType) else cat.get(target)
    tgt = Machine.from_instance(inst, "explicit" if isinstance(target, InstanceType) else f"catalog entry {inst.name}")
    sources = _Sources.of(source, cat, profile)
    measured_cuda = any(v.device == "cuda" and v.status in _MEASURED for v in profile.variants)
    plans = [_plan(v, inst, sources, measured_cuda) for v in profile.variants]
    variants, records = _transfer_variants(profile, plans, tgt, inst)
    result = profile.model_copy(
        update={
            "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tool_version": servewise.__version__,
            "hardware": _target_hardware(inst, profile.hardware),
            "estimated": True,
            "transfer": _transfer_record(profile, target, inst, tgt, plans, records),
            "variants": variants,
        }
    )
    return Profile.model_validate(result.model_dump())  # model_copy does not validate: check the result
