"""Find and read any servewise artifact by its ``kind``: the one entry point of report and gate.

An artifact is named by its JSON file or by the folder a command wrote
(``result.json``, ``measured.json``, ``validation.json``, ``plan.json``); a profile is a
JSON file. Reading checks ``kind`` and ``schema_version`` with the spine's reader, so an
unknown file is one clear :class:`~servewise.errors.ArtifactError`, never a traceback.
The stages' own loaders are not imported: reports read the documents, not the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from servewise.errors import ArtifactError
from servewise.io import read_artifact, read_json

__all__ = ["KINDS", "Artifact", "load_artifact"]

KINDS: dict[str, tuple[int, str]] = {
    "profile": (1, "profile"),
    "sim_result": (1, "simulation result"),
    "plan": (1, "plan"),
    "measured": (1, "load-test measurement"),
    "validation": (1, "validation"),
    "benchmark": (1, "benchmark"),
}
"""Each readable kind: its schema version and what to call it in messages."""

_FOLDER_FILES = ("validation.json", "plan.json", "measured.json", "result.json", "benchmark.json")
"""The file a command leaves in its output folder, in the order they are looked for."""


@dataclass(frozen=True)
class Artifact:
    """One artifact: its kind, the JSON document, where it lies and (lazily) its table."""

    kind: str
    path: Path
    data: dict[str, Any]
    _requests: list[pd.DataFrame] = field(default_factory=list, repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        """A short label for pages and verdicts: the folder for folder artifacts, else the file."""
        return str(self.path)

    def requests(self) -> pd.DataFrame | None:
        """The per-request table beside a ``result.json`` or ``measured.json``, or None."""
        if self.kind not in ("sim_result", "measured"):
            return None
        if not self._requests:
            p = self.folder / "requests.csv"
            if not p.is_file():
                return None
            try:
                self._requests.append(pd.read_csv(p))
            except (OSError, ValueError) as err:
                raise ArtifactError(f"{p}: cannot read the per-request table ({err})") from None
        return self._requests[0]


def _kind_of(path: Path) -> str:
    data = read_json(path, "artifact")
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in KINDS:
        raise ArtifactError(
            f"{path}: not a servewise artifact (kind {kind!r}; expected one of {', '.join(KINDS)})"
        )
    return str(kind)


def load_artifact(path: str | Path) -> Artifact:
    """Read the artifact at ``path`` (a JSON file, or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        found = next((p / f for f in _FOLDER_FILES if (p / f).is_file()), None)
        if found is None:
            raise ArtifactError(f"{p}: no servewise artifact in this folder (looked for {', '.join(_FOLDER_FILES)})")
        p = found
    elif not p.exists():
        raise ArtifactError(f"{p}: no such file or folder")
    kind = _kind_of(p)
    version, what = KINDS[kind]
    return Artifact(kind=kind, path=p, data=read_artifact(p, kind, version, what))
