"""The README's first command: ``servewise demo`` runs the whole loop on the built-in defaults.

profile (real MiniLM, this machine) → advise (built-in space, shipped trace excerpt) →
serve the winner live → validate with Locust → one report linking every stage. The
loop test replays the first 600 requests to stay short; everything else is the default.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servewise.demo import demo_space_path, demo_trace
from servewise.space import load_space
from servewise.trace import default_trace_path

pytestmark = pytest.mark.xdist_group("serving")


def test_demo_trace_is_the_shipped_excerpt_as_an_embedding_workload() -> None:
    raw = pd.read_csv(default_trace_path())  # the Azure file, read independently of servewise's loader
    ts = pd.to_datetime(raw["TIMESTAMP"], format="mixed")
    t = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    tr = demo_trace(rate_scale=8.0, max_input_tokens=128)
    assert len(tr) == len(raw)
    np.testing.assert_allclose(tr.arrival_s, t / 8.0, atol=1e-6)
    assert np.array_equal(tr.input_tokens, np.clip(raw["ContextTokens"].to_numpy(), 1, 128))
    assert not tr.output_tokens.any()
    assert len(demo_trace(rate_scale=8.0, max_input_tokens=128, max_requests=100)) == 100


def test_the_built_in_space_loads_and_names_the_profiled_variants() -> None:
    space = load_space(demo_space_path())
    assert set(space.variant) == {"fp32", "bf16"}
    # no latency limit in the file: the demo sets it from this machine's profile
    assert space.slo is not None and space.slo.p95_latency_s is None and space.slo.max_rejection_ratio == 0.0


def test_the_demo_slo_scales_with_the_machine(tmp_path: Path, make_variant, write_profile) -> None:
    """The same space on a machine twice as slow gets twice the limit (and a calibrated
    variant's serving overhead on top), so a feasible winner exists on both."""
    from servewise.demo import SLO_FACTOR, _machine_slo

    trace = demo_trace(rate_scale=8.0, max_input_tokens=128, max_requests=400)
    space = load_space(demo_space_path())
    limits = []
    for k in (1.0, 2.0):
        a, coef = 0.002 * k, [0.001 * k, 5e-5 * k, 1e-8 * k]
        path = write_profile(make_variant("fp32", linear=(a, coef)), make_variant("bf16", linear=(2 * a, coef)), path=f"p{k}.json")
        limits.append(_machine_slo(space, path, trace, None).slo.p95_latency_s)
    assert limits[1] == pytest.approx(2 * limits[0], abs=2e-3)  # each rounded up to 1 ms
    s95 = float(np.percentile(trace.input_tokens, 95))
    assert limits[0] == pytest.approx(SLO_FACTOR * (0.002 + 0.001 + 5e-5 * s95 + 1e-8 * s95 * s95), abs=1e-3)


@pytest.mark.slow
def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "servewise", "demo", "--out", str(out), "--max-requests", "600"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    loop = json.loads((out / "loop.json").read_text())
    assert loop["kind"] == "loop" and loop["winner"] is not None
    # every stage left its artifact where loop.json says
    for rel in loop["artifacts"].values():
        assert (out / rel).is_file(), rel
    prof = json.loads((out / "profile.json").read_text())
    assert prof["status"] == "complete" and prof["hardware"]["threads_used"] == 1
    assert {v["name"]: v["status"] for v in prof["variants"]} == {"fp32": "measured", "bf16": "measured"}
    plan = json.loads((out / "plan" / "plan.json").read_text())
    winner = next(c for c in plan["candidates"] if c["id"] == plan["winner"])
    assert winner["feasible"] and winner["label"] == loop["winner"]["label"]
    assert (out / "plan" / "deploy" / "deployment.yaml").is_file()
    # the live replay: every request answered, the same requests the simulator predicted
    val = json.loads((out / "validation" / "validation.json").read_text())
    assert val["verdict"] in ("pass", "fail") and val["verdict"] == loop["verdict"]
    measured = json.loads((out / "validation" / "measured" / "measured.json").read_text())["summary"]
    # calibrated on the first quarter, advised and validated on the other 450 requests
    assert {v["name"]: v["serving"]["requests"] >= 100 for v in prof["variants"]} == {"fp32": True, "bf16": True}
    assert isinstance(loop["profile_unstable"], list)  # warned about (its own profile), never hidden
    assert predicted_n(out) == measured["requests"] == 450 and measured["completed"] == 450
    assert len(pd.read_csv(out / "validation" / "measured" / "requests.csv")) == 450
    assert "p95_latency_s" in (out / "space.yaml").read_text() and "this machine's profile" in (out / "space.yaml").read_text()
    # (whether it passes is a fidelity measurement, reported by the README from a run alone on the machine)
    # one report that links every stage and says the verdict
    page = (out / "report.html").read_text()
    hrefs = set(re.findall(r'href="([^"#][^"]*)"', page))
    for rel in ("profile.json", "plan/plan.json", "validation/validation.json"):
        assert any(h.endswith(rel) for h in hrefs), (rel, hrefs)
    assert val["verdict"] in page.lower()
    assert "<script" not in page.lower()
    assert "validation" in r.stdout and loop["winner"]["label"] in r.stdout


def predicted_n(out: Path) -> int:
    return int(json.loads((out / "validation" / "predicted" / "result.json").read_text())["summary"]["requests"])
