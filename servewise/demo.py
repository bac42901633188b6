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

    # 2. traffic and space, kept beside the results
    save_trace(trace, out / "trace.csv")
    space_path = out / "space.yaml"
    if Path(space_src).resolve() != space_path.resolve():
        shutil.copyfile(space_src, space_path)

    # 3. advise
    t0 = time.perf_counter()
    _step(progress, f"advise: searching {space_path.name} on {len(trace)} requests ({trace.duration_s:.0f} s)")
    plan = advisor.advise(space, trace, [profile_path], space_source=str(space_path), jobs=settings.jobs)
    plan_dir = out / "plan"
    advisor.write_outputs(plan, trace, plan_dir)
    timings["advise_s"] = time.perf_counter() - t0
    winner = plan.winner
    doc = _loop_document(settings, trace, winner, timings)
    report_inputs: list[Path] = [profile_path, plan_dir / "plan.json"]
    if winner is None:
        _step(progress, "advise: no candidate meets the SLOs; nothing to serve (see plan/plan.json: closest)")
    else:
        # 4. serve the winner and validate it with Locust
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

    # 5. one report linking every stage
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
    """A short profile of the built-in encoder: 3 × 3 shapes, 0.3 s per point, 2 rounds."""
    from servewise.profiler import Grid, ProfileSettings, TimingSettings, run_profile

    settings = ProfileSettings(
        grid=Grid(batch_sizes=(1, 4, 8), seq_lens=(16, 64, 128)),
        timing=TimingSettings(budget_s=0.3, rounds=2),
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
