"""The whole loop on the built-in defaults: profile → advise → serve → validate → report.

``servewise demo`` calls :func:`run_loop`. It is the one place that drives every stage
in turn, through their library calls, and writes one folder:

::

    OUT/
    ├── profile.json        all-MiniLM-L6-v2 fp32 and bf16, measured here (1 thread)
    ├── trace.csv           the replayed traffic (the shipped Azure excerpt, as embeddings)
    ├── space.yaml          the search space (a copy of the built-in one, to edit)
    ├── plan/               plan.json and the winner's deploy/ files
    ├── validation/         predicted/ (simulated), measured/ (Locust), validation.json
    ├── report.html         one page linking every stage
    └── loop.json           what ran, where each artifact is, the verdict, timings

The traffic is the built-in 10-minute excerpt of the Azure LLM 2023 conversation trace,
read as an embedding workload: its arrival times ``rate_scale`` times faster, each prompt
truncated to ``max_input_tokens`` (an embedding model reads a bounded window), no output
tokens. The winner is served live in real mode (the profiled variant, run by torch)
and the same trace is replayed against it open loop.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from servewise.errors import ConfigError
from servewise.io import ensure_dir, write_json
from servewise.trace import Trace, default_trace_path, load_trace, save_trace

if TYPE_CHECKING:
    from servewise.results import Candidate
    from servewise.space import SearchSpace

__all__ = ["DEFAULT_MODEL", "DEFAULT_VARIANTS", "LoopSettings", "demo_space_path", "demo_trace", "run_loop"]

DEFAULT_MODEL = "builtin:minilm"
DEFAULT_VARIANTS = ("fp32", "bf16")
LOOP_KIND = "loop"


def demo_space_path() -> Path:
    """The built-in search space of the demo (package data)."""
    return Path(str(files("servewise") / "data" / "demo_space.yaml"))


class LoopSettings(BaseModel):
    """What the loop does; the defaults are the README's first command (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    out_dir: Path
    seed: int = 0
    profile: Path | None = None
    """Use this profile (of ``builtin:minilm``) instead of measuring one."""
    space: Path | None = None
    """A search space instead of the built-in one."""
    rate_scale: float = Field(default=8.0, gt=0)
    """Replay the excerpt this many times faster (8: 10 minutes in 75 s, about 38 req/s)."""
    max_input_tokens: int = Field(default=128, ge=1)
    max_requests: int | None = Field(default=None, ge=1)
    """Replay only the first N requests (advise and validate alike)."""
    threads: int = Field(default=1, ge=1)
    """Intra-op threads per replica, in the profile and in the served replicas."""
    jobs: int | None = Field(default=None, ge=1)
    """Advisor workers (default: the CPUs)."""
    calibrate: bool = True
    """Calibrate every variant through the live serving path on the trace's first
    ``calibration_share`` of requests; advise and validate on the rest."""
    calibration_share: float = Field(default=0.25, gt=0, lt=1)
    allow_unstable_profile: bool = False
    """Advise even when the profile has points flagged unstable."""


def demo_trace(*, rate_scale: float, max_input_tokens: int, max_requests: int | None = None) -> Trace:
    """The demo's traffic: the shipped Azure excerpt as an embedding workload (see the module doc)."""
    if not np.isfinite(rate_scale) or rate_scale <= 0:
        raise ConfigError(f"rate_scale must be a number > 0, got {rate_scale!r}")
    if max_input_tokens < 1:
        raise ConfigError(f"max_input_tokens must be >= 1, got {max_input_tokens!r}")
    src = load_trace(default_trace_path())
    if max_requests is not None:
        src = src.head(max_requests)
    return Trace(
        arrival_s=(src.arrival_s - src.arrival_s[0]) / rate_scale,
        input_tokens=np.clip(src.input_tokens, 1, max_input_tokens),
        output_tokens=np.zeros(len(src), dtype=np.int64),
        source=f"{src.source} (x{rate_scale:g} rate, prompts truncated to {max_input_tokens} tokens, no output)",
    )


Progress = Callable[[str], None]


def _step(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def run_loop(settings: LoopSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Run the loop into ``settings.out_dir``; return the ``loop.json`` document.

    Raises :class:`~servewise.errors.ServewiseError` subclasses for unusable input and
    :class:`~servewise.errors.MissingExtraError` when torch, aiohttp or locust are absent.
    """
    from servewise import advisor, reports

    # 0. every input, before the first stage runs (a profile takes minutes)
    trace, space, space_src = _inputs(settings)
    out = ensure_dir(settings.out_dir)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. profile
    t0 = time.perf_counter()
    profile_path = out / "profile.json"
    _profile_step(settings, profile_path, progress)
    timings["profile_s"] = time.perf_counter() - t0

    # 2. calibrate the variants on the first part of the traffic; advise and validate on the rest
    if settings.calibrate:
        t0 = time.perf_counter()
        fit, trace = _split(trace, settings.calibration_share)
        _calibrate_step(settings, profile_path, space, fit, out, progress)
        timings["calibrate_s"] = time.perf_counter() - t0

    # 3. traffic and space, kept beside the results
    save_trace(trace, out / "trace.csv")
    space_path = out / "space.yaml"
    if space.slo.p95_latency_s is None:  # the built-in space: its latency SLO from this machine's profile
        space = _machine_slo(space, profile_path, trace, progress)
        _write_space(space_src, space, space_path)
    elif Path(space_src).resolve() != space_path.resolve():
        shutil.copyfile(space_src, space_path)

    # 4. advise
    t0 = time.perf_counter()
    _step(progress, f"advise: searching {space_path.name} on {len(trace)} requests ({trace.duration_s:.0f} s)")
    unstable = _unstable(profile_path, space)
    own = settings.profile is None  # measured just now, by this run
    for line in unstable:
        _step(progress, f"profile: WARNING {line}" + (" (measured by this run: advising with it, see loop.json)" if own else ""))
    plan = advisor.advise(space, trace, [profile_path], space_source=str(space_path), jobs=settings.jobs,
                          allow_unstable=settings.allow_unstable_profile or own)  # fmt: skip
    plan_dir = out / "plan"
    advisor.write_outputs(plan, trace, plan_dir)
    timings["advise_s"] = time.perf_counter() - t0
    winner = plan.winner
    doc = _loop_document(settings, trace, winner, timings)
    doc["profile_unstable"] = unstable
    report_inputs: list[Path] = [profile_path, plan_dir / "plan.json"]
    if winner is None:
        _step(progress, "advise: no candidate meets the SLOs; nothing to serve (see plan/plan.json: closest)")
    else:
        # 5. serve the winner and validate it with Locust
        t0 = time.perf_counter()
        val_dir = out / "validation"
        doc["verdict"] = _validate_step(settings, trace, winner, plan_dir, val_dir, progress)
        timings["validate_s"] = time.perf_counter() - t0
        doc["artifacts"].update(
            predicted="validation/predicted/result.json",
            measured="validation/measured/measured.json",
            validation="validation/validation.json",
        )
        report_inputs += [val_dir / "predicted", val_dir / "measured", val_dir]

    # 6. one report linking every stage
    t0 = time.perf_counter()
    reports.write_report(report_inputs, out / "report.html", title="servewise demo: profile → advise → serve → validate")
    timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    doc["artifacts"]["report"] = "report.html"
    write_json(out / "loop.json", doc)
    return doc


def _inputs(settings: LoopSettings) -> tuple[Trace, SearchSpace, Path]:
    """The trace, the search space and its file; a given profile is checked too (before it is copied)."""
    from servewise.profile import load_profile
    from servewise.space import load_space

    trace = demo_trace(
        rate_scale=settings.rate_scale, max_input_tokens=settings.max_input_tokens, max_requests=settings.max_requests
    )
    space_src = settings.space or demo_space_path()
    space = load_space(space_src)
    if settings.profile is not None:
        load_profile(settings.profile)  # refuse a bad file before copying it
    return trace, space, Path(space_src)


def _unstable(profile_path: Path, space: SearchSpace) -> list[str]:
    """One line per variant of the space whose profile points are flagged unstable."""
    from servewise.profile import load_profile

    out = []
    for v in load_profile(profile_path).variants:
        why = v.instability() if v.name in space.variant else None
        if why is not None:
            out.append(f"{v.label}: {why}")
    return out


def _split(trace: Trace, share: float) -> tuple[Trace, Trace]:
    """The first ``share`` of the requests (to fit on) and the rest, re-based to 0 (to judge on)."""
    k = max(min(int(round(len(trace) * share)), len(trace) - 20), 20)
    if len(trace) < 40:
        raise ConfigError(f"the demo trace has {len(trace)} requests: calibrating needs at least 40 (20 to fit, 20 to judge)")
    rest = trace.window(float(trace.arrival_s[k]), float("inf"))
    return trace.head(k), rest


CALIBRATION_REQUESTS = 400
"""Most requests each variant's calibration replays (of the held-out first share)."""


def _calibrate_step(
    settings: LoopSettings, profile_path: Path, space: SearchSpace, fit: Trace, out: Path, progress: Progress | None
) -> None:
    """``servewise calibrate`` of each of the space's variants, written into ``profile_path``."""
    from servewise.loadtest.calibrate import calibrate

    fit = fit.head(CALIBRATION_REQUESTS)
    for name in space.variant:
        _step(progress, f"calibrate: serving {name} live on the first {len(fit)} requests")
        cal = calibrate(profile_path, name, fit, threads=settings.threads, seed=settings.seed, work_dir=out)
        o = np.asarray(cal.overhead_samples_s)
        _step(progress, f"calibrate: {name}: overhead p50 {np.median(o) * 1e3:.1f} ms, live service "
                        f"{cal.service_fixed_s * 1e3:.1f} ms + {cal.service_scale:.2f}x the profile (CV {cal.service_cv:.2f}), "
                        f"router + Locust CPU {(cal.host_cpu_per_request_s or 0) * 1e3:.1f} ms/request")  # fmt: skip


SLO_FACTOR = 4.0
"""The built-in space's p95 limit: this many times the fastest variant's lone service time
at the trace's 95th-percentile prompt (plus its serving overhead once calibrated)."""


def _machine_slo(space: SearchSpace, profile_path: Path, trace: Trace, progress: Progress | None) -> SearchSpace:
    """``space`` with ``slo.p95_latency_s`` set from this machine's measured profile, so a
    feasible winner exists on a slow laptop and on a fast server alike."""
    from servewise.profile import load_profile

    prof = load_profile(profile_path)
    p95_tokens = int(np.percentile(trace.input_tokens, 95))
    lone: dict[str, float] = {}
    for v in prof.variants:
        if v.name in space.variant and v.status == "measured" and v.latency_model is not None:
            t = float(v.live_time(float(v.batch_time(1, p95_tokens)[0])))
            if v.serving is not None:
                t += float(np.percentile(v.serving.overhead_samples_s, 95))
            lone[v.name] = t
    if not lone:
        raise ConfigError(f"{profile_path}: no measured variant of {', '.join(space.variant)} to set the latency SLO from")
    fastest = min(lone, key=lone.__getitem__)
    limit = float(np.ceil(SLO_FACTOR * lone[fastest] * 1e3) / 1e3)
    _step(progress, f"advise: SLO p95 <= {limit * 1e3:.0f} ms ({SLO_FACTOR:g} x {fastest}'s "
                    f"{lone[fastest] * 1e3:.1f} ms at a {p95_tokens}-token prompt, measured here)")  # fmt: skip
    return space.model_copy(update={"slo": space.slo.model_copy(update={"p95_latency_s": limit})})


def _write_space(source: Path, space: SearchSpace, path: Path) -> None:
    """The built-in space file with the SLO this machine got, and a comment saying where it came from."""
    import yaml

    from servewise.io import atomic_write_text

    doc = yaml.safe_load(Path(source).read_text())
    doc["slo"] = {k: v for k, v in space.slo.model_dump().items() if v is not None}
    head = (f"# servewise demo's search space; slo.p95_latency_s was set from this machine's profile "
            f"({SLO_FACTOR:g} x the fastest variant's service time at the trace's p95 prompt).\n")  # fmt: skip
    atomic_write_text(path, head + yaml.safe_dump(doc, sort_keys=False))


def _profile_step(settings: LoopSettings, profile_path: Path, progress: Progress | None) -> None:
    """``profile.json``: a copy of the given profile, or one measured here."""
    if settings.profile is not None:
        if Path(settings.profile).resolve() != profile_path.resolve():
            shutil.copyfile(settings.profile, profile_path)
        _step(progress, f"profile: using {settings.profile}")
    else:
        _step(progress, f"profile: measuring {DEFAULT_MODEL} {', '.join(DEFAULT_VARIANTS)} on this machine")
        _profile(profile_path, threads=settings.threads, seed=settings.seed, progress=progress)


def _loop_document(
    settings: LoopSettings, trace: Trace, winner: Candidate | None, timings: dict[str, float]
) -> dict[str, Any]:
    """``loop.json`` as it stands after the advisor: the validation and the report add to it."""
    return {
        "kind": LOOP_KIND,
        "schema_version": 1,
        "seed": settings.seed,
        "trace": {"source": trace.source, "requests": len(trace), "duration_s": trace.duration_s},
        "artifacts": {"profile": "profile.json", "trace": "trace.csv", "space": "space.yaml", "plan": "plan/plan.json"},
        "winner": None if winner is None else {"id": winner.id, "label": winner.label,
                                               "cost_per_hour_usd": winner.cost_per_hour_usd},
        "verdict": None,
        "timings_s": timings,
    }  # fmt: skip


def _validate_step(
    settings: LoopSettings, trace: Trace, winner: Candidate, plan_dir: Path, val_dir: Path, progress: Progress | None
) -> str:
    """Serve the winner live, replay the trace against it with Locust, compare; the verdict."""
    from servewise.loadtest.validate import validate

    _step(progress, f"advise: winner {winner.label} at ${winner.cost_per_hour_usd:.3f}/h")
    _step(progress, f"validate: serving {winner.label} live and replaying {len(trace)} requests with Locust")
    validation = validate(
        trace,
        val_dir,
        deployment_path=plan_dir / "deploy" / "deployment.yaml",
        seed=settings.seed,
        serve_args=[f"--threads={settings.threads}", "--mode=real"],
        progress=progress,
    )
    return validation.verdict


def _profile(path: Path, *, threads: int, seed: int, progress: Progress | None) -> None:
    """A short profile of the built-in encoder: 3 × 3 shapes, 0.9 s per point over 3 rounds."""
    from servewise.profiler import Grid, ProfileSettings, TimingSettings, run_profile

    settings = ProfileSettings(
        grid=Grid(batch_sizes=(1, 4, 8), seq_lens=(16, 64, 128)),
        timing=TimingSettings(budget_s=0.9, rounds=3),
        threads=threads,
        seed=seed,
    )

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if progress is None:
            return
        if kind == "variant":
            progress(f"profile: {data['variant']} ({data['points']} shapes)")
        elif kind == "variant_done":
            v = data["variant"]
            progress(f"profile: {v.name} {v.status}" + (f" ({v.skip_reason or v.error})" if v.status != "measured" else ""))

    run_profile([DEFAULT_MODEL], list(DEFAULT_VARIANTS), path, settings, on_event=on_event)
