"""Find and read any servewise artifact: the one entry point of report and gate.

An artifact is named by its JSON file or by the folder a command wrote
(``result.json``, ``measured.json``, ``validation.json``, ``plan.json``); a profile is a
JSON file. Reading goes through the spine's :func:`servewise.results.load_artifact`, so
the views and the gate get typed records, and a file that is not one — wrong kind,
unknown schema version, a field missing, of the wrong type or out of range, a bad
``requests.csv`` — is one clear :class:`~servewise.errors.ArtifactError`, never a
traceback. The stages are not imported: reports read the records, not the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from servewise import results
from servewise.errors import ArtifactError
from servewise.profile import Profile

__all__ = ["KINDS", "Artifact", "load_artifact"]

KINDS: dict[str, tuple[int, str]] = {k: v for k, v in results.KINDS.items() if k not in ("expected", "gate_result")}
"""Each kind reports and the gate read: its schema version and what to call it in messages."""


@dataclass(frozen=True)
class Artifact:
    """One artifact: its kind, where it lies, its typed record and (lazily) its tables."""

    kind: str
    path: Path
    record: results.Artifact
    _tables: dict[Path, pd.DataFrame | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        """A short label for pages and verdicts: the file's path."""
        return str(self.path)

    def table(self, path: Path) -> pd.DataFrame | None:
        """The per-request table at ``path`` (checked), or None when there is no such file."""
        if path not in self._tables:
            self._tables[path] = results.read_requests(path) if path.is_file() else None
        return self._tables[path]

    def requests(self) -> pd.DataFrame | None:
        """The per-request table beside a ``result.json`` or ``measured.json``, or None."""
        if self.kind not in ("sim_result", "measured"):
            return None
        return self.table(results.requests_path(self.folder))

    def _as(self, cls: type[Any]) -> Any:
        if not isinstance(self.record, cls):
            raise TypeError(f"{self.path} is a {self.kind}, not a {cls.__name__}")
        return self.record

    @property
    def profile(self) -> Profile:
        return self._as(Profile)  # type: ignore[no-any-return]

    @property
    def sim(self) -> results.SimResult:
        return self._as(results.SimResult)  # type: ignore[no-any-return]

    @property
    def measured(self) -> results.Measured:
        return self._as(results.Measured)  # type: ignore[no-any-return]

    @property
    def plan(self) -> results.Plan:
        return self._as(results.Plan)  # type: ignore[no-any-return]

    @property
    def validation(self) -> results.Validation:
        return self._as(results.Validation)  # type: ignore[no-any-return]

    @property
    def benchmark(self) -> results.Benchmark:
        return self._as(results.Benchmark)  # type: ignore[no-any-return]


def load_artifact(path: str | Path) -> Artifact:
    """Read the artifact at ``path`` (a JSON file, or a folder holding one)."""
    p = results.find_artifact(path)
    record = results.load_artifact(p)
    if record.kind not in KINDS:
        raise ArtifactError(
            f"{p}: a {results.KINDS[record.kind][1]} is not shown or gated (reports read {', '.join(KINDS)})"
        )
    return Artifact(kind=record.kind, path=p, record=record)
