"""The typed contracts between stages: a :class:`Deployment` and its parts.

Every model is a frozen pydantic v2 model with ``extra="forbid"``: a misspelt key is an
error naming it, never silently ignored. YAML in (:func:`load_deployment`), YAML out
(:func:`dump_deployment`). Seconds and bytes everywhere; names carry the unit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servewise.errors import ArtifactError, ConfigError
from servewise.io import read_text

if TYPE_CHECKING:  # servewise.profile imports this module: import it lazily at run time
    from servewise.profile import Variant

__all__ = [
    "Frozen",
    "ServiceTime",
    "Exponential",
    "Deterministic",
    "Uniform",
    "LogNormal",
    "HyperExponential",
    "Empirical",
    "Linear",
    "ModelRef",
    "Balancer",
    "Batching",
    "Cache",
    "Queue",
    "Scaling",
    "Pool",
    "Faults",
    "Host",
    "SLO",
    "ContinuousEngine",
    "Deployment",
    "load_deployment",
    "dump_deployment",
    "parse_deployment",
    "format_validation_error",
    "read_yaml",
]


class Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- service time


class _Dist(Frozen):
    """A service-time distribution of one request (seconds), before any speed factor."""

    @property
    def mean(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def variance(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class Exponential(_Dist):
    """Exponential service time (memoryless): M/M/c queues."""

    distribution: Literal["exponential"] = "exponential"
    mean_s: float = Field(gt=0, description="Mean service time, seconds.")

    @property
    def mean(self) -> float:
        return self.mean_s

    @property
    def variance(self) -> float:
        return self.mean_s**2


class Deterministic(_Dist):
    """Every request takes exactly ``mean_s``: M/D/c queues."""

    distribution: Literal["deterministic"] = "deterministic"
    mean_s: float = Field(gt=0, description="Service time, seconds.")

    @property
    def mean(self) -> float:
        return self.mean_s

    @property
    def variance(self) -> float:
        return 0.0


class Uniform(_Dist):
    """Uniform on [low_s, high_s]."""

    distribution: Literal["uniform"] = "uniform"
    low_s: float = Field(ge=0, description="Smallest service time, seconds.")
    high_s: float = Field(gt=0, description="Largest service time, seconds (> low_s).")

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if not self.high_s > self.low_s:
            raise ValueError(f"high_s must be > low_s, got low_s={self.low_s}, high_s={self.high_s}")
        return self

    @property
    def mean(self) -> float:
        return (self.low_s + self.high_s) / 2

    @property
    def variance(self) -> float:
        return (self.high_s - self.low_s) ** 2 / 12


class _MeanCV(_Dist):
    """A distribution given by its mean and coefficient of variation."""

    mean_s: float = Field(gt=0, description="Mean service time, seconds.")
    cv: float = Field(gt=0, description="Coefficient of variation (std / mean).")

    @property
    def mean(self) -> float:
        return self.mean_s

    @property
    def variance(self) -> float:
        return (self.cv * self.mean_s) ** 2


class LogNormal(_MeanCV):
    """Log-normal with the given mean and coefficient of variation (heavy-ish tail)."""

    distribution: Literal["lognormal"] = "lognormal"


class HyperExponential(_MeanCV):
    """Two-phase hyperexponential with balanced means: mean ``mean_s``, CV ``cv`` >= 1."""

    distribution: Literal["hyperexponential"] = "hyperexponential"
    cv: float = Field(ge=1, description="Coefficient of variation, >= 1.")


class Empirical(_Dist):
    """Resample measured service times uniformly (with replacement).

    Give the samples inline (``samples_s``) or as a file of one number per line
    (``samples_file``, relative to the deployment file).
    """

    distribution: Literal["empirical"] = "empirical"
    samples_s: tuple[float, ...] | None = Field(default=None, description="Service-time samples, seconds.")
    samples_file: str | None = Field(default=None, description="File with one sample (seconds) per line.")

    @model_validator(mode="after")
    def _one_source(self) -> Empirical:
        if (self.samples_s is None) == (self.samples_file is None):
            raise ValueError("give exactly one of samples_s or samples_file")
        if self.samples_s is not None:
            if len(self.samples_s) == 0:
                raise ValueError("samples_s must hold at least one sample")
            bad = [s for s in self.samples_s if not (s >= 0 and math.isfinite(s))]
            if bad:
                raise ValueError(f"samples_s must be finite numbers >= 0, got {bad[0]!r}")
        return self

    @property
    def mean(self) -> float:
        if self.samples_s is None:
            raise ConfigError("empirical samples_file is not loaded; resolve it first")
        return float(sum(self.samples_s) / len(self.samples_s))

    @property
    def variance(self) -> float:
        if self.samples_s is None:
            raise ConfigError("empirical samples_file is not loaded; resolve it first")
        m = self.mean
        return float(sum((s - m) ** 2 for s in self.samples_s) / len(self.samples_s))


class Linear(_Dist):
    """Parametric latency model: ``base_s + per_item_s·batch + per_*_token_s·tokens``.

    For one request: ``base_s + per_item_s + per_input_token_s·in + per_output_token_s·out``.
    For a batch the token terms add over its members. ``noise_cv`` > 0 multiplies each
    time by a log-normal factor of mean 1 and that CV.
    """

    distribution: Literal["linear"] = "linear"
    base_s: float = Field(default=0.0, ge=0, description="Fixed cost of one forward pass, seconds.")
    per_item_s: float = Field(default=0.0, ge=0, description="Cost of each batch member, seconds.")
    per_input_token_s: float = Field(default=0.0, ge=0, description="Cost per input token, seconds.")
    per_output_token_s: float = Field(default=0.0, ge=0, description="Cost per output token, seconds.")
    noise_cv: float = Field(default=0.0, ge=0, description="CV of a multiplicative log-normal noise.")

    @model_validator(mode="after")
    def _positive(self) -> Linear:
        if self.base_s + self.per_item_s <= 0 and self.per_input_token_s + self.per_output_token_s <= 0:
            raise ValueError("at least one of base_s, per_item_s, per_input_token_s, per_output_token_s must be > 0")
        return self

    @property
    def mean(self) -> float:
        raise ConfigError("the mean of a linear service time depends on the trace's tokens")

    @property
    def variance(self) -> float:
        raise ConfigError("the variance of a linear service time depends on the trace's tokens")


ServiceTime = Annotated[
    Exponential | Deterministic | Uniform | LogNormal | HyperExponential | Empirical | Linear,
    Field(discriminator="distribution"),
]


def _unusable(v: Variant) -> str | None:
    """Why a profile variant cannot give service times, or None when it can."""
    if v.status != "measured" and not v.estimated:
        why = v.skip_reason or v.error or "its measurement did not finish"
        return f"variant {v.name!r} of {v.model} is {v.status} ({why})"
    if v.latency_model is None:
        return f"variant {v.name!r} of {v.model} has no fitted latency model"
    return None


class ModelRef(Frozen):
    """A profiled model variant whose latency model gives the service times.

    ``load_deployment`` reads ``profile`` (relative to the deployment file) and puts the
    variant in ``resolved``; library users may pass an already-loaded variant there.
    ``resolved`` is never written to YAML and plays no part in hashing.
    """

    profile: str = Field(min_length=1, description="Profile JSON file, relative to the deployment file.")
    variant: str = Field(min_length=1, description="Variant name in the profile, e.g. fp32 or int8.")
    spec: str | None = Field(
        default=None, min_length=1, description="Which model of the profile (its SPEC), when it holds several."
    )
    resolved: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="The loaded servewise.profile.Variant (set by load_deployment; never written to YAML).",
    )

    @field_validator("resolved")
    @classmethod
    def _is_variant(cls, v: Any) -> Any:
        from servewise.profile import Variant

        if v is not None and not isinstance(v, Variant):
            raise ValueError(f"resolved must be a servewise.profile.Variant, got {type(v).__name__}")
        return v

    @model_validator(mode="after")
    def _matches(self) -> ModelRef:
        v = self.resolved
        if v is None:
            return self
        if v.name != self.variant:
            raise ValueError(f"resolved is variant {v.name!r}, but variant is {self.variant!r}")
        if self.spec is not None and v.model != self.spec:
            raise ValueError(f"resolved is a variant of {v.model}, but spec is {self.spec!r}")
        problem = _unusable(v)
        if problem:
            raise ValueError(f"{problem}: it cannot give service times")
        return self

    def __hash__(self) -> int:  # the resolved variant holds lists; equal refs name the same variant
        return hash((self.profile, self.variant, self.spec))

    def loaded(self) -> Variant:
        """The resolved variant; ConfigError when the profile was not loaded."""
        if self.resolved is None:
            raise ConfigError(
                f"model.profile {self.profile!r} is not loaded: use load_deployment, or pass the variant "
                "as model.resolved"
            )
        v: Variant = self.resolved
        return v


# --------------------------------------------------------------------------- request path


class Balancer(Frozen):
    """Load-balancing policy (see ``servewise.policies.lb_policies``) and its parameters.

    ``d`` is used by ``p2c``; ``virtual_nodes`` by ``consistent_hash``; ``load_bound`` by
    ``consistent_hash`` and ``prefix_affinity``.
    """

    policy: str = Field(default="round_robin", description="Registered balancer name.")
    d: int | None = Field(default=None, ge=1, description="p2c: replicas sampled per request.")
    virtual_nodes: int | None = Field(default=None, ge=1, description="consistent_hash: ring points per replica.")
    load_bound: float | None = Field(
        default=None, gt=1, description="consistent_hash, prefix_affinity: bounded-load factor c > 1."
    )

    @model_validator(mode="after")
    def _known(self) -> Balancer:
        import inspect

        from servewise.errors import UnknownPolicyError
        from servewise.policies import lb_policies

        try:
            cls = lb_policies.get(self.policy)
        except UnknownPolicyError as err:
            raise ValueError(str(err)) from None
        accepted = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "rng")]
        for k in self.params():
            if k not in accepted:
                takes = ", ".join(accepted) if accepted else "no parameters"
                raise ValueError(f"policy {self.policy!r} does not take {k!r} (it takes: {takes})")
        return self

    def params(self) -> dict[str, Any]:
        """The policy's keyword parameters: the fields that were set, besides ``policy``."""
        return {k: v for k, v in self.model_dump(exclude={"policy"}).items() if v is not None}


class Batching(Frozen):
    """Dynamic batching in each replica (Triton-style).

    A free replica slot takes up to ``max_batch_size`` queued requests; it waits at most
    ``max_wait_s`` after the oldest queued request arrived for the batch to fill.
    """

    max_batch_size: int = Field(ge=1, description="Largest batch one slot runs.")
    max_wait_s: float = Field(ge=0, description="Longest a queued request waits for its batch to fill.")
    batch_cost_factor: float = Field(
        default=0.25,
        ge=0,
        description=(
            "Distribution service times only: a batch of n takes one draw × (1 + factor·(n−1)). "
            "0 = a batch costs as much as one request; 1 = no gain from batching."
        ),
    )


class Cache(Frozen):
    """Exact-match response cache in front of the balancer (keyed on the request key)."""

    policy: Literal["lru", "ttl", "fifo"] = Field(default="lru", description="Eviction policy.")
    capacity: int = Field(ge=1, description="Entries held.")
    ttl_s: float | None = Field(default=None, gt=0, description="Entry lifetime after insertion, seconds.")
    hit_latency_s: float = Field(default=0.0, ge=0, description="Latency of a cache hit, seconds.")

    @model_validator(mode="after")
    def _ttl(self) -> Cache:
        if self.policy == "ttl" and self.ttl_s is None:
            raise ValueError("policy 'ttl' needs ttl_s")
        if self.policy == "fifo" and self.ttl_s is not None:
            raise ValueError("policy 'fifo' takes no ttl_s (use 'ttl' or 'lru')")
        return self

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"capacity": self.capacity}
        if self.ttl_s is not None:
            out["ttl_s"] = self.ttl_s
        return out


class Queue(Frozen):
    """Admission control: each replica holds at most ``capacity`` waiting requests.

    A request routed to a replica whose queue is full is rejected and counted.
    ``capacity: null`` means unbounded; 0 means no waiting at all (Erlang loss system).
    """

    capacity: int | None = Field(default=None, ge=0, description="Waiting requests per replica; null = unbounded.")


class Scaling(Frozen):
    """How many replicas run, over time.

    - ``fixed``: the pools' replica counts, all the time.
    - ``autoscale``: every ``interval_s`` the rule sets the count to
      ``ceil(in_flight / target_in_flight)`` within [min, max]; new replicas serve after
      ``cold_start_s``; scale-down waits for ``scale_down_stabilization_s``; removed
      replicas drain their work first.
    - ``serverless``: instances start on demand (the triggering request waits the cold
      start), each serves ``concurrency`` requests at once, and stops ``keep_alive_s``
      after its last request; billed per GB-second plus per request.
    """

    mode: Literal["fixed", "autoscale", "serverless"] = "fixed"
    min_replicas: int | None = Field(default=None, ge=0, description="autoscale: fewest replicas (>= 1).")
    max_replicas: int | None = Field(default=None, ge=1, description="autoscale / serverless: most replicas.")
    target_in_flight: float | None = Field(default=None, gt=0, description="autoscale: in-flight requests per replica.")
    interval_s: float = Field(default=15.0, gt=0, description="autoscale: evaluation interval, seconds.")
    cold_start_s: float = Field(default=0.0, ge=0, description="Time from start of a new replica to its first request.")
    scale_down_stabilization_s: float = Field(default=300.0, ge=0, description="autoscale: scale-down window.")
    scale_up_stabilization_s: float = Field(default=0.0, ge=0, description="autoscale: scale-up window.")
    tolerance: float = Field(default=0.1, ge=0, description="autoscale: no change within ±tolerance of the target.")
    keep_alive_s: float | None = Field(
        default=None, ge=0, description="serverless: idle time before an instance stops."
    )
    memory_bytes: int | None = Field(default=None, gt=0, description="serverless: memory billed per instance.")
    price_per_gb_second_usd: float = Field(default=0.0, ge=0, description="serverless: price per GB-second.")
    price_per_request_usd: float = Field(default=0.0, ge=0, description="serverless: price per request.")
    warm_routing: Literal["newest", "most_recent", "spread"] | None = Field(
        default=None,
        description=(
            "serverless: the free warm instance a request goes to: 'newest' (the default: the "
            "latest started, as AWS Lambda is measured to behave), 'most_recent' (the one last "
            "sent a request) or 'spread' (the load balancer chooses among all)."
        ),
    )
    billing: Literal["busy", "instance"] = Field(
        default="busy",
        description=(
            "serverless: 'busy' bills GB-seconds while an instance starts or serves a request "
            "(Lambda, Cloud Run request-based); 'instance' bills its whole life incl. keep-alive."
        ),
    )

    @property
    def warm_rule(self) -> Literal["newest", "most_recent", "spread"]:
        """serverless: ``warm_routing``, ``newest`` when unset."""
        return self.warm_routing or "newest"

    @model_validator(mode="after")
    def _mode_fields(self) -> Scaling:
        if self.mode == "autoscale":
            missing = [f for f in ("min_replicas", "max_replicas", "target_in_flight") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"mode 'autoscale' needs {', '.join(missing)}")
            assert self.min_replicas is not None and self.max_replicas is not None
            if self.min_replicas < 1:
                raise ValueError("autoscale needs min_replicas >= 1 (scale to zero is mode 'serverless')")
            if self.min_replicas > self.max_replicas:
                raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
            if self.warm_routing is not None:
                raise ValueError("warm_routing is for mode 'serverless' (autoscale uses the load balancer)")
        elif self.mode == "serverless":
            missing = [f for f in ("max_replicas", "keep_alive_s") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"mode 'serverless' needs {', '.join(missing)}")
            if (self.price_per_gb_second_usd > 0) and self.memory_bytes is None:
                raise ValueError("price_per_gb_second_usd needs memory_bytes")
        else:
            extra = [
                f
                for f in ("min_replicas", "max_replicas", "target_in_flight", "keep_alive_s", "warm_routing")
                if getattr(self, f) is not None
            ]
            if extra:
                raise ValueError(f"mode 'fixed' takes no {', '.join(extra)}")
        return self


class Pool(Frozen):
    """A group of identical replicas on one instance type (vertical scaling)."""

    name: str = Field(min_length=1, description="Pool name (unique).")
    instance_type: str = Field(default="local", description="Instance type, e.g. from a cloud catalog.")
    replicas: int = Field(ge=0, description="Replicas at start (fixed mode: always).")
    speed_factor: float = Field(default=1.0, gt=0, description="Service times are divided by this.")
    price_per_hour_usd: float = Field(default=0.0, ge=0, description="On-demand price of one replica.")
    concurrency: int | None = Field(default=None, ge=1, description="Overrides the deployment's concurrency.")
    weight: float | None = Field(default=None, gt=0, description="Balancer weight; default speed_factor × concurrency.")


class Faults(Frozen):
    """Replica failures: exponential time to failure (mean ``mtbf_s``) and to repair."""

    mtbf_s: float = Field(gt=0, description="Mean time between failures of one replica, seconds.")
    mttr_s: float = Field(
        gt=0, description="Mean time to repair, seconds; the repaired replica then reloads (scaling.cold_start_s)."
    )
    repair: Literal["exponential", "deterministic"] = Field(default="exponential", description="Repair-time law.")
    on_failure: Literal["retry", "fail"] = Field(
        default="retry", description="In-flight and queued requests of a failed replica: retry elsewhere or fail."
    )
    max_retries: int = Field(default=2, ge=0, description="Retries per request before it fails.")


class Host(Frozen):
    """The one machine a locally served deployment runs on.

    Its local replicas (pools on instance type ``local``), their intra-op threads, the
    router and the load generator share ``cores``. The simulator runs the local services
    under processor sharing (``servewise.simulator._host``): when the running services'
    threads want more cores than the router and load generator leave (their background
    cores plus CPU per request × the recent arrival rate), all progress at the rate
    left ÷ wanted. Pools on other instance types are machines of their own and never
    contend.
    """

    cores: int = Field(ge=1, description="Logical CPUs the local replicas, the router and the load generator share.")
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Intra-op threads per local replica (serve runs them so); default cores ÷ the most local "
        "replicas at once, at least 1. Service times are the profile's: set it to the profile's threads.",
    )
    cpu_per_request_s: float | None = Field(
        default=None,
        ge=0,
        description="CPU seconds the router and the load generator spend per request; default the variant's "
        "calibration (serving.host_cpu_per_request_s), else 0.",
    )
    background_cores: float | None = Field(
        default=None,
        ge=0,
        description="CPU the router and the load generator take whatever the traffic, cores; default the "
        "variant's calibration (serving.host_background_cores), else 0.",
    )


class ContinuousEngine(Frozen):
    """An LLM engine in each replica: iteration-level (continuous) batching over a paged KV cache.

    Every iteration the scheduler picks the running sequences' next tokens and new prompt
    (chunks) within ``max_num_seqs`` and ``max_batched_tokens``; its time is the profile's
    ``step_time``. KV blocks of ``block_size`` tokens are allocated as sequences grow; on
    overflow the newest running sequence is preempted (``recompute``: its KV is dropped
    and rebuilt later; ``swap``: copied out and back at ``swap_bandwidth_bytes_per_s``).
    The KV capacity is ``kv_capacity_tokens``, else ``kv_cache_bytes``, else the pool's
    device memory × ``memory_utilization`` minus the variant's weights.
    """

    kind: Literal["continuous"] = "continuous"
    max_num_seqs: int = Field(default=256, ge=1, description="Most sequences running (scheduled) at once.")
    max_batched_tokens: int = Field(default=8192, ge=1, description="Most tokens (prompt + decode) in one iteration.")
    chunked_prefill: bool = Field(default=True, description="Split a long prompt over several iterations.")
    priority: Literal["decode_first", "prefill_first"] = Field(
        default="decode_first",
        description="decode_first: running decodes first, prompts fill the rest (vLLM V1); "
        "prefill_first: an iteration with prompts to admit runs prompts only (vLLM V0).",
    )
    block_size: int = Field(default=16, ge=1, description="Tokens per KV-cache block.")
    preemption: Literal["recompute", "swap"] = Field(default="recompute", description="What happens on KV overflow.")
    swap_bandwidth_bytes_per_s: float = Field(
        default=16e9, gt=0, description="swap: device <-> host copy bandwidth, bytes/s (PCIe 4.0 x16 ~ 16 GB/s usable)."
    )
    memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Share of device memory the engine may use (weights + KV)."
    )
    kv_cache_bytes: int | None = Field(
        default=None, gt=0, description="KV-cache size per replica, bytes (overrides memory)."
    )
    kv_capacity_tokens: int | None = Field(
        default=None, gt=0, description="KV-cache size per replica, tokens (overrides all)."
    )
    prefix_caching: bool = Field(
        default=True, description="Reuse cached prompt blocks (needs a trace with prefix blocks)."
    )
    fast_forward: bool = Field(
        default=True, description="Advance runs of identical decode iterations in one step (same results as stepping)."
    )

    @model_validator(mode="after")
    def _sizes(self) -> ContinuousEngine:
        if self.kv_cache_bytes is not None and self.kv_capacity_tokens is not None:
            raise ValueError("give at most one of kv_cache_bytes and kv_capacity_tokens")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < self.block_size:
            raise ValueError(
                f"kv_capacity_tokens ({self.kv_capacity_tokens}) holds no block of block_size {self.block_size}"
            )
        return self


class SLO(Frozen):
    """Service-level objectives checked against a result (all optional)."""

    p50_latency_s: float | None = Field(default=None, gt=0)
    p90_latency_s: float | None = Field(default=None, gt=0)
    p95_latency_s: float | None = Field(default=None, gt=0)
    p99_latency_s: float | None = Field(default=None, gt=0)
    max_rejection_ratio: float | None = Field(default=None, ge=0, le=1)
    max_failure_ratio: float | None = Field(default=None, ge=0, le=1)
    min_availability: float | None = Field(default=None, ge=0, le=1)
    p50_ttft_s: float | None = Field(default=None, gt=0, description="LLM: time to first token, percentile limit.")
    p90_ttft_s: float | None = Field(default=None, gt=0)
    p95_ttft_s: float | None = Field(default=None, gt=0)
    p99_ttft_s: float | None = Field(default=None, gt=0)
    p50_tpot_s: float | None = Field(default=None, gt=0, description="LLM: time per output token, percentile limit.")
    p90_tpot_s: float | None = Field(default=None, gt=0)
    p95_tpot_s: float | None = Field(default=None, gt=0)
    p99_tpot_s: float | None = Field(default=None, gt=0)
    ttft_target_s: float | None = Field(
        default=None, gt=0, description="LLM goodput: a request counts when its TTFT is at most this ..."
    )
    tpot_target_s: float | None = Field(default=None, gt=0, description="... and its TPOT at most this.")
    min_goodput_rps: float | None = Field(default=None, ge=0, description="LLM: goodput limit, requests/s.")
    max_accuracy_drift: float | None = Field(
        default=None,
        ge=0,
        description="Limit on the model variant's accuracy drift from the profile: decoders mean KL (nats), "
        "other models 1 − mean cosine similarity against the fp32 reference.",
    )

    @model_validator(mode="after")
    def _goodput(self) -> SLO:
        if self.min_goodput_rps is not None and self.ttft_target_s is None and self.tpot_target_s is None:
            raise ValueError("min_goodput_rps needs ttft_target_s and/or tpot_target_s (the per-request targets)")
        return self


_LLM_BALANCERS = ("least_kv", "prefix_affinity")
"""Balancers that read the KV cache of a replica: only with ``engine: continuous``."""


class Deployment(Frozen):
    """A candidate deployment: what the simulator runs and the advisor emits.

    Give either ``replicas`` (one pool named ``default``) or ``pools``, and either a
    ``service_time`` distribution or a profiled ``model`` (then the profile's latency model
    gives the service times and, unless ``scaling.cold_start_s`` is set, its load time is
    the cold start: see :meth:`cold_start_s`).
    """

    kind: Literal["deployment"] = "deployment"
    schema_version: Literal[1] = 1
    name: str = Field(default="deployment", description="A label for reports.")
    replicas: int | None = Field(default=None, ge=0, description="Replicas of the single default pool.")
    instance_type: str = Field(default="local", description="Instance type of the single default pool.")
    price_per_hour_usd: float = Field(default=0.0, ge=0, description="Price of one replica of the default pool.")
    concurrency: int = Field(default=1, ge=1, description="Requests (or batches) one replica serves at once.")
    service_time: ServiceTime | None = Field(
        default=None, description="Service time of one request on a replica of speed 1 (or give 'model')."
    )
    model: ModelRef | None = Field(
        default=None, description="A profiled model variant whose latency model gives the service times."
    )
    balancer: Balancer = Field(default_factory=Balancer)
    batching: Batching | None = None
    cache: Cache | None = None
    queue: Queue = Field(default_factory=Queue)
    scaling: Scaling = Field(default_factory=Scaling)
    pools: tuple[Pool, ...] | None = None
    faults: Faults | None = None
    engine: ContinuousEngine | None = Field(
        default=None, description="LLM engine per replica (continuous batching); needs a decoder 'model'."
    )
    placement: dict[str, tuple[str, ...]] | None = Field(
        default=None,
        description="Traffic class -> the pools it may use (e.g. sensitive: [onprem]); other classes use any pool.",
    )
    host: Host | None = Field(
        default=None,
        description="The local machine its 'local' pools share (CPU contention); None: every replica has its cores.",
    )
    slo: SLO | None = None

    @model_validator(mode="after")
    def _shape(self) -> Deployment:
        if (self.replicas is None) == (self.pools is None):
            raise ValueError("give exactly one of 'replicas' or 'pools'")
        if self.pools is not None:
            if not self.pools:
                raise ValueError("'pools' must hold at least one pool")
            names = [p.name for p in self.pools]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"pool names must be unique, got {sorted(dup)[0]!r} twice")
        pools = self.resolved_pools()
        total = sum(p.replicas for p in pools)
        mode = self.scaling.mode
        if mode != "fixed" and len(pools) != 1:
            raise ValueError(f"scaling mode {mode!r} supports one pool, got {len(pools)}")
        if mode == "fixed" and total < 1:
            raise ValueError("a fixed deployment needs at least one replica")
        if mode == "autoscale":
            s = self.scaling
            assert s.min_replicas is not None and s.max_replicas is not None
            if not s.min_replicas <= total <= s.max_replicas:
                raise ValueError(
                    f"replicas ({total}) must lie within [min_replicas, max_replicas] = "
                    f"[{s.min_replicas}, {s.max_replicas}]"
                )
        if mode == "serverless" and self.faults is not None:
            raise ValueError("faults are not modelled for scaling mode 'serverless'")
        cap = self.queue.capacity
        if self.batching is not None and cap is not None and cap < self.batching.max_batch_size:
            raise ValueError(
                f"queue.capacity ({cap}) must be >= batching.max_batch_size ({self.batching.max_batch_size}): "
                "requests wait in the queue while a batch fills"
            )
        if self.placement is not None:
            pool_names = {p.name for p in pools}
            for cls, allowed in self.placement.items():
                if not allowed:
                    raise ValueError(f"placement.{cls} must name at least one pool")
                unknown = [a for a in allowed if a not in pool_names]
                if unknown:
                    raise ValueError(
                        f"placement.{cls} names pool {unknown[0]!r}; pools are: {', '.join(sorted(pool_names))}"
                    )
        if (self.service_time is None) == (self.model is None):
            got = "neither" if self.model is None else "both"
            raise ValueError(
                f"give exactly one of 'service_time' (a distribution) or 'model' (a profile variant), got {got}"
            )
        if self.host is not None:
            if not any(p.instance_type == "local" for p in pools):
                raise ValueError("host describes the local machine, but no pool runs on instance_type 'local'")
            unmodelled = [
                what
                for what, bad in (
                    ("engine 'continuous'", self.engine is not None),
                    (f"scaling mode {mode!r}", mode != "fixed"),
                    ("faults", self.faults is not None),
                )
                if bad
            ]
            if unmodelled:
                raise ValueError(f"host (CPU contention) is not modelled with {unmodelled[0]} yet")
        if self.engine is not None:
            self._check_engine()
        elif self.balancer.policy in _LLM_BALANCERS:
            raise ValueError(
                f"balancer {self.balancer.policy!r} reads each replica's KV cache: it needs engine: {{kind: continuous}}"
            )
        if self.model is not None:
            if self.batching is not None and "batch_cost_factor" in self.batching.model_fields_set:
                raise ValueError(
                    "batching.batch_cost_factor applies to a service_time distribution only; with 'model' a batch "
                    "takes the profile's time of the batch padded to its longest member"
                )
            if self.model.resolved is not None:
                try:
                    self.cold_start_s()
                except ConfigError as err:
                    raise ValueError(str(err)) from None
        return self

    def _check_engine(self) -> None:
        if self.model is None:
            raise ValueError("engine 'continuous' takes its iteration times from a profiled decoder: give 'model'")
        clash = [
            what
            for what, bad in (
                ("batching", self.batching is not None),
                (
                    "concurrency",
                    self.concurrency != 1 or any(p.concurrency not in (None, 1) for p in self.resolved_pools()),
                ),
                (f"scaling mode {self.scaling.mode!r}", self.scaling.mode != "fixed"),
                ("faults", self.faults is not None),
            )
            if bad
        ]
        if clash:
            raise ValueError(
                f"engine 'continuous' does not combine with {clash[0]} (it batches iterations itself; autoscaling, "
                "serverless and faults are not modelled for it yet)"
            )
        if self.model.resolved is not None:
            v = self.model.loaded()
            if v.model_kind != "decoder":
                raise ValueError(f"engine 'continuous' needs a decoder model; {v.label} is a {v.model_kind} model")
            if v.latency_model is not None and v.latency_model.target != "step_time":
                raise ValueError(f"engine 'continuous' needs a step_time latency model; {v.label} has none")

    def cold_start_s(self) -> float:
        """Seconds from the start of a new (or repaired) replica to its first request.

        ``scaling.cold_start_s`` when it was set explicitly (0 included); otherwise, with a
        profiled ``model``, the variant's ``load_time_s``; otherwise 0. A variant without a
        load time is an error when a cold start can happen (autoscale, serverless, faults)
        and ``scaling.cold_start_s`` is not set.
        """
        s = self.scaling
        if self.model is None or "cold_start_s" in s.model_fields_set:
            return s.cold_start_s
        v = self.model.loaded()
        if v.load_time_s is not None:
            return v.load_time_s
        if s.mode == "fixed" and self.faults is None:
            return s.cold_start_s  # no replica ever starts after time 0
        why = f"scaling mode {s.mode!r}" if s.mode != "fixed" else "faults"
        raise ConfigError(
            f"variant {v.name!r} of {v.model} has no load_time_s, and replicas start after time 0 ({why}): "
            "set scaling.cold_start_s"
        )

    def most_replicas(self, pools: tuple[Pool, ...] | None = None) -> int:
        """The most replicas of ``pools`` (default: all) that run at once: ``max_replicas``
        when scaling, else the pools' replicas."""
        pools = self.resolved_pools() if pools is None else pools
        if self.scaling.mode in ("autoscale", "serverless"):
            assert self.scaling.max_replicas is not None
            return self.scaling.max_replicas
        return sum(p.replicas for p in pools)

    def host_threads(self) -> int | None:
        """Intra-op threads per local replica on ``host`` (None without a host)."""
        if self.host is None:
            return None
        if self.host.threads is not None:
            return self.host.threads
        local = tuple(p for p in self.resolved_pools() if p.instance_type == "local")
        return max(1, self.host.cores // max(self.most_replicas(local), 1))

    def host_cpu_per_request_s(self) -> float:
        """CPU seconds the router and load generator spend per request on ``host`` (0 without one)."""
        return self._host_cpu("cpu_per_request_s", "host_cpu_per_request_s")

    def host_background_cores(self) -> float:
        """Cores the router and load generator take on ``host`` whatever the traffic (0 without one)."""
        return self._host_cpu("background_cores", "host_background_cores")

    def _host_cpu(self, field: str, calibrated: str) -> float:
        """``host.<field>``, else the variant's calibrated ``serving.<calibrated>``, else 0."""
        if self.host is None:
            return 0.0
        given = getattr(self.host, field)
        if given is not None:
            return float(given)
        if self.model is not None and self.model.resolved is not None:
            cal = self.model.loaded().serving
            if cal is not None and getattr(cal, calibrated) is not None:
                return float(getattr(cal, calibrated))
        return 0.0

    def resolved_pools(self) -> tuple[Pool, ...]:
        """The pools, with the single-pool shorthand expanded into a pool named ``default``."""
        if self.pools is not None:
            return self.pools
        return (
            Pool(
                name="default",
                instance_type=self.instance_type,
                replicas=self.replicas or 0,
                price_per_hour_usd=self.price_per_hour_usd,
            ),
        )


# --------------------------------------------------------------------------- YAML I/O


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: the source, the first invalid field's dotted path, and what was expected."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = first.get("input")
    where = f"field '{loc}'" if loc else "the document"
    extra = (
        f" (got {got!r})"
        if first["type"] not in ("missing", "value_error", "model_type") and not isinstance(got, dict)
        else ""
    )
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return f"{source}: {where}: {msg}{extra}{more}"


_UNION_TAGS = {
    "exponential",
    "deterministic",
    "uniform",
    "lognormal",
    "hyperexponential",
    "empirical",
    "linear",
}


def parse_deployment(data: Any, source: str = "deployment") -> Deployment:
    """Validate a mapping (e.g. parsed YAML) into a :class:`Deployment`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of deployment fields, got {type(data).__name__}")
    try:
        return Deployment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``; ConfigError names the file (and line) otherwise."""
    text = read_text(path, what, ConfigError)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{line}: {problem}") from None


def load_deployment(path: str | Path) -> Deployment:
    """Read a deployment YAML file; errors name the file and the field.

    An ``empirical`` service time's ``samples_file`` and a ``model``'s ``profile`` are
    read here (relative to the file); the profile's variant goes into ``model.resolved``.
    """
    p = Path(path)
    data = read_yaml(p, "deployment file")
    dep = parse_deployment(data, str(p))
    st = dep.service_time
    if isinstance(st, Empirical) and st.samples_file is not None:
        sp = (p.parent / st.samples_file) if not Path(st.samples_file).is_absolute() else Path(st.samples_file)
        samples = _read_samples(sp)
        dep = dep.model_copy(update={"service_time": Empirical(samples_s=samples)})
    if dep.model is not None:
        variant = _resolve_variant(dep.model, p)
        # validate again with the variant in place: the checks that need it (cold start) run too
        dep = parse_deployment({**data, "model": {**data["model"], "resolved": variant}}, str(p))
    return dep


def _resolve_variant(ref: ModelRef, source: Path) -> Variant:
    """Load ``ref.profile`` (relative to ``source``) and return its usable variant."""
    from servewise.profile import load_profile

    pp = Path(ref.profile)
    if not pp.is_absolute():
        pp = source.parent / pp
    try:
        profile = load_profile(pp)
    except ArtifactError as err:
        raise ConfigError(f"{source}: field 'model.profile': {err}") from None
    models = profile.models()
    if ref.spec is None and len(models) > 1:
        raise ConfigError(
            f"{source}: field 'model.spec': profile {pp} holds several models ({', '.join(models)}); say which"
        )
    if ref.spec is not None and ref.spec not in models:
        raise ConfigError(
            f"{source}: field 'model.spec': profile {pp} has no model {ref.spec!r}; "
            f"it holds: {', '.join(models) or 'none'}"
        )
    try:
        variant = profile.variant(ref.variant, ref.spec)
    except ConfigError as err:
        raise ConfigError(f"{source}: field 'model.variant': {pp}: {err}") from None
    problem = _unusable(variant)
    if problem:
        usable = [v.name for v in profile.variants if v.model == variant.model and _unusable(v) is None]
        raise ConfigError(
            f"{source}: field 'model.variant': {pp}: {problem}; usable variants: {', '.join(usable) or 'none'}"
        )
    return variant


def _read_samples(path: Path) -> tuple[float, ...]:
    lines = read_text(path, "samples_file", ConfigError).splitlines()
    out: list[float] = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            v = float(s)
        except ValueError:
            raise ConfigError(f"{path}:{n}: expected a service time in seconds, got {s!r}") from None
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{path}:{n}: expected a finite service time >= 0, got {s!r}")
        out.append(v)
    if not out:
        raise ConfigError(f"{path}: samples_file holds no samples")
    return tuple(out)


def dump_deployment(dep: Deployment) -> str:
    """YAML text of a deployment (unset optional parts left out); loads back equal.

    With a ``model``, an unset ``scaling.cold_start_s`` stays unset (the cold start comes
    from the profile; see :meth:`Deployment.cold_start_s`) and ``model.resolved`` is not written.
    """
    data = dep.model_dump(mode="json", exclude_none=True)
    if "service_time" in data:
        st = data["service_time"]
        data["service_time"] = {"distribution": st.pop("distribution"), **st}  # the tag first, for readers
    if dep.model is not None:
        # defaults that mean "from the profile" (or do not apply) with a model: write them only if the user did
        if "cold_start_s" not in dep.scaling.model_fields_set:
            del data["scaling"]["cold_start_s"]
        if dep.batching is not None and "batch_cost_factor" not in dep.batching.model_fields_set:
            del data["batching"]["batch_cost_factor"]
    return yaml.safe_dump(data, sort_keys=False)
