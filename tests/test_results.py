"""The typed records of ``servewise.results`` and their one reader.

Records built in memory (no simulation, no server): what the stages write reads back
equal, a wrong field is one line naming the file and the field, the SLO rule is the
simulator's, the mapping view gives the JSON the dicts held, and the tables come out as
DataFrames with one row per request / candidate / metric.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from servewise.config import SLO
from servewise.errors import ArtifactError
from servewise.results import (
    DISTRIBUTIONS,
    SLO_FIELDS,
    Expected,
    Percentiles,
    Plan,
    SimResult,
    Summary,
    Validation,
    _tables,
    check_slo,
    load_artifact,
    read_requests,
    requests_path,
    slo_margin,
    write_requests,
)

_P = {"mean": 0.1, "p50": 0.09, "p90": 0.15, "p95": 0.2, "p99": 0.3, "max": 0.5}
_NONE = dict.fromkeys(_P)


def summary(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "requests": 100, "completed": 98, "cache_hits": 0, "rejected": 2, "failed": 0, "rejection_ratio": 0.02,
        "failure_ratio": 0.0, "latency_s": dict(_P), "queue_s": dict(_P), "cold_start_s": dict(_NONE),
        "cold_start_requests": 0, "throughput_rps": 9.8, "cache_hit_ratio": None, "cold_starts": 1, "restarts": 0,
        "retries": 0, "mean_replicas": 2.0, "max_replicas": 2, "utilisation": 0.5, "availability": 1.0,
        "duration_s": 10.0, "cost_usd": 0.01, "cost_per_million_requests_usd": 102.0, "cost_per_hour_usd": 3.6,
        "accuracy_drift": None, "warmup_s": 0.0, "ttft_s": dict(_NONE), "tpot_s": dict(_NONE), "itl_s": dict(_NONE),
        "output_tokens_per_s": None, "goodput_rps": None, "prefix_hit_ratio": None, "prefill_tokens_saved": None,
        "preemptions": None, "kv_utilisation": None,
    }  # fmt: skip
    doc.update(over)
    return doc


def sim_doc() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "sim_result",
        "metadata": {"tool": "servewise", "version": "0", "seed": 0, "deployment_name": "d", "deployment_sha256": "a",
                     "trace_source": "t", "trace_sha256": "b", "trace_requests": 100},  # fmt: skip
        "summary": summary(),
        "pools": [],
        "serverless": None,
        "timeline": {"t_s": [0.0, 5.0], "replicas": [1, 2]},
        "slo": {"pass": True, "checks": {"p95_latency_s": {"limit": 0.5, "value": 0.2, "pass": True}}},
    }


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_a_document_reads_back_equal_and_typed(tmp_path: Path) -> None:
    p = write(tmp_path / "sim" / "result.json", sim_doc())
    res = load_artifact(tmp_path / "sim")  # the folder names its result.json
    assert isinstance(res, SimResult) and res.path == p
    assert res.summary.latency_s.p95 == 0.2 and res.slo is not None and res.slo.checks["p95_latency_s"].passed
    assert res.to_doc() == sim_doc() and res == sim_doc()  # same keys, same values: backward compatible
    assert "engine" not in res.to_doc()  # absent keys stay absent


def test_the_mapping_view_gives_the_json_the_dicts_held() -> None:
    res = SimResult.model_validate(sim_doc())
    assert res.summary["latency_s"] == _P and isinstance(res.summary["latency_s"], dict)
    assert res["slo"]["checks"]["p95_latency_s"]["pass"] is True
    assert list(res.summary) == list(summary()) and res.summary.get("nope", 7) == 7
    assert res.data == sim_doc()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["summary"]["latency_s"].update(p95="x"), "field 'summary.latency_s.p95': expected a number >= 0, got 'x'"),
        (lambda d: d["summary"]["latency_s"].update(p95=-1), "field 'summary.latency_s.p95': expected a number >= 0, got -1"),
        (lambda d: d["summary"].update(rejection_ratio=1.5), "field 'summary.rejection_ratio': expected a number in [0, 1]"),
        (lambda d: d["summary"].update(requests=True), "field 'summary.requests': expected an integer >= 0, got True"),
        (lambda d: d["summary"].pop("requests"), "field 'summary.requests': missing"),
        (lambda d: d["metadata"].update(seed="1"), "field 'metadata.seed': expected an integer, got '1'"),
        (lambda d: d.update(pools={}), "field 'pools': expected a list, got an object"),
        (lambda d: d.update(extra=1), "field 'extra': not a field of this artifact"),
        (lambda d: d["slo"]["checks"]["p95_latency_s"].update({"pass": "yes"}),
         "field 'slo.checks.p95_latency_s.pass': expected true or false, got 'yes'"),
        (lambda d: d["timeline"].update(replicas=[1]), "field 'timeline': t_s has 2 times but replicas 1 counts"),
        (lambda d: d.update(schema_version=2), "unknown schema_version 2 of a simulation result"),
    ],
)
def test_a_bad_field_is_one_line_naming_file_and_field(tmp_path: Path, edit: Any, message: str) -> None:
    doc = sim_doc()
    edit(doc)
    p = write(tmp_path / "result.json", doc)
    with pytest.raises(ArtifactError) as err:
        load_artifact(p)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{p}: ") and message in text, text


def test_nan_is_refused_by_name(tmp_path: Path) -> None:
    doc = sim_doc()
    doc["summary"]["throughput_rps"] = math.nan
    with pytest.raises(ArtifactError, match=r"field 'summary.throughput_rps': expected a number >= 0, got nan"):
        load_artifact(write(tmp_path / "result.json", doc))


def test_a_kind_asked_for_is_required(tmp_path: Path) -> None:
    p = write(tmp_path / "result.json", sim_doc())
    assert isinstance(load_artifact(p, "sim_result"), SimResult)
    with pytest.raises(ArtifactError, match="expected kind 'plan' \\(a plan\\), got kind 'sim_result'"):
        load_artifact(p, "plan")
    with pytest.raises(ArtifactError, match="not a servewise artifact"):
        load_artifact(write(tmp_path / "x.json", [1, 2]))


def test_check_slo_is_the_simulators_rule() -> None:
    s = Summary.model_validate(summary())
    slo = SLO(p95_latency_s=0.25, p99_latency_s=0.2, min_availability=0.99, max_accuracy_drift=0.1)
    res = check_slo(slo, s)
    assert {k: c.passed for k, c in res.checks.items()} == {
        "p95_latency_s": True, "p99_latency_s": False, "min_availability": True, "max_accuracy_drift": False,
    }  # fmt: skip
    assert res.checks["max_accuracy_drift"].value is None and not res.passed  # unknown is a failure, never a pass
    # a load test does not judge what a client cannot see
    measured = check_slo(slo, Summary.model_validate(summary(availability=None)), skip_unknown=True)
    assert set(measured.checks) == {"p95_latency_s", "p99_latency_s"}
    assert set(SLO_FIELDS) <= set(SLO.model_fields)


def test_margins_and_metric_paths() -> None:
    assert slo_margin("p95_latency_s", 0.2, 0.25) == pytest.approx(0.2)
    assert slo_margin("min_availability", 0.98, 0.99) == pytest.approx(-0.0101, rel=1e-2)
    assert slo_margin("p95_latency_s", None, 0.25) is None
    s = Summary.model_validate(summary())
    assert s.metric("latency_s.p95") == 0.2 and s.metric(("rejection_ratio",)) == 0.02
    assert s.metric("latency_s.nope") is None and s.metric("cache_hit_ratio") is None
    assert DISTRIBUTIONS == ("latency_s", "queue_s", "cold_start_s", "ttft_s", "tpot_s", "itl_s")
    frame = s.to_frame()
    assert frame.loc["latency_s.p95", "value"] == 0.2 and math.isnan(frame.loc["ttft_s.p50", "value"])


def test_a_partial_prediction_is_completed_with_nulls(tmp_path: Path) -> None:
    doc = {"schema_version": 1, "kind": "expected", "summary": {"latency_s": {"p50": 0.5}, "throughput_rps": None},
           "tolerances": {"latency_s.p50": 0.1}}  # fmt: skip
    exp = load_artifact(write(tmp_path / "expected.json", doc), "expected")
    assert isinstance(exp, Expected) and exp.summary.latency_s.p50 == 0.5 and exp.summary.requests is None
    assert exp.summary.latency_s == Percentiles.model_validate({**_NONE, "p50": 0.5})
    with pytest.raises(ArtifactError, match="field 'summary.latency': not a field"):
        load_artifact(write(tmp_path / "bad.json", {**doc, "summary": {"latency": 1}}))


def _candidate(cid: str, cost: float, p99: float, feasible: bool) -> dict[str, Any]:
    return {
        "id": cid, "label": f"cand {cid}", "hardware": "local", "variant": "fp32", "deployment": {"replicas": 1},
        "status": "evaluated", "fidelity": 1.0, "feasible": feasible, "cost_per_hour_usd": cost,
        "cost_per_million_requests_usd": cost * 10, "binding_slo": {"name": "p99_latency_s", "value": p99,
                                                                     "limit": 0.5, "margin": (0.5 - p99) / 0.5},
        "violation": 0.0 if feasible else 0.2, "static": None, "bound": None, "pruned_by": None,
        "metrics": summary(latency_s={**_P, "p99": p99}), "slo": None,
        "rungs": [{"fraction": 1.0, "requests": 100, "seed": 0, "sim_wall_s": 0.1, "pass": feasible}],
        "robustness": None,
    }  # fmt: skip


def plan_doc() -> dict[str, Any]:
    return {
        "schema_version": 1, "kind": "plan",
        "metadata": {"tool": "servewise", "version": "0", "created_utc": "now", "space": "s", "space_sha256": "a",
                     "trace_source": "t", "trace_sha256": "b", "trace_requests": 100, "trace_duration_s": 10.0,
                     "profiles": {"local": "p.json"}, "seed": 0},
        "name": "p", "setting": "cloud", "slo": {"p99_latency_s": 0.5},
        "search": {"strategy": "exhaustive", "eta": 3, "executor": "local", "jobs": 1, "combinations": 3,
                   "candidates": 3, "invalid": {}, "statuses": {"evaluated": 3}, "rungs": [], "trials": None,
                   "simulations": 3, "simulation_s": 0.3, "robustness_simulation_s": 0.0, "search_wall_s": 0.3,
                   "robustness_wall_s": 0.0, "wall_s": 0.4},
        "feasible": True, "winner": "b", "closest": [], "ranking": ["b", "a", "c"], "pareto": ["b", "a"],
        "candidates": [_candidate("a", 2.0, 0.1, True), _candidate("b", 1.0, 0.3, True), _candidate("c", 0.5, 0.6, False)],
    }  # fmt: skip


def test_plan_reads_typed_and_gives_one_row_per_candidate(tmp_path: Path) -> None:
    plan = load_artifact(write(tmp_path / "plan" / "plan.json", plan_doc()), "plan")
    assert isinstance(plan, Plan) and plan.to_doc() == plan_doc()
    assert plan.winner is not None and plan.winner.id == "b" and plan["winner"] == "b"
    assert [c.id for c in plan.ranked()] == ["b", "a", "c"] and plan.winner.tail_latency_s == 0.3
    assert plan.search["eta"] == 3  # the strategy's own settings are kept
    frame = plan.to_frame()
    assert list(frame.index) == ["a", "b", "c"] and frame.loc["b", "winner"] and frame.loc["b", "rank"] == 1
    assert frame.loc["c", "p99_latency_s"] == 0.6 and not frame.loc["c", "feasible"]
    assert frame.loc["a", "pareto"] and not frame.loc["c", "pareto"]


def test_a_plan_naming_an_unknown_candidate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="winner names 'zz', which is not the id of a candidate"):
        load_artifact(write(tmp_path / "plan.json", {**plan_doc(), "winner": "zz"}))


def test_validation_gives_one_row_per_metric(tmp_path: Path) -> None:
    gen = {"valid": True, "invalid_reasons": [], "warnings": [], "max_send_lag_s": 0.05, "send_lag_s": dict(_P),
           "offered_rps": 10.0, "achieved_rps": 10.0, "achieved_ratio": 1.0, "min_achieved_ratio": 0.95,
           "cpu_s": 1.0, "locust_requests": 100, "locust_failures": 0, "processes": []}  # fmt: skip
    doc = {
        "schema_version": 1, "kind": "validation",
        "metadata": {"tool": "servewise", "version": "0", "created_utc": "now", "wall_s": 3.0, "deployment": "d.yaml",
                     "url": None, "expected": None, "trace_source": "t", "trace_sha256": "b", "requests": 100,
                     "max_requests": None, "time_scale": 1.0, "seed": 0},
        "verdict": "fail", "invalid_reasons": [],
        "metrics": {"latency_s.p50": {"predicted": 0.09, "measured": 0.1, "relative_error": 0.111, "tolerance": 0.1,
                                      "pass": False},
                    "throughput_rps": {"predicted": 9.8, "measured": 9.8, "relative_error": 0.0, "tolerance": 0.05,
                                       "pass": True}},
        "predicted": summary(), "measured": summary(), "generator": gen, "server": None, "slo_measured": None,
    }  # fmt: skip
    v = load_artifact(write(tmp_path / "validation.json", doc), "validation")
    assert isinstance(v, Validation) and v.missed() == ["latency_s.p50"]
    frame = v.to_frame()
    assert list(frame.columns) == ["predicted", "measured", "relative_error", "tolerance", "pass"]
    assert frame.loc["latency_s.p50", "relative_error"] == 0.111 and not frame.loc["latency_s.p50", "pass"]


def test_the_per_request_table_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "requests.csv"
    good.write_text("id,status,latency_s,arrival_s\n0,completed,0.1,0.0\n1,rejected,,0.5\n")
    t = read_requests(good)
    assert isinstance(t, pd.DataFrame) and len(t) == 2
    header_only = tmp_path / "h.csv"
    header_only.write_text("id,status,latency_s\n")
    assert len(read_requests(header_only)) == 0
    bad = tmp_path / "b.csv"
    bad.write_text("id,status,latency_s\n0,done,0.1\n")
    with pytest.raises(ArtifactError, match=r"column 'status': expected one of completed.*got 'done' \(row 1\)"):
        read_requests(bad)
    bad.write_text("id,status\n0,completed\n")
    with pytest.raises(ArtifactError, match="missing column 'latency_s'"):
        read_requests(bad)


def test_a_sim_result_reads_its_requests_beside_it(tmp_path: Path) -> None:
    write(tmp_path / "result.json", sim_doc())
    (tmp_path / "requests.csv").write_text("id,status,latency_s\n0,completed,0.1\n")
    res = load_artifact(tmp_path, "sim_result")
    assert res.to_frame()["latency_s"].tolist() == [0.1]
    with pytest.raises(ArtifactError, match="no per-request table"):
        _ = SimResult.model_validate(sim_doc()).requests


# -- writing the per-request table ------------------------------------------------------


def awkward_table(n: int = 23) -> pd.DataFrame:
    """Every kind of cell the simulator writes, and the floats whose spelling is tricky."""
    floats = [0.0, -0.0, 2.0, -3.0, 0.1 + 0.2, 1e-7, 1e-5, 1e15, 1e16, 1e22, 5e-324, 1.7976931348623157e308,
              123456789.123, math.nan, 0.5, 1 / 3, 9007199254740993.0, 1e-300, 4.0, 12345678901234.0, 7e-5,
              math.nan, 1.0]  # fmt: skip
    rng = np.random.default_rng(4)
    replica = pd.array([i % 4 if i % 5 else None for i in range(n)], dtype="Int64")
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(0.1, n)),
            "status": np.asarray(["completed", "rejected", "cache_hit", "failed"], dtype=object)[np.arange(n) % 4],
            "reason": np.asarray(["", "queue_full", "", "window"], dtype=object)[np.arange(n) % 4],
            "pool": np.asarray(["gpu", "", "cpu"], dtype=object)[np.arange(n) % 3],
            "replica": replica,
            "latency_s": np.asarray(floats[:n]),
            "queue_s": np.where(np.arange(n) % 2, 0.0, rng.exponential(0.01, n)),
            "cold_start_s": np.zeros(n),
            "end_s": np.full(n, math.nan),
            "retries": np.arange(n) % 3,
            "input_tokens": np.full(n, 512, dtype=np.int32),
            "traffic_class": np.asarray(["default", "batch"], dtype=object)[np.arange(n) % 2],
            "warmup": np.arange(n) < 3,
        }
    )


@pytest.fixture(params=[1 << 16, 4], ids=["one-block", "blocks-of-4"])
def block_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(_tables, "_BLOCK_ROWS", request.param)
    return int(request.param)


def test_the_fast_csv_reads_back_as_the_pandas_one(tmp_path: Path, block_rows: int) -> None:
    table = awkward_table()
    slow, fast = tmp_path / "pandas.csv", tmp_path / "arrow.csv"
    table.to_csv(slow, index=False, lineterminator="\n")
    assert write_requests(table, fast) == fast
    # the same frame, every float exact (dtypes too: whole floats keep their ".0")
    pd.testing.assert_frame_equal(pd.read_csv(fast), pd.read_csv(slow), check_exact=True)
    pd.testing.assert_frame_equal(read_requests(fast), read_requests(slow), check_exact=True)
    text = fast.read_text()
    assert text.splitlines()[0] == slow.read_text().splitlines()[0]  # the header as pandas writes it
    assert text.splitlines()[1].endswith(",True") and text.splitlines()[-1].endswith(",False")  # as pandas spells them
    assert len(text.splitlines()) == len(table) + 1


def test_a_cell_with_a_comma_or_quote_is_quoted(tmp_path: Path, block_rows: int) -> None:
    table = awkward_table()
    classes = np.asarray(["a,b", 'say "hi"', "line\nbreak", "plain"], dtype=object)
    table["traffic_class"] = classes[np.arange(len(table)) % 4]
    slow, fast = tmp_path / "pandas.csv", tmp_path / "arrow.csv"
    table.to_csv(slow, index=False, lineterminator="\n")
    write_requests(table, fast)
    pd.testing.assert_frame_equal(read_requests(fast), read_requests(slow), check_exact=True)


def test_a_real_simulation_table_reads_back_as_pandas_wrote_it(tmp_path: Path) -> None:
    from servewise.config import parse_deployment
    from servewise.simulator import simulate
    from servewise.trace import poisson

    dep = parse_deployment({"name": "d", "replicas": 3, "service_time": {"distribution": "exponential", "mean_s": 0.2},
                            "queue": {"capacity": 2}, "balancer": {"policy": "p2c"}})  # fmt: skip
    res = simulate(dep, poisson(rate_rps=14.0, n_requests=3000, seed=2), seed=5, warmup_s=10.0)
    table = res.requests
    assert (table["status"] == "rejected").any() and table["warmup"].any()
    slow = tmp_path / "pandas.csv"
    table.to_csv(slow, index=False, lineterminator="\n")
    res.write(tmp_path / "csv")
    res.write(tmp_path / "parquet", requests_format="parquet")
    expected = read_requests(slow)
    pd.testing.assert_frame_equal(read_requests(tmp_path / "csv" / "requests.csv"), expected, check_exact=True)
    pd.testing.assert_frame_equal(read_requests(tmp_path / "parquet" / "requests.parquet"), expected, check_exact=True)
    assert load_artifact(tmp_path / "parquet", "sim_result").requests["latency_s"].equals(expected["latency_s"])


def test_parquet_reads_back_as_the_csv_does(tmp_path: Path, block_rows: int) -> None:
    table = awkward_table()
    write_requests(table, tmp_path / "requests.csv")
    write_requests(table, tmp_path / "requests.parquet")
    pd.testing.assert_frame_equal(
        read_requests(tmp_path / "requests.parquet"), read_requests(tmp_path / "requests.csv"), check_exact=True
    )


def test_a_sim_result_writes_one_format_and_finds_it(tmp_path: Path) -> None:
    res = SimResult.model_validate(sim_doc()).with_requests(awkward_table())
    json_path, table_path = res.write(tmp_path, requests_format="parquet")
    assert table_path == tmp_path / "requests.parquet" and not (tmp_path / "requests.csv").exists()
    assert requests_path(tmp_path) == table_path
    assert load_artifact(json_path, "sim_result").requests["id"].tolist() == list(range(23))
    # writing CSV over it removes the Parquet table, so no reader sees the older run's
    _, table_path = res.write(tmp_path)
    assert table_path == tmp_path / "requests.csv" and not (tmp_path / "requests.parquet").exists()
    assert requests_path(tmp_path) == table_path
    with pytest.raises(ArtifactError, match="unknown per-request table format 'xml'"):
        res.write(tmp_path, requests_format="xml")


@pytest.mark.parametrize("name", ["requests.csv", "requests.parquet"])
def test_a_failed_write_leaves_the_good_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(_tables, "_BLOCK_ROWS", 4)
    path = tmp_path / name
    write_requests(awkward_table(), path)
    good = path.read_bytes()
    calls = {"n": 0}
    real = _tables._array

    def fail_midway(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 20:  # a few blocks are written first
            raise MemoryError("simulated failure")
        return real(*args)

    monkeypatch.setattr(_tables, "_array", fail_midway)
    with pytest.raises(MemoryError):
        write_requests(awkward_table(), path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


@pytest.mark.parametrize("name", ["requests.parquet", "requests.csv"])
def test_a_bad_table_file_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"PAR1\x00\x01garbage" if name.endswith(".parquet") else b'id,status,latency_s\n0,"completed\n')
    with pytest.raises(ArtifactError) as err:
        read_requests(path)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read the per-request table") and "\n" not in message
    with pytest.raises(ArtifactError, match="no such per-request table"):
        read_requests(tmp_path / "missing.parquet")
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(ArtifactError, match="expected a per-request table, got a folder"):
        read_requests(tmp_path / "folder.parquet")


def test_a_parquet_table_is_checked_as_a_csv_one(tmp_path: Path) -> None:
    path = tmp_path / "requests.parquet"
    write_requests(pd.DataFrame({"id": [0, 1], "status": ["completed", "done"], "latency_s": [0.1, 0.2]}), path)
    with pytest.raises(ArtifactError, match=r"column 'status': expected one of completed.*got 'done' \(row 2\)"):
        read_requests(path)
    write_requests(pd.DataFrame({"id": [0], "status": ["completed"]}), path)
    with pytest.raises(ArtifactError, match="missing column 'latency_s'"):
        read_requests(path)


def test_the_gate_result_reads_back_and_gives_one_row_per_check(tmp_path: Path) -> None:
    from servewise.results import Check, GateResult

    res = GateResult(
        checks=[Check(name="latency_s.p99", kind="regression", status="fail", message="slower", ratio=1.2,
                      baseline=0.1, current=0.12, threshold=0.05),
                Check(name="slo x", kind="slo", status="pass", message="ok", ci_low=math.inf)],
        current="b.json", baseline="a.json", artifact_kind="sim_result", settings={"alpha": 0.01},
    )  # fmt: skip
    assert not res.passed and res.exit_code == 1 and res.counts() == {"pass": 1, "fail": 1, "missing": 0}
    assert res.checks[1].ci_low is None  # a number that is not finite is unknown
    doc = res.to_doc()
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1
    back = load_artifact(write(tmp_path / "gate.json", doc), "gate_result")
    assert back.to_doc() == doc
    frame = back.to_frame()
    assert list(frame["status"]) == ["fail", "pass"] and frame.loc[0, "ratio"] == 1.2
