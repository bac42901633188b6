"""Every artifact servewise writes, as a frozen typed record, and the one reader of them all.

::

    from servewise.results import load_artifact

    res = load_artifact("sim/")              # a SimResult (the folder's result.json)
    res.summary.latency_s.p95                # seconds
    res.to_frame()                           # requests.csv, one row per request
    plan = load_artifact("plan/plan.json", "plan")
    plan.to_frame()                          # one row per candidate

The stages build their documents through these records when they write, so what is
written and what is read agree by construction. :func:`load_artifact` names the file and
the field of anything it cannot accept, in one line::

    result.json: field 'summary.latency_s.p95': expected a number >= 0, got 'x'

Records (their JSON ``kind``): :class:`SimResult` (``sim_result``), :class:`Plan`
(``plan``), :class:`Measured` (``measured``), :class:`Validation` (``validation``),
:class:`Expected` (``expected``), :class:`Benchmark` (``benchmark``),
:class:`GateResult` (``gate_result``, what ``servewise gate --json`` writes); profiles are
:class:`servewise.profile.Profile`. Shared parts: :class:`Summary` (the keys simulated and
measured runs share), :class:`Percentiles`, :class:`SloCheck` / :class:`SloResult` and
:func:`check_slo`, the one place a deployment's SLO is judged on a summary.
"""

from servewise.results._base import ArtifactRecord, Record, format_error
from servewise.results._benchmark import Benchmark, Case
from servewise.results._gate import Check, CheckKind, GateResult, Status
from servewise.results._loadtest import (
    Expected,
    Generator,
    GeneratorProcess,
    Measured,
    MeasuredMetadata,
    MetricComparison,
    ServerInfo,
    Validation,
    ValidationMetadata,
)
from servewise.results._plan import (
    Binding,
    Candidate,
    Headroom,
    LowerBounds,
    Plan,
    PlanMetadata,
    PlanSearch,
    PrunedBy,
    RobustMetric,
    Robustness,
    Rung,
    StaticCheck,
)
from servewise.results._read import FOLDER_FILES, KINDS, Artifact, artifact_from_doc, find_artifact, load_artifact
from servewise.results._sim import EngineStats, PoolUsage, ServerlessUsage, SimMetadata, SimResult, Timeline
from servewise.results._summary import (
    DISTRIBUTIONS,
    SLO_FIELDS,
    STATS,
    KvUtilisation,
    Percentiles,
    SignedStats,
    SloCheck,
    SloResult,
    Summary,
    check_slo,
    slo_margin,
)
from servewise.results._tables import (
    REQUEST_FILES,
    REQUEST_FORMATS,
    SERVED,
    STATUSES,
    read_requests,
    requests_path,
    served,
    write_requests,
)

__all__ = [
    "load_artifact",
    "find_artifact",
    "artifact_from_doc",
    "KINDS",
    "FOLDER_FILES",
    "Artifact",
    "Record",
    "ArtifactRecord",
    "format_error",
    # shared parts
    "STATS",
    "DISTRIBUTIONS",
    "Percentiles",
    "SignedStats",
    "KvUtilisation",
    "Summary",
    "SloCheck",
    "SloResult",
    "SLO_FIELDS",
    "check_slo",
    "slo_margin",
    # simulation
    "SimResult",
    "SimMetadata",
    "PoolUsage",
    "ServerlessUsage",
    "Timeline",
    "EngineStats",
    # load test and validation
    "Measured",
    "MeasuredMetadata",
    "Generator",
    "GeneratorProcess",
    "Validation",
    "ValidationMetadata",
    "MetricComparison",
    "ServerInfo",
    "Expected",
    # plan
    "Plan",
    "PlanMetadata",
    "PlanSearch",
    "Candidate",
    "Binding",
    "StaticCheck",
    "LowerBounds",
    "PrunedBy",
    "Rung",
    "Robustness",
    "RobustMetric",
    "Headroom",
    # benchmarks and the gate
    "Benchmark",
    "Case",
    "GateResult",
    "Check",
    "CheckKind",
    "Status",
    # per-request tables
    "STATUSES",
    "SERVED",
    "REQUEST_FORMATS",
    "REQUEST_FILES",
    "read_requests",
    "write_requests",
    "requests_path",
    "served",
]
