"""``servewise gate``: every exit code, the hardware refusal, missing data, escaping, and its statistics.

Profiles are hand-built with samples drawn around known medians (``_make``), so a
regression is a known multiple of the truth. The statistics are checked against
independent computations: the exact bootstrap of the median against brute-force
resampling, Holm's adjustment against its definition, the rule against synthetic
gates with known truth (A/A and a 10% slowdown, many seeds; slow).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _make import GRID, edit_json, make_profile, make_variant, real_artifacts, true_median_s, two_variant_profile

from servewise.errors import ArtifactError, GateError
from servewise.reports import run_gate
from servewise.reports._gate_stats import holm, median_draws, ratio_ci


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servewise", "gate", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- profile vs profile


def test_same_build_passes_and_a_real_slowdown_fails(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json", seed=1)
    same = two_variant_profile(tmp_path / "b.json", seed=2)
    slow = two_variant_profile(tmp_path / "c.json", seed=2, factor=1.20)
    ok = run_gate(baseline=base, current=same, max_regression=0.05)
    assert ok.exit_code == 0 and len(ok.checks) == 2 * len(GRID)
    assert all(c.status == "pass" and c.kind == "regression" for c in ok.checks)
    bad = run_gate(baseline=base, current=slow, max_regression=0.05)
    assert bad.exit_code == 1
    assert all(c.status == "fail" for c in bad.checks)
    for c in bad.checks:
        # the interval holds the true ratio, and is sure the slowdown is beyond 5%
        assert c.ci_low is not None and c.ci_high is not None and c.ratio is not None
        assert c.ci_low < 1.20 < c.ci_high and c.ci_low > 1.05
        assert c.p_holm is not None and c.p_holm < 0.01
        assert c.baseline is not None and c.current is not None and c.current / c.baseline == pytest.approx(c.ratio)


def test_a_significant_slowdown_within_the_threshold_passes(tmp_path: Path) -> None:
    # 2% slower with 400 samples at 1% noise: certainly slower, certainly not 5% slower
    def variant(factor: float, seed: int) -> Any:
        return make_variant("fp32", factor=factor, seed=seed, n=400, cv=0.01)

    base = make_profile(tmp_path / "a.json", [variant(1.0, 1)])
    cur = make_profile(tmp_path / "b.json", [variant(1.02, 2)])
    res = run_gate(baseline=base, current=cur, max_regression=0.05)
    assert res.exit_code == 0
    for c in res.checks:
        assert c.p_holm is not None and c.p_holm < 0.01 and c.ci_high is not None and c.ci_high < 1.05
        assert "significant, but not surely beyond 5%" in c.message
    # ... and fails a 1% threshold
    assert run_gate(baseline=base, current=cur, max_regression=0.01).exit_code == 1


def test_an_improvement_is_not_a_regression(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json", seed=1)
    fast = two_variant_profile(tmp_path / "b.json", seed=2, factor=0.7)
    res = run_gate(baseline=base, current=fast, max_regression=0.0)
    assert res.exit_code == 0 and all(c.ratio is not None and c.ratio < 0.8 for c in res.checks)


@pytest.mark.parametrize(
    "field, value",
    [
        ("cpu_model", "Other CPU 1"),
        ("cpu_count", 64),
        ("threads_used", 2),
        ("torch_version", "2.14.1+cpu"),
        ("onnxruntime_version", "1.20.0"),
        ("python_version", "3.12.1"),
        ("gpu_name", "NVIDIA H200"),
    ],
)
def test_profiles_from_other_hardware_or_libraries_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: Any
) -> None:
    base = two_variant_profile(tmp_path / "a.json")
    other = two_variant_profile(tmp_path / "b.json", **{field: value})
    with pytest.raises(GateError, match=rf"hardware\.{field} differs"):
        run_gate(baseline=base, current=other)
    r = _cli("--baseline", str(base), "--current", str(other), cwd=tmp_path)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and f"hardware.{field} differs" in line and str(value) in line


def test_cpu_flags_differ_names_them_and_a_kernel_update_does_not(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json")
    flags = two_variant_profile(tmp_path / "b.json", cpu_flags=["avx2", "amx_tile"])
    with pytest.raises(GateError, match="hardware.cpu_flags differs: only in baseline avx512f; only in current amx_tile"):
        run_gate(baseline=base, current=flags)
    kernel = two_variant_profile(tmp_path / "c.json", platform="Linux-6.8.0-other-x86_64-with-glibc2.36")
    assert run_gate(baseline=base, current=kernel).exit_code == 0
    mac = two_variant_profile(tmp_path / "d.json", platform="Darwin-24.0-arm64")
    with pytest.raises(GateError, match="hardware.platform differs"):
        run_gate(baseline=base, current=mac)


def test_an_estimated_profile_is_refused(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json")
    est = edit_json(base, tmp_path / "est.json", lambda d: d.update(estimated=True))
    with pytest.raises(GateError, match="an estimate is not a measurement"):
        run_gate(baseline=base, current=est)


# ----------------------------------------------------------------------------- missing data is never a pass


def test_a_point_missing_from_the_current_profile_fails(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json")
    fewer = make_profile(
        tmp_path / "b.json",
        [make_variant("fp32", seed=2, grid=GRID[:3]), make_variant("bf16", speed=0.6, seed=2)],
    )
    res = run_gate(baseline=base, current=fewer)
    missing = [c for c in res.checks if c.status == "missing"]
    assert res.exit_code == 1 and [c.name for c in missing] == ["fp32 forward b=4 s=64"]
    assert "not in the current profile" in missing[0].message


def test_a_variant_skipped_or_failed_in_the_current_profile_fails(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json")

    def skip_bf16(doc: dict[str, Any]) -> None:
        v = doc["variants"][1]
        v.update(status="skipped", skip_reason="no bf16 on this CPU", points=[])

    cur = edit_json(two_variant_profile(tmp_path / "b.json", seed=3), tmp_path / "c.json", skip_bf16)
    res = run_gate(baseline=base, current=cur)
    assert res.exit_code == 1
    miss = [c for c in res.checks if c.status == "missing"]
    assert len(miss) == 1 and miss[0].name == "bf16" and "no bf16 on this CPU" in miss[0].message


def test_too_few_samples_is_missing_not_pass(tmp_path: Path) -> None:
    base = make_profile(tmp_path / "a.json", [make_variant("fp32", n=4, seed=1)])
    cur = make_profile(tmp_path / "b.json", [make_variant("fp32", n=4, seed=2)])
    res = run_gate(baseline=base, current=cur)
    assert res.exit_code == 1 and {c.status for c in res.checks} == {"missing"}
    assert "too few samples" in res.checks[0].message


def test_an_empty_baseline_is_missing_not_pass(tmp_path: Path) -> None:
    base = make_profile(tmp_path / "a.json", [make_variant("fp32", status="skipped", skip_reason="none", points=[])])
    res = run_gate(baseline=base, current=two_variant_profile(tmp_path / "b.json"))
    assert res.exit_code == 1 and res.checks[0].kind == "coverage" and res.checks[0].status == "missing"


# ----------------------------------------------------------------------------- SLO expressions


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return real_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.mark.xdist_group("serving")
def test_slo_expressions_on_a_sim_result(arts: dict[str, Path], tmp_path: Path) -> None:
    s = json.loads((arts["sim"] / "result.json").read_text())["summary"]
    p95 = s["latency_s"]["p95"]
    ok = run_gate(current=arts["sim"], slos=[f"p95_latency_s<={p95 * 1.01}", f"latency_s.p99 <= {s['latency_s']['p99']}",
                                              "rejection_ratio < 1%", f"throughput_rps>={s['throughput_rps'] * 0.99}"])  # fmt: skip
    assert ok.exit_code == 0 and [c.status for c in ok.checks] == ["pass"] * 4
    assert ok.checks[0].current == pytest.approx(p95) and ok.checks[0].threshold == pytest.approx(p95 * 1.01)
    bad = run_gate(current=arts["sim"], slos=[f"p95_latency_s<={p95 * 0.99 * 1000}ms"])
    assert bad.exit_code == 1 and bad.checks[0].status == "fail" and "violates" in bad.checks[0].message
    # a metric this artifact does not have (no LLM engine: TTFT is null) is missing, never a pass
    none = run_gate(current=arts["sim"], slos=["p95_ttft_s<=10"])
    assert none.exit_code == 1 and none.checks[0].status == "missing"
    r = _cli("--current", str(arts["sim"]), "--slo", f"p95_latency_s<={p95 * 0.5}", cwd=tmp_path)
    assert r.returncode == 1 and "FAIL" in r.stdout


@pytest.mark.parametrize(
    "expr, message",
    [
        ("p95_latency<=0.5", "unknown metric 'p95_latency'"),
        ("p95_latency_s=<0.5", "expected METRIC OP VALUE"),
        ("p95_latency_s<=0.5%", "is not a ratio"),
        ("rejection_ratio<=1ms", "is not in seconds"),
        ("measured.p95_latency_s<=1", "apply to validation artifacts only"),
    ],
)
@pytest.mark.xdist_group("serving")
def test_bad_slo_expressions_exit_2_naming_the_expression(arts: dict[str, Path], tmp_path: Path, expr: str, message: str) -> None:
    r = _cli("--current", str(arts["sim"]), "--slo", expr, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and message in line


@pytest.mark.xdist_group("serving")
def test_validation_and_measured_artifacts(arts: dict[str, Path], tmp_path: Path) -> None:
    val = json.loads((arts["validation"] / "validation.json").read_text())
    res = run_gate(current=arts["validation"], slos=["measured.rejection_ratio<=0", "predicted.p95_latency_s<=10"])
    verdict = next(c for c in res.checks if c.kind == "verdict")
    assert verdict.status == val["verdict"]
    assert res.exit_code == (0 if val["verdict"] == "pass" else 1)
    # a failed validation fails the gate; an invalid one cannot be judged
    failed = edit_json(arts["validation"] / "validation.json", tmp_path / "f" / "validation.json", lambda d: d.update(verdict="fail"))
    assert run_gate(current=failed).exit_code == 1
    invalid = edit_json(arts["validation"] / "validation.json", tmp_path / "i" / "validation.json",
                        lambda d: d.update(verdict="invalid", invalid_reasons=["send lag p99 0.2 s > 0.05 s"]))  # fmt: skip
    r = _cli("--current", str(invalid), cwd=tmp_path)
    assert r.returncode == 2 and "send lag p99" in r.stderr
    # measured vs itself: the raw latencies of requests.csv, tested; nothing regresses
    same = run_gate(baseline=arts["measured"], current=arts["measured"])
    assert same.exit_code == 0 and any(c.name == "latency_s median" and c.n_current == 150 for c in same.checks)


@pytest.mark.xdist_group("serving")
def test_sim_vs_sim_and_plan_vs_plan(arts: dict[str, Path], tmp_path: Path) -> None:
    assert run_gate(baseline=arts["sim"], current=arts["sim"]).exit_code == 0

    def slower(doc: dict[str, Any]) -> None:
        doc["summary"]["latency_s"]["p99"] *= 1.2

    cur = edit_json(arts["sim"] / "result.json", tmp_path / "s" / "result.json", slower)
    res = run_gate(baseline=arts["sim"], current=cur, max_regression=0.1)
    assert [c.name for c in res.checks if c.status == "fail"] == ["latency_s.p99"] and res.exit_code == 1
    other_seed = edit_json(arts["sim"] / "result.json", tmp_path / "o" / "result.json", lambda d: d["metadata"].update(seed=9))
    with pytest.raises(GateError, match="metadata.seed differs"):
        run_gate(baseline=arts["sim"], current=other_seed)
    assert run_gate(baseline=arts["plan"], current=arts["plan"]).exit_code == 0
    with pytest.raises(GateError, match="different kinds"):
        run_gate(baseline=arts["plan"], current=arts["sim"])


def test_benchmarks_higher_is_better(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def bench(path: Path, rate: float) -> Path:
        doc = {"kind": "benchmark", "schema_version": 1, "name": "b",
               "cases": [{"name": "rps", "unit": "req/s", "better": "higher", "samples": list(rate * rng.lognormal(0, 0.02, 30))}]}  # fmt: skip
        path.write_text(json.dumps(doc))
        return path

    base = bench(tmp_path / "a.json", 1000.0)
    assert run_gate(baseline=base, current=bench(tmp_path / "b.json", 1000.0)).exit_code == 0
    assert run_gate(baseline=base, current=bench(tmp_path / "c.json", 1200.0)).exit_code == 0
    res = run_gate(baseline=base, current=bench(tmp_path / "d.json", 800.0))
    assert res.exit_code == 1 and res.checks[0].ci_high is not None and res.checks[0].ci_high < 0.95


def test_inputs_that_cannot_be_judged_exit_2(tmp_path: Path) -> None:
    prof = two_variant_profile(tmp_path / "a.json")
    r = _cli("--current", str(prof), cwd=tmp_path)
    assert r.returncode == 2 and "needs a baseline" in r.stderr
    r = _cli("--current", str(prof), "--slo", "p95_latency_s<=1", cwd=tmp_path)
    assert r.returncode == 2 and "is a profile" in r.stderr
    r = _cli("--current", str(prof), "--baseline", str(prof), "--max-regression", "five", cwd=tmp_path)
    assert r.returncode == 2 and "--max-regression" in r.stderr
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ArtifactError, match="not a servewise artifact"):
        run_gate(current=tmp_path / "x.json", slos=["p95_latency_s<=1"])
    r = _cli("--current", str(tmp_path / "nowhere.json"), "--slo", "p95_latency_s<=1", cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- outputs for CI


def test_markdown_and_junit_escape_names_and_count_failures(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>|x\n**bold**"
    base = make_profile(tmp_path / "a.json", [make_variant("fp32", model=m, seed=1) for m in (evil, "plain")])
    cur = make_profile(tmp_path / "b.json", [make_variant("fp32", model=m, seed=2, factor=1.5) for m in (evil, "plain")])
    md, junit, js = tmp_path / "s.md", tmp_path / "j.xml", tmp_path / "g.json"
    r = _cli("-b", str(base), "-c", str(cur), "--markdown", str(md), "--junit", str(junit), "--json", str(js), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    text = md.read_text()
    assert text.startswith("## ❌ servewise gate: FAIL")
    assert "<script>" not in text and "&lt;script&gt;" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ❌")]
    assert len(rows) == 2 * len(GRID)
    assert all(ln.count(" | ") == 8 for ln in rows)  # 9 cells: the name's '|' and newline split nothing
    tree = ET.parse(junit)
    suite = tree.getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == str(2 * len(GRID)) and suite.get("failures") == str(2 * len(GRID))
    cases = suite.findall("testcase")
    assert all(c.find("failure") is not None for c in cases)
    # ElementTree escaped the name on the way out and gives it back whole
    assert sum((c.get("name") or "").startswith(evil + " fp32 forward") for c in cases) == len(GRID)
    doc = json.loads(js.read_text())
    assert doc["kind"] == "gate_result" and doc["exit_code"] == 1
    assert doc["counts"] == {"pass": 0, "fail": 2 * len(GRID), "missing": 0}


# ----------------------------------------------------------------------------- the statistics


def test_exact_median_bootstrap_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for n in (7, 40):
        x = rng.lognormal(0, 0.3, n)
        exact = median_draws(x, np.random.default_rng(2), draws=200_000)
        size = n if n % 2 else n - 1
        brute = np.median(rng.choice(x, size=(200_000, size), replace=True), axis=1)
        qs = [0.025, 0.25, 0.5, 0.75, 0.975]
        np.testing.assert_allclose(np.quantile(exact, qs), np.quantile(brute, qs), rtol=0.02)


def test_holm_matches_its_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []


def test_ratio_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        b = rng.lognormal(0, 0.05, 40)
        c = 1.1 * rng.lognormal(0, 0.05, 40)
        lo, hi = ratio_ci(c, b, rng, 0.95)
        hits += lo <= 1.1 <= hi
    assert hits >= 0.9 * 200


@pytest.mark.slow
def test_synthetic_error_rates_of_the_rule(tmp_path: Path) -> None:
    """A/A on 100 synthetic profile pairs: at most 1 false regression; 10% slower: caught in 95 or more.

    Noise like this machine's (lognormal, 5% spread, 40 samples per point, 4 points per
    variant, 2 variants), with a 5% threshold.
    """
    false_reg = caught = 0
    for seed in range(100):
        a = two_variant_profile(tmp_path / f"a{seed}.json", seed=2 * seed)
        b = two_variant_profile(tmp_path / f"b{seed}.json", seed=2 * seed + 1)
        s = two_variant_profile(tmp_path / f"s{seed}.json", seed=2 * seed + 1, factor=1.10)
        false_reg += run_gate(baseline=a, current=b, max_regression=0.05, seed=seed).exit_code != 0
        caught += run_gate(baseline=a, current=s, max_regression=0.05, seed=seed).exit_code == 1
    assert false_reg <= 1
    assert caught >= 95


def test_true_medians_are_what_the_checks_report(tmp_path: Path) -> None:
    base = make_profile(tmp_path / "a.json", [make_variant("fp32", n=2000, cv=0.02, seed=1)])
    res = run_gate(baseline=base, current=base)
    for c, (b, s) in zip(res.checks, GRID, strict=True):
        assert c.baseline == pytest.approx(true_median_s(b, s), rel=0.01) and c.ratio == 1.0


# ----------------------------------------------------------------------------- speed adjustment


def test_a_slower_machine_is_divided_out_and_a_slower_build_is_not(tmp_path: Path) -> None:
    base = two_variant_profile(tmp_path / "a.json", seed=1, machine=1.0)
    # the same build on a machine 12% slower for this run: model and kernel alike
    drift = two_variant_profile(tmp_path / "b.json", seed=2, machine=1.12)
    adjusted = run_gate(baseline=base, current=drift, max_regression=0.05)
    assert adjusted.exit_code == 0
    for c in adjusted.checks:
        assert c.speed_ratio == pytest.approx(1.12, rel=0.01) and c.raw_ratio is not None and c.raw_ratio > 1.08
        assert c.ratio == pytest.approx(c.raw_ratio / c.speed_ratio) and 0.95 < c.ratio < 1.05
        assert "by the calibration kernel" in c.message
    raw = run_gate(baseline=base, current=drift, max_regression=0.05, calibrate=False)
    assert raw.exit_code == 1 and all(c.speed_ratio is None for c in raw.checks)
    # a build 12% slower on a machine as fast as before: caught
    slow = two_variant_profile(tmp_path / "c.json", seed=2, machine=1.0, factor=1.12)
    caught = run_gate(baseline=base, current=slow, max_regression=0.05)
    assert caught.exit_code == 1 and all(c.ci_low is not None and c.ci_low > 1.05 for c in caught.checks)
    # no calibration on one side: raw timings, said so
    plain = two_variant_profile(tmp_path / "d.json", seed=2)
    res = run_gate(baseline=base, current=plain)
    assert all("raw timings" in c.message and c.speed_ratio is None for c in res.checks)


def test_the_calibration_noise_widens_the_interval() -> None:
    rng = np.random.default_rng(0)
    b, c = rng.lognormal(0, 0.02, 60), rng.lognormal(0, 0.02, 60)
    lo0, hi0 = ratio_ci(c, b, np.random.default_rng(1), 0.95)
    noisy = (rng.lognormal(0, 0.05, 6), rng.lognormal(0, 0.05, 6))
    lo1, hi1 = ratio_ci(c, b, np.random.default_rng(1), 0.95, calibration=noisy)
    assert hi1 - lo1 > 1.5 * (hi0 - lo0)


def test_between_round_interval_is_welchs_pooled_t_interval() -> None:
    from scipy import stats

    from servewise.reports._gate_stats import rounds_halfwidth

    b = np.array([7.1e-3, 7.3e-3, 7.2e-3])
    c = np.array([7.6e-3, 7.9e-3, 7.4e-3, 7.7e-3])
    got = rounds_halfwidth(b, c, 0.95)
    ci = stats.ttest_ind(np.log(c), np.log(b), equal_var=True).confidence_interval(0.95)
    assert got == pytest.approx((ci.high - ci.low) / 2)
    assert rounds_halfwidth(b[:1], c, 0.95) is None


def test_a_point_that_moved_between_rounds_cannot_fail_alone(tmp_path: Path) -> None:
    # current 9% slower at one point, but its baseline rounds disagreed by 12%: not surely beyond 5%
    def rounds(doc: dict[str, Any], medians: list[list[float]]) -> None:
        for p, m in zip(doc["variants"][0]["points"], medians, strict=True):
            p["round_medians_s"] = m

    base = make_profile(tmp_path / "a.json", [make_variant("fp32", seed=1, n=60, cv=0.02, machine=1.0)])
    cur = make_profile(tmp_path / "b.json", [make_variant("fp32", seed=2, n=60, cv=0.02, machine=1.0, factor=1.09)])
    meds = [true_median_s(b, s) for b, s in GRID]
    steady = [[m * 0.995, m, m * 1.005] for m in meds]
    moved = [[m * 0.94, m * 1.06, m] for m in meds]
    b1 = edit_json(base, tmp_path / "b1.json", lambda d: rounds(d, steady))
    c1 = edit_json(cur, tmp_path / "c1.json", lambda d: rounds(d, [[x * 1.09 for x in r] for r in steady]))
    assert run_gate(baseline=b1, current=c1).exit_code == 1  # steady rounds: a sure 9% is caught
    b2 = edit_json(base, tmp_path / "b2.json", lambda d: rounds(d, moved))
    res = run_gate(baseline=b2, current=c1)
    assert res.exit_code == 0
    assert all(c.ci_low is not None and c.ci_low < 1.05 for c in res.checks)
