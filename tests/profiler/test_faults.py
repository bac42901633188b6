"""Faults while profiling: a failing grid point, a killed worker, a corrupt model, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _torchreq import require_torch
from typer.testing import CliRunner

from servewise.cli import app
from servewise.profile import load_profile
from servewise.profiler import FaultInjection, Grid, ProfileSettings, TimingSettings, run_profile

require_torch()
pytestmark = pytest.mark.xdist_group("faults")

GRID = Grid(batch_sizes=(1, 2), seq_lens=(8,), decode_batch_sizes=(1, 2), context_lens=(16,))
FAST = ProfileSettings(grid=GRID, timing=TimingSettings(budget_s=0.03, warmup_s=0.01, rounds=1, processes=1, min_time_s=0.03), threads=1)


def test_a_grid_point_that_raises_is_recorded_and_the_rest_measured(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    prof = run_profile(["builtin:tiny-gpt2"], ["fp32"], out, FAST, fault=FaultInjection("fp32", point=1, mode="raise"))
    v = prof.variant("fp32")
    assert v.status == "measured"
    assert [p.status for p in v.points] == ["measured", "failed", "measured", "measured"]
    assert "injected fault" in (v.points[1].error or "")
    assert any("1 grid point(s) failed" in w for w in v.warnings)
    assert v.latency_model is None  # 3 measured points: too few to fit, and it says so
    assert any("too few measured points" in w for w in v.warnings)
    assert load_profile(out).status == "complete"


def test_a_killed_worker_keeps_its_points_and_the_next_variant_runs(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    prof = run_profile(["builtin:tiny-gpt2"], ["fp32", "bf16"], out, FAST, fault=FaultInjection("fp32", point=2, mode="kill"))
    fp32, bf16 = prof.variant("fp32"), prof.variant("bf16")
    assert fp32.status == "failed"
    assert "SIGKILL" in (fp32.error or "") and "after 2 of 4 points" in (fp32.error or "")
    assert [p.status for p in fp32.points] == ["measured", "measured"]  # nothing measured is lost
    assert fp32.load_time_s is not None and fp32.peak_mem_bytes
    assert bf16.status == "measured" and len(bf16.points) == 4
    assert load_profile(out) == prof


def test_corrupt_model_folders_give_clear_errors_and_keep_earlier_results(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    run_profile(["builtin:tiny-gpt2"], ["fp32"], out, FAST)
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text('{"model_type": "bert",\n  oops}')
    bad_weights = tmp_path / "bad-weights"
    bad_weights.mkdir()
    (bad_weights / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 100,
                                                           "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                           "intermediate_size": 64}))
    (bad_weights / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    runner = CliRunner()
    for folder, expect in ((bad_json, "config.json:2: not valid JSON"), (bad_weights, "cannot load the Hugging Face model")):
        r = runner.invoke(app, ["profile", "--model", f"hf:{folder}", "--variants", "fp32", "--out", str(out), "--append",
                                "--fast", "--threads", "1"])
        assert r.exit_code == 1, r.output
        assert expect in r.output.replace("\n", "")
        prof = load_profile(out)
        assert prof.variant("fp32", model="builtin:tiny-gpt2").status == "measured"  # earlier results kept
        bad = prof.variant("fp32", model=f"hf:{folder}")
        assert bad.status == "failed" and expect in (bad.error or "")


def test_ctrl_c_keeps_everything_measured_marked_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    cmd = [sys.executable, "-m", "servewise", "profile", "--model", "builtin:tiny-gpt2", "--variants", "fp32,bf16",
           "--out", str(out), "--budget-s", "0.5", "--threads", "1", "--batch-sizes", "1,2,4,8", "--seq-lens", "8,16",
           "--decode-batch-sizes", "1,2", "--context-lens", "16,32"]
    tmp = tmp_path / "tmp"  # the run's work folder goes here, so we can look for leftovers
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    # A process started with SIGINT ignored (as a pytest-xdist worker may be, or a background
    # job of a non-interactive shell) passes that on, and Python then installs no Ctrl-C
    # handler: give the CLI the default disposition, as a terminal would.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.exists():
                try:
                    data = json.loads(out.read_text())
                except json.JSONDecodeError:  # pragma: no cover - the file is written atomically
                    pytest.fail("a half-written profile was observed")
                if any(p["status"] == "measured" for v in data["variants"] for p in v["points"]):
                    break
            time.sleep(0.1)
        else:
            pytest.fail("no point measured within 120 s")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "incomplete" in err
    prof = load_profile(out)
    assert prof.status == "incomplete"
    v = prof.variant("fp32")
    assert v.status == "incomplete" and len(v.points) >= 1
    assert all(p.status == "measured" for p in v.points)
    # The worker was stopped with the parent, and the work folder removed.
    left = subprocess.run(["pgrep", "-f", str(tmp)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
    assert list(tmp.glob("servewise-profile-*")) == []
