"""``servewise simulate and demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from servewise.cli._common import (
    EXIT_VIOLATION,
    CLIError,
    ColumnMapOpt,
    FormatOpt,
    SkipBadOpt,
    _errors,
    _fmt,
    _load_trace,
    _print_summary,
    _progress,
    _settings,
    app,
    err,
    out,
)

if TYPE_CHECKING:
    from servewise.results import SimResult


def _simulate(
    deployment: Path,
    trace: Path,
    out_dir: Path,
    *,
    seed: int,
    warmup_s: float,
    quiet: bool,
    title: str,
    trace_kwargs: dict[str, Any],
    requests_format: str = "csv",
) -> SimResult:
    from servewise.config import load_deployment
    from servewise.results import REQUEST_FORMATS
    from servewise.simulator import simulate as run_sim

    if requests_format not in REQUEST_FORMATS:
        raise CLIError(f"--requests-format expects one of {', '.join(REQUEST_FORMATS)}, got {requests_format!r}")
    dep = load_deployment(deployment)
    tr = _load_trace(trace, **trace_kwargs, seed=seed)
    with _progress(not quiet, "simulating") as progress:
        result = run_sim(dep, tr, seed=seed, warmup_s=warmup_s, progress=progress)
    json_path, table_path = result.write(out_dir, requests_format)
    if not quiet:
        _print_summary(result.summary, title)
        slo = result.slo
        if slo is not None:
            verdict = "[green]met[/]" if slo.passed else "[red]violated[/]"
            out.print(
                f"SLO {verdict}: " + ", ".join(f"{k} {'ok' if c.passed else 'FAIL'}" for k, c in slo.checks.items())
            )
        out.print(f"wrote {json_path} and {table_path}", markup=False)
    return result


@app.command()
def simulate(
    deployment: Annotated[Path, typer.Option("--deployment", "-d", help="Deployment YAML.")],
    trace: Annotated[
        Path, typer.Option("--trace", "-t", help="Trace file (Azure, Mooncake, BurstGPT, generic CSV/JSONL).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for result.json and requests.csv.")],
    seed: Annotated[int, typer.Option(help="Random seed; same inputs + seed give byte-identical results.")] = 0,
    warmup_s: Annotated[
        float, typer.Option("--warmup-s", help="Leave requests arriving before this out of the summary.")
    ] = 0.0,
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    window: Annotated[str | None, typer.Option(help="Keep arrivals in START:END seconds (re-based to 0).")] = None,
    rate_scale: Annotated[float | None, typer.Option("--rate-scale", help="Multiply the arrival rate by this.")] = None,
    repeat: Annotated[int | None, typer.Option(help="Replay the trace this many times back to back.")] = None,
    zipf_keys: Annotated[
        int | None, typer.Option("--zipf-keys", help="Draw request keys from N keys (for the cache).")
    ] = None,
    zipf_alpha: Annotated[float | None, typer.Option("--zipf-alpha", help="Zipf exponent of key popularity.")] = None,
    requests_format: Annotated[
        str,
        typer.Option(
            "--requests-format",
            help="The per-request table: csv (requests.csv) or parquet (requests.parquet: smaller, faster to read).",
        ),
    ] = "csv",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Simulate a deployment serving a trace; write DIR/result.json and DIR/requests.csv (or .parquet)."""
    with _errors():
        _simulate(
            deployment,
            trace,
            out_dir,
            seed=seed,
            warmup_s=warmup_s,
            quiet=quiet,
            title=f"simulation of {deployment.name}",
            requests_format=requests_format,
            trace_kwargs=dict(
                fmt=fmt,
                column_map=column_map,
                skip_bad_rows=skip_bad_rows,
                window=window,
                rate_scale=rate_scale,
                repeat=repeat,
                zipf_keys=zipf_keys,
                zipf_alpha=zipf_alpha,
            ),
        )


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")] = Path("servewise-out"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    profile: Annotated[
        Path | None, typer.Option("--profile", help="Reuse this profile of builtin:minilm instead of measuring one.")
    ] = None,
    space: Annotated[Path | None, typer.Option("--space", help="A search space instead of the built-in one.")] = None,
    rate_scale: Annotated[float, typer.Option("--rate-scale", help="Replay the trace excerpt k times faster.")] = 8.0,
    max_requests: Annotated[int | None, typer.Option("--max-requests", help="Use only the first N requests.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Advisor workers (default: the CPUs).")] = None,
    simulate_only: Annotated[
        bool, typer.Option("--simulate-only", help="Only simulate the built-in deployment (no torch, seconds).")
    ] = False,
    calibrate: Annotated[
        bool, typer.Option("--calibrate/--no-calibrate", help="Calibrate the variants live on the trace's first quarter.")
    ] = True,
    allow_unstable_profile: Annotated[
        bool, typer.Option("--allow-unstable-profile", help="Advise even when profile points are flagged unstable.")
    ] = False,
) -> None:
    """Run the whole loop on the built-in defaults (no GPU, no network).

    Profiles all-MiniLM-L6-v2 (fp32, bf16) on this machine, calibrates both through the
    live serving path on the excerpt's first quarter, advises on the rest over the built-in
    search space for the shipped 10-minute Azure LLM 2023 excerpt (read as an embedding
    workload), serves the winner live, validates it with Locust and writes one report
    linking every stage (OUT/report.html). Exit 0 when every stage ran (the validation's
    verdict is printed and in the report), 1 when no candidate meets the SLOs, 2 on bad
    input. --simulate-only runs the earlier demo: the built-in deployment simulated
    against the same excerpt.
    """
    from importlib.resources import files

    from servewise.trace import default_trace_path

    with _errors():
        if simulate_only:
            dep_path = Path(str(files("servewise") / "data" / "default_deployment.yaml"))
            out.print(f"deployment: {dep_path}\ntrace:      {default_trace_path()}", markup=False)
            _simulate(
                dep_path,
                default_trace_path(),
                out_dir,
                seed=seed,
                warmup_s=0.0,
                quiet=False,
                title="servewise demo: built-in deployment × Azure LLM 2023 conversation (10 min)",
                trace_kwargs=dict(fmt="auto", column_map=None, skip_bad_rows=False, zipf_keys=5000, zipf_alpha=0.8),
            )
            from servewise import reports

            page = reports.write_report([out_dir], out_dir / "report.html", title="servewise demo --simulate-only")
            out.print(f"report: {page}", markup=False)
            return
        from servewise.demo import LoopSettings, run_loop
        from servewise.procs import sigterm_as_interrupt

        loop = _settings(
            LoopSettings, {},
            out_dir=out_dir, seed=seed, profile=profile, space=space, rate_scale=rate_scale,
            max_requests=max_requests, jobs=jobs, calibrate=calibrate, allow_unstable_profile=allow_unstable_profile,
        )  # fmt: skip
        with sigterm_as_interrupt():
            doc = run_loop(loop, progress=lambda text: err.print(text, markup=False, highlight=False))
        _print_loop(doc, out_dir)
    if doc["winner"] is None:
        raise typer.Exit(EXIT_VIOLATION)


def _print_loop(doc: dict[str, Any], out_dir: Path) -> None:
    """What the demo's loop did (its ``loop.json``): stage times, the winner, the validation, the report."""
    t = doc["timings_s"]
    out.print(
        "stages: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in t.items() if k != "total_s")
        + f" (total {t['total_s']:.0f} s)",
        markup=False,
    )
    w = doc["winner"]
    if w is None:
        out.print("[red]no candidate meets the SLOs[/]: see the plan's closest candidates in the report")
    else:
        out.print(f"winner: {escape(w['label'])} at ${w['cost_per_hour_usd']:.3f}/h")
        from servewise.results import load_artifact

        val = load_artifact(out_dir / doc["artifacts"]["validation"], "validation")
        colour = {"pass": "green", "fail": "red"}.get(val.verdict, "yellow")
        out.print(f"validation (predicted vs measured live): [bold {colour}]{val.verdict}[/]")
        for k, m in val.metrics.items():
            rel = m.relative_error
            out.print(
                f"  {k:16} predicted {_fmt(m.predicted)}  measured {_fmt(m.measured)}  "
                f"error {'—' if rel is None else f'{rel:+.1%}'} (±{m.tolerance:.0%})",
                markup=False,
            )
    out.print(f"report: {out_dir / doc['artifacts']['report']}", markup=False)
