"""The ``Profile`` artifact and the evaluation of its fitted latency models.

``profiler/`` measures and writes a profile; ``simulator/``, ``advisor/`` and
``serving/`` read it through this module, which needs numpy only (no torch, no
scikit-learn: fitted models are stored as plain numbers and evaluated here).

A profile answers, per variant and in seconds:

- ``batch_time(batch_size, seq_len)``: one forward pass of a batch (classic models);
- ``step_time(prefill_tokens, decode_seqs, context_tokens)``: one iteration of an LLM
  engine, plus ``kv_bytes_per_token``;
- ``generation_time(batch_size, prompt_len, output_len)``: a static batch generated to
  the end (prefill, then one decode step per output token), built from ``step_time``.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from servewise.config import Frozen, format_validation_error
from servewise.errors import ArtifactError, ConfigError
from servewise.io import atomic_write_text, read_json

__all__ = [
    "PROFILE_SCHEMA_VERSION",
    "Hardware",
    "LatencyStats",
    "Point",
    "Accuracy",
    "ServingCalibration",
    "Tree",
    "LatencyModel",
    "Variant",
    "Profile",
    "load_profile",
    "save_profile",
    "tokens_fingerprint",
    "batch_features",
    "step_features",
    "BATCH_FEATURES",
    "STEP_FEATURES",
    "CALIBRATION_KERNEL",
]

PROFILE_SCHEMA_VERSION = 1

#: What a point's ``calibration_samples_s`` times: one call is this fp32 matrix product
#: and ReLU (FFN-sized, ~0.45 GFLOP) on the variant's intra-op threads, in torch (CPU
#: variants run in torch only; ONNX Runtime and CUDA variants record none). Its speed
#: moves with the machine's (other tenants, frequency, memory bandwidth): over 8 fresh
#: processes its run-to-run spread was 2.6% against MiniLM's 3.1%, and MiniLM's latency
#: over it spread 0.75% (README, "The gate").
CALIBRATION_KERNEL = "relu(A @ B), A: 384x384, B: 384x1536, float32, seeded"

#: Features of a classic (one forward pass) latency model, in order.
BATCH_FEATURES = ("batch_size", "batch_tokens", "batch_tokens_sq")
#: Features of an LLM iteration latency model, in order.
STEP_FEATURES = ("prefill_tokens", "prefill_tokens_sq", "decode_seqs", "context_tokens", "prefill_active")


class _Art(Frozen):
    """Artifacts are written by servewise and read back: tolerate no unknown keys either."""


class Hardware(_Art):
    """Fingerprint of the machine a profile was measured on (or, if estimated, for)."""

    cpu_model: str
    cpu_count: int = Field(ge=1, description="Logical CPUs this process may use.")
    threads_used: int = Field(ge=1, description="Intra-op threads the measurement ran with.")
    mem_bytes: int = Field(ge=0)
    cpu_flags: list[str] = Field(default_factory=list, description="Relevant ISA flags (avx512_bf16, amx_tile, ...).")
    gpu_name: str | None = None
    gpu_mem_bytes: int | None = None
    gpu_driver: str | None = None
    cuda_version: str | None = None
    platform: str = ""
    python_version: str = ""
    torch_version: str | None = None
    onnxruntime_version: str | None = None
    tensorrt_version: str | None = None
    catalog_name: str | None = Field(default=None, description="Hardware catalog entry (set by `profile transfer`).")


class LatencyStats(_Art):
    """Exact statistics of one grid point's samples, seconds."""

    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    iqr: float
    cv: float = Field(description="Standard deviation over mean.")
    n: int = Field(ge=1)
    ci_rel: float = Field(description="Half-width of the 95% confidence interval of the median, over the median.")


class Point(_Art):
    """One grid point: a batch of ``batch_size`` sequences of ``seq_len`` tokens.

    ``phase`` is ``forward`` (classic/encoder), ``prefill`` (``seq_len`` is the prompt
    length) or ``decode`` (one new token per sequence; ``seq_len`` is the context length).
    """

    phase: Literal["forward", "prefill", "decode"]
    batch_size: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    status: Literal["measured", "failed"]
    latency_s: LatencyStats | None = None
    samples_s: list[float] = Field(default_factory=list, description="Raw timings after warm-up, seconds.")
    round_medians_s: list[float] = Field(
        default_factory=list,
        description="Median of each round's samples, in round order (rounds run in fresh processes): "
        "how far the point moves between runs.",
    )
    calibration_samples_s: list[float] = Field(
        default_factory=list,
        description="Timings of the fixed calibration kernel (CALIBRATION_KERNEL) run in the same processes "
        "just before each round of this point: the machine's speed at the time, so a gate can cancel drift.",
    )
    stable: bool = True
    instability: str | None = Field(default=None, description="Why the point is unstable and what to do.")
    error: str | None = None

    @property
    def calibration_s(self) -> float | None:
        """Median of the calibration kernel's timings, or None when it was not run."""
        return float(np.median(self.calibration_samples_s)) if self.calibration_samples_s else None

    @model_validator(mode="after")
    def _check(self) -> Point:
        if self.status == "measured" and (self.latency_s is None or not self.samples_s):
            raise ValueError("a measured point needs latency_s and samples_s")
        if self.status == "failed" and not self.error:
            raise ValueError("a failed point needs its error")
        return self


class Accuracy(_Art):
    """Drift of a variant's outputs against the reference variant on fixed inputs."""

    reference: str = Field(description="Variant name of the reference (fp32).")
    metric: Literal["next_token", "embedding", "output"]
    n_inputs: int = Field(ge=1)
    top1_agreement: float | None = Field(default=None, ge=0, le=1, description="Decoders: next-token argmax agreement.")
    mean_kl: float | None = Field(default=None, ge=0, description="Decoders: mean KL(reference || variant), nats.")
    cosine_mean: float | None = Field(default=None, ge=-1, le=1, description="Encoders: mean cosine similarity.")
    cosine_min: float | None = Field(default=None, ge=-1, le=1)
    max_abs_diff: float | None = Field(default=None, ge=0, description="Largest absolute output difference.")


class ServingCalibration(_Art):
    """The variant measured through the live serving path (``servewise calibrate``).

    What the forward-pass profile cannot see: the time a request spends outside the
    replica slot (client and router HTTP, parsing, the router→worker hop, encoding the
    answer), and how the live service time compares with the back-to-back profile
    (padding, pooling, slow-down after idle gaps). The simulator charges both.
    """

    overhead_samples_s: list[float] = Field(
        min_length=1,
        description="Per request: client latency − the replica's queue and service time, seconds (a sample of at most 4000).",
    )
    service_scale: float = Field(
        gt=0, description="Live service time per second of the profile's prediction (the slope of the fit)."
    )
    service_fixed_s: float = Field(
        default=0.0,
        ge=0,
        description="Live seconds per service beyond the scaled prediction (the fit's intercept: padding, "
        "pooling, converting the answer); 0 when the shapes were too alike to tell it from the scale.",
    )
    service_cv: float = Field(ge=0, description="Coefficient of variation of that ratio (the live spread).")
    requests: int = Field(ge=1, description="Requests the calibration measured.")
    trace_source: str = Field(description="The traffic it was fitted on (validate refuses to judge on it).")
    tokens_sha256: str = Field(
        description="SHA-256 of the calibration requests' input_tokens (int64): the same window at any rate has the same."
    )
    threads: int = Field(ge=1, description="Intra-op threads of the served replica.")
    idle_edges_s: list[float] = Field(
        default_factory=list,
        description="Upper edges of the idle-gap bins of idle_factors, seconds, increasing (the last bin is open).",
    )
    idle_factors: list[float] = Field(
        default_factory=list,
        description="Per idle-gap bin, the live service over the fit for services that started after that long "
        "with nothing running on the replica (caches and frequency cool down); empty when not measured.",
    )
    host_cpu_per_request_s: float | None = Field(
        default=None,
        ge=0,
        description="CPU seconds the router and the load generator spent per request (what a local host's "
        "replicas share their cores with), their idle CPU left out; None in calibrations made before it was measured.",
    )
    host_background_cores: float | None = Field(
        default=None,
        ge=0,
        description="CPU the router spends whatever the traffic (its event loop, health, metrics), cores; None "
        "when not measured.",
    )
    created_utc: str

    @model_validator(mode="after")
    def _idle_bins(self) -> ServingCalibration:
        e, f = self.idle_edges_s, self.idle_factors
        if (e or f) and len(f) != len(e) + 1:
            raise ValueError(f"idle_factors needs one factor per bin: {len(e) + 1} for {len(e)} edges, got {len(f)}")
        if any(b <= a for a, b in zip(e, e[1:], strict=False)) or any(x <= 0 for x in e):
            raise ValueError("idle_edges_s must be positive and increasing")
        if any(not (x > 0 and math.isfinite(x)) for x in f):
            raise ValueError("idle_factors must be positive numbers")
        return self

    @property
    def overhead_mean_s(self) -> float:
        return float(np.mean(self.overhead_samples_s))

    def idle_factor(self, idle_s: float) -> float:
        """The factor on a service that starts after ``idle_s`` with nothing running (1 when not measured)."""
        if not self.idle_factors:
            return 1.0
        return self.idle_factors[bisect.bisect_right(self.idle_edges_s, idle_s)]


class Tree(_Art):
    """One regression tree, as scikit-learn stores it (leaves have ``left == -1``)."""

    left: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]
    value: list[float]


class LatencyModel(_Art):
    """A fitted latency model: ``batch_time`` or ``step_time`` in seconds.

    ``linear``: ``intercept_s + coef_s · features`` (non-negative coefficients, fitted
    for relative error). ``tree_ensemble``: gradient-boosted trees on
    ``log(latency)``: ``exp(init + learning_rate · Σ tree(features))``.
    ``cv_mape`` is the held-out mean absolute percentage error (0.05 = 5%) of the
    chosen model; ``candidates`` has every candidate's.
    """

    target: Literal["batch_time", "step_time"]
    kind: Literal["linear", "tree_ensemble"]
    features: list[str]
    cv_mape: float = Field(ge=0)
    cv_folds: int = Field(ge=2)
    candidates: dict[str, float]
    n_points: int = Field(ge=1)
    intercept_s: float = 0.0
    coef_s: list[float] = Field(default_factory=list)
    init: float = 0.0
    learning_rate: float = 0.0
    trees: list[Tree] = Field(default_factory=list)
    noise_cv: float = Field(
        default=0.0, ge=0, description="Typical run-to-run spread: median over points of IQR / 1.349 / median."
    )

    @model_validator(mode="after")
    def _check(self) -> LatencyModel:
        if self.kind == "linear" and len(self.coef_s) != len(self.features):
            raise ValueError(f"linear model has {len(self.coef_s)} coefficients for {len(self.features)} features")
        if self.kind == "tree_ensemble" and not self.trees:
            raise ValueError("tree_ensemble model has no trees")
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted seconds for feature rows ``x`` (shape ``[n, len(features)]``)."""
        x = np.atleast_2d(np.asarray(x, dtype=float))
        if self.kind == "linear":
            return np.maximum(self.intercept_s + x @ np.asarray(self.coef_s), 1e-9)
        total = np.full(len(x), self.init)
        rows = np.arange(len(x))
        # scikit-learn's trees route float32(x) <= threshold (they predict on float32 input).
        x = x.astype(np.float32).astype(np.float64)
        for t in self.trees:
            left = np.asarray(t.left)
            right = np.asarray(t.right)
            feat = np.asarray(t.feature)
            thr = np.asarray(t.threshold)
            node = np.zeros(len(x), dtype=np.int64)
            while True:
                inner = left[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, np.maximum(feat[node], 0)] <= thr[node]
                node = np.where(inner, np.where(go_left, left[node], right[node]), node)
            total += self.learning_rate * np.asarray(t.value)[node]
        return np.exp(total)


def batch_features(batch_size: np.ndarray | float, seq_len: np.ndarray | float) -> np.ndarray:
    """Rows of :data:`BATCH_FEATURES`: b, b·s, b·s² (the attention term)."""
    b = np.atleast_1d(np.asarray(batch_size, dtype=float))
    s = np.atleast_1d(np.asarray(seq_len, dtype=float))
    b, s = np.broadcast_arrays(b, s)
    return np.column_stack([b, b * s, b * s * s])


def step_features(
    prefill_tokens: np.ndarray | float,
    decode_seqs: np.ndarray | float,
    context_tokens: np.ndarray | float,
    prefill_seqs: np.ndarray | float = 1,
) -> np.ndarray:
    """Rows of :data:`STEP_FEATURES` for one engine iteration each.

    ``prefill_tokens`` new prompt tokens over ``prefill_seqs`` sequences (attention cost
    ≈ prefill_tokens² / prefill_seqs), ``decode_seqs`` sequences decoding one token each
    over ``context_tokens`` cached tokens in all. ``prefill_active`` (1 when the
    iteration prefills anything) carries the fixed cost a prefill adds to an iteration.
    """
    p, d, c, ps = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=float)) for a in (prefill_tokens, decode_seqs, context_tokens, prefill_seqs))
    )
    return np.column_stack([p, p * p / np.maximum(ps, 1.0), d, c, (p > 0).astype(float)])


class Variant(_Art):
    """One (model, variant) measured — or skipped, failed or interrupted — on the hardware."""

    model: str = Field(description="The model SPEC, e.g. builtin:tiny-gpt2.")
    model_kind: Literal["decoder", "encoder", "classic"]
    name: str = Field(description="Variant name: fp32, bf16, int8, onnx-fp32, onnx-int8, cuda-fp16, ...")
    dtype: str
    backend: str
    device: Literal["cpu", "cuda"]
    status: Literal["measured", "skipped", "failed", "incomplete"]
    skip_reason: str | None = None
    error: str | None = None
    estimated: bool = Field(default=False, description="True when transferred by a roofline model, not measured.")
    load_time_s: float | None = Field(default=None, ge=0, description="Disk to first inference: the cold start.")
    load_time_samples_s: list[float] = Field(
        default_factory=list, description="Load time of each worker process; load_time_s is their median."
    )
    peak_mem_bytes: int | None = Field(default=None, ge=0, description="RSS high-water mark (CPU) or allocator peak (GPU).")
    base_mem_bytes: int | None = Field(default=None, ge=0, description="The worker's RSS before loading the model.")
    weights_bytes: int | None = Field(default=None, ge=0, description="Size of the variant's serialized weights.")
    kv_bytes_per_token: int | None = Field(default=None, ge=0)
    window_tokens: int | None = Field(
        default=None,
        ge=2,
        description="The model's context window (max_len), tokens: what serving clips prompts to. "
        "None in profiles made before it was recorded (then nothing is clipped).",
    )
    accuracy: Accuracy | None = None
    accuracy_error: str | None = None
    points: list[Point] = Field(default_factory=list)
    latency_model: LatencyModel | None = None
    serving: ServingCalibration | None = Field(
        default=None, description="Measured through the live serving path (servewise calibrate); None until then."
    )
    warnings: list[str] = Field(default_factory=list)
    wall_s: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Variant:
        if self.status == "skipped" and not self.skip_reason:
            raise ValueError(f"variant {self.name}: skipped needs a skip_reason")
        if self.status == "failed" and not self.error:
            raise ValueError(f"variant {self.name}: failed needs its error")
        return self

    @property
    def label(self) -> str:
        return f"{self.model}/{self.name}"

    def _model(self, target: str) -> LatencyModel:
        if self.latency_model is None:
            raise ConfigError(f"variant {self.label} ({self.status}) has no fitted latency model")
        if self.latency_model.target != target:
            raise ConfigError(
                f"variant {self.label} is a {self.model_kind} model; it has {self.latency_model.target}, not {target}"
            )
        return self.latency_model

    def batch_time(self, batch_size: np.ndarray | float, seq_len: np.ndarray | float) -> np.ndarray:
        """Seconds of one forward pass of ``batch_size`` sequences of ``seq_len`` tokens."""
        return self._model("batch_time").predict(batch_features(batch_size, seq_len))

    def step_time(
        self,
        prefill_tokens: np.ndarray | float,
        decode_seqs: np.ndarray | float,
        context_tokens: np.ndarray | float,
        prefill_seqs: np.ndarray | float = 1,
    ) -> np.ndarray:
        """Seconds of one LLM iteration (see :func:`step_features`)."""
        return self._model("step_time").predict(step_features(prefill_tokens, decode_seqs, context_tokens, prefill_seqs))

    def generation_time(self, batch_size: int, prompt_len: int, output_len: int) -> float:
        """Seconds to generate a static batch to the end: one prefill, then a decode step
        per further output token (the first token comes from the prefill)."""
        lm = self._model("step_time")
        b = float(batch_size)
        t = float(lm.predict(step_features(b * prompt_len, 0, 0, b))[0])
        steps = max(int(output_len) - 1, 0)
        if steps:
            ctx = prompt_len + np.arange(1, steps + 1, dtype=float)
            t += float(lm.predict(step_features(0, b, b * ctx)).sum())
        return t

    def unstable_points(self) -> list[Point]:
        """The measured points the profiler flagged unstable (see ``Point.instability``)."""
        return [p for p in self.points if p.status == "measured" and not p.stable]

    def instability(self, shown: int = 2) -> str | None:
        """One line on the unstable points (how many, the first ``shown`` and why); None when there are none."""
        bad = self.unstable_points()
        if not bad:
            return None
        n = sum(p.status == "measured" for p in self.points)
        first = "; ".join(
            f"{p.phase} b={p.batch_size} s={p.seq_len}: {(p.instability or 'unstable').split('. Other load')[0]}"
            for p in bad[:shown]
        )
        more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
        return f"{len(bad)} of {n} points flagged unstable ({first}{more})"

    def served_prompt(self, input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
        """The prompt tokens serving runs for requests (or batches, by their longest member).

        What ``servewise serve`` does: a decoder's prompt is cut from the left to
        ``window_tokens − output + 1`` (prompt + output fit the window), an encoder's or
        classic model's input to ``window_tokens``; at least 1 token. Unchanged without a
        recorded window.
        """
        inp = np.maximum(np.asarray(input_tokens, dtype=np.int64), 1)
        w = self.window_tokens
        if w is None:
            return inp
        if self.model_kind == "decoder":
            keep = w - np.maximum(np.asarray(output_tokens, dtype=np.int64), 1) + 1
            return np.maximum(np.minimum(inp, keep), 1)
        return np.minimum(inp, w)

    def over_window(self, output_tokens: np.ndarray) -> np.ndarray | None:
        """Per request: a decoder output that cannot fit the window with one prompt token
        (``output > window_tokens − 1``), refused with 422 by the server; None when nothing is."""
        if self.window_tokens is None or self.model_kind != "decoder":
            return None
        over = np.asarray(output_tokens, dtype=np.int64) > self.window_tokens - 1
        return over if over.any() else None

    def service_time(self, batch_size: int, input_tokens: int, output_tokens: int) -> float:
        """Seconds to serve a batch whose longest request has these token counts."""
        if self.model_kind == "decoder":
            return self.generation_time(batch_size, max(int(input_tokens), 1), max(int(output_tokens), 1))
        return float(self.batch_time(batch_size, max(int(input_tokens), 1))[0])

    @property
    def accuracy_drift(self) -> float | None:
        """Drift from the fp32 reference: decoders mean KL (nats), others 1 − mean cosine; None if unmeasured."""
        a = self.accuracy
        if a is None:
            return None
        if a.mean_kl is not None:
            return a.mean_kl
        if a.cosine_mean is not None:
            return max(1.0 - a.cosine_mean, 0.0)
        return None

    @property
    def noise_cv(self) -> float:
        """Run-to-run spread of service times: the live one when calibrated, else the profile's."""
        if self.serving is not None:
            return self.serving.service_cv
        return self.latency_model.noise_cv if self.latency_model else 0.0

    @property
    def service_scale(self) -> float:
        """Live service time per second of the profile's prediction (1 until calibrated)."""
        return self.serving.service_scale if self.serving is not None else 1.0

    @property
    def service_fixed_s(self) -> float:
        """Live seconds per service beyond the scaled prediction (0 until calibrated)."""
        return self.serving.service_fixed_s if self.serving is not None else 0.0

    def live_time(self, predicted_s: Any) -> Any:
        """The live service time of a service the profile predicts at ``predicted_s``:
        ``service_fixed_s + service_scale × predicted_s`` (the prediction itself until calibrated)."""
        if self.serving is None:
            return predicted_s
        return self.serving.service_fixed_s + self.serving.service_scale * predicted_s


class Profile(_Art):
    """What ``servewise profile`` writes: the hardware and every variant of every model."""

    schema_version: int = PROFILE_SCHEMA_VERSION
    kind: Literal["profile"] = "profile"
    status: Literal["complete", "incomplete"]
    created_utc: str
    tool_version: str
    hardware: Hardware
    estimated: bool = Field(default=False, description="True for a profile transferred to catalog hardware.")
    transfer: dict[str, object] | None = Field(default=None, description="How an estimated profile was derived.")
    settings: dict[str, object] = Field(default_factory=dict, description="Grid, budgets and seed of the run.")
    variants: list[Variant] = Field(default_factory=list)

    def models(self) -> list[str]:
        return list(dict.fromkeys(v.model for v in self.variants))

    def variant(self, name: str, model: str | None = None) -> Variant:
        """The variant called ``name`` (of ``model`` when the profile holds several models).

        Raises :class:`~servewise.errors.ConfigError` listing what the profile holds.
        """
        models = self.models()
        if model is None:
            if len(models) > 1:
                raise ConfigError(f"profile holds several models ({', '.join(models)}); say which with model.spec")
            model = models[0] if models else None
        elif model not in models:
            raise ConfigError(f"profile has no model {model!r}; it holds: {', '.join(models) or 'none'}")
        for v in self.variants:
            if v.model == model and v.name == name:
                return v
        names = [v.name for v in self.variants if v.model == model]
        raise ConfigError(f"profile has no variant {name!r} of {model}; it holds: {', '.join(names) or 'none'}")


def _read(path: Path) -> dict[str, object]:
    data = read_json(path, "profile file")
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def tokens_fingerprint(input_tokens: np.ndarray) -> str:
    """SHA-256 of a request sequence's prompt lengths: one trace window, whatever its rate."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(np.asarray(input_tokens, dtype=np.int64)).tobytes()).hexdigest()


def load_profile(path: str | Path) -> Profile:
    """Read a profile; unknown schema versions and kinds are refused by name."""
    p = Path(path)
    data = _read(p)
    if data.get("kind") != "profile":
        raise ArtifactError(f"{p}: kind is {data.get('kind')!r}, expected 'profile'")
    if data.get("schema_version") != PROFILE_SCHEMA_VERSION:
        raise ArtifactError(
            f"{p}: profile schema_version {data.get('schema_version')!r} is not supported "
            f"(this servewise reads {PROFILE_SCHEMA_VERSION})"
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise ArtifactError(format_validation_error(err, str(p))) from None


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` atomically (temp file + rename)."""
    atomic_write_text(path, profile.model_dump_json(indent=1) + "\n")

