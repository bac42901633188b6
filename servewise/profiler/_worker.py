"""The worker process: one variant of one model, measured in a fresh interpreter.

``python -m profiler._worker JOB.json EVENTS.jsonl``. The parent writes the job; the
worker appends one JSON event per line and flushes after each, so whatever happens to
the worker later (an exception, SIGKILL from the OOM killer), the parent has every
event before it. SIGINT is ignored here: the parent decides what Ctrl-C means.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from servewise.procs import die_with_parent

if TYPE_CHECKING:
    from servewise.profiler._timing import TimingSettings

__all__ = ["main"]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


class _Events:
    def __init__(self, f: IO[str]) -> None:
        self.f = f

    def emit(self, event: str, **data: Any) -> None:
        self.f.write(json.dumps({"event": event, **data}) + "\n")
        self.f.flush()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torchao").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _probe(job: dict[str, Any], ev: _Events) -> None:
    from servewise.profiler._hardware import capabilities, fingerprint

    ev.emit("probe", hardware=fingerprint(int(job["threads"])), capabilities=capabilities())


def _prepare(job: dict[str, Any], ev: _Events) -> None:
    import numpy as np
    import torch

    from servewise.profiler._models import accuracy_inputs, export_onnx, load_model, materialize
    from servewise.profiler._spec import parse_spec

    torch.set_num_threads(int(job["threads"]))
    spec = parse_spec(job["spec"])
    workdir = Path(job["workdir"])
    materialize(spec, workdir)
    loaded = load_model(spec, workdir)
    acc = accuracy_inputs(loaded)
    from servewise.profiler._models import TorchRunner

    arrays: dict[str, Any] = {"vocab_size": np.array(loaded.vocab_size), **acc}
    reference_error = None
    try:
        arrays["outputs"] = TorchRunner(loaded, loaded.module, torch.float32, "cpu", acc).outputs()
    except Exception as err:  # noqa: BLE001 - e.g. a static-shape export; timings still count
        reference_error = f"the fp32 reference could not run the accuracy inputs: {_first_line(err)}"
    np.savez(workdir / "reference.npz", **arrays)
    onnx_paths: dict[str, str] = {}
    onnx_errors: dict[str, str] = {}
    if job.get("onnx") and not (loaded.kind == "decoder" and loaded.family == "hf"):
        try:
            onnx_paths, onnx_errors = export_onnx(loaded, workdir, bool(job.get("onnx_int8")))
        except Exception as err:  # noqa: BLE001 - recorded per variant, never hidden
            onnx_errors = {"*": f"ONNX export failed: {_first_line(err)}"}
    ev.emit(
        "prepared",
        model_kind=loaded.kind,
        max_len=loaded.max_len,
        vocab_size=loaded.vocab_size,
        onnx_paths=onnx_paths,
        onnx_errors=onnx_errors,
        reference_error=reference_error,
    )


def _accuracy(ref: Any, out: Any, kind: str, reference: str) -> dict[str, Any]:
    import numpy as np

    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference {ref.shape}")
    acc: dict[str, Any] = {"reference": reference, "n_inputs": int(ref.shape[0])}
    acc["max_abs_diff"] = float(np.max(np.abs(ref - out)))
    if kind == "decoder":

        def log_softmax(x: Any) -> Any:
            x = x - x.max(axis=-1, keepdims=True)
            return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

        lp, lq = log_softmax(ref), log_softmax(out)
        acc["metric"] = "next_token"
        acc["top1_agreement"] = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
        acc["mean_kl"] = float(max(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)), 0.0))
    else:
        a = ref.reshape(ref.shape[0], -1)
        b = out.reshape(out.shape[0], -1)
        cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        acc["metric"] = "embedding" if kind == "encoder" else "output"
        acc["cosine_mean"] = float(np.clip(cos.mean(), -1, 1))
        acc["cosine_min"] = float(np.clip(cos.min(), -1, 1))
    return acc


class _NoAccuracy(Exception):
    pass


CALIBRATION_WARMUP = 2
"""Untimed calls of the calibration kernel before each block: the point timed before
left the caches cold for it, and the first calls after a model's run are up to 40% slower."""
CALIBRATION_CALLS = 10
"""Timed calls of the calibration kernel before each point in each round (about 50 ms on one core)."""


def _calibration(torch: Any) -> Callable[[], list[float]]:
    """The calibration kernel (``servewise.profile.CALIBRATION_KERNEL``): a function that
    runs :data:`CALIBRATION_WARMUP` untimed calls, then times :data:`CALIBRATION_CALLS`
    calls, seconds."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(384, 384, generator=g)
    b = torch.randn(384, 1536, generator=g)

    def once() -> None:
        with torch.inference_mode():
            torch.relu(a @ b)

    def timings() -> list[float]:
        for _ in range(CALIBRATION_WARMUP):
            once()
        out = []
        for _ in range(CALIBRATION_CALLS):
            t = time.perf_counter()
            once()
            out.append(time.perf_counter() - t)
        return out

    return timings


def _measure(job: dict[str, Any], ev: _Events) -> None:
    base = _rss_bytes()
    from servewise.profiler._spec import parse_spec
    from servewise.profiler._timing import TimingSettings
    from servewise.profiler._variants import VARIANTS

    spec = parse_spec(job["spec"])
    variant = VARIANTS[job["variant"]]
    workdir = Path(job["workdir"])
    threads = int(job["threads"])
    pinned = pin_cores(threads)
    cuda = variant.device == "cuda"
    if variant.backend.startswith("onnxruntime"):  # no torch in this process: honest memory
        from servewise.profiler._ort import build_ort_runner as build_runner
    else:
        import torch

        from servewise.profiler._models import build_runner
    ev.emit("start", pid=os.getpid(), base_mem_bytes=base, pinned_cpus=pinned)

    def peak() -> int:
        if cuda:
            return int(torch.cuda.max_memory_allocated())
        return _peak_rss_bytes()

    grid = [tuple(p) for p in job["grid"]]
    t0 = time.perf_counter()
    runner, wbytes, kv = build_runner(spec, variant, workdir, threads, job.get("onnx_paths") or {}, job["model_kind"])
    phase, b, s = grid[0] if grid else ("forward", 1, 8)
    first_run, first_reset = getattr(runner, "forward" if phase == "forward" else "prefill")(int(b), int(s))
    first_run()
    load_time = time.perf_counter() - t0
    ev.emit("loaded", load_time_s=load_time, weights_bytes=wbytes, kv_bytes_per_token=kv, peak_mem_bytes=peak())
    _check_accuracy(job, ev, runner, workdir)

    calibrate = _calibration(torch) if not cuda and not variant.backend.startswith("onnxruntime") else None
    empty_cache = torch.cuda.empty_cache if cuda else None
    _measure_rounds(job, ev, runner, grid, TimingSettings(**job["timing"]), calibrate, empty_cache, peak)
    ev.emit("done", peak_mem_bytes=peak(), wall_s=time.perf_counter() - t0)


def _check_accuracy(job: dict[str, Any], ev: _Events, runner: Any, workdir: Path) -> None:
    """Emit the runner's accuracy against the fp32 reference outputs, or why it has none;
    nothing when an earlier process of this variant measured it (``accuracy`` false)."""
    import numpy as np

    try:
        if not job.get("accuracy", True):
            raise _NoAccuracy
        saved = np.load(workdir / "reference.npz")
        if "outputs" not in saved:
            raise RuntimeError(job.get("reference_error") or "no fp32 reference outputs")
        ref = saved["outputs"]
        ev.emit("accuracy", accuracy=_accuracy(ref, runner.outputs(), job["model_kind"], "fp32"))
    except _NoAccuracy:
        pass  # measured by an earlier process of this variant
    except Exception as err:  # noqa: BLE001 - the variant's timings still count
        ev.emit("accuracy_error", error=str(err) if isinstance(err, RuntimeError) else _first_line(err))


@dataclass
class _PointSamples:
    """One grid point's measurements so far, this process's after the earlier ones' (``prior``)."""

    samples: list[float]
    """Every timed sample, seconds."""
    medians: list[float]
    """The median of each round's samples, seconds."""
    calibration: list[float]
    """Calibration-kernel timings taken before the point in each round, seconds."""
    error: str | None
    """Why the point failed (it is not measured again); None while it has not."""

    @classmethod
    def from_prior(cls, prior: dict[str, Any]) -> _PointSamples:
        return cls(
            samples=list(prior.get("samples", [])),
            medians=list(prior.get("medians", [])),
            calibration=list(prior.get("calibration", [])),
            error=prior.get("error"),
        )


def _measure_rounds(
    job: dict[str, Any],
    ev: _Events,
    runner: Any,
    grid: list[tuple[Any, ...]],
    timing: TimingSettings,
    calibrate: Callable[[], list[float]] | None,
    empty_cache: Callable[[], None] | None,
    peak: Callable[[], int],
) -> None:
    """Time every grid point in each of this process's rounds, emitting each point after
    each round with all its samples so far. A point that raises is failed and not timed again."""
    fault = job.get("fault") or {}
    # Rounds: every point gets a share of its samples in each pass over the grid, so a
    # slow drift of the machine spreads over all points instead of biasing some.
    prior = job.get("prior") or {}
    state = [_PointSamples.from_prior(prior.get(str(i), {})) for i in range(len(grid))]
    one_round = timing.round()
    my_rounds = list(job.get("rounds") or range(max(timing.rounds, 1)))
    for r in my_rounds:
        # A fresh process warms up fully; a later round in the same process briefly.
        settings = one_round if r == my_rounds[0] else one_round.with_(warmup_s=one_round.warmup_s / 4)
        for i, (phase, b, s) in enumerate(grid):
            st = state[i]
            if st.error is not None:
                continue
            point: dict[str, Any] = {"phase": phase, "batch_size": int(b), "seq_len": int(s)}
            try:
                if r == 0 and fault.get("point") == i:
                    if fault.get("mode") == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    raise RuntimeError("injected fault (test)")
                point.update(_measure_point(runner, phase, int(b), int(s), settings, st, calibrate, timing.target_ci))
            except Exception as err:  # noqa: BLE001 - one failed point must not lose the others
                st.error = _first_line(err)
                point.update(status="failed", error=st.error)
                if empty_cache is not None:
                    empty_cache()
            ev.emit(
                "point",
                point=point,
                round=r,
                round_median=st.medians[-1] if st.medians else None,
                peak_mem_bytes=peak(),
            )


def _measure_point(
    runner: Any,
    phase: str,
    batch: int,
    seq: int,
    settings: TimingSettings,
    st: _PointSamples,
    calibrate: Callable[[], list[float]] | None,
    target_ci: float,
) -> dict[str, Any]:
    """One round of one grid point, added to ``st``: the point's fields as measured so far."""
    import numpy as np

    from servewise.profiler._timing import latency_stats, measure, stability

    make = {"forward": runner.forward, "prefill": runner.prefill, "decode": runner.decode}[phase]
    run, reset = make(batch, seq)  # rebuilt every round: only one point's inputs live at a time
    if calibrate is not None:
        st.calibration += calibrate()
    m = measure(run, settings, reset=reset, prior=st.samples)
    del run, reset
    st.samples += m.samples_s
    st.medians.append(float(np.median(m.samples_s)))
    ci, stable, why = stability(st.samples, st.medians, target_ci)
    return {
        "status": "measured",
        "samples_s": st.samples,
        "round_medians_s": st.medians,
        "calibration_samples_s": st.calibration,
        "latency_s": latency_stats(st.samples, ci),
        "stable": stable,
        "instability": why,
    }


def pin_cores(threads: int) -> list[int] | None:
    """Pin this worker to ``threads`` CPUs (the last of those it may use) when that leaves
    some free: the timed thread stops migrating between cores and sharing one with the
    parent. None where the OS has no affinity call or every CPU is needed."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if threads >= len(cpus):
            return None
        chosen = cpus[-threads:]
        os.sched_setaffinity(0, chosen)
        return chosen
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()  # a killed `servewise profile` takes its worker with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _quiet()
    job = json.loads(Path(args[0]).read_text())
    with open(args[1], "a") as f:
        ev = _Events(f)
        try:
            {"probe": _probe, "prepare": _prepare, "measure": _measure}[job["mode"]](job, ev)
        except Exception as err:  # noqa: BLE001 - reported to the parent as one line
            from servewise.errors import ServewiseError

            msg = str(err) if isinstance(err, ServewiseError) else _first_line(err)
            ev.emit("error", error=msg, traceback=traceback.format_exc(limit=8))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
