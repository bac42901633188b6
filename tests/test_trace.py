"""Tests of servewise.trace: real trace formats, bad input, transformations, generators.

Expected numbers for the real traces come from /work/shared/traces/README.md, not from
this code; generator checks compare against the theory of each arrival process.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from servewise.errors import ConfigError, TraceError
from servewise.trace import (
    FORMATS,
    GENERATORS,
    Request,
    TokenSpec,
    Trace,
    default_trace_path,
    diurnal,
    gamma_renewal,
    load_trace,
    mmpp,
    poisson,
    save_trace,
    servegen,
    trace_stats,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_shared = _load_module("_shared_traces", REPO / "bench" / "shared_traces.py")


def real(name: str) -> Path:
    """A trace of ../shared/traces: skipped locally when absent, a failure in CI."""
    return _shared.require(name)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def trace(arrival, inp=None, out=None, **kw) -> Trace:
    n = len(arrival)
    return Trace(
        arrival_s=np.asarray(arrival, dtype=float),
        input_tokens=np.arange(n) + 10 if inp is None else inp,
        output_tokens=np.arange(n) + 100 if out is None else out,
        **kw,
    )


# ------------------------------------------------------------------ real trace formats


@pytest.mark.exclusive  # times the load
def test_azure_conv_matches_readme():
    t0 = time.perf_counter()
    tr = load_trace(real("azure_llm_2023_conv.csv"))
    assert time.perf_counter() - t0 < 1.0  # "well under a second"
    s = trace_stats(tr)
    assert s["requests"] == 19_366
    # 18:15:46.6805900 -> 19:14:08.4025270, all 7 fractional digits kept
    assert tr.arrival_s[0] == 0.0
    assert tr.arrival_s[1] == pytest.approx(4.314579, abs=1e-9)  # 18:15:50.9951690
    assert tr.duration_s == pytest.approx(3501.721937, abs=1e-9)
    assert round(tr.duration_s / 60, 1) == 58.4
    assert round(s["rate_mean_rps"], 2) == 5.53
    assert s["rate_peak_rps"] == {"1s": 16.0, "10s": 9.8, "60s": pytest.approx(8.45)}
    assert round(s["iat_cv"], 2) == 1.09
    inp, out = s["input_tokens"], s["output_tokens"]
    assert round(inp["mean"]) == 1155 and inp["p50"] == 1020 and inp["max"] == 14_050
    assert round(inp["p99"]) == 4142 and abs(inp["p90"] - 2734) <= 1
    assert round(out["mean"]) == 211 and out["p50"] == 129 and out["p90"] == 424
    assert out["p99"] == 601 and out["max"] == 1000
    assert tr.key is None and tr.prefix_blocks is None and tr.class_names == ("default",)
    assert s["keys"] is None and s["prefix_reuse_ratio"] is None


def test_azure_code_matches_readme():
    s = trace_stats(load_trace(real("azure_llm_2023_code_first30min.csv")))
    assert s["requests"] == 5_740
    assert round(s["duration_s"] / 60, 1) == 29.8
    assert round(s["rate_mean_rps"], 2) == 3.21
    assert s["rate_peak_rps"]["1s"] == 67.0 and s["rate_peak_rps"]["10s"] == pytest.approx(32.7)
    assert round(s["rate_peak_rps"]["60s"], 1) == 10.5
    assert round(s["iat_cv"], 1) == 13.5
    assert round(s["input_tokens"]["mean"]) == 2028 and s["input_tokens"]["max"] == 7437
    assert s["output_tokens"]["p50"] == 13 and s["output_tokens"]["max"] == 1899


def test_mooncake_synthetic_matches_readme():
    tr = load_trace(real("mooncake_fast25_synthetic.jsonl"))
    s = trace_stats(tr)
    assert s["requests"] == 3_993
    assert tr.arrival_s[0] == 0.0 and round(tr.duration_s) == 1022  # ms -> s
    assert round(s["rate_mean_rps"], 2) == 3.91
    assert s["rate_peak_rps"] == {"1s": 13.0, "10s": 5.5, "60s": pytest.approx(4.55)}
    assert round(s["iat_cv"], 2) == 1.01
    assert round(s["prefix_reuse_ratio"], 2) == 0.64  # "reusable blocks 64%"
    assert round(s["input_tokens"]["mean"], -1) == 15_330
    assert s["output_tokens"]["p50"] == 69
    assert tr.block_tokens == 512
    assert all(len(b) == math.ceil(n / 512) for b, n in zip(tr.prefix_blocks, tr.input_tokens.tolist(), strict=True))


def test_mooncake_conversation_matches_readme():
    tr = load_trace(real("mooncake_fast25_conversation_first30min.jsonl"))
    s = trace_stats(tr)
    assert s["requests"] == 5_719 and tr.duration_s == 1797.0
    assert round(s["rate_mean_rps"], 2) == 3.18
    assert s["rate_peak_rps"] == {"1s": 23.0, "10s": pytest.approx(5.3), "60s": 4.0}
    assert round(s["prefix_reuse_ratio"], 2) == 0.34
    assert round(s["input_tokens"]["mean"]) == 12_870 and s["input_tokens"]["p50"] == 7640
    assert s["output_tokens"]["p50"] == 356


def test_gzip_is_transparent(tmp_path):
    src = real("mooncake_fast25_synthetic.jsonl")
    gz = write(tmp_path, "m.jsonl.gz", gzip.compress(src.read_bytes()))
    assert load_trace(gz).content_hash() == load_trace(src).content_hash()


def test_default_trace_is_first_10_minutes_of_azure_conv():
    path = default_trace_path()
    tr = load_trace(path)
    assert len(tr) == 2_867 and tr.arrival_s[0] == 0.0 and 599 < tr.arrival_s[-1] < 600
    assert path.read_bytes().startswith(b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n")
    notice = (path.parent / "NOTICE.md").read_text()
    assert "CC-BY-4.0" in notice and "Splitwise" in notice and "Patel" in notice
    original = real("azure_llm_2023_conv.csv")
    assert original.read_bytes().startswith(path.read_bytes())  # byte-identical rows, original format
    full = load_trace(original)
    assert int(np.sum(full.arrival_s < 600.0)) == len(tr)
    assert tr.content_hash() == full.window(0, 600).content_hash()


def test_burstgpt_fixture():
    tr = load_trace(DATA / "burstgpt_sample.csv")
    assert tr.arrival_s.tolist() == [5.0, 45.0, 118.0, 118.0, 190.0, 263.5]
    assert tr.input_tokens.tolist() == [472, 1087, 417, 1360, 25, 3]
    assert tr.output_tokens.tolist() == [18, 230, 276, 0, 403, 52]  # failed request: 0
    assert tr.class_names == ("ChatGPT", "GPT-4")
    assert [r.traffic_class for r in tr] == ["ChatGPT", "ChatGPT", "GPT-4", "ChatGPT", "GPT-4", "ChatGPT"]
    assert trace_stats(tr)["classes"] == {"ChatGPT": 4, "GPT-4": 2}


def test_servegen_real_file_window_counts():
    path = real("servegen_reason_deepseek-r1_client_rates.csv.gz")
    tr = servegen(path=path, duration_s=6 * 3600, seed=3)
    df = pd.read_csv(path)
    df = df[df.window_start_s < 6 * 3600]
    want = {
        (f"client-{c}", int(w // 600)): int(round(r * 600))
        for c, w, r in zip(df.client_id, df.window_start_s, df.rate_rps, strict=True)
        if round(r * 600) > 0
    }
    names = np.array(tr.class_names)[tr.traffic_class]
    got = pd.Series(1, index=pd.MultiIndex.from_arrays([names, (tr.arrival_s // 600).astype(int)]))
    got = got.groupby(level=[0, 1]).sum().to_dict()
    assert got == want
    assert tr.arrival_s.max() < 6 * 3600


# ------------------------------------------------------------------ generic files, column_map


def test_generic_csv_all_columns(tmp_path):
    p = write(
        tmp_path,
        "g.csv",
        "arrival_s,input_tokens,output_tokens,key,traffic_class,prefix_blocks\n"
        "0.5,10,1,b,chat,1 2 3\n"
        "0.75,20,2,a,code,\n"
        "2,30,3,b,chat,1 2 9\n"
        "2,40,4,NA,chat,-4\n",
    )
    tr = load_trace(p, block_tokens=16)
    assert tr.arrival_s.tolist() == [0.5, 0.75, 2.0, 2.0]
    assert tr.input_tokens.tolist() == [10, 20, 30, 40]
    assert tr.key.tolist() == [0, 1, 0, 2] and tr.key_labels == ("b", "a", "NA")
    assert tr.class_names == ("chat", "code") and tr.traffic_class.tolist() == [0, 1, 0, 0]
    assert tr.prefix_blocks == ((1, 2, 3), (), (1, 2, 9), (-4,))
    assert tr.block_tokens == 16 and tr.source == str(p) and tr.skipped_rows == 0
    assert tr[2] == Request(2, 2.0, 30, 3, 0, (1, 2, 9), "chat")
    s = trace_stats(tr)
    assert s["keys"] == {"unique": 3, "reuse_ratio": 0.25}
    assert s["prefix_reuse_ratio"] == pytest.approx(2 / 7)  # 1 and 2 seen again


def test_generic_tokens_absent_read_as_zero(tmp_path):
    tr = load_trace(write(tmp_path, "g.csv", "arrival_s\n0\n1.5\n"))
    assert tr.input_tokens.tolist() == [0, 0] and tr.output_tokens.tolist() == [0, 0]


def test_generic_jsonl(tmp_path):
    p = write(
        tmp_path,
        "g.jsonl",
        '{"arrival_s": 0.25, "input_tokens": 7, "output_tokens": 3, "key": 42, "prefix_blocks": [5, 6]}\n'
        "\n"
        '{"arrival_s": 1, "input_tokens": 8, "output_tokens": 4, "key": "x", "prefix_blocks": []}\n',
    )
    tr = load_trace(p)
    assert tr.arrival_s.tolist() == [0.25, 1.0]
    assert tr.key_labels == ("42", "x") and tr.prefix_blocks == ((5, 6), ())


def test_column_map_generic_and_known_format(tmp_path):
    p = write(tmp_path, "x.csv", "ts,prompt,completion,user\n0,5,6,u1\n2,7,8,u1\n")
    cmap = {"arrival_s": "ts", "input_tokens": "prompt", "output_tokens": "completion", "key": "user"}
    tr = load_trace(p, column_map=cmap)
    assert tr.arrival_s.tolist() == [0.0, 2.0] and tr.input_tokens.tolist() == [5, 7]
    assert tr.output_tokens.tolist() == [6, 8] and tr.key_labels == ("u1",)
    az = write(
        tmp_path, "az.csv", "When,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.5,3,4\n2023-11-16 18:15:47.0,5,6\n"
    )
    tr = load_trace(az, format="azure", column_map={"arrival_s": "When"})
    assert tr.arrival_s.tolist() == [0.0, 0.5]
    mc = write(tmp_path, "m.jsonl", '{"t": 1500, "input_length": 3, "output_length": 4}\n')
    assert load_trace(mc, format="mooncake", column_map={"arrival_s": "t"}).arrival_s.tolist() == [1.5]


def test_column_map_errors(tmp_path):
    p = write(tmp_path, "x.csv", "ts,a\n0,1\n")
    with pytest.raises(ConfigError, match="'arrival'.*arrival_s"):
        load_trace(p, column_map={"arrival": "ts"})
    with pytest.raises(TraceError) as ei:  # a mapped column is required
        load_trace(p, column_map={"arrival_s": "ts", "key": "user"})
    assert str(ei.value).startswith(f"{p}:1:") and "'user'" in str(ei.value)


# ------------------------------------------------------------------ bad input

GEN = "arrival_s,input_tokens,output_tokens\n"
AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
MC0 = '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [0]}\n'

BAD_CASES = {
    # name: (file name, content, line, fragments that the message must contain)
    "negative_tokens": (
        "trace.csv",
        GEN + "0.0,10,5\n1.0,20,6\n2.0,-3,7\n",
        4,
        ["column 'input_tokens' must be an integer >= 0, got '-3'"],
    ),
    "non_numeric_arrival": ("trace.csv", GEN + "0,1,1\nsoon,1,1\n", 3, ["column 'arrival_s'", "seconds", "got 'soon'"]),
    "negative_arrival": ("trace.csv", GEN + "-1,1,1\n", 2, ["column 'arrival_s'", ">= 0", "'-1'"]),
    "nan_arrival": ("trace.csv", GEN + "0,1,1\nnan,1,1\n", 3, ["column 'arrival_s'", "'nan'"]),
    "empty_cell": ("trace.csv", GEN + "0,1,1\n1,,1\n", 3, ["column 'input_tokens'", "got ''"]),
    "short_row": ("trace.csv", GEN + "0,1,1\n1,2\n", 3, ["column 'output_tokens'", "got ''"]),
    "extra_field": ("trace.csv", GEN + "0,1,1\n1,2,3\n2,3,4,5\n", 4, ["expected 3 fields, got 4"]),
    "extra_field_first_row": ("trace.csv", GEN + "0,1,1,1\n1,2,3\n", 2, ["expected 3 fields, got 4"]),
    "extra_field_every_row": ("trace.csv", GEN + "0,1,1,1\n1,2,3,4\n", 2, ["expected 3 fields, got 4"]),
    "fractional_tokens": ("trace.csv", GEN + "0,3.5,1\n", 2, ["column 'input_tokens'", "integer", "'3.5'"]),
    "unsorted": (
        "trace.csv",
        GEN + "0,1,1\n1.0,1,1\n0.5,1,1\n",
        4,
        ["column 'arrival_s'", "sorted", "'1.0'", "got '0.5'"],
    ),
    "unsorted_before_bad": ("trace.csv", GEN + "0,1,1\n2,1,1\n1,1,1\n3,-1,1\n", 4, ["sorted"]),
    "bad_before_unsorted": ("trace.csv", GEN + "0,1,1\n2,x,1\n3,1,1\n1,1,1\n", 3, ["'input_tokens'", "'x'"]),
    "blank_lines_counted": ("trace.csv", GEN + "0,1,1\n\n\n1,1,-1\n", 5, ["column 'output_tokens'", "'-1'"]),
    "crlf": ("trace.csv", (GEN + "0,1,1\n1,x,1\n").replace("\n", "\r\n"), 3, ["'input_tokens'", "'x'"]),
    "quoted_newline": (
        "trace.csv",
        GEN.strip() + ',key\n0,1,1,"two\nlines"\n1,-1,1,k\n',
        4,
        ["'input_tokens'", "'-1'"],
    ),
    "azure_bad_timestamp": (
        "az.csv",
        AZ + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 25:99:00.0,396,109\n",
        3,
        ["column 'TIMESTAMP' (arrival_s)", "date-time", "'2023-11-16 25:99:00.0'"],
    ),
    "azure_unsorted": (
        "az.csv",
        AZ + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:45.0000000,1,1\n",
        3,
        ["'TIMESTAMP'", "sorted"],
    ),
    "azure_negative": (
        "az.csv",
        AZ + "2023-11-16 18:15:46.6805900,374,-44\n",
        2,
        ["column 'GeneratedTokens' (output_tokens)", "'-44'"],
    ),
    "mooncake_bad_json": ("m.jsonl", MC0 + '{"timestamp": 5, "input_length": \n', 2, ["JSON"]),
    "mooncake_not_object": ("m.jsonl", MC0 + "\n[1, 2]\n", 3, ["expected a JSON object", "list"]),
    "mooncake_hash_ids": (
        "m.jsonl",
        MC0 + '{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": "1 2"}\n',
        2,
        ["'hash_ids' (prefix_blocks)", "list of integers", "got '1 2'"],
    ),
    "mooncake_missing_key": (
        "m.jsonl",
        MC0 + '{"timestamp": 5, "input_length": 1}\n',
        2,
        ["'output_length' (output_tokens)", "missing"],
    ),
    "mooncake_negative": (
        "m.jsonl",
        MC0 + MC0 + '{"timestamp": 5, "input_length": 1, "output_length": -2}\n',
        3,
        ["'output_length'", "-2"],
    ),
    "mooncake_unsorted": ("m.jsonl", MC0.replace("0", "9", 1) + MC0, 2, ["'timestamp' (arrival_s)", "sorted"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_row_names_file_line_and_column(tmp_path, case):
    name, content, line, fragments = BAD_CASES[case]
    p = write(tmp_path, name, content)
    with pytest.raises(TraceError) as ei:
        load_trace(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:{line}: "), msg
    for frag in fragments:
        assert frag in msg, msg


def test_bad_row_message_exact(tmp_path):
    p = write(tmp_path, "trace.csv", BAD_CASES["negative_tokens"][1])
    with pytest.raises(TraceError) as ei:
        load_trace(p)
    assert str(ei.value) == f"{p}:4: column 'input_tokens' must be an integer >= 0, got '-3'"


@pytest.mark.parametrize(
    "name, content, fmt, column",
    [
        ("trace.csv", "input_tokens,output_tokens\n1,1\n", "generic", "'arrival_s'"),
        ("az.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,1\n", "azure", "'GeneratedTokens'"),
        ("m.jsonl", '{"timestamp": 0, "input_length": 1}\n', "mooncake", "'output_length'"),
    ],
)
def test_missing_required_column(tmp_path, name, content, fmt, column):
    p = write(tmp_path, name, content)
    with pytest.raises(TraceError) as ei:
        load_trace(p, format=fmt)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:1: ") and "missing required column" in msg and column in msg


def test_skip_bad_rows_counts_and_does_not_resort(tmp_path):
    body = "0,1,1\n5,1,1\n3,1,1\nx,1,1\n6,-1,1\n8,2,2\n"
    tr = load_trace(write(tmp_path, "a.csv", GEN + body), skip_bad_rows=True)
    assert tr.arrival_s.tolist() == [0.0, 5.0, 8.0] and tr.skipped_rows == 3
    assert trace_stats(tr)["skipped_rows"] == 3
    # ragged rows go through the exact parser; an unsorted row is judged against kept rows
    body = "0,1,1\n10,1,1\n4,1,1\n12,1,1,1\n11,1,1\n13,1,1\n"
    tr = load_trace(write(tmp_path, "b.csv", GEN + body), skip_bad_rows=True)
    assert tr.arrival_s.tolist() == [0.0, 10.0, 11.0, 13.0] and tr.skipped_rows == 2
    # azure: times are relative to the first *kept* row
    az = AZ + "garbage,1,1\n2023-11-16 18:00:01.5,1,1\n2023-11-16 18:00:03.0,1,1\n"
    tr = load_trace(write(tmp_path, "az.csv", az), skip_bad_rows=True)
    assert tr.arrival_s.tolist() == [0.0, 1.5] and tr.skipped_rows == 1


def test_empty_traces_are_errors(tmp_path):
    with pytest.raises(TraceError, match="no data rows"):
        load_trace(write(tmp_path, "h.csv", GEN))
    with pytest.raises(TraceError, match="empty file"):
        load_trace(write(tmp_path, "e.csv", ""))
    with pytest.raises(TraceError, match="2 data rows"):
        load_trace(write(tmp_path, "b.csv", GEN + "x,1,1\n1,-1,1\n"), skip_bad_rows=True)


def test_unknown_format_lists_supported(tmp_path):
    p = write(tmp_path, "odd.csv", "when,what\n1,2\n")
    with pytest.raises(TraceError) as ei:
        load_trace(p)
    assert str(ei.value).startswith(f"{p}:1:")
    assert all(f in str(ei.value) for f in FORMATS)
    with pytest.raises(TraceError, match="azure.*mooncake.*burstgpt.*generic"):
        load_trace(p, format="parquet")
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "missing.csv")


def test_invalid_utf8_names_the_line(tmp_path):
    for name, body in (("u.csv", GEN.encode() + b"0,1,1\n1,\xff,1\n"), ("u.jsonl", MC0.encode() + b'{"x": "\xff"}\n')):
        p = write(tmp_path, name, body)
        with pytest.raises(TraceError, match=rf"^{p}:\d: expected UTF-8") as ei:
            load_trace(p)
        assert str(ei.value).startswith(f"{p}:{2 if name.endswith('jsonl') else 3}:")


def test_auto_detects_by_content_without_extension(tmp_path):
    j = write(tmp_path, "trace.data", MC0)
    assert load_trace(j).prefix_blocks == ((0,),)
    c = write(tmp_path, "trace2.data", GEN + "1,2,3\n")
    assert load_trace(c).input_tokens.tolist() == [2]


# ------------------------------------------------------------------ the two CSV parsers


def load_outcome(path: Path, monkeypatch: pytest.MonkeyPatch, *, arrow: bool, **kw) -> tuple:
    """What ``load_trace`` gives with Arrow's parser allowed or not: the columns, or the message."""
    from servewise import _trace_io

    with monkeypatch.context() as m:
        if not arrow:
            m.setattr(_trace_io, "_read_csv_arrow", lambda data: None)
        try:
            tr = load_trace(path, **kw)
        except TraceError as err:
            return ("error", str(err))
    return (
        "trace",
        tr.arrival_s.tolist(),
        tr.input_tokens.tolist(),
        tr.output_tokens.tolist(),
        None if tr.key is None else (tr.key.tolist(), tr.key_labels),
        tr.traffic_class.tolist(),
        tr.class_names,
        tr.prefix_blocks,
        tr.skipped_rows,
        tr.content_hash(),
    )


def uses_arrow(text: str) -> bool:
    from servewise import _trace_io

    return _trace_io._read_csv(text.encode(), "t.csv").from_arrow


@pytest.mark.parametrize("case", sorted(c for c, v in BAD_CASES.items() if v[0].endswith(".csv")))
@pytest.mark.parametrize("skip", [False, True])
def test_both_csv_parsers_give_the_same_errors(tmp_path, monkeypatch, case, skip):
    name, content, _, _ = BAD_CASES[case]
    p = write(tmp_path, name, content)
    fast = load_outcome(p, monkeypatch, arrow=True, skip_bad_rows=skip)
    assert fast == load_outcome(p, monkeypatch, arrow=False, skip_bad_rows=skip)


@pytest.mark.parametrize(
    "path",
    [
        default_trace_path(),
        DATA / "burstgpt_sample.csv",
        pytest.param("azure_llm_2023_code_first30min.csv", id="azure-code"),
        pytest.param("labels", id="keys-classes-blocks"),
    ],
)
def test_both_csv_parsers_read_the_same_trace(tmp_path, monkeypatch, path):
    if path == "labels":  # saved with keys, classes and prefix blocks, none needing quotes
        path = tmp_path / "labels.csv"
        keys = np.array([0, 1, 0, 2, 1])
        blocks = ((1, 2), (), (1, 2, 3), (7,), (2**40,))
        tr = trace([0.0, 0.1, 0.1 + 0.2, 1 / 3, 7.25], key=keys, key_labels=("k1", "k 2", "12"),
                   traffic_class=np.array([0, 1, 1, 0, 0]), class_names=("chat", "batch"), prefix_blocks=blocks)  # fmt: skip
        save_trace(tr, path)
        assert uses_arrow(path.read_text())
    elif isinstance(path, str):
        path = real(path)
    fast = load_outcome(path, monkeypatch, arrow=True)
    assert fast[0] == "trace" and fast == load_outcome(path, monkeypatch, arrow=False)


def test_arrow_reads_plain_csv_and_leaves_the_rest_to_pandas():
    assert uses_arrow(GEN + "0,1,1\n0.5,2,2\n")
    assert uses_arrow(GEN + "0,1,1\n0.5,2,2")  # no final newline
    assert uses_arrow(AZ + "2023-11-16 18:15:46.6805900,374,44\n")
    assert uses_arrow((GEN + "0,1,1\n").replace("\n", "\r\n"))
    assert uses_arrow(GEN + "0,x,1\n")  # a bad cell is found later, the same way
    assert not uses_arrow(GEN + "0,1,1\n\n1,1,1\n")  # a blank line: line numbers must not shift
    assert not uses_arrow(GEN + "0,1,1\n   \n1,1,1\n")
    assert not uses_arrow(GEN + "0,1,1\n1,1\n")  # ragged
    assert not uses_arrow(GEN + "0,1,1\n\n")  # a trailing blank line
    assert not uses_arrow("arrival_s\n0\n  \n1\n")  # one column: a blank line reads as a row
    assert not uses_arrow("arrival_s,arrival_s\n0,1\n")  # pandas renames a repeated name
    assert not uses_arrow("arrival_s,\n0,1\n")  # and names an unnamed column
    assert not uses_arrow("\n" + GEN + "0,1,1\n")  # the header is not on line 1


CELLS = ["0", "1", "1.5", "2.0", " 3", "4 ", "1_000", "1e3", "nan", "inf", "-1", "", "x", "nan(0)", "\uff11", "+2",
         "0x1", "1e400", "3.7", "12"]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(CELLS), st.sampled_from(CELLS), st.sampled_from(CELLS)).map(",".join),
            st.sampled_from(["", "  ", "1,1", "1,1,1,1"]),
        ),
        min_size=1,
        max_size=8,
    ),
    key=st.booleans(),
    skip=st.booleans(),
    crlf=st.booleans(),
)
def test_both_csv_parsers_agree_on_any_cells(tmp_path, monkeypatch, rows, key, skip, crlf):
    header = "arrival_s,input_tokens,key" if key else "arrival_s,input_tokens,output_tokens"
    text = "\n".join([header, *rows]) + "\n"
    p = write(tmp_path, "cells.csv", text.replace("\n", "\r\n") if crlf else text)
    assert load_outcome(p, monkeypatch, arrow=True, skip_bad_rows=skip) == load_outcome(
        p, monkeypatch, arrow=False, skip_bad_rows=skip
    )


# ------------------------------------------------------------------ save / round trip


def rich_trace() -> Trace:
    labels = ["k,1", 'quo"te', "naïve 中", "k,1", "  spaced ", "multi\nline"]
    codes, uniq = pd.factorize(np.array(labels, dtype=object))
    return Trace(
        arrival_s=np.array([0.0, 0.1, 0.1 + 0.2, 1 / 3, 1e-7 + 1, 12345.678901234567]),
        input_tokens=np.array([1, 0, 3, 2**40, 5, 6]),
        output_tokens=np.array([0, 9, 8, 7, 6, 5]),
        key=codes,
        key_labels=tuple(uniq),
        traffic_class=np.array([0, 1, 1, 0, 2, 0]),
        class_names=("chat", "batch job", "x,y"),
        prefix_blocks=((1, 2), (), (1, 2, 3), (-7, 2**63 + 5), (9,), ()),
        block_tokens=64,
    )


def assert_same_columns(a: Trace, b: Trace) -> None:
    assert np.array_equal(a.arrival_s, b.arrival_s)  # exact, not approx
    assert np.array_equal(a.input_tokens, b.input_tokens)
    assert np.array_equal(a.output_tokens, b.output_tokens)
    assert (a.key is None) == (b.key is None)
    if a.key is not None:
        assert np.array_equal(a.key, b.key) and a.key_labels == b.key_labels
    assert np.array_equal(a.traffic_class, b.traffic_class) and a.class_names == b.class_names
    assert a.prefix_blocks == b.prefix_blocks and a.block_tokens == b.block_tokens
    assert a.content_hash() == b.content_hash()


@pytest.mark.parametrize("name", ["t.csv", "t.jsonl", "t.csv.gz", "t.jsonl.gz"])
def test_save_load_round_trip_exact(tmp_path, name):
    tr = rich_trace()
    save_trace(tr, tmp_path / name)
    back = load_trace(tmp_path / name, block_tokens=64)
    assert_same_columns(tr, back)
    assert back.source == str(tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == [name]  # no temp file left behind


def test_save_round_trips_plain_trace_and_overwrites(tmp_path):
    tr = trace([0.0, 1.5, 1.5, 2.25])
    p = tmp_path / "plain.csv"
    p.write_text("old content")
    save_trace(tr, p)
    assert p.read_text().splitlines()[0] == "arrival_s,input_tokens,output_tokens"
    back = load_trace(p)
    assert_same_columns(tr, back)
    assert back.key is None and back.prefix_blocks is None and back.class_names == ("default",)
    with pytest.raises(ConfigError, match=r"\.csv or \.jsonl"):
        save_trace(tr, tmp_path / "t.parquet")


label_text = st.text(alphabet=st.sampled_from(list('ab," \n\té中0-')), min_size=1, max_size=6).filter(
    lambda s: s.strip() != ""
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(
        st.tuples(
            st.floats(0, 1e9, allow_nan=False, allow_infinity=False),
            st.integers(0, 2**53),
            st.integers(0, 10**6),
            label_text,
            st.sampled_from(["a", "b b", "c,"]),
            st.lists(st.integers(-(2**63), 2**64), max_size=4).map(tuple),
        ),
        min_size=1,
        max_size=15,
    ),
    fmt=st.sampled_from(["csv", "jsonl"]),
)
def test_round_trip_property(tmp_path, data, fmt):
    data.sort(key=lambda r: r[0])
    keys, kl = pd.factorize(np.array([r[3] for r in data], dtype=object))
    cls, cn = pd.factorize(np.array([r[4] for r in data], dtype=object))
    tr = Trace(
        arrival_s=[r[0] for r in data],
        input_tokens=[r[1] for r in data],
        output_tokens=[r[2] for r in data],
        key=keys,
        key_labels=tuple(kl),
        traffic_class=cls,
        class_names=tuple(cn),
        prefix_blocks=tuple(r[5] for r in data),
    )
    p = tmp_path / f"prop.{fmt}"
    save_trace(tr, p)
    assert_same_columns(tr, load_trace(p))


# ------------------------------------------------------------------ Trace object


def test_trace_is_validated_copied_and_read_only():
    arr = np.array([0.0, 1.0, 2.0])
    tr = trace(arr)
    arr[0] = 99.0
    assert tr.arrival_s[0] == 0.0  # copied
    with pytest.raises(ValueError):
        tr.arrival_s[0] = 5.0
    with pytest.raises(AttributeError):
        tr.source = "x"  # frozen
    assert tr.arrival_s.dtype == np.float64 and tr.input_tokens.dtype == np.int64
    assert tr.traffic_class.dtype == np.int32 and tr.class_names == ("default",)
    with pytest.raises(ConfigError, match="non-decreasing"):
        trace([0.0, 2.0, 1.0])
    with pytest.raises(ConfigError, match=">= 0"):
        trace([0.0, 1.0], inp=[1, -1])
    with pytest.raises(ConfigError, match="length 3"):
        trace([0.0, 1.0, 2.0], out=[1, 2])
    with pytest.raises(ConfigError, match="key_labels"):
        trace([0.0], key=[3], key_labels=("a",))
    with pytest.raises(ConfigError, match="class_names"):
        trace([0.0], traffic_class=[1])


def test_requests_by_index_and_iteration():
    tr = trace(
        [0.0, 0.5, 2.0],
        key=[0, 1, 0],
        key_labels=("x", "y"),
        traffic_class=[1, 0, 1],
        class_names=("a", "b"),
        prefix_blocks=[[1], [], [1, 2]],
    )
    reqs = list(tr)
    assert reqs == [tr[i] for i in range(3)]
    assert reqs[1] == Request(
        id=1, arrival_s=0.5, input_tokens=11, output_tokens=101, key=1, prefix_blocks=(), traffic_class="a"
    )
    assert tr[-1].id == 2 and tr[-1].prefix_blocks == (1, 2)
    with pytest.raises(IndexError):
        tr[3]
    assert trace([0.0])[0].key is None and trace([0.0])[0].traffic_class == "default"


def test_duration():
    assert trace([]).duration_s == 0.0 and trace([7.0]).duration_s == 0.0
    assert trace([1.0, 4.5]).duration_s == 3.5


def test_window():
    tr = trace([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], key=[0, 1, 2, 1, 0, 2], key_labels=("a", "b", "c"))
    w = tr.window(1.5, 4.0)
    assert w.arrival_s.tolist() == [0.5, 1.5]  # 2 and 3, shifted by -1.5
    assert w.input_tokens.tolist() == [12, 13]
    assert w.key.tolist() == [0, 1] and w.key_labels == ("c", "b")  # dense again
    w = tr.window(2.0, 4.0, rebase=False)
    assert w.arrival_s.tolist() == [2.0, 3.0]  # start included, end excluded
    assert len(tr.window(10, 20)) == 0
    with pytest.raises(ConfigError):
        tr.window(3, 1)


def test_scale_rate():
    tr = trace([0.0, 1.0, 3.0])
    assert tr.scale_rate(2).arrival_s.tolist() == [0.0, 0.5, 1.5]
    assert tr.scale_rate(0.5).arrival_s.tolist() == [0.0, 2.0, 6.0]
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="> 0"):
            tr.scale_rate(bad)


def test_repeat():
    tr = trace([0.0, 1.0, 3.0], key=[0, 1, 0], key_labels=("p", "q"), prefix_blocks=[[1], [2], [3]])
    r = tr.repeat(3)  # duration 3, mean gap 1.5 -> period 4.5
    assert r.arrival_s.tolist() == [0.0, 1.0, 3.0, 4.5, 5.5, 7.5, 9.0, 10.0, 12.0]
    assert r.input_tokens.tolist() == [10, 11, 12] * 3
    assert r.key.tolist() == [0, 1, 0] * 3 and r.key_labels == ("p", "q")
    assert r.prefix_blocks == ((1,), (2,), (3,)) * 3
    assert tr.repeat(1).arrival_s.tolist() == [0.0, 1.0, 3.0]
    late = trace([10.0, 12.0]).repeat(2)  # period 2 + 2: the first arrival keeps its offset
    assert late.arrival_s.tolist() == [10.0, 12.0, 14.0, 16.0]
    with pytest.raises(ConfigError):
        tr.repeat(0)
    with pytest.raises(ConfigError, match="at least 2"):
        trace([1.0]).repeat(2)


@settings(max_examples=60, deadline=None)
@given(
    arrival=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=2, max_size=30).map(sorted),
    cut=st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)).map(sorted),
    times=st.integers(1, 4),
)
def test_transformation_invariants(arrival, cut, times):
    tr = trace(arrival)
    t = np.asarray(arrival)
    w = tr.window(cut[0], cut[1], rebase=False)
    assert w.arrival_s.tolist() == t[(t >= cut[0]) & (t < cut[1])].tolist()
    assert np.allclose(tr.window(cut[0], cut[1]).arrival_s, w.arrival_s - cut[0])
    r = tr.repeat(times)
    assert len(r) == times * len(tr) and np.all(np.diff(r.arrival_s) >= 0)
    assert r.duration_s == pytest.approx(times * tr.duration_s + (times - 1) * tr.duration_s / (len(tr) - 1))
    assert tr.scale_rate(4.0).duration_s == pytest.approx(tr.duration_s / 4.0)


def test_content_hash_covers_columns_not_provenance():
    a = rich_trace()
    h = a.content_hash()
    assert len(h) == 64 and h == rich_trace().content_hash()
    assert a.window(0, 1e9).content_hash() == h  # same columns, other source
    assert a.scale_rate(2).content_hash() != h
    variants = [
        trace([0.0, 1.0]),
        trace([0.0, 1.0], inp=[10, 12]),
        trace([0.0, 1.0], out=[100, 102]),
        trace([0.0, 1.0], key=[0, 0], key_labels=("a",)),
        trace([0.0, 1.0], key=[0, 0], key_labels=("b",)),
        trace([0.0, 1.0], traffic_class=[0, 0], class_names=("c",)),
        trace([0.0, 1.0], prefix_blocks=[[1], [2]]),
        trace([0.0, 1.0], prefix_blocks=[[1], [2]], block_tokens=16),
    ]
    assert len({v.content_hash() for v in variants}) == len(variants)


def test_content_hash_is_stable_across_processes():
    code = (
        "import numpy as np; from servewise.trace import Trace;"
        "print(Trace(arrival_s=np.array([0.0, 0.25]), input_tokens=[1, 2], output_tokens=[3, 4],"
        " key=[0, 1], key_labels=('x', 'y'), prefix_blocks=((1,), (1, 2))).content_hash())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            check=True,
        ).stdout
        for seed in (1, 2)
    }
    local = Trace(
        arrival_s=np.array([0.0, 0.25]),
        input_tokens=[1, 2],
        output_tokens=[3, 4],
        key=[0, 1],
        key_labels=("x", "y"),
        prefix_blocks=((1,), (1, 2)),
    ).content_hash()
    assert runs == {local + "\n"}


def test_trace_stats_hand_made():
    tr = trace(
        [0.0, 0.2, 0.9, 5.0, 5.5],
        inp=[10, 20, 30, 40, 50],
        out=[1, 1, 1, 1, 100],
        key=[0, 1, 0, 0, 2],
        key_labels=("a", "b", "c"),
        traffic_class=[0, 0, 1, 0, 0],
        class_names=("x", "y", "z"),
        prefix_blocks=[[1, 2], [1, 3], [], [2, 3, 4], [5]],
    )
    s = trace_stats(tr)
    assert list(s) == [
        "source",
        "requests",
        "duration_s",
        "rate_mean_rps",
        "rate_peak_rps",
        "iat_cv",
        "input_tokens",
        "output_tokens",
        "keys",
        "prefix_reuse_ratio",
        "classes",
        "skipped_rows",
    ]
    assert s["requests"] == 5 and s["duration_s"] == 5.5
    assert s["rate_mean_rps"] == pytest.approx(5 / 5.5)
    assert s["rate_peak_rps"] == {"1s": 3.0, "10s": 0.5, "60s": 5 / 60}
    iat = np.array([0.2, 0.7, 4.1, 0.5])
    assert s["iat_cv"] == pytest.approx(iat.std() / iat.mean())
    assert s["input_tokens"] == {"mean": 30.0, "p50": 30.0, "p90": 46.0, "p99": 49.6, "max": 50}
    assert s["output_tokens"]["p50"] == 1.0 and s["output_tokens"]["max"] == 100
    assert s["keys"] == {"unique": 3, "reuse_ratio": 0.4}
    assert s["prefix_reuse_ratio"] == pytest.approx(3 / 8)  # 1; then 2, 3; of 8 blocks
    assert s["classes"] == {"x": 4, "y": 1, "z": 0}
    json.dumps(s, allow_nan=False)
    assert all(type(v) is float for v in s["input_tokens"].values() if not isinstance(v, int))
    empty = trace_stats(trace([]))
    assert empty["requests"] == 0 and empty["rate_mean_rps"] is None
    json.dumps(empty, allow_nan=False)


# ------------------------------------------------------------------ generators


def iat_cv(t: np.ndarray) -> float:
    d = np.diff(t)
    return float(d.std() / d.mean())


def test_poisson_rate_and_cv():
    rate, dur = 50.0, 2000.0
    tr = poisson(rate_rps=rate, duration_s=dur, seed=11)
    n = len(tr)
    assert abs(n - rate * dur) < 4 * math.sqrt(rate * dur)
    assert tr.arrival_s.min() >= 0 and tr.arrival_s.max() < dur
    assert abs(iat_cv(tr.arrival_s) - 1.0) < 0.02
    # KS test of the gaps against Exp(rate)
    assert sps.kstest(np.diff(tr.arrival_s), "expon", args=(0, 1 / rate)).pvalue > 1e-3
    assert len(poisson(rate_rps=3, n_requests=1234, seed=1)) == 1234
    for kw in ({}, {"duration_s": 1, "n_requests": 1}):
        with pytest.raises(ConfigError, match="exactly one"):
            poisson(rate_rps=1, seed=0, **kw)
    with pytest.raises(ConfigError, match="rate_rps"):
        poisson(rate_rps=0, duration_s=1, seed=0)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_cv(cv):
    tr = gamma_renewal(rate_rps=20, cv=cv, n_requests=200_000, seed=5)
    gaps = np.diff(tr.arrival_s)
    assert gaps.mean() == pytest.approx(1 / 20, rel=4 * cv / math.sqrt(len(gaps)))
    assert iat_cv(tr.arrival_s) == pytest.approx(cv, rel=0.05)


def test_diurnal_follows_the_sine():
    mean, amp, period, dur = 20.0, 0.8, 100.0, 20_000.0
    tr = diurnal(mean_rate_rps=mean, amplitude=amp, period_s=period, duration_s=dur, seed=4)
    phase = tr.arrival_s % period
    edges = np.linspace(0, period, 11)
    counts = np.histogram(phase, bins=edges)[0]
    cycles = dur / period
    w = 2 * np.pi / period
    expected = cycles * mean * (np.diff(edges) - amp / w * np.diff(np.cos(w * edges)))
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    peak = np.sum((phase >= 20) & (phase < 30)) / (cycles * 10)
    trough = np.sum((phase >= 70) & (phase < 80)) / (cycles * 10)
    assert peak == pytest.approx(mean * (1 + amp * 0.9836), rel=0.03)  # sin averaged over the bin
    assert trough == pytest.approx(mean * (1 - amp * 0.9836), rel=0.08)
    # a quarter-period phase moves the peak to t = 0
    shifted = diurnal(mean_rate_rps=mean, amplitude=amp, period_s=period, duration_s=dur, phase_s=25.0, seed=4)
    ph = shifted.arrival_s % period
    assert np.sum(ph < 5) + np.sum(ph >= 95) > 1.5 * np.sum((ph >= 45) & (ph < 55))
    with pytest.raises(ConfigError, match="amplitude"):
        diurnal(mean_rate_rps=1, amplitude=1.5, period_s=10, duration_s=10, seed=0)


def test_mmpp_mean_rate_is_the_stationary_mix():
    on, off, m_on, m_off, dur = 10.0, 1.0, 2.0, 8.0, 20_000.0
    tr = mmpp(on_rate_rps=on, off_rate_rps=off, mean_on_s=m_on, mean_off_s=m_off, duration_s=dur, seed=9)
    p_on = m_on / (m_on + m_off)
    mix = p_on * on + (1 - p_on) * off
    # variance of the count: Poisson part + modulation (rate variance × 2·correlation time)
    tau = 1 / (1 / m_on + 1 / m_off)
    var = mix * dur + 2 * p_on * (1 - p_on) * (on - off) ** 2 * tau * dur
    assert abs(len(tr) - mix * dur) < 4 * math.sqrt(var)
    assert iat_cv(tr.arrival_s) > 1.3  # bursty
    assert tr.arrival_s.max() < dur


def test_servegen_fixture_window_counts():
    path = DATA / "servegen_tiny.csv"
    tr = servegen(path=path, seed=2)
    names = np.array(tr.class_names)[tr.traffic_class]
    w = (tr.arrival_s // 600).astype(int)

    def count(client, window):
        return int(np.sum((names == f"client-{client}") & (w == window)))

    # round(rate * 600): 0.5->300, 0->0, 1.2345->741 ; 0.01->6, 2.0->1200, 0.0008->0
    assert [count(0, k) for k in range(3)] == [300, 0, 741]
    assert [count(7, k) for k in range(3)] == [6, 1200, 0]
    assert set(tr.class_names) == {"client-0", "client-7"}
    half = servegen(path=path, rate_scale=0.5, seed=2)
    assert len(half) == 150 + 370 + 3 + 600  # round(x * 0.5)
    only7 = servegen(path=path, clients=[7], start_s=600, duration_s=600, seed=2)
    assert len(only7) == 1200 and only7.class_names == ("client-7",)
    assert 0 <= only7.arrival_s.min() and only7.arrival_s.max() < 600  # relative to start_s
    with pytest.raises(ConfigError, match="multiple of 600"):
        servegen(path=path, start_s=100, seed=0)
    with pytest.raises(ConfigError, match=r"\[3\]"):
        servegen(path=path, clients=[3], seed=0)


def test_servegen_bad_rows(tmp_path):
    head = "client_id,window_start_s,rate_rps,iat_cv,iat_dist,dist_param1,dist_param2\n"
    p = write(tmp_path, "sg.csv", head + "0,0,1,1,Gamma,1,1\n0,600,1,1,Pareto,1,1\n")
    with pytest.raises(TraceError) as ei:
        servegen(path=p, seed=0)
    assert str(ei.value).startswith(f"{p}:3:") and "'Pareto'" in str(ei.value)
    p = write(tmp_path, "sg2.csv", head + "0,0,-1,1,Gamma,1,1\n")
    with pytest.raises(TraceError, match=r"sg2.csv:2: column 'rate_rps'"):
        servegen(path=p, seed=0)
    p = write(tmp_path, "sg3.csv", "client_id,rate_rps\n0,1\n")
    with pytest.raises(TraceError, match="sg3.csv:1: missing required column 'window_start_s'"):
        servegen(path=p, seed=0)


GEN_KWARGS = {
    "poisson": dict(rate_rps=5.0, duration_s=50.0),
    "gamma": dict(rate_rps=5.0, cv=2.0, n_requests=200),
    "diurnal": dict(mean_rate_rps=5.0, amplitude=0.5, period_s=20.0, duration_s=50.0),
    "mmpp": dict(on_rate_rps=8.0, off_rate_rps=1.0, mean_on_s=3.0, mean_off_s=3.0, duration_s=50.0),
    "servegen": dict(path=DATA / "servegen_tiny.csv"),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_seeded(name):
    assert set(GENERATORS) == set(GEN_KWARGS)
    gen = GENERATORS[name]
    tok = TokenSpec(input_cv=1.0, output_cv=1.0)
    a = gen(**GEN_KWARGS[name], seed=1, tokens=tok)
    b = gen(**GEN_KWARGS[name], seed=1, tokens=tok)
    c = gen(**GEN_KWARGS[name], seed=2, tokens=tok)
    assert isinstance(a, Trace) and len(a) > 0
    assert a.content_hash() == b.content_hash() and a.source == b.source
    assert a.content_hash() != c.content_hash()
    assert np.all(np.diff(a.arrival_s) >= 0) and a.arrival_s.min() >= 0
    assert a.input_tokens.min() >= 1 and a.output_tokens.min() >= 1
    with pytest.raises(TypeError):
        gen(GEN_KWARGS[name], 1)  # keyword-only


def test_token_spec_lognormal_mean_and_cv():
    tr = poisson(
        rate_rps=1000,
        n_requests=200_000,
        seed=8,
        tokens=TokenSpec(input_mean=800, input_cv=1.5, output_mean=200, output_cv=0.5),
    )
    for col, mean, cv in ((tr.input_tokens, 800, 1.5), (tr.output_tokens, 200, 0.5)):
        assert col.mean() == pytest.approx(mean, rel=0.02)
        assert col.std() / col.mean() == pytest.approx(cv, rel=0.06)
    const = poisson(rate_rps=1, n_requests=10, seed=0, tokens=TokenSpec(input_mean=99.6, output_mean=0.2))
    assert const.input_tokens.tolist() == [100] * 10 and const.output_tokens.tolist() == [1] * 10
    with pytest.raises(ConfigError, match="input_cv"):
        TokenSpec(input_cv=-1)


def test_zipf_keys_follow_the_law():
    n_keys, alpha, n = 10, 1.2, 100_000
    base = poisson(rate_rps=100, n_requests=n, seed=0)
    tr = base.with_zipf_keys(n_keys, alpha, seed=3)
    ranks = np.array([int(tr.key_labels[k]) for k in tr.key.tolist()])
    observed = np.bincount(ranks, minlength=n_keys + 1)[1:]
    p = np.arange(1, n_keys + 1, dtype=float) ** -alpha
    p /= p.sum()
    assert sps.chisquare(observed, p * n).pvalue > 1e-3
    assert np.max(np.abs(observed / n - p)) < 0.01
    # codes are dense, in order of first appearance
    first = [int(k) for k in pd.unique(tr.key)]
    assert first == list(range(len(tr.key_labels)))
    uniform = base.with_zipf_keys(4, 0.0, seed=3)
    assert np.all(np.abs(np.bincount(uniform.key) / n - 0.25) < 0.01)
    assert tr.key.tolist() == base.with_zipf_keys(n_keys, alpha, seed=3).key.tolist()
    assert tr.key.tolist() != base.with_zipf_keys(n_keys, alpha, seed=4).key.tolist()
    with pytest.raises(ConfigError, match="overwrite=True"):
        tr.with_zipf_keys(5, 1.0, seed=0)
    assert len(tr.with_zipf_keys(5, 1.0, seed=0, overwrite=True).key_labels) == 5
    with pytest.raises(ConfigError, match="alpha"):
        base.with_zipf_keys(5, -1.0, seed=0)


def test_generic_arrival_column_may_hold_datetimes(tmp_path):
    p = write(tmp_path, "dt.csv", "ts,input_tokens\n2024-01-01 00:00:00,3\n2024-01-01 00:00:01.5,4\n2024-01-01 00:01:00,5\n")
    tr = load_trace(p, column_map={"arrival_s": "ts"})
    assert tr.arrival_s.tolist() == [0.0, 1.5, 60.0]
    bad = write(tmp_path, "dt_bad.csv", "arrival_s\n2024-01-01 00:00:00\nnot-a-date\n")
    with pytest.raises(TraceError, match=r"dt_bad\.csv:3: column 'arrival_s' must be a date-time"):
        load_trace(bad)


def test_alibaba_gentd26_loads_as_generic_with_a_column_map():
    """README §4: 9,930 rows over 11.3 days, 0.0102 req/s, IAT CV 11.7, peak@1s 3."""
    path = real("alibaba_gentd26_lora_request_trace_2024-11-15_to_11-26.csv")
    tr = load_trace(path, format="generic", column_map={"arrival_s": "gmt_create", "traffic_class": "predict_type"})
    s = trace_stats(tr)
    assert s["requests"] == 9930
    assert s["duration_s"] / 86400 == pytest.approx(11.3, abs=0.05)
    assert s["rate_mean_rps"] == pytest.approx(0.0102, abs=5e-5)
    assert s["iat_cv"] == pytest.approx(11.7, abs=0.05)
    assert s["rate_peak_rps"]["1s"] == 3.0
    assert set(s["classes"]) == {"TXT_2_IMG", "IMG_2_IMG", "INPAINTING"}
