"""``servewise gate``'s result: one :class:`Check` per judged item and the verdict.

``servewise gate --json`` writes :meth:`GateResult.to_doc`; :meth:`GateResult.to_frame`
gives one row per check. (The gate itself, and its Markdown and JUnit outputs, are in
``servewise.reports``.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from servewise.results._base import ArtifactRecord, Record

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CheckKind", "Status", "Check", "GateResult"]

CheckKind = Literal["regression", "slo", "verdict", "coverage"]
Status = Literal["pass", "fail", "missing"]


def _finite_or_none(v: Any) -> Any:
    """A number that is not finite (a ratio over 0, ...) is recorded as unknown."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


Num = Annotated[float | None, BeforeValidator(_finite_or_none)]


class Check(Record):
    """One judged item: a grid point, a benchmark case, a metric, an SLO or a verdict.

    ``ratio`` is current / baseline (medians for tested checks); ``ci_low`` and
    ``ci_high`` its bootstrap interval; ``p_value`` the one-sided Mann–Whitney U p-value
    (current worse) and ``p_holm`` that p-value after Holm's adjustment over the gate.
    ``threshold`` is the allowed regression (0.05 = 5%) or, for an SLO, its bound.
    Numbers that do not apply are None.
    """

    name: str
    kind: CheckKind
    status: Status
    message: str
    metric: str | None = None
    unit: str | None = None
    """Unit of ``baseline`` and ``current``: ``s``, ``ratio``, ``rps``, ... or None."""
    better: str | None = None
    """``lower`` or ``higher``: which direction is an improvement."""
    baseline: Num = None
    current: Num = None
    ratio: Num = None
    ci_low: Num = None
    ci_high: Num = None
    p_value: Num = None
    p_holm: Num = None
    raw_ratio: Num = None
    """Current / baseline medians before the speed adjustment (None when not adjusted)."""
    speed_ratio: Num = None
    """The machine's speed between the runs: current / baseline calibration-kernel medians
    (above 1: the machine was slower for the current run). ``ratio`` is ``raw_ratio`` over it."""
    threshold: Num = None
    n_baseline: int | None = None
    n_current: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class GateResult(ArtifactRecord):
    """The gate's checks and verdict. ``exit_code`` is 0 when every check passed, else 1."""

    KIND: ClassVar[str] = "gate_result"
    WHAT: ClassVar[str] = "gate result"
    FILE: ClassVar[str] = "gate.json"

    schema_version: Literal[1] = 1
    kind: Literal["gate_result"] = "gate_result"
    checks: list[Check]
    current: str
    baseline: str | None
    artifact_kind: str
    settings: dict[str, Any] = Field(default_factory=dict)
    """max_regression, alpha, confidence, seed and the rule the checks were judged by."""

    @model_validator(mode="before")
    @classmethod
    def _derived(cls, doc: Any) -> Any:
        """What :meth:`to_doc` adds (verdict, exit code, counts) follows from the checks: read it back without."""
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k not in ("verdict", "exit_code", "counts")}
        return doc

    @property
    def passed(self) -> bool:
        """Every check passed, and there was one: no check is never a pass."""
        return bool(self.checks) and all(c.status == "pass" for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "missing": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def to_doc(self) -> dict[str, Any]:
        """The ``--json`` document: the verdict, the counts and every check."""
        return {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "verdict": "pass" if self.passed else "fail",
            "exit_code": self.exit_code,
            "current": self.current,
            "baseline": self.baseline,
            "artifact_kind": self.artifact_kind,
            "settings": dict(self.settings),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_dict(self) -> dict[str, Any]:
        return self.to_doc()

    def to_frame(self) -> pd.DataFrame:
        """One row per check, in the gate's order, with every field of :class:`Check`."""
        import pandas as pd

        return pd.DataFrame([c.to_dict() for c in self.checks], columns=list(Check.model_fields))
