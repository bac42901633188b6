"""The CLI contract: file names, summary keys, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from servewise.cli import app

runner = CliRunner()

SUMMARY_KEYS = {
    "requests",
    "completed",
    "rejected",
    "failed",
    "latency_s",
    "queue_s",
    "throughput_rps",
    "cache_hit_ratio",
    "cold_starts",
    "mean_replicas",
    "cost_usd",
}
PCTS = {"mean", "p50", "p90", "p95", "p99"}


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    return _write(
        tmp_path,
        "d.yaml",
        "replicas: 2\nprice_per_hour_usd: 3.6\nservice_time: {distribution: deterministic, mean_s: 0.5}\n",
    )


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return _write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n0,1,1\n0.1,1,1\n0.2,1,1\n1.0,1,1\n")


def test_simulate_writes_result_and_requests(tmp_path: Path, deployment: Path, trace: Path) -> None:
    out = tmp_path / "out"
    r = runner.invoke(app, ["simulate", "--deployment", str(deployment), "--trace", str(trace), "--out", str(out), "--seed", "3"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "result.json").read_text())
    s = data["summary"]
    assert SUMMARY_KEYS <= set(s)
    assert PCTS <= set(s["latency_s"]) and PCTS <= set(s["queue_s"])
    # 2 replicas, deterministic 0.5 s, arrivals 0, 0.1, 0.2, 1.0 (round robin):
    # r0 gets 0 and 0.2 (waits until 0.5), r1 gets 0.1 and 1.0.
    assert s["requests"] == 4 and s["completed"] == 4
    assert s["latency_s"]["max"] == pytest.approx(0.8)
    assert s["queue_s"]["max"] == pytest.approx(0.3)
    # cost: 2 replicas × horizon 1.5 s × $3.6/h
    assert s["cost_usd"] == pytest.approx(2 * 1.5 * 3.6 / 3600)
    lines = (out / "requests.csv").read_text().splitlines()
    assert lines[0].startswith("id,arrival_s,status")
    assert len(lines) == 5
    assert data["metadata"]["seed"] == 3


def test_simulate_same_seed_byte_identical(tmp_path: Path, deployment: Path) -> None:
    t = tmp_path / "p.csv"
    assert runner.invoke(app, ["trace", "generate", "poisson", "--rate-rps", "3", "--duration-s", "200", "--out", str(t)]).exit_code == 0
    outs = []
    for k in range(2):
        o = tmp_path / f"o{k}"
        r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(t), "-o", str(o), "--seed", "5", "-q"])
        assert r.exit_code == 0, r.output
        outs.append(o)
    for name in ("result.json", "requests.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def test_simulate_writes_parquet_on_request(tmp_path: Path, deployment: Path) -> None:
    from servewise.results import load_artifact, read_requests

    t = tmp_path / "p.csv"
    assert runner.invoke(app, ["trace", "generate", "poisson", "--rate-rps", "3", "--duration-s", "200", "--out", str(t)]).exit_code == 0
    base = ["simulate", "-d", str(deployment), "-t", str(t), "--seed", "5"]
    r = runner.invoke(app, [*base, "-o", str(tmp_path / "csv"), "-q"])
    assert r.exit_code == 0, r.output
    o = tmp_path / "pq"
    r = runner.invoke(app, [*base, "-o", str(o), "--requests-format", "parquet"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in o.iterdir()) == ["requests.parquet", "result.json"]
    assert "requests.parquet" in "".join(r.output.split())  # the console wraps long paths
    assert (o / "result.json").read_bytes() == (tmp_path / "csv" / "result.json").read_bytes()
    expected = read_requests(tmp_path / "csv" / "requests.csv")
    pd.testing.assert_frame_equal(load_artifact(o, "sim_result").requests, expected, check_exact=True)
    # CSV again into the same folder: the Parquet table goes, readers see this run's table
    r = runner.invoke(app, [*base, "-o", str(o), "-q"])
    assert r.exit_code == 0 and sorted(p.name for p in o.iterdir()) == ["requests.csv", "result.json"]


def test_simulate_refuses_an_unknown_requests_format(tmp_path: Path, deployment: Path, trace: Path) -> None:
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(trace), "-o", str(tmp_path / "o"),
                            "--requests-format", "xlsx"])  # fmt: skip
    assert r.exit_code == 2
    assert r.output.strip() == "error: --requests-format expects one of csv, parquet, got 'xlsx'"
    assert not (tmp_path / "o").exists()  # refused before simulating


@pytest.mark.parametrize(
    ("row", "line", "needle"),
    [
        ("0.5,-3,5", 3, "input_tokens"),
        ("0.5,abc,5", 3, "input_tokens"),
        ("0.05,10,5", 3, "arrival_s"),  # earlier than the row before: unsorted
    ],
)
def test_bad_trace_row_is_one_line_error_with_file_and_line(
    tmp_path: Path, deployment: Path, row: str, line: int, needle: str
) -> None:
    t = _write(tmp_path, "bad.csv", f"arrival_s,input_tokens,output_tokens\n0.1,10,5\n{row}\n1.0,10,5\n")
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(t), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    msg = r.output.strip()
    assert "Traceback" not in msg
    assert f"bad.csv:{line}" in msg and needle in msg
    assert not (tmp_path / "o" / "result.json").exists()


def test_skip_bad_rows_counts_and_continues(tmp_path: Path, deployment: Path) -> None:
    t = _write(tmp_path, "bad.csv", "arrival_s,input_tokens,output_tokens\n0.1,10,5\n0.5,-3,5\n1.0,x,5\n2.0,10,5\n")
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(t), "-o", str(tmp_path / "o"), "--skip-bad-rows"])
    assert r.exit_code == 0, r.output
    assert "skipped 2" in r.output
    assert json.loads((tmp_path / "o" / "result.json").read_text())["summary"]["requests"] == 2


def test_missing_column_names_file_line_1(tmp_path: Path, deployment: Path) -> None:
    t = _write(tmp_path, "nocol.csv", "ts,input_tokens\n0.1,10\n")
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(t), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "nocol.csv" in r.output and "arrival_s" in r.output
    # ... and the column map fixes it
    r = runner.invoke(
        app, ["simulate", "-d", str(deployment), "-t", str(t), "-o", str(tmp_path / "o"), "--column-map", "arrival_s=ts", "-q"]
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("yaml_text", "needles"),
    [
        ("replicas: -1\nservice_time: {distribution: exponential, mean_s: 1}\n", ["'replicas'", "greater than or equal to 0"]),
        ("replicas: 1\nreplica: 2\nservice_time: {distribution: exponential, mean_s: 1}\n", ["'replica'", "not permitted"]),
        ("replicas: 1\nservice_time: {distribution: exponential, mean_s: 1}\nbalancer: {policy: nope}\n", ["'balancer'", "p2c", "round_robin"]),
        ("replicas: 1\nservice_time: {distribution: exponential, mean_s: 1}\nbalancer: {policy: random, d: 2}\n", ["'balancer'", "'d'"]),
        ("replicas: 1\nservice_time: {distribution: exponential, mean_s: 1}\nscaling: {mode: autoscale}\n", ["'scaling'", "min_replicas", "max_replicas", "target_in_flight"]),
        ("replicas: 1\nservice_time: {distribution: exponential, mean_s: 1\n", ["d.yaml:3"]),
    ],
)
def test_invalid_deployment_names_the_field(tmp_path: Path, trace: Path, yaml_text: str, needles: list[str]) -> None:
    d = _write(tmp_path, "d.yaml", yaml_text)
    r = runner.invoke(app, ["simulate", "-d", str(d), "-t", str(trace), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert "d.yaml" in r.output
    for n in needles:
        assert n in r.output


def test_cache_without_keys_is_an_error_and_zipf_keys_fix_it(tmp_path: Path, trace: Path) -> None:
    d = _write(tmp_path, "d.yaml", "replicas: 1\nservice_time: {distribution: deterministic, mean_s: 0.01}\ncache: {capacity: 10}\n")
    r = runner.invoke(app, ["simulate", "-d", str(d), "-t", str(trace), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "keys" in r.output
    r = runner.invoke(app, ["simulate", "-d", str(d), "-t", str(trace), "-o", str(tmp_path / "o"), "--zipf-keys", "1", "--zipf-alpha", "1.0", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "result.json").read_text())["summary"]
    # one key: the first request misses; the next ones hit once the first completed (at 0.01 s)
    assert s["cache_hits"] == 3 and s["cache_hit_ratio"] == pytest.approx(0.75)


def test_zipf_options_go_together(tmp_path: Path, deployment: Path, trace: Path) -> None:
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(trace), "-o", str(tmp_path / "o"), "--zipf-keys", "10"])
    assert r.exit_code == 2 and "--zipf-alpha" in r.output


def test_trace_transformations(tmp_path: Path, deployment: Path, trace: Path) -> None:
    o = tmp_path / "o"
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(trace), "-o", str(o), "--window", "0.05:2", "--repeat", "2", "--rate-scale", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((o / "result.json").read_text())["summary"]["requests"] == 6
    r = runner.invoke(app, ["simulate", "-d", str(deployment), "-t", str(trace), "-o", str(o), "--window", "5:1"])
    assert r.exit_code == 2 and "--window" in r.output


def test_trace_stats_json(trace: Path) -> None:
    r = runner.invoke(app, ["trace", "stats", str(trace), "--json"])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert stats["requests"] == 4
    assert stats["duration_s"] == pytest.approx(1.0)
    assert stats["rate_peak_rps"]["1s"] == 3.0


def test_trace_generate_round_trips_through_stats(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    r = runner.invoke(app, ["trace", "generate", "gamma", "--rate-rps", "20", "--cv", "3", "--n-requests", "20000", "--seed", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    stats = json.loads(runner.invoke(app, ["trace", "stats", str(out), "--json"]).output)
    assert stats["requests"] == 20000
    assert stats["rate_mean_rps"] == pytest.approx(20, rel=0.1)
    assert stats["iat_cv"] == pytest.approx(3, rel=0.15)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["trace", "generate", "nope", "--out", "x.csv"], "poisson"),
        (["trace", "generate", "poisson", "--rate-rps", "1", "--out", "x.csv"], "--duration-s"),
        (["trace", "generate", "poisson", "--rate-rps", "1", "--duration-s", "1", "--cv", "2", "--out", "x.csv"], "--cv"),
        (["trace", "generate", "gamma", "--rate-rps", "1", "--duration-s", "1", "--out", "x.csv"], "--cv"),
    ],
)
def test_trace_generate_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and needle in r.output


def test_deployment_example_checks(tmp_path: Path) -> None:
    r = runner.invoke(app, ["deployment", "example"])
    assert r.exit_code == 0
    p = _write(tmp_path, "ex.yaml", r.output)
    r = runner.invoke(app, ["deployment", "check", str(p)])
    assert r.exit_code == 0 and "ok" in r.output


def test_demo_simulate_only(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--simulate-only", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "result.json").read_text())["summary"]
    assert s["requests"] > 2000 and s["completed"] + s["rejected"] + s["failed"] == s["requests"]
    assert 0 < s["cache_hit_ratio"] < 1
    assert s["cost_usd"] > 0
    assert (out / "report.html").read_text().lower().startswith("<!doctype html>")
