"""``SimResult``: one simulation run's ``result.json`` and, beside it, ``requests.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from servewise.errors import ArtifactError
from servewise.results._base import (
    ArtifactRecord,
    Count,
    Int,
    NonNeg,
    OpenRecord,
    OptBool,
    OptNonNeg,
    OptStr,
    Record,
    Str,
)
from servewise.results._summary import SloResult, Summary
from servewise.results._tables import REQUEST_FILES, read_requests, requests_path, write_requests

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SimMetadata", "PoolUsage", "ServerlessUsage", "Timeline", "EngineStats", "SimResult"]


def _absent_if_none(v: Any) -> bool:
    return v is None


class SimMetadata(OpenRecord):
    """What ran: the tool, the seed, and hashes of the deployment and the trace."""

    tool: Str
    version: Str
    seed: Int
    deployment_name: Str
    deployment_sha256: Str
    trace_source: Str
    trace_sha256: Str
    trace_requests: Count
    model_variant: OptStr = Field(default=None, exclude_if=_absent_if_none)
    """With a profiled model: the variant's label, and a hash of its content."""
    model_variant_sha256: OptStr = Field(default=None, exclude_if=_absent_if_none)
    model_estimated: OptBool = Field(default=None, exclude_if=_absent_if_none)


class PoolUsage(Record):
    """One pool's replica-time, busy time, requests and cost."""

    name: Str
    instance_type: OptStr
    speed_factor: NonNeg
    replicas_launched: Count
    replica_seconds: NonNeg
    busy_slot_seconds: NonNeg
    utilisation: OptNonNeg
    requests: Count
    cost_usd: NonNeg


class ServerlessUsage(Record):
    """What a serverless deployment is billed."""

    billing: Str
    billed_seconds: NonNeg
    gb_seconds: NonNeg
    billed_requests: Count
    cost_usd: NonNeg


class Timeline(Record):
    """Replicas up, as a step function: ``replicas[k]`` from ``t_s[k]`` on."""

    t_s: list[NonNeg]
    replicas: list[Count]

    @model_validator(mode="after")
    def _steps(self) -> Timeline:
        if len(self.t_s) != len(self.replicas):
            raise ValueError(f"t_s has {len(self.t_s)} times but replicas {len(self.replicas)} counts")
        return self


class EngineStats(Record):
    """A continuous-batching (LLM) engine's own figures: KV blocks, iterations, rejections."""

    kind: Literal["continuous"]
    pools: list[dict[str, Any]]
    replicas: list[dict[str, Any]]
    iterations: Count
    fast_forward_spans: Count
    rejections: dict[str, Count]


class SimResult(ArtifactRecord):
    """A simulation's outcome: the ``result.json`` document, and its per-request table.

    ``requests`` (and :meth:`to_frame`) is one row per request of the trace; it is the
    table the simulation built, or the ``requests.parquet`` or else ``requests.csv``
    beside the file it was read from.
    """

    KIND: ClassVar[str] = "sim_result"
    WHAT: ClassVar[str] = "simulation result"
    FILE: ClassVar[str] = "result.json"

    schema_version: Literal[1] = 1
    kind: Literal["sim_result"] = "sim_result"
    metadata: SimMetadata
    summary: Summary
    pools: list[PoolUsage]
    serverless: ServerlessUsage | None
    timeline: Timeline
    slo: SloResult | None
    """The deployment's SLOs checked on the summary (None when it sets none)."""
    engine: EngineStats | None = Field(default=None, exclude_if=_absent_if_none)
    rejections: dict[str, Count] = Field(default_factory=dict, exclude_if=lambda v: not v)
    """Rejected requests by cause: ``queue_full``, ``window`` (output over the model's
    context window: 422 live), and the continuous engine's ``prompt_too_long``, ``kv_too_small``."""

    _requests: pd.DataFrame | None = PrivateAttr(default=None)
    _doc: dict[str, Any] | None = PrivateAttr(default=None)

    def with_requests(self, table: pd.DataFrame) -> SimResult:
        """This record holding ``table`` as its per-request table (the simulator builds it so)."""
        self._requests = table
        return self

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request (``requests.parquet``, else ``requests.csv``); an
        :class:`ArtifactError` when there is none."""
        if self._requests is None:
            if self.path is None:
                raise ArtifactError("this simulation result holds no per-request table")
            self._requests = read_requests(requests_path(self.path.parent))
        return self._requests

    def to_frame(self) -> pd.DataFrame:
        """The per-request table (see :attr:`requests`); ``summary.to_frame()`` gives the summary."""
        return self.requests

    @property
    def data(self) -> dict[str, Any]:
        """The JSON document as a dict (for code written when results were dicts)."""
        if self._doc is None:
            self._doc = self.to_doc()
        return self._doc

    def write(self, out_dir: str | Path, requests_format: str = "csv") -> tuple[Path, Path]:
        """Write ``result.json`` and the per-request table atomically into ``out_dir``:
        ``requests.csv``, or ``requests.parquet`` with ``requests_format="parquet"``. The
        other format's file, left by an earlier run, is removed, so that readers (which
        prefer Parquet) see this run's table."""
        if requests_format not in REQUEST_FILES:
            raise ArtifactError(
                f"unknown per-request table format {requests_format!r}; expected one of: {', '.join(REQUEST_FILES)}"
            )
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        table_path = write_requests(self.requests, d / REQUEST_FILES[requests_format], requests_format)
        json_path = self.write_json(d / self.FILE)
        for fmt, name in REQUEST_FILES.items():
            if fmt != requests_format:
                stale = d / name
                try:
                    stale.unlink(missing_ok=True)
                except OSError as err:
                    raise ArtifactError(f"{stale}: cannot remove the earlier run's table ({err.strerror})") from None
        return json_path, table_path
