"""`servewise profile` usage errors and `profile show` / `profile transfer` (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fold at 80 columns; assert on unfolded text."""
    from servewise.cli import _common

    monkeypatch.setattr(_common.out, "width", 200)


def run(*args: str):
    return runner.invoke(app, list(args))


def test_unknown_spec_lists_the_supported_forms(tmp_path: Path) -> None:
    r = run("profile", "--model", "gpt5", "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 2
    text = r.output.replace("\n", " ")
    for form in ("builtin:tiny-gpt2", "builtin:minilm", "hf:PATH", "TorchScript", "torch.export"):
        assert form in text
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fast", "--rigorous"], "--fast and --rigorous conflict"),
        (["--variants", "fp32,fp64"], "unknown variant 'fp64'"),
        (["--batch-sizes", "1,x"], "--batch-sizes: expected comma-separated positive integers"),
        (["--budget-s", "0"], "--budget-s: Input should be greater than 0 (got 0.0)"),
        (["--target-ci", "2"], "--target-ci: Input should be less than 1 (got 2.0)"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    r = run("profile", "--model", "builtin:tiny-gpt2", "--out", str(tmp_path / "p.json"), *args)
    assert r.exit_code == 2
    assert message in r.output.replace("\n", " ")
    assert "Traceback" not in r.output


def test_model_and_out_are_required(tmp_path: Path) -> None:
    r = run("profile", "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 2 and "--model is required" in r.output
    r = run("profile", "--model", "builtin:tiny-gpt2")
    assert r.exit_code == 2 and "--out is required" in r.output


def test_show_and_transfer(tmp_path: Path, make_variant, write_profile) -> None:
    p = write_profile(make_variant("fp32", weights_bytes=10_000_000, load_time_s=1.5))
    r = run("profile", "show", str(p))
    assert r.exit_code == 0, r.output
    assert "fp32" in r.output and "measured" in r.output
    out = tmp_path / "est.json"
    r = run("profile", "transfer", str(p), "--to", "c7i.2xlarge", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "estimated" in r.output
    from servewise.profile import load_profile

    est = load_profile(out)
    assert est.estimated and est.hardware.catalog_name is not None
    r = run("profile", "transfer", str(p), "--to", "no-such-gpu", "--out", str(out))
    assert r.exit_code == 2 and "no-such-gpu" in r.output


def test_show_refuses_other_artifacts(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text('{"kind": "sim_result", "schema_version": 1}')
    r = run("profile", "show", str(f))
    assert r.exit_code == 2 and "expected 'profile'" in r.output


def test_messages_with_brackets_are_printed_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich markup must not eat '[profile]' or a path with brackets."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    r = run("profile", "--model", "builtin:tiny-gpt2", "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 2
    assert "pip install 'servewise[profile]'" in r.output
    monkeypatch.undo()
    r = run("profile", "--model", "hf:/no/such[dir]", "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 2 and "/no/such[dir] is not a folder" in r.output
