"""Corrupt artifacts, fed to ``servewise report`` and ``servewise gate``: a clear error or a page.

Every artifact kind (profile, sim_result, plan, measured, validation, benchmark) is read
through the typed records, so a mutated file — a required key dropped, a value of the
wrong type, a negative or NaN number, an empty list, a ``requests.csv`` with a header
only — either renders (and gates) fine, or exits 2 with exactly one ``error:`` line that
names the file. Never a traceback. The mutations include the nine inputs that crashed the
report and the gate before the records (profile latency plot, timeline, plan view,
sim-vs-sim comparison).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from _make import real_artifacts, two_variant_profile
from typer.testing import CliRunner

from servewise.cli import app

pytestmark = pytest.mark.xdist_group("serving")

DROP = object()
"""Marks a key to delete."""

Mutation = tuple[str, tuple[Any, ...], Any]
"""(name, path into the document, new value or DROP)."""

NAN = math.nan

MUTATIONS: dict[str, list[Mutation]] = {
    "profile": [
        ("variant name an int", ("variants", 0, "name"), 5),
        ("point phase an int", ("variants", 0, "points", 0, "phase"), 1),
        ("point without seq_len", ("variants", 0, "points", 0, "seq_len"), DROP),
        ("negative error bar", ("variants", 0, "points", 0, "latency_s", "ci_rel"), -0.5),
        ("NaN median", ("variants", 0, "points", 0, "latency_s", "p50"), NAN),
        ("no variants", ("variants",), []),
        ("no points", ("variants", 0, "points"), []),
        ("cpu_count a string", ("hardware", "cpu_count"), "two"),
        ("negative load time", ("variants", 0, "load_time_s"), -1.0),
    ],
    "sim_result": [
        ("p95 a string", ("summary", "latency_s", "p95"), "x"),
        ("negative p95", ("summary", "latency_s", "p95"), -1.0),
        ("NaN p99", ("summary", "latency_s", "p99"), NAN),
        ("no requests count", ("summary", "requests"), DROP),
        ("summary a list", ("summary",), []),
        ("empty timeline", ("timeline", "t_s"), []),
        ("no pools", ("pools",), []),
        ("seed a string", ("metadata", "seed"), "1"),
        ("SLO check without value", ("slo", "checks", "p95_latency_s", "value"), DROP),
        ("header-only requests.csv", (), "header-only"),
    ],
    "plan": [
        ("metrics a string", ("candidates", 0, "metrics"), "x"),
        ("no candidates", ("candidates",), []),
        ("winner unknown", ("winner",), "nope"),
        ("margin a string", ("candidates", 0, "binding_slo", "margin"), "x"),
        ("negative cost", ("candidates", 0, "cost_per_hour_usd"), -1.0),
        ("ranking of ints", ("ranking",), [5]),
        ("statuses a list", ("search", "statuses"), []),
        ("candidate without id", ("candidates", 0, "id"), DROP),
        ("NaN fidelity", ("candidates", 0, "fidelity"), NAN),
    ],
    "measured": [
        ("generator without valid", ("generator", "valid"), DROP),
        ("negative p99", ("summary", "latency_s", "p99"), -1.0),
        ("status codes a list", ("status_codes",), []),
        ("NaN send lag", ("generator", "send_lag_s", "p99"), NAN),
        ("stream a string", ("metadata", "stream"), "yes"),
        ("no processes", ("generator", "processes"), []),
        ("header-only requests.csv", (), "header-only"),
    ],
    "validation": [
        ("NaN prediction", ("metrics", "latency_s.p50", "predicted"), NAN),
        ("no verdict", ("verdict",), DROP),
        ("verdict unknown", ("verdict",), "maybe"),
        ("measured latency null", ("measured", "latency_s"), None),
        ("metrics a list", ("metrics",), []),
        ("no metrics", ("metrics",), {}),
        ("generator empty", ("generator",), {}),
        ("SLO checks a list", ("slo_measured", "checks"), []),
    ],
    "benchmark": [
        ("no samples", ("cases", 0, "samples"), []),
        ("sample a string", ("cases", 0, "samples", 0), "x"),
        ("NaN sample", ("cases", 0, "samples", 0), NAN),
        ("case without name", ("cases", 0, "name"), DROP),
        ("no cases", ("cases",), []),
        ("better sideways", ("cases", 0, "better"), "sideways"),
        ("negative sample", ("cases", 0, "samples", 0), -1.0),
    ],
}

_ARTS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The JSON file of one real artifact of each kind (folders keep their requests.csv)."""
    if _ARTS:
        return _ARTS
    arts = real_artifacts(tmp_path_factory.mktemp("artifacts"))
    root = tmp_path_factory.mktemp("fuzz-originals")
    bench = root / "benchmark.json"
    bench.write_text(json.dumps({
        "kind": "benchmark", "schema_version": 1, "name": "b",
        "cases": [{"name": "c", "unit": "s", "better": "lower", "samples": [0.01 + 0.0001 * k for k in range(20)]}],
    }))  # fmt: skip
    _ARTS.update(
        profile=two_variant_profile(root / "profile.json"),
        sim_result=arts["sim"] / "result.json",
        plan=arts["plan"] / "plan.json",
        measured=arts["measured"] / "measured.json",
        validation=arts["validation"] / "validation.json",
        benchmark=bench,
    )
    return _ARTS


def _apply(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    *head, last = path
    for k in head:
        doc = doc[k]
    if value is DROP:
        del doc[last]
    else:
        doc[last] = value


def _mutated(original: Path, dest: Path, path: tuple[Any, ...], value: Any) -> Path:
    """A copy of the artifact's folder (JSON and tables) with one mutation; the mutated file."""
    shutil.copytree(original.parent, dest, ignore=shutil.ignore_patterns("*.html"))
    target = dest / original.name
    if value == "header-only":
        csv = dest / "requests.csv"
        csv.write_text(csv.read_text().splitlines()[0] + "\n")
        return target
    if not path:
        return target
    doc = json.loads(target.read_text())
    _apply(doc, path, value)
    target.write_text(json.dumps(doc))  # NaN is written as NaN: what a foreign tool might do
    return target


def _gate_args(kind: str, original: Path, current: Path) -> list[list[str]]:
    """How each kind is gated: against its unmutated self, and on an SLO expression where it takes one."""
    calls = [["gate", "--current", str(current), "--baseline", str(original)]]
    if kind in ("sim_result", "plan", "measured"):
        calls.append(["gate", "--current", str(current), "--slo", "p95_latency_s<=100"])
    if kind == "validation":
        calls = [["gate", "--current", str(current)], ["gate", "--current", str(current), "--slo", "p95_latency_s<=100"]]
    return calls


def _check(runner: CliRunner, args: list[str], named: Path, ok: tuple[int, ...]) -> int:
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{' '.join(args)} raised {result.exception!r}"
    )
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert str(named) in lines[0], f"the error does not name {named}: {lines[0]}"
    else:
        assert result.exit_code in ok, f"{' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.exit_code


CASES = [(kind, *m) for kind, ms in MUTATIONS.items() for m in ms]


@pytest.mark.parametrize(("kind", "name", "path", "value"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_a_corrupt_artifact_is_one_error_line_or_a_page(
    originals: dict[str, Path], tmp_path: Path, kind: str, name: str, path: tuple[Any, ...], value: Any
) -> None:
    runner = CliRunner()
    original = originals[kind]
    bad = _mutated(original, tmp_path / "bad", path, value)
    # the table is named when it is the bad part; the JSON file otherwise
    named = bad.parent if value == "header-only" else bad
    page = tmp_path / "r.html"
    code = _check(runner, ["report", str(bad), "--out", str(page)], named, ok=(0,))
    assert (code == 0) == page.is_file()
    for args in _gate_args(kind, original, bad):
        _check(runner, args, named, ok=(0, 1))


def test_the_error_names_the_file_and_the_field(originals: dict[str, Path], tmp_path: Path) -> None:
    bad = _mutated(originals["sim_result"], tmp_path / "bad", ("summary", "latency_s", "p95"), "x")
    result = CliRunner().invoke(app, ["report", str(bad), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {bad}: field 'summary.latency_s.p95': expected a number >= 0, got 'x'"


def test_a_bad_requests_table_names_its_column_and_row(originals: dict[str, Path], tmp_path: Path) -> None:
    bad = _mutated(originals["sim_result"], tmp_path / "bad", (), None)
    csv = bad.parent / "requests.csv"
    lines = csv.read_text().splitlines()
    cols = lines[0].split(",")
    row = lines[2].split(",")
    row[cols.index("latency_s")] = "slow"
    csv.write_text("\n".join([*lines[:2], ",".join(row), *lines[3:]]) + "\n")
    result = CliRunner().invoke(app, ["report", str(bad.parent), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert f"{csv}: column 'latency_s': expected numbers, got 'slow' (row 2)" in result.stderr

