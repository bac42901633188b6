"""``servewise trace stats / generate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from servewise.cli._common import (
    ColumnMapOpt,
    FormatOpt,
    SkipBadOpt,
    _errors,
    _fmt,
    _load_trace,
    _with_keys,
    out,
    trace_app,
)
from servewise.errors import CLIError


@trace_app.command("stats")
def trace_stats_cmd(
    path: Annotated[Path, typer.Argument(help="Trace file.")],
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rate (mean, peak), inter-arrival CV, token percentiles and key reuse of a trace."""
    from servewise.trace import trace_stats

    with _errors():
        t = _load_trace(path, fmt, column_map, skip_bad_rows)
        stats = trace_stats(t)
    if as_json:
        out.print_json(json.dumps(stats))
        return
    table = Table(title=f"trace {path.name}", header_style="bold")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for k, v in stats.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} {_fmt(vv)}" for kk, vv in v.items())
        table.add_row(k, _fmt(v))
    out.print(table)


@trace_app.command("generate")
def trace_generate_cmd(
    kind: Annotated[str, typer.Argument(help="poisson, gamma, diurnal, mmpp or servegen.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output trace (.csv or .jsonl).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    rate_rps: Annotated[float | None, typer.Option("--rate-rps", help="poisson/gamma: mean arrival rate.")] = None,
    mean_rate_rps: Annotated[float | None, typer.Option("--mean-rate-rps", help="diurnal: mean rate.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Length of the trace, seconds.")] = None,
    n_requests: Annotated[int | None, typer.Option("--n-requests", help="poisson/gamma: number of requests.")] = None,
    cv: Annotated[float | None, typer.Option(help="gamma: inter-arrival coefficient of variation.")] = None,
    amplitude: Annotated[float | None, typer.Option(help="diurnal: relative amplitude in [0, 1].")] = None,
    period_s: Annotated[float | None, typer.Option("--period-s", help="diurnal: period, seconds.")] = None,
    on_rate_rps: Annotated[float | None, typer.Option("--on-rate-rps", help="mmpp: rate in bursts.")] = None,
    off_rate_rps: Annotated[float | None, typer.Option("--off-rate-rps", help="mmpp: rate between bursts.")] = None,
    mean_on_s: Annotated[float | None, typer.Option("--mean-on-s", help="mmpp: mean burst length.")] = None,
    mean_off_s: Annotated[float | None, typer.Option("--mean-off-s", help="mmpp: mean gap between bursts.")] = None,
    servegen_file: Annotated[
        Path | None, typer.Option("--servegen-file", help="servegen: per-client rates file.")
    ] = None,
    start_s: Annotated[float | None, typer.Option("--start-s", help="servegen: start time in the rate series.")] = None,
    rate_scale: Annotated[
        float | None, typer.Option("--rate-scale", help="servegen: scale every client's rate.")
    ] = None,
    input_mean: Annotated[float, typer.Option("--input-mean", help="Mean input tokens.")] = 512,
    input_cv: Annotated[float, typer.Option("--input-cv", help="CV of input tokens (log-normal; 0 = constant).")] = 0.0,
    output_mean: Annotated[float, typer.Option("--output-mean", help="Mean output tokens.")] = 128,
    output_cv: Annotated[float, typer.Option("--output-cv", help="CV of output tokens.")] = 0.0,
    zipf_keys: Annotated[int | None, typer.Option("--zipf-keys", help="Add request keys drawn from N keys.")] = None,
    zipf_alpha: Annotated[float | None, typer.Option("--zipf-alpha", help="Zipf exponent of key popularity.")] = None,
) -> None:
    """Generate a synthetic trace (all generators are seeded)."""
    from servewise.trace import GENERATORS, TokenSpec, save_trace

    given: dict[str, Any] = {
        "rate_rps": rate_rps,
        "mean_rate_rps": mean_rate_rps,
        "duration_s": duration_s,
        "n_requests": n_requests,
        "cv": cv,
        "amplitude": amplitude,
        "period_s": period_s,
        "on_rate_rps": on_rate_rps,
        "off_rate_rps": off_rate_rps,
        "mean_on_s": mean_on_s,
        "mean_off_s": mean_off_s,
        "path": servegen_file,
        "start_s": start_s,
        "rate_scale": rate_scale,
    }
    with _errors():
        if kind not in GENERATORS:
            raise CLIError(f"unknown generator {kind!r}; expected one of: {', '.join(sorted(GENERATORS))}")
        gen = GENERATORS[kind]
        import inspect

        accepted = set(inspect.signature(gen).parameters)
        wrong = [k for k, v in given.items() if v is not None and k not in accepted]
        if wrong:
            flags = ", ".join("--" + ("servegen-file" if k == "path" else k.replace("_", "-")) for k in wrong)
            raise CLIError(f"generator {kind!r} does not take {flags}")
        kwargs = {k: v for k, v in given.items() if v is not None}
        params = inspect.signature(gen).parameters
        required = [
            k for k, prm in params.items() if prm.default is inspect.Parameter.empty and k not in ("seed", "tokens")
        ]
        # poisson / gamma take exactly one of duration_s and n_requests
        if "n_requests" in params and "duration_s" in params and (duration_s is None) == (n_requests is None):
            raise CLIError(f"generator {kind!r} needs exactly one of --duration-s or --n-requests")
        missing = [k for k in required if k not in kwargs]
        if missing:
            flags = ", ".join("--" + ("servegen-file" if k == "path" else k.replace("_", "-")) for k in missing)
            raise CLIError(f"generator {kind!r} needs {flags}")
        t = gen(
            seed=seed,
            tokens=TokenSpec(input_mean=input_mean, input_cv=input_cv, output_mean=output_mean, output_cv=output_cv),
            **kwargs,
        )
        t = _with_keys(t, zipf_keys, zipf_alpha, seed=seed, overwrite=False)
        save_trace(t, out_path)
    out.print(f"wrote {len(t):,} requests over {t.duration_s:,.1f} s to {out_path}", markup=False)
