"""``benchmark.json``: named cases of raw timing (or rate) samples, for ``servewise gate``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from servewise.results._base import ArtifactRecord, Number, Record, Str

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Case", "Benchmark"]


class Case(Record):
    """One benchmark case: its samples, their unit, and which direction is better."""

    model_config = ConfigDict(extra="allow")  # benchmarks may note more about a case (its request count, ...)

    name: Str
    unit: Str = "s"
    better: Literal["lower", "higher"] = "lower"
    samples: list[Number]


class Benchmark(ArtifactRecord):
    """Cases of samples; two benchmarks of the same name are compared case by case."""

    KIND: ClassVar[str] = "benchmark"
    WHAT: ClassVar[str] = "benchmark"
    FILE: ClassVar[str] = "benchmark.json"

    schema_version: Literal[1] = 1
    kind: Literal["benchmark"] = "benchmark"
    name: Str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    cases: list[Case]

    @model_validator(mode="after")
    def _unique(self) -> Benchmark:
        seen: set[str] = set()
        for c in self.cases:
            if c.name in seen:
                raise ValueError(f"case {c.name!r} appears twice")
            seen.add(c.name)
        return self

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: case, unit, better, sample."""
        import pandas as pd

        rows = [(c.name, c.unit, c.better, x) for c in self.cases for x in c.samples]
        return pd.DataFrame(rows, columns=["case", "unit", "better", "sample"])
