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
    assert space.slo is not None and space.slo.p95_latency_s is not None


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
    predicted = json.loads((out / "validation" / "predicted" / "result.json").read_text())["summary"]
    measured = json.loads((out / "validation" / "measured" / "measured.json").read_text())["summary"]
    assert predicted["requests"] == measured["requests"] == 600
    assert measured["completed"] == 600
    assert len(pd.read_csv(out / "validation" / "measured" / "requests.csv")) == 600
    # one report that links every stage and says the verdict
    page = (out / "report.html").read_text()
    hrefs = set(re.findall(r'href="([^"#][^"]*)"', page))
    for rel in ("profile.json", "plan/plan.json", "validation/validation.json"):
        assert any(h.endswith(rel) for h in hrefs), (rel, hrefs)
    assert val["verdict"] in page.lower()
    assert "<script" not in page.lower()
    assert "validation" in r.stdout and loop["winner"]["label"] in r.stdout
