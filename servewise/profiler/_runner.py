"""The parent side of profiling: plan the grid, run one worker per variant, keep every result.

The parent never imports torch. It starts ``python -m profiler._worker`` for the probe,
once per model to prepare it (materialise built-ins, fp32 reference outputs, ONNX
export), then once per variant to measure it. After every event it rewrites the
profile atomically, marked ``incomplete`` until the run ends, so Ctrl-C, a crashed
worker or an out-of-memory kill never loses what was measured before.

A run never clobbers a good file: when ``out`` already exists (a finished profile, or the
one ``--append`` adds to), progress goes to ``<out stem>.partial<suffix>`` beside it and
replaces ``out`` only when the run completes; a killed run leaves ``out`` as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from servewise.errors import MissingExtraError, ProfileError, ProfileInterrupted
from servewise.procs import child_env
from servewise.profile import Hardware, Point, Profile, Variant, load_profile, save_profile
from servewise.profiler._fit import fit_latency_model
from servewise.profiler._hardware import usable_cpus
from servewise.profiler._spec import ModelSpec, parse_spec
from servewise.profiler._timing import TimingSettings
from servewise.profiler._variants import VARIANTS, VariantDef, skip_reason

__all__ = ["Grid", "ProfileSettings", "PRESETS", "run_profile", "FaultInjection", "partial_path"]

Event = dict[str, Any]


_Sizes = Annotated[tuple[Annotated[int, Field(gt=0)], ...], Field(min_length=1)]


class Grid(BaseModel):
    """Batch sizes × sequence lengths; decoders get prefill and decode grids (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_sizes: _Sizes = (1, 2, 4, 8)
    seq_lens: _Sizes = (16, 32, 64, 128)
    """Classic/encoder sequence lengths, and decoder prompt lengths (prefill)."""
    decode_batch_sizes: _Sizes = (1, 2, 4, 8, 16)
    context_lens: _Sizes = (32, 64, 128, 256)
    """Decoder context lengths of the decode steps."""

    def points(self, model_kind: str, max_len: int) -> list[tuple[str, int, int]]:
        if model_kind != "decoder":
            return [("forward", b, s) for b in self.batch_sizes for s in self.seq_lens if s <= max_len]
        pre = [("prefill", b, s) for b in self.batch_sizes for s in self.seq_lens if s <= max_len]
        dec = [("decode", b, c) for b in self.decode_batch_sizes for c in self.context_lens if c < max_len]
        return pre + dec


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"grid": {}, "timing": {}},
    "fast": {
        "grid": {"batch_sizes": (1, 4), "seq_lens": (16, 64), "decode_batch_sizes": (1, 4), "context_lens": (32, 128)},
        "timing": {"budget_s": 0.2, "min_time_s": 0.1},
    },
    "rigorous": {"grid": {}, "timing": {"budget_s": 3.0, "target_ci": 0.01, "min_time_s": 1.0, "rounds": 5}},
}
"""``servewise profile --fast`` / ``--rigorous``: the grid and timing each preset starts from."""


class ProfileSettings(BaseModel):
    """Everything a profile run is told: grid, timing, threads, seed (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid: Grid = Field(default_factory=Grid)
    timing: TimingSettings = Field(default_factory=TimingSettings)
    threads: int = Field(default=0, ge=0)
    """Intra-op threads (0: every CPU this process may use)."""
    seed: int = 0

    @classmethod
    def preset(
        cls,
        name: str = "default",
        *,
        grid: dict[str, Any] | None = None,
        timing: dict[str, Any] | None = None,
        **fields: Any,
    ) -> ProfileSettings:
        """The ``name`` preset (``default``, ``fast``, ``rigorous``) with fields overridden.

        ``grid`` and ``timing`` override single fields of the preset's (``None`` values are
        ignored), e.g. ``ProfileSettings.preset("fast", timing={"budget_s": 0.5}, threads=1)``.
        A bad value raises pydantic's ``ValidationError`` naming the field.
        """
        if name not in PRESETS:
            raise ProfileError(f"unknown profile preset {name!r}; valid: {', '.join(PRESETS)}")
        base = PRESETS[name]
        g = {**base["grid"], **{k: v for k, v in (grid or {}).items() if v is not None}}
        t = {**base["timing"], **{k: v for k, v in (timing or {}).items() if v is not None}}
        return cls.model_validate({"grid": g, "timing": t, **fields})

    def resolved_threads(self) -> int:
        return self.threads if self.threads > 0 else usable_cpus()


@dataclass(frozen=True)
class FaultInjection:
    """For tests of the fault handling: make one variant's worker fail at grid point ``point``.

    ``mode`` ``raise`` raises inside the point; ``kill`` SIGKILLs the worker there.
    """

    variant: str
    point: int
    mode: str = "raise"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("servewise")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


class _Worker:
    """One worker process and the events it has written so far."""

    def __init__(self, job: dict[str, Any], workdir: Path, tag: str) -> None:
        self.job_path = workdir / f"{tag}.job.json"
        self.events_path = workdir / f"{tag}.events.jsonl"
        self.log_path = workdir / f"{tag}.log"
        self.job_path.write_text(json.dumps(job))
        self.events_path.write_text("")
        self._pos = 0
        self._buf = ""
        # A fresh inductor cache per worker: every variant pays its real compile cost.
        env = child_env({"TORCHINDUCTOR_CACHE_DIR": str(workdir / f"{tag}.inductor")})
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "servewise.profiler._worker", str(self.job_path), str(self.events_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=workdir,  # exporters and quantisers drop temp files in the working directory
                start_new_session=True,  # Ctrl-C reaches the parent only; it stops the worker
            )

    def events(self) -> list[Event]:
        with open(self.events_path) as f:
            f.seek(self._pos)
            chunk = f.read()
            self._pos = f.tell()
        self._buf += chunk
        *lines, self._buf = self._buf.split("\n")
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    def exit_description(self) -> str:
        rc = self.proc.returncode
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name
            hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
            return f"worker killed by {name}{hint}"
        tail = ""
        try:
            lines = [ln for ln in self.log_path.read_text().splitlines() if ln.strip()]
            tail = f"; last output: {lines[-1][:200]}" if lines else ""
        except OSError:
            pass
        return f"worker exited with code {rc}{tail}"


def _run_worker(
    job: dict[str, Any], workdir: Path, tag: str, on_event: Callable[[Event], None]
) -> tuple[_Worker, bool]:
    """Run a worker to its end, passing each event on. Returns (worker, finished cleanly)."""
    w = _Worker(job, workdir, tag)
    try:
        while True:
            for ev in w.events():
                on_event(ev)
            if w.proc.poll() is not None:
                for ev in w.events():
                    on_event(ev)
                return w, w.proc.returncode == 0
            time.sleep(0.05)
    except BaseException:
        w.stop()
        raise


def partial_path(out: Path) -> Path:
    """Where a run writes its progress while ``out`` holds an earlier file."""
    return out.with_name(f"{out.stem}.partial{out.suffix}")


class _Recorder:
    """Holds the profile being built and writes it after every change.

    Progress goes to ``out`` when there was no file there, else to :func:`partial_path`,
    which replaces ``out`` on completion.
    """

    def __init__(self, out: Path, hardware: Hardware, settings: ProfileSettings, existing: Profile | None) -> None:
        self.out = out
        self.progress = partial_path(out) if out.exists() else out
        self.hardware = hardware
        self.settings = settings
        self.done: list[Variant] = list(existing.variants) if existing else []
        self.current: dict[str, Any] | None = None
        self.created = existing.created_utc if existing else _now()

    def replace(self, v: Variant) -> None:
        self.done = [x for x in self.done if not (x.model == v.model and x.name == v.name)] + [v]

    def write(self, complete: bool) -> Profile:
        variants = list(self.done)
        if self.current is not None:
            variants.append(Variant.model_validate(self.current))
        s = self.settings
        prof = Profile(
            status="complete" if complete else "incomplete",
            created_utc=self.created,
            tool_version=_tool_version(),
            hardware=self.hardware,
            settings={
                "grid": {k: list(v) for k, v in s.grid.model_dump().items()},
                "timing": s.timing.model_dump(),
                "threads": s.resolved_threads(),
                "seed": s.seed,
                "updated_utc": _now(),
            },
            variants=variants,
        )
        save_profile(prof, self.out if complete else self.progress)
        if complete and self.progress != self.out:
            self.progress.unlink(missing_ok=True)
        return prof


def _check_same_machine(existing: Profile, hw: Hardware, path: Path) -> None:
    for fld in ("cpu_model", "gpu_name", "threads_used", "torch_version", "onnxruntime_version"):
        a, b = getattr(existing.hardware, fld), getattr(hw, fld)
        if a != b:
            raise ProfileError(
                f"{path}: cannot append: hardware.{fld} differs ({a!r} in the file, {b!r} here); "
                "write a new profile instead"
            )


def run_profile(
    models: list[str],
    variants: list[str],
    out: str | Path,
    settings: ProfileSettings | None = None,
    *,
    append: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    fault: FaultInjection | None = None,
    workdir: str | Path | None = None,
) -> Profile:
    """Profile every variant of every model into ``out`` and return the profile.

    ``on_event(kind, data)`` is told of progress (``variant``, ``point``, ``skipped``...).
    Ctrl-C raises :class:`ProfileInterrupted` after saving what was measured.
    """
    import importlib.util

    settings = settings or ProfileSettings()
    out = Path(out)
    specs = [parse_spec(m) for m in models]
    for name in variants:
        if name not in VARIANTS:
            raise ProfileError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError("servewise profile needs torch: pip install 'servewise[profile]'")
    if importlib.util.find_spec("sklearn") is None:
        raise MissingExtraError("servewise profile needs scikit-learn: pip install 'servewise[profile]'")
    existing = load_profile(out) if append and out.exists() else None
    notify = on_event or (lambda kind, data: None)
    threads = settings.resolved_threads()
    own_tmp = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="servewise-profile-")) if own_tmp else Path(workdir)  # type: ignore[arg-type]
    wd.mkdir(parents=True, exist_ok=True)
    try:
        probe: dict[str, Any] = {}

        def on_probe(ev: Event) -> None:
            probe.update(ev)

        w, ok = _run_worker({"mode": "probe", "threads": threads}, wd, "probe", on_probe)
        if not ok or "hardware" not in probe:
            raise ProfileError(f"the hardware probe failed: {probe.get('error') or w.exit_description()}")
        hardware = Hardware.model_validate(probe["hardware"])
        caps: dict[str, str | None] = probe["capabilities"]
        if existing is not None:
            _check_same_machine(existing, hardware, out)
        rec = _Recorder(out, hardware, settings, existing)
        rec.write(complete=False)
        notify("hardware", {"hardware": hardware, "capabilities": caps})
        try:
            for spec in specs:
                _profile_model(spec, variants, settings, threads, caps, wd, rec, notify, fault)
        except KeyboardInterrupt:
            prof = rec.write(complete=False)
            kept = sum(len(v.points) for v in prof.variants)
            unchanged = f"; {out} is unchanged" if rec.progress != out else ""
            raise ProfileInterrupted(
                f"interrupted: {kept} measured points kept in {rec.progress} (status: incomplete){unchanged}",
                str(rec.progress),
            ) from None
        return rec.write(complete=True)
    finally:
        if own_tmp:
            shutil.rmtree(wd, ignore_errors=True)


def _entry(spec: ModelSpec, v: VariantDef, model_kind: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": spec.text,
        "model_kind": model_kind,
        "name": v.name,
        "dtype": v.dtype,
        "backend": v.backend,
        "device": v.device,
        "status": status,
        **extra,
    }


def _profile_model(
    spec: ModelSpec,
    variants: list[str],
    settings: ProfileSettings,
    threads: int,
    caps: dict[str, str | None],
    wd: Path,
    rec: _Recorder,
    notify: Callable[[str, dict[str, Any]], None],
    fault: FaultInjection | None,
) -> None:
    mwd = wd / f"model{len(rec.done)}_{abs(hash(spec.text)) % 10**8}"
    mwd.mkdir(parents=True, exist_ok=True)
    onnx_wanted = [n for n in variants if VARIANTS[n].backend.startswith("onnxruntime")]
    prepared: dict[str, Any] = {}

    def on_prep(ev: Event) -> None:
        prepared.update(ev)

    notify("prepare", {"model": spec.text})
    w, ok = _run_worker(
        {
            "mode": "prepare",
            "spec": spec.text,
            "workdir": str(mwd),
            "threads": threads,
            "onnx": bool(onnx_wanted) and caps.get("onnxruntime") is None and caps.get("onnx") is None,
            "onnx_int8": "onnx-int8" in onnx_wanted,
        },
        mwd,
        "prepare",
        on_prep,
    )
    if not ok or prepared.get("event") != "prepared":
        why = prepared.get("error") or w.exit_description()
        for name in variants:
            v = VARIANTS[name]
            rec.replace(
                Variant.model_validate(_entry(spec, v, "classic", "failed", error=f"cannot load {spec.text}: {why}"))
            )
        rec.write(complete=False)
        notify("model_failed", {"model": spec.text, "error": why})
        return
    kind = prepared["model_kind"]
    grid = settings.grid.points(kind, int(prepared["max_len"]))
    for name in variants:
        v = VARIANTS[name]
        reason = skip_reason(v, caps, kind, spec.kind)
        if reason is None and v.backend.startswith("onnxruntime") and name not in prepared["onnx_paths"]:
            errs = prepared.get("onnx_errors") or {}
            err = errs.get(name) or errs.get("*") or "ONNX export produced no file"
            _record(rec, notify, Variant.model_validate(_entry(spec, v, kind, "failed", error=err)))
            continue
        if reason is not None:
            _record(rec, notify, Variant.model_validate(_entry(spec, v, kind, "skipped", skip_reason=reason)))
            continue
        _measure_variant(spec, v, kind, grid, settings, threads, prepared, mwd, rec, notify, fault)


class _VariantEvents:
    """Builds a variant's entry from its workers' events, saving the profile after each."""

    def __init__(
        self,
        cur: dict[str, Any],
        grid: list[tuple[str, int, int]],
        rounds: int,
        rec: _Recorder,
        notify: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.cur = cur
        """The variant entry being built (``rec.current``)."""
        self.grid = grid
        self.rounds = rounds
        self.rec = rec
        self.notify = notify
        self.errors: list[str] = []
        """The workers' ``error`` events: the variant failed."""
        self.load_times: list[float] = []
        """Load time of each worker process, seconds."""
        self.round_medians: dict[tuple[str, int, int], list[float]] = {}
        """Each point's median of every round so far, by (phase, batch_size, seq_len)."""

    def _peak(self, ev: Event) -> int:
        return max(ev["peak_mem_bytes"], self.cur.get("peak_mem_bytes") or 0)

    def on_event(self, ev: Event) -> None:
        cur = self.cur
        e = ev["event"]
        if e == "start":
            cur.setdefault("base_mem_bytes", ev["base_mem_bytes"])
        elif e == "loaded":
            self.load_times.append(ev["load_time_s"])
            cur.update(
                load_time_s=float(np.median(self.load_times)),
                load_time_samples_s=list(self.load_times),
                weights_bytes=ev["weights_bytes"],
                kv_bytes_per_token=ev["kv_bytes_per_token"],
                peak_mem_bytes=self._peak(ev),
            )
        elif e == "accuracy":
            cur["accuracy"] = ev["accuracy"]
        elif e == "accuracy_error":
            cur["accuracy_error"] = ev["error"]
        elif e == "point":
            self._on_point(ev)
        elif e == "done":
            cur.update(peak_mem_bytes=self._peak(ev), wall_s=(cur.get("wall_s") or 0.0) + ev["wall_s"])
        elif e == "error":
            self.errors.append(ev["error"])
        self.rec.write(complete=False)

    def _on_point(self, ev: Event) -> None:
        # A point is re-sent after every round with all its samples so far: replace it.
        point = Point.model_validate(ev["point"])
        key = (point.phase, point.batch_size, point.seq_len)
        if ev.get("round_median") is not None:
            self.round_medians.setdefault(key, []).append(float(ev["round_median"]))
        pts = self.cur["points"]
        at = next((j for j, q in enumerate(pts) if (q["phase"], q["batch_size"], q["seq_len"]) == key), None)
        if at is None:
            pts.append(point.model_dump())
        else:
            pts[at] = point.model_dump()
        self.cur["peak_mem_bytes"] = self._peak(ev)
        n = len(self.grid)
        done = int(ev.get("round", 0)) * n + (at + 1 if at is not None else len(pts))
        self.notify("point", {"variant": self.cur["name"], "point": point, "done": done, "total": self.rounds * n})

    def prior(self) -> dict[str, Any]:
        """What earlier workers measured of each grid point (by grid index), for the next to go on from."""
        prior = {}
        for i, (phase, b, s) in enumerate(self.grid):
            q = next(
                (q for q in self.cur["points"] if (q["phase"], q["batch_size"], q["seq_len"]) == (phase, b, s)), None
            )
            if q is not None:
                prior[str(i)] = {
                    "samples": q["samples_s"],
                    "medians": self.round_medians.get((phase, b, s), []),
                    "calibration": q.get("calibration_samples_s") or [],
                    "error": q.get("error"),
                }
        return prior


def _measure_variant(
    spec: ModelSpec,
    v: VariantDef,
    kind: str,
    grid: list[tuple[str, int, int]],
    settings: ProfileSettings,
    threads: int,
    prepared: dict[str, Any],
    mwd: Path,
    rec: _Recorder,
    notify: Callable[[str, dict[str, Any]], None],
    fault: FaultInjection | None,
) -> None:
    cur = _entry(spec, v, kind, "incomplete", points=[], warnings=[], window_tokens=int(prepared["max_len"]))
    rec.current = cur
    timing = settings.timing
    rounds = max(timing.rounds, 1)
    n_proc = 1 if v.compiles else max(1, min(timing.processes, rounds))
    # Rounds of process k: an even split, in order.
    plan = [list(range(k * rounds // n_proc, (k + 1) * rounds // n_proc)) for k in range(n_proc)]
    base_job = {
        "mode": "measure",
        "spec": spec.text,
        "variant": v.name,
        "workdir": str(mwd),
        "threads": threads,
        "grid": grid,
        "timing": timing.model_dump(),
        "model_kind": kind,
        "onnx_paths": prepared.get("onnx_paths") or {},
        "reference_error": prepared.get("reference_error"),
    }
    events = _VariantEvents(cur, grid, rounds, rec, notify)
    notify("variant", {"model": spec.text, "variant": v.name, "points": len(grid)})

    ok = True
    w: _Worker | None = None
    for k, my_rounds in enumerate(plan):
        job = {
            **base_job,
            "rounds": my_rounds,
            "prior": events.prior(),
            "accuracy": k == 0,
            "fault": asdict(fault) if fault is not None and fault.variant == v.name and k == 0 else None,
        }
        try:
            w, ok = _run_worker(job, mwd, f"{v.name}.{k}", events.on_event)
        except KeyboardInterrupt:
            cur["status"] = "incomplete"
            cur["warnings"].append("interrupted (Ctrl-C) before the grid was finished")
            raise
        if not ok or events.errors:
            break
    assert w is not None
    _conclude(cur, len(grid), ok, events.errors, w, kind == "decoder", settings.seed)
    rec.current = None
    _record(rec, notify, Variant.model_validate(cur))


def _conclude(
    cur: dict[str, Any], n_grid: int, ok: bool, errors: list[str], w: _Worker, decoder: bool, seed: int
) -> None:
    """Give the variant entry ``cur``, its workers done, its status, error, warnings and
    latency model. ``ok``: the last worker finished cleanly."""
    points = [Point.model_validate(p) for p in cur["points"]]
    if ok and not errors:
        cur["status"] = "measured" if any(p.status == "measured" for p in points) else "failed"
        if cur["status"] == "failed":
            cur["error"] = "every grid point failed; first error: " + next((p.error or "" for p in points), "")
    else:
        cur["status"] = "failed"
        where = f" after {len(points)} of {n_grid} points" if points or "load_time_s" in cur else " while loading"
        cur["error"] = (errors[0] if errors else w.exit_description()) + where
    failed = [p for p in points if p.status == "failed"]
    if failed:
        cur["warnings"].append(f"{len(failed)} grid point(s) failed; first: {failed[0].error}")
    unstable = [p for p in points if p.status == "measured" and not p.stable]
    if unstable:
        cur["warnings"].append(f"{len(unstable)} of {len(points)} points unstable; first: {unstable[0].instability}")
    lm = fit_latency_model(points, decoder, seed=seed)
    if lm is not None:
        cur["latency_model"] = lm.model_dump()
    elif any(p.status == "measured" for p in points):
        cur["warnings"].append("too few measured points to fit a latency model (need 4)")


def _record(rec: _Recorder, notify: Callable[[str, dict[str, Any]], None], variant: Variant) -> None:
    """A variant is finished (measured, failed or skipped): keep it, save, tell."""
    rec.replace(variant)
    rec.write(complete=False)
    notify("variant_done", {"variant": variant})
