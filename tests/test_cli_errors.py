"""Bad input and bad places to write: one line on stderr and exit 2, never a traceback.

Each case is one a new user hit (issue 15): before the fix, each printed a traceback and
exited 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

DEPLOYMENT = "replicas: 2\nprice_per_hour_usd: 3.6\nservice_time: {distribution: deterministic, mean_s: 0.05}\n"
TRACE = "arrival_s,input_tokens,output_tokens\n0,1,1\n0.1,1,1\n0.2,1,1\n1.0,1,1\n"
NOT_UTF8 = b"kind: deployment\nname: caf\xe9\n"


def one_line_error(r, *, code: int = 2, mentions: str | None = None) -> str:
    """The result failed with exactly one 'error:' line naming ``mentions``."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    if mentions is not None:
        assert mentions in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "d.yaml").write_text(DEPLOYMENT)
    (tmp_path / "t.csv").write_text(TRACE)
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "latin1.yaml").write_bytes(NOT_UTF8)
    return {"d": tmp_path / "d.yaml", "t": tmp_path / "t.csv", "file": tmp_path / "a_file", "latin1": tmp_path / "latin1.yaml"}


def _simulate(files: dict[str, Path], out: Path | str):
    return runner.invoke(app, ["simulate", "-d", str(files["d"]), "-t", str(files["t"]), "--out", str(out), "-q"])


def test_simulate_out_onto_an_existing_file(files: dict[str, Path]) -> None:
    one_line_error(_simulate(files, files["file"]), mentions=str(files["file"]))
    assert files["file"].read_text() == "not a folder\n"


def test_simulate_out_under_proc(files: dict[str, Path]) -> None:
    one_line_error(_simulate(files, "/proc/servewise-x"), mentions="/proc/servewise-x")


def test_trace_generate_out_below_a_file(files: dict[str, Path]) -> None:
    r = runner.invoke(app, ["trace", "generate", "poisson", "--out", f"{files['file']}/x.csv", "--rate-rps", "2", "--n-requests", "5"])
    one_line_error(r, mentions=str(files["file"]))


def test_report_out_below_a_file(files: dict[str, Path], tmp_path: Path) -> None:
    assert _simulate(files, tmp_path / "sim").exit_code == 0
    r = runner.invoke(app, ["report", str(tmp_path / "sim"), "--out", f"{files['file']}/r.html"])
    one_line_error(r, mentions=str(files["file"]))


def test_gate_junit_onto_a_folder(files: dict[str, Path], tmp_path: Path) -> None:
    assert _simulate(files, tmp_path / "sim").exit_code == 0
    (tmp_path / "junit_dir").mkdir()
    r = runner.invoke(app, ["gate", "--current", str(tmp_path / "sim"), "--slo", "p95_latency_s<=1", "--junit", str(tmp_path / "junit_dir")])
    one_line_error(r, mentions="junit_dir")


def test_gate_markdown_from_an_unset_github_step_summary(files: dict[str, Path], tmp_path: Path) -> None:
    """The README's example `--markdown "$GITHUB_STEP_SUMMARY"` outside GitHub Actions."""
    assert _simulate(files, tmp_path / "sim").exit_code == 0
    r = runner.invoke(app, ["gate", "--current", str(tmp_path / "sim"), "--slo", "p95_latency_s<=1", "--markdown", ""])
    assert r.exit_code == 0, r.output
    assert "no Markdown summary written" in r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["deployment", "check", "{latin1}"],
        ["profile", "show", "{latin1}"],
        ["advise", "--space", "{latin1}", "--profile", "{profile}", "--trace", "{t}", "--out", "{tmp}/plan"],
    ],
    ids=["deployment-check", "profile-show", "advise-space"],
)
def test_non_utf8_files_name_the_file_and_line(
    argv: list[str], files: dict[str, Path], tmp_path: Path, make_variant, write_profile
) -> None:
    profile = write_profile(make_variant())
    args = [a.format(latin1=files["latin1"], t=files["t"], tmp=tmp_path, profile=profile) for a in argv]
    line = one_line_error(runner.invoke(app, args), mentions=f"{files['latin1']}:2")
    assert "UTF-8" in line


def test_serve_port_out_of_range_names_the_flag(files: dict[str, Path]) -> None:
    one_line_error(runner.invoke(app, ["serve", str(files["d"]), "--port", "99999"]), mentions="--port")


def test_serve_without_the_serve_extra_is_one_install_hint(files: dict[str, Path], tmp_path: Path) -> None:
    """With aiohttp not importable, `servewise serve` says what to install, in one line."""
    code = (
        "import sys; sys.modules['aiohttp'] = None; sys.argv = ['servewise', 'serve', sys.argv[1], '--port', '0'];"
        "from servewise.cli import main; main()"
    )
    r = subprocess.run([sys.executable, "-c", code, str(files["d"])], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["error: servewise serve needs aiohttp (pip install 'servewise[serve]')"], r.stderr


def test_deployment_check_keeps_stdout_a_loadable_file(files: dict[str, Path], tmp_path: Path) -> None:
    r = runner.invoke(app, ["deployment", "check", str(files["d"])])
    assert r.exit_code == 0, r.output
    assert "ok" in r.stderr and "ok:" not in r.stdout
    filled = tmp_path / "filled.yaml"
    filled.write_text(r.stdout)
    again = runner.invoke(app, ["deployment", "check", str(filled)])
    assert again.exit_code == 0, again.output
    assert again.stdout == r.stdout


def test_help_shows_no_python_types_for_flags_and_lists() -> None:
    for argv in (["profile", "--help"], ["simulate", "--help"], ["report", "--help"], ["--help"]):
        r = runner.invoke(app, argv, env={"COLUMNS": "120"})
        assert r.exit_code == 0
        assert "<bool>" not in r.output and "<list[" not in r.output, r.output
