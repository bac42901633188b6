"""``servewise loadtest and validate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from servewise.cli._common import (
    EXIT_VIOLATION,
    ColumnMapOpt,
    FormatOpt,
    _check,
    _errors,
    _fmt,
    _load_trace,
    app,
    err,
    out,
)
from servewise.errors import CLIError

if TYPE_CHECKING:
    from servewise.results import Measured, Validation


def _print_measured(m: Measured, title: str) -> None:
    s, gen = m.summary, m.generator
    t = Table(title=title, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("requests", _fmt(s.requests)),
        ("completed / cache hits", f"{_fmt(s.completed)} / {_fmt(s.cache_hits)}"),
        ("rejected (429) / failed", f"{_fmt(s.rejected)} / {_fmt(s.failed)}"),
        ("throughput", f"{_fmt(s.throughput_rps)} req/s"),
        *((f"latency {k}", _fmt(getattr(s.latency_s, k), "s")) for k in ("p50", "p95", "p99")),
    ]
    if s.ttft_s.p50 is not None:
        rows += [("TTFT p50 / p95", f"{_fmt(s.ttft_s.p50, 's')} / {_fmt(s.ttft_s.p95, 's')}")]
        rows += [("TPOT p50", _fmt(s.tpot_s.p50, "s"))]
    rows += [
        ("offered / achieved rate", f"{_fmt(gen.offered_rps)} / {_fmt(gen.achieved_rps)} req/s"),
        ("send lag p99", _fmt(gen.send_lag_s.p99, "s")),
        (
            "load generator",
            "[green]valid[/]" if gen.valid else "[red]INVALID[/]: " + "; ".join(gen.invalid_reasons),
        ),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)


def _print_validation(v: Validation) -> None:
    t = Table(title=f"validation: {v.verdict}", header_style="bold")
    for col in ("metric", "predicted", "measured", "error", "tolerance", ""):
        t.add_column(col, justify="right" if col not in ("metric", "") else "left")
    for k, m in v.metrics.items():
        unit = "s" if "_s." in k or k.endswith("_s") else ""
        rel = m.relative_error
        t.add_row(
            k, _fmt(m.predicted, unit), _fmt(m.measured, unit), "—" if rel is None else f"{rel:+.1%}",
            f"±{m.tolerance:.0%}", "[green]pass[/]" if m.passed else "[red]FAIL[/]",
        )  # fmt: skip
    out.print(t)
    for reason in v.invalid_reasons:
        err.print(f"invalid: {reason}", markup=False)


ApiOpt = Annotated[
    str | None, typer.Option(help="openai (POST /v1/completions) or predict (POST /predict); default: from the trace.")
]


@app.command()
def loadtest(
    url: Annotated[str, typer.Option("--url", help="Endpoint base URL (http://host:port) or full path.")],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace to replay (arrival times, token counts, keys).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for measured.json and requests.csv.")],
    time_scale: Annotated[float, typer.Option("--time-scale", help="Replay k times faster (k > 0).")] = 1.0,
    max_requests: Annotated[
        int | None, typer.Option("--max-requests", help="Replay only the first N requests.")
    ] = None,
    api: ApiOpt = None,
    stream: Annotated[bool, typer.Option(help="Ask for streamed answers; measure TTFT and inter-token times.")] = False,
    model: Annotated[str, typer.Option(help="The model name sent in OpenAI requests.")] = "servewise",
    token: Annotated[str | None, typer.Option(help="Bearer token (default: $SERVEWISE_TOKEN).")] = None,
    processes: Annotated[int, typer.Option(help="Load-generator processes (Locust runners).")] = 1,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="A request unanswered after this is failed.")] = 120.0,
    max_send_lag_s: Annotated[
        float, typer.Option("--max-send-lag-s", help="The run is invalid when the p99 send lag exceeds this.")
    ] = 0.05,
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
) -> None:
    """Replay a trace open loop against an endpoint with Locust; write measured.json and requests.csv.

    Exit 0 when the run is valid, 1 when the load generator fell behind (the numbers are not trustworthy).
    """
    import os

    with _errors():
        if api not in (None, "openai", "predict"):
            raise CLIError(f"--api must be openai or predict, got {api!r}")
        _check(processes, "--processes", ge=1)
        _check(max_requests, "--max-requests", ge=1)
        _check(time_scale, "--time-scale", gt=0)
        from servewise import loadtest as lt

        tr = _load_trace(trace, fmt, column_map, False)
        measured = lt.run_loadtest(
            url, tr, out_dir=out_dir, time_scale=time_scale, max_requests=max_requests, api=api,  # type: ignore[arg-type]
            stream=stream, model=model, token=token if token is not None else os.environ.get("SERVEWISE_TOKEN") or None,
            processes=processes, timeout_s=timeout_s, max_send_lag_s=max_send_lag_s,
        )  # fmt: skip
        _print_measured(measured, f"load test of {url}")
        out.print(f"wrote {out_dir / 'measured.json'} and {out_dir / 'requests.csv'}", markup=False)
        if not measured.generator.valid:
            err.print("the load generator fell behind the schedule: this run does not measure the server", markup=False)
            raise typer.Exit(EXIT_VIOLATION)


EXIT_INVALID = 3


@app.command()
def validate(
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace to simulate and replay.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for validation.json and what it compares.")],
    deployment: Annotated[
        Path | None, typer.Option("--deployment", "-d", help="Deployment to simulate, serve here and load test.")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Or: an endpoint already running (needs --expected).")
    ] = None,
    expected: Annotated[
        Path | None, typer.Option("--expected", help="The advisor's expected.json (with --url).")
    ] = None,
    time_scale: Annotated[float, typer.Option("--time-scale", help="Replay k times faster (k > 0).")] = 1.0,
    max_requests: Annotated[int | None, typer.Option("--max-requests", help="Use only the first N requests.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulation and of the server's policies.")] = 0,
    mode: Annotated[
        str | None, typer.Option(help="Server mode: real or synthetic (default: real with a model).")
    ] = None,
    serve_arg: Annotated[
        list[str] | None,
        typer.Option("--serve-arg", help="Extra option for servewise serve, e.g. --serve-arg=--threads=1."),
    ] = None,
    api: ApiOpt = None,
    stream: Annotated[bool, typer.Option(help="Ask for streamed answers (TTFT, inter-token times).")] = False,
    token: Annotated[str | None, typer.Option(help="Bearer token of --url (default: $SERVEWISE_TOKEN).")] = None,
    processes: Annotated[int, typer.Option(help="Load-generator processes.")] = 1,
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
) -> None:
    """Simulate, serve, load test and compare: write validation.json with a verdict per metric.

    Exit 0 when every metric is within its tolerance, 1 when one is not, 3 when the
    measurement is invalid (the load generator fell behind), 2 on bad input.
    """
    import os

    with _errors():
        if (deployment is None) == (url is None):
            raise CLIError("give either --deployment (serve it here) or --url with --expected")
        if url is not None and expected is None:
            raise CLIError("--url needs --expected (the advisor's expected.json)")
        if mode not in (None, "real", "synthetic"):
            raise CLIError(f"--mode must be real or synthetic, got {mode!r}")
        _check(processes, "--processes", ge=1)
        _check(max_requests, "--max-requests", ge=1)
        _check(time_scale, "--time-scale", gt=0)
        from servewise.loadtest.validate import validate as run_validate

        tr = _load_trace(trace, fmt, column_map, False)
        serve_args = [*(["--mode", mode] if mode else []), *(serve_arg or [])]
        v = run_validate(
            tr, out_dir, deployment_path=deployment, url=url, expected_path=expected, max_requests=max_requests,
            time_scale=time_scale, seed=seed, serve_args=serve_args, stream=stream, api=api,
            token=token if token is not None else os.environ.get("SERVEWISE_TOKEN") or None, processes=processes,
            progress=lambda text: err.print(text, markup=False),
        )  # fmt: skip
        _print_validation(v)
        out.print(f"wrote {out_dir / 'validation.json'}", markup=False)
    if v.verdict == "fail":
        raise typer.Exit(EXIT_VIOLATION)
    if v.verdict == "invalid":
        raise typer.Exit(EXIT_INVALID)


@app.command()
def calibrate(
    profile: Annotated[Path, typer.Option("--profile", "-p", help="Profile JSON holding the variant (updated in place).")],
    variant: Annotated[str, typer.Option("--variant", "-v", help="The variant to serve, e.g. fp32.")],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace whose requests to replay (its shapes and gaps).")],
    window: Annotated[
        str | None, typer.Option(help="START:END seconds of the trace to fit on (keep others to validate on).")
    ] = None,
    max_requests: Annotated[int, typer.Option("--max-requests", help="Replay at most N requests.")] = 600,
    util: Annotated[float, typer.Option(help="Offered load as a share of one replica (0 < util < 1).")] = 0.3,
    threads: Annotated[int, typer.Option(help="Intra-op threads of the served replica.")] = 1,
    model: Annotated[str | None, typer.Option("--model", help="Which model of the profile (when it holds several).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write the calibrated profile here instead.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the server's policies.")] = 0,
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
) -> None:
    """Measure a variant through the live serving path; record the overhead and live service scale in the profile.

    Serves the variant for real (1 replica) on 127.0.0.1, replays the trace window with
    Locust at --util of its capacity, and writes the variant's `serving` block, which
    the simulator then charges. Exit 0, 2 on bad input, 3 when the generator fell behind.
    """
    with _errors():
        _check(max_requests, "--max-requests", ge=1)
        _check(threads, "--threads", ge=1)
        from servewise.errors import InvalidMeasurement
        from servewise.loadtest.calibrate import calibrate as run_calibrate

        tr = _load_trace(trace, fmt, column_map, False, window=window).head(max_requests)
        try:
            cal = run_calibrate(profile, variant, tr, out_path=out_path, model=model, util=util, threads=threads,
                                seed=seed, progress=lambda text: err.print(text, markup=False))  # fmt: skip
        except InvalidMeasurement as e:
            err.print(f"[bold red]invalid:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(EXIT_INVALID) from None
    import numpy as np

    o = np.asarray(cal.overhead_samples_s)
    out.print(
        f"calibrated {variant} on {cal.requests} requests: overhead outside the replica p50 "
        f"{np.median(o) * 1e3:.2f} ms, p95 {np.percentile(o, 95) * 1e3:.2f} ms; live service "
        f"{cal.service_fixed_s * 1e3:.2f} ms + {cal.service_scale:.3f}x the profile (CV {cal.service_cv:.2f}); "
        f"router and load generator CPU {(cal.host_cpu_per_request_s or 0) * 1e3:.2f} ms per request",
        markup=False,
    )
    out.print(f"wrote {out_path or profile}", markup=False)
