"""The one reader of every artifact: :func:`load_artifact`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, overload

from servewise.errors import ArtifactError
from servewise.io import read_json
from servewise.profile import PROFILE_SCHEMA_VERSION, Profile
from servewise.results._base import ArtifactRecord, format_error
from servewise.results._benchmark import Benchmark
from servewise.results._gate import GateResult
from servewise.results._loadtest import Expected, Measured, Validation
from servewise.results._plan import Plan
from servewise.results._sim import SimResult

__all__ = ["KINDS", "FOLDER_FILES", "Artifact", "find_artifact", "load_artifact", "artifact_from_doc"]

Artifact = Profile | SimResult | Plan | Measured | Validation | Benchmark | Expected | GateResult
"""Any record :func:`load_artifact` returns."""

_RECORDS: dict[str, type[ArtifactRecord]] = {
    r.KIND: r for r in (SimResult, Plan, Measured, Validation, Benchmark, Expected, GateResult)
}

KINDS: dict[str, tuple[int, str]] = {
    "profile": (PROFILE_SCHEMA_VERSION, "profile"),
    **{k: (r.SCHEMA_VERSION, r.WHAT) for k, r in _RECORDS.items()},
}
"""Each readable kind: its schema version and what to call it in messages."""

FOLDER_FILES: tuple[str, ...] = ("validation.json", "plan.json", "measured.json", "result.json", "benchmark.json")
"""The file a command leaves in its output folder, in the order they are looked for."""


def find_artifact(path: str | Path) -> Path:
    """The artifact's JSON file: ``path`` itself, or the one a command left in the folder ``path``."""
    path = Path(path)
    if path.is_dir():
        found = next((path / f for f in FOLDER_FILES if (path / f).is_file()), None)
        if found is None:
            raise ArtifactError(f"{path}: no servewise artifact in this folder (looked for {', '.join(FOLDER_FILES)})")
        return found
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    return path


def artifact_from_doc(doc: Any, source: str | Path, kind: str | None = None) -> Artifact:
    """Validate a parsed JSON document as the artifact its ``kind`` names (``kind``, when given, is required)."""
    got = doc.get("kind") if isinstance(doc, dict) else None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{source}: not a servewise artifact (expected a JSON object, got {type(doc).__name__})")
    if kind is not None and got != kind:
        if kind not in KINDS:
            raise ArtifactError(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
        raise ArtifactError(f"{source}: expected kind '{kind}' (a {KINDS[kind][1]}), got kind {got!r}")
    if got not in KINDS:
        raise ArtifactError(f"{source}: not a servewise artifact (kind {got!r}; expected one of {', '.join(KINDS)})")
    version, what = KINDS[got]
    if doc.get("schema_version") != version:
        raise ArtifactError(
            f"{source}: unknown schema_version {doc.get('schema_version')!r} of a {what}; this servewise reads {version}"
        )
    if got == "profile":
        from pydantic import ValidationError

        bad = _non_finite(doc)
        if bad is not None:  # the profile's own model takes NaN for a number; servewise never writes one
            where, v = bad
            raise ArtifactError(f"{source}: field '{where}': expected a finite number, got {v!r}")
        try:
            return Profile.model_validate(doc)
        except ValidationError as err:
            raise ArtifactError(format_error(err, str(source))) from None
    rec: Artifact = _RECORDS[got].from_doc(doc, source)
    return rec


def _non_finite(doc: Any, where: str = "") -> tuple[str, float] | None:
    """The path of the first NaN or infinity in a parsed document, and the value; None when there is none."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return where, doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(k, int) else (f"{where}.{k}" if where else str(k)))
        if found is not None:
            return found
    return None


@overload
def load_artifact(path: str | Path, kind: Literal["sim_result"]) -> SimResult: ...
@overload
def load_artifact(path: str | Path, kind: Literal["plan"]) -> Plan: ...
@overload
def load_artifact(path: str | Path, kind: Literal["measured"]) -> Measured: ...
@overload
def load_artifact(path: str | Path, kind: Literal["validation"]) -> Validation: ...
@overload
def load_artifact(path: str | Path, kind: Literal["profile"]) -> Profile: ...
@overload
def load_artifact(path: str | Path, kind: Literal["benchmark"]) -> Benchmark: ...
@overload
def load_artifact(path: str | Path, kind: Literal["expected"]) -> Expected: ...
@overload
def load_artifact(path: str | Path, kind: Literal["gate_result"]) -> GateResult: ...
@overload
def load_artifact(path: str | Path, kind: str | None = None) -> Artifact: ...


def load_artifact(path: str | Path, kind: str | None = None) -> Artifact:
    """Read the artifact at ``path``: a JSON file, or the folder a command wrote it to.

    Returns its typed record (:class:`SimResult`, :class:`Plan`, :class:`Measured`,
    :class:`Validation`, :class:`Benchmark`, :class:`Expected`, :class:`GateResult`, or a
    :class:`~servewise.profile.Profile`). ``kind`` requires that kind. Anything else —
    no such file, not JSON, another kind, an unknown schema version, a field of the
    wrong type or out of range — is one :class:`~servewise.errors.ArtifactError` line
    naming the file (and the field).
    """
    p = find_artifact(path)
    what = KINDS[kind][1] if kind in KINDS else "artifact"
    return artifact_from_doc(read_json(p, what), p, kind)
