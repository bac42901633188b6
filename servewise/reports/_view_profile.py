"""The profile's section: the machine, a table of variants (load time, memory, drift,
latency model, instability), latency against batch size and against sequence length per
variant, memory and load time per variant, every instability flag with its remedy."""

from __future__ import annotations

import numpy as np

from servewise.profile import Hardware, Point, Profile, Variant
from servewise.reports import _format as fmt
from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Cell, Facts, Heading, Notes, Plot, Row, Section, Table, num, txt
from servewise.reports._plots import PALETTE, figure, time_unit, to_plot
from servewise.reports._plots import label as plot_label
from servewise.reports._view_common import Links, file_facts

__all__ = ["profile_view"]

_PHASES = ("forward", "prefill", "decode")
_MARKERS = "osD^vP*Xh"


def _point_label(p: Point) -> str:
    return f"{p.phase} b={p.batch_size} s={p.seq_len}"


def _variant_label(v: Variant, several_models: bool) -> str:
    return f"{v.model} {v.name}" if several_models else v.name


def _drift_cell(v: Variant) -> Cell:
    acc = v.accuracy
    if acc is None:
        err = v.accuracy_error
        return txt("—" if not err else "error", status="warn" if err else None, limit=None)
    if acc.mean_kl is not None:
        return Cell(text=f"KL {acc.mean_kl:.3g} nats", value=float(acc.mean_kl), num=True)
    if acc.cosine_mean is not None:
        d = max(1.0 - float(acc.cosine_mean), 0.0)
        return Cell(text=f"1−cos {d:.3g}", value=d, num=True)
    return txt(None)


_Line = tuple[int, str, int, list[int], list[float], list[float], list[bool]]
"""(variant index, label, value of the other axis, x, median latency, error bar, unstable)."""


def _latency_lines(variants: list[Variant], several: bool, phase: str, x_axis: str) -> list[_Line]:
    other = "seq_len" if x_axis == "batch_size" else "batch_size"
    lines: list[_Line] = []
    for i, v in enumerate(variants):
        by_other: dict[int, list[Point]] = {}
        for p in v.points:
            if p.phase == phase and p.status == "measured" and p.latency_s is not None:
                by_other.setdefault(getattr(p, other), []).append(p)
        for o, group in sorted(by_other.items()):
            group.sort(key=lambda p: getattr(p, x_axis))
            stats = [p.latency_s for p in group if p.latency_s is not None]
            y = [s.p50 for s in stats]
            err = [max(s.p50 * s.ci_rel, 0.0) if np.isfinite(s.p50 * s.ci_rel) else 0.0 for s in stats]
            lines.append((i, _variant_label(v, several), o, [getattr(p, x_axis) for p in group], y, err,
                          [not p.stable for p in group]))  # fmt: skip
    return lines


def _profile_latency_plot(variants: list[Variant], several: bool, phase: str, x_axis: str) -> Plot | None:
    """Median latency against ``x_axis`` (batch_size or seq_len), one colour per variant,
    one line per value of the other axis; the bars span the 95% CI of the median."""
    lines = _latency_lines(variants, several, phase, x_axis)
    if not lines or all(len(ln[3]) < 2 for ln in lines):
        return None
    other = "seq" if x_axis == "batch_size" else "batch"
    what = "batch size" if x_axis == "batch_size" else "sequence length"
    unit, scale = time_unit([y for ln in lines for y in ln[4]])
    others = sorted({ln[2] for ln in lines})
    with figure(7.5, 3.6) as (fig, ax):
        a = ax[0, 0]
        for i, name, o, x, y, err, unstable in lines:
            k = others.index(o) % len(_MARKERS)
            a.errorbar(x, np.array(y) * scale, yerr=np.array(err) * scale, color=PALETTE[i % len(PALETTE)],
                       marker=_MARKERS[k], ms=4, lw=1.2, capsize=2, alpha=0.4 + 0.6 * (k + 1) / len(others),
                       label=f"{plot_label(name)}, {other} {o}")  # fmt: skip
            bad = [(xx, yy) for xx, yy, u in zip(x, y, unstable, strict=True) if u]
            if bad:
                a.scatter([b[0] for b in bad], [b[1] * scale for b in bad], s=60, facecolors="none",
                          edgecolors="#dc2626", zorder=5)  # fmt: skip
        a.set_xscale("log", base=2)
        a.set_xticks(sorted({xx for ln in lines for xx in ln[3]}))
        a.get_xaxis().set_major_formatter("{x:g}")
        a.set_xlabel("batch size" if x_axis == "batch_size" else "sequence length (tokens)")
        a.set_ylabel(f"median latency ({unit})")
        a.set_title(f"{phase}: latency vs {what}")
        a.legend(loc="upper left", ncols=2 if len(lines) > 6 else 1)
        return to_plot(
            fig,
            alt=f"Median {phase} latency against {what} for each variant",
            caption=f"Median latency of one {phase} pass against {what}; bars: 95% CI of the median; "
            "red rings: points flagged unstable.",
        )


def _profile_resources_plot(variants: list[Variant], several: bool) -> Plot | None:
    vs = [v for v in variants if v.peak_mem_bytes is not None or v.load_time_s is not None]
    if not vs:
        return None
    labels = [plot_label(_variant_label(v, several)) for v in vs]
    y = np.arange(len(vs))
    with figure(7.5, 2.8, ncols=2) as (fig, ax):
        mem = ax[0, 0]
        peak = np.array([v.peak_mem_bytes or 0 for v in vs], float) / 2**20
        base = np.array([v.base_mem_bytes or 0 for v in vs], float) / 2**20
        mem.barh(y, peak, color=[PALETTE[i % len(PALETTE)] for i in range(len(vs))], alpha=0.85,
                 label="peak RSS / allocator")  # fmt: skip
        mem.barh(y, base, color="#9ca3af", label="before loading")
        mem.set_yticks(y, labels)
        mem.invert_yaxis()
        mem.set_xlabel("memory (MiB)")
        mem.set_title("peak memory")
        mem.legend(loc="lower right")
        lt = ax[0, 1]
        for i, v in enumerate(vs):
            samples = v.load_time_samples_s or ([v.load_time_s] if v.load_time_s is not None else [])
            lt.scatter(samples, [i] * len(samples), color=PALETTE[i % len(PALETTE)], s=18)
            if v.load_time_s is not None:
                lt.plot([v.load_time_s] * 2, [i - 0.3, i + 0.3], color="#111827", lw=2)
        lt.set_yticks(y, labels)
        lt.invert_yaxis()
        lt.set_xlabel("load time (s)")
        lt.set_xlim(left=0)
        lt.set_title("load time (cold start)")
        return to_plot(
            fig,
            alt="Peak memory and load time per variant",
            caption="Peak memory (grey: the worker before loading the model) and load time from disk to "
            "first inference per variant (dots: each fresh process; bar: the value the simulator uses).",
        )


def _machine_facts(p: Profile) -> Facts:
    hw: Hardware = p.hardware
    facts = [
        ("status", txt(p.status, status=None if p.status == "complete" else "warn")),
        ("created", txt(p.created_utc)),
        ("CPU", txt(f"{hw.cpu_model} · {hw.cpu_count} CPUs · {hw.threads_used} thread(s) used")),
        ("memory", txt(fmt.nbytes(hw.mem_bytes))),
    ]
    if hw.gpu_name:
        facts.append(("GPU", txt(f"{hw.gpu_name} · {fmt.nbytes(hw.gpu_mem_bytes)} · driver {hw.gpu_driver} · "
                                 f"CUDA {hw.cuda_version}")))  # fmt: skip
    if hw.catalog_name:
        facts.append(("catalog hardware", txt(hw.catalog_name)))
    facts.append(
        ("software", txt(f"Python {hw.python_version} · torch {hw.torch_version or '—'} · "
                         f"onnxruntime {hw.onnxruntime_version or '—'} · TensorRT {hw.tensorrt_version or '—'}"))
    )  # fmt: skip
    facts.append(("CPU flags", txt(", ".join(hw.cpu_flags) or "—")))
    grid = p.settings.get("grid")
    if isinstance(grid, dict) and grid:
        facts.append(("grid", txt(f"batch sizes {grid.get('batch_sizes')} × sequence lengths {grid.get('seq_lens')}")))
    return Facts(facts, caption="Machine and run")


_STATUS = {"measured": "pass", "skipped": "muted", "failed": "fail", "incomplete": "warn"}


def _variants_table(variants: list[Variant], several: bool) -> Table:
    rows = []
    for v in variants:
        n_meas = sum(p.status == "measured" for p in v.points)
        n_unst = sum(not p.stable for p in v.points)
        lm = v.latency_model
        rows.append(
            Row(
                [
                    txt(_variant_label(v, several)),
                    txt(f"{v.dtype} · {v.backend} · {v.device}"),
                    txt(v.status, status=_STATUS.get(v.status), limit=None),
                    num(v.load_time_s, fmt.seconds),
                    num(v.peak_mem_bytes, fmt.nbytes),
                    num(v.weights_bytes, fmt.nbytes),
                    _drift_cell(v),
                    txt(f"{lm.kind} ({fmt.percent(lm.cv_mape, digits=1)} CV error)" if lm else None),
                    txt(f"{n_meas}" + (f" ({n_unst} unstable)" if n_unst else ""), status="warn" if n_unst else None),
                ],
                cls="muted" if v.status == "skipped" else None,
            )
        )
    return Table(
        "Variants",
        ["variant", "dtype · backend · device", "status", "load time", "peak memory", "weights", "accuracy drift",
         "latency model", "points"],
        rows,
        note="accuracy drift against the fp32 reference: decoders mean KL of the next-token distribution, "
        "encoders 1 − mean cosine of the embeddings.",
    )  # fmt: skip


def profile_view(a: Artifact, links: Links) -> Section:
    p = a.profile
    variants = list(p.variants)
    models = sorted({v.model for v in variants})
    several = len(models) > 1
    measured = [v for v in variants if v.status == "measured"]
    unstable = [(v, pt) for v in variants for pt in v.points if not pt.stable]
    failed = [v for v in variants if v.status in ("failed", "incomplete")]
    device = p.hardware.gpu_name or p.hardware.cpu_model or "unknown hardware"
    est = " (estimated by transfer, not measured)" if p.estimated else ""
    s = Section(
        kind="profile",
        kind_label="Profile",
        title=", ".join(models) or "no model",
        headline=f"{len(measured)} of {len(variants)} variants measured on {device}{est}"
        + (f"; {len(unstable)} unstable points" if unstable else ""),
        status="warn" if (unstable or failed or p.status != "complete") else None,
    )
    s.add(_machine_facts(p), file_facts(a, links), _variants_table(variants, several))
    reasons = [f"{_variant_label(v, several)}: {v.status} — {v.skip_reason or v.error}"
               for v in variants if v.status != "measured" and (v.skip_reason or v.error)]  # fmt: skip
    if reasons:
        s.add(Notes(reasons, level="info", caption="Variants not measured"))
    for model in models:
        mv = [v for v in variants if v.model == model]
        phases = [ph for ph in _PHASES if any(pt.phase == ph for v in mv for pt in v.points)]
        if several:
            s.add(Heading(model))
        for ph in phases:
            s.add(_profile_latency_plot(mv, several, ph, "batch_size"), _profile_latency_plot(mv, several, ph, "seq_len"))
    s.add(_profile_resources_plot(variants, several))
    flags = [f"{_variant_label(v, several)} {_point_label(pt)}: {pt.instability}" for v, pt in unstable]
    warnings = [f"{_variant_label(v, several)}: {w}" for v in variants for w in v.warnings]
    if flags:
        s.add(Notes(flags, level="warn", caption=f"Instability flags ({len(flags)} points)"))
    if warnings:
        s.add(Notes(warnings, level="warn", caption="Warnings"))
    return s
