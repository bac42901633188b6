"""What a load test measured (``measured.json``), what the advisor expects of it
(``expected.json``), and how the two compared (``validation.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, PrivateAttr

from servewise.errors import ArtifactError
from servewise.results._base import (
    ArtifactRecord,
    Bool,
    Count,
    Int,
    NonNeg,
    Number,
    OpenRecord,
    OptCount,
    OptInt,
    OptNonNeg,
    OptNumber,
    OptStr,
    Record,
    Str,
)
from servewise.results._summary import SignedStats, SloResult, Summary
from servewise.results._tables import read_requests

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GeneratorProcess",
    "Generator",
    "MeasuredMetadata",
    "Measured",
    "MetricComparison",
    "ValidationMetadata",
    "ServerInfo",
    "Validation",
    "Expected",
    "PartialSummary",
]

PartialSummary = Annotated[Summary, BeforeValidator(Summary.complete)]
"""A summary in which absent keys are null (a prediction written by hand may hold a few)."""


class GeneratorProcess(Record):
    """One Locust generator process: its share of requests and its CPU time."""

    process: Count
    requests: Count
    cpu_user_s: NonNeg
    cpu_system_s: NonNeg
    wall_s: NonNeg
    cpu_utilisation: OptNonNeg
    locust_requests: Count
    locust_failures: Count


class Generator(Record):
    """Whether the load generator kept to its schedule (open loop); ``valid`` False: do not trust the run."""

    valid: Bool
    invalid_reasons: list[Str]
    warnings: list[Str]
    max_send_lag_s: NonNeg
    send_lag_s: SignedStats
    offered_rps: OptNonNeg
    achieved_rps: OptNonNeg
    achieved_ratio: OptNonNeg
    min_achieved_ratio: NonNeg
    cpu_s: NonNeg
    locust_requests: Count
    locust_failures: Count
    processes: list[GeneratorProcess]


class MeasuredMetadata(OpenRecord):
    """What was load tested, with what, on which trace."""

    tool: Str
    version: Str
    created_utc: Str
    url: Str
    target: Str
    api: OptStr
    stream: Bool
    model: OptStr
    prompt: Str
    auth: Bool
    trace_source: Str
    trace_sha256: Str
    trace_requests: Count
    replayed_requests: Count
    replayed_sha256: Str
    time_scale: NonNeg
    max_requests: OptCount
    processes: Count
    timeout_s: NonNeg
    client: Str


class Measured(ArtifactRecord):
    """A load test: the summary in the simulator's keys, the generator's health, the answers seen."""

    KIND: ClassVar[str] = "measured"
    WHAT: ClassVar[str] = "load-test measurement"
    FILE: ClassVar[str] = "measured.json"

    schema_version: Literal[1] = 1
    kind: Literal["measured"] = "measured"
    metadata: MeasuredMetadata
    summary: Summary
    generator: Generator
    status_codes: dict[str, Count]
    """Responses per HTTP status code."""
    replicas: dict[str, Count]
    """Responses per replica that served them (as the server named it)."""
    errors: dict[str, Count]
    """The most common error messages and how often each came."""

    _requests: pd.DataFrame | None = PrivateAttr(default=None)

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request (the ``requests.csv`` beside the file)."""
        if self._requests is None:
            if self.path is None:
                raise ArtifactError("this measurement holds no per-request table")
            self._requests = read_requests(self.path.parent / "requests.csv")
        return self._requests

    def to_frame(self) -> pd.DataFrame:
        """The per-request table; ``summary.to_frame()`` gives the summary."""
        return self.requests


# ----------------------------------------------------------------------------- validation


class MetricComparison(Record):
    """One metric predicted and measured: ``relative_error`` is (measured − predicted) / predicted."""

    predicted: Number
    measured: Number
    relative_error: OptNumber
    """None when the prediction is 0 and the measurement is not."""
    tolerance: NonNeg
    passed: Bool = Field(alias="pass")


class ValidationMetadata(OpenRecord):
    tool: Str
    version: Str
    created_utc: Str
    wall_s: NonNeg
    deployment: OptStr
    url: OptStr
    expected: OptStr
    trace_source: Str
    trace_sha256: Str
    requests: Count
    max_requests: OptCount
    time_scale: NonNeg
    seed: Int


class ServerInfo(OpenRecord):
    """The server a validation started (none when it load tested a URL)."""

    url: Str
    pid: OptInt
    exit_code: OptInt = None
    router_cpu_s: OptNonNeg = None
    """CPU seconds the router process (not its workers) used during the load test."""
    load_generator_cpu_s: OptNonNeg = None
    """CPU seconds the load generator (the Locust processes) used on the requests of the load test."""
    router_idle_cores: OptNonNeg = None
    """CPU the router used while idle, in cores (measured for a second before the load)."""
    load_s: OptNonNeg = None
    """Seconds over which router_cpu_s was measured."""


class Validation(ArtifactRecord):
    """``servewise validate``: did the live deployment do what the simulator predicted?

    ``metrics`` is keyed by summary path (``latency_s.p95``). ``verdict`` is ``invalid``
    when the load generator fell behind or no metric was on both sides.
    """

    KIND: ClassVar[str] = "validation"
    WHAT: ClassVar[str] = "validation"
    FILE: ClassVar[str] = "validation.json"

    schema_version: Literal[1] = 1
    kind: Literal["validation"] = "validation"
    metadata: ValidationMetadata
    verdict: Literal["pass", "fail", "invalid"]
    invalid_reasons: list[Str]
    metrics: dict[str, MetricComparison]
    predicted: PartialSummary
    measured: Summary
    generator: Generator
    server: ServerInfo | None
    slo_measured: SloResult | None
    """The deployment's SLOs on the measured summary (those a client can see)."""

    @property
    def folder(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    def missed(self) -> list[str]:
        return [k for k, m in self.metrics.items() if not m.passed]

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: predicted, measured, relative_error, tolerance, pass."""
        import pandas as pd

        cols = ["predicted", "measured", "relative_error", "tolerance", "pass"]
        rows = [[m.predicted, m.measured, m.relative_error, m.tolerance, m.passed] for m in self.metrics.values()]
        frame = pd.DataFrame(rows, index=list(self.metrics), columns=cols)
        frame.index.name = "metric"
        return frame.astype({"predicted": float, "measured": float, "relative_error": float, "tolerance": float,
                             "pass": bool})  # fmt: skip


class Expected(ArtifactRecord):
    """``expected.json``: the prediction a load test of the advisor's winner is judged against.

    Written by the advisor in full; one written by hand needs only ``summary`` (absent
    keys are null) and may set ``tolerances``.
    """

    KIND: ClassVar[str] = "expected"
    WHAT: ClassVar[str] = "expected results"
    FILE: ClassVar[str] = "expected.json"

    schema_version: Literal[1] = 1
    kind: Literal["expected"] = "expected"
    plan: OptStr = None
    candidate: OptStr = None
    label: OptStr = None
    trace: dict[str, Any] | None = None
    seed: OptInt = None
    summary: PartialSummary
    slo: dict[str, Number] | None = None
    slo_checks: SloResult | None = None
    confidence_intervals: dict[str, Any] | None = None
    headroom: dict[str, Any] | None = None
    tolerances: dict[str, NonNeg] = Field(default_factory=dict)
