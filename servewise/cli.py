"""The ``servewise`` command line: a thin Typer app over the library.

Each command parses its options, calls one library entry point (importing that stage
only when the command runs) and prints the outcome. This module alone decides exit
codes: 0 success, 1 an SLO violation / regression / failed validation, 2 unusable input or
usage, 3 an invalid measurement (the load generator fell behind).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from servewise.errors import CLIError, ProfileInterrupted, ServewiseError

__all__ = ["app", "main"]

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="servewise",
    help="Find the cheapest way to serve a model within its latency SLOs, and prove it holds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
trace_app = typer.Typer(help="Inspect and generate traffic traces.", no_args_is_help=True)
deployment_app = typer.Typer(help="Check and scaffold deployment files.", no_args_is_help=True)
profile_app = typer.Typer(
    help="Measure model variants on this machine (servewise profile --model SPEC --variants LIST --out FILE).",
    invoke_without_command=True,
)
app.add_typer(trace_app, name="trace")
app.add_typer(deployment_app, name="deployment")
app.add_typer(profile_app, name="profile")
deploy_app = typer.Typer(help="Deployment versions kept by servewise serve: history and rollback.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")

out = Console()
err = Console(stderr=True)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn servewise errors into one line on stderr and exit code 2 (never a traceback)."""
    try:
        yield
    except ProfileInterrupted as e:
        err.print(f"[bold yellow]{escape(str(e))}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except ServewiseError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


# --------------------------------------------------------------------------- shared options

FormatOpt = Annotated[
    str, typer.Option("--format", help="Trace format: auto, azure, mooncake, burstgpt, generic.")
]
ColumnMapOpt = Annotated[
    list[str] | None,
    typer.Option("--column-map", help="Map our column to the file's: arrival_s=ts (repeatable)."),
]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad-rows", help="Skip malformed rows (counted) instead of failing.")]


def _column_map(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    mapping: dict[str, str] = {}
    for item in items:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise CLIError(f"--column-map expects OURS=THEIRS (e.g. arrival_s=ts), got {item!r}")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def _load_trace(
    path: Path,
    fmt: str,
    column_map: list[str] | None,
    skip_bad_rows: bool,
    *,
    window: str | None = None,
    rate_scale: float | None = None,
    repeat: int | None = None,
    zipf_keys: int | None = None,
    zipf_alpha: float | None = None,
    seed: int = 0,
) -> Any:
    from servewise.trace import load_trace

    t = load_trace(path, format=fmt, column_map=_column_map(column_map), skip_bad_rows=skip_bad_rows)
    if skip_bad_rows and t.skipped_rows:
        err.print(f"warning: skipped {t.skipped_rows} malformed row(s) of {path}", markup=False)
    if window is not None:
        a, sep, b = window.partition(":")
        try:
            start, end = float(a), float(b)
        except ValueError:
            raise CLIError(f"--window expects START:END in seconds (e.g. 0:600), got {window!r}") from None
        if not sep or end <= start:
            raise CLIError(f"--window expects START:END with END > START, got {window!r}")
        t = t.window(start, end)
    if rate_scale is not None:
        t = t.scale_rate(rate_scale)
    if repeat is not None:
        t = t.repeat(repeat)
    if (zipf_keys is None) != (zipf_alpha is None):
        raise CLIError("--zipf-keys and --zipf-alpha go together: give both or neither")
    if zipf_keys is not None and zipf_alpha is not None:
        t = t.with_zipf_keys(zipf_keys, zipf_alpha, seed=seed, overwrite=True)
    return t


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if unit == "s":
            return f"{v * 1000:.2f} ms" if abs(v) < 1 else f"{v:.3f} s"
        if unit == "%":
            return f"{v * 100:.2f} %"
        if unit == "$":
            return f"${v:,.4f}"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _print_summary(s: dict[str, Any], title: str) -> None:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("requests", s["requests"], ""),
        ("completed (incl. cache hits)", s["completed"], ""),
        ("rejected", s["rejected"], ""),
        ("failed", s["failed"], ""),
        ("throughput", f"{_fmt(s['throughput_rps'])} req/s", ""),
        ("latency mean", s["latency_s"]["mean"], "s"),
        ("latency p50", s["latency_s"]["p50"], "s"),
        ("latency p95", s["latency_s"]["p95"], "s"),
        ("latency p99", s["latency_s"]["p99"], "s"),
        ("queue wait p95", s["queue_s"]["p95"], "s"),
        ("cache hit ratio", s["cache_hit_ratio"], "%"),
        ("cold starts", s["cold_starts"], ""),
        ("mean replicas", s["mean_replicas"], ""),
        ("utilisation", s["utilisation"], "%"),
        ("availability", s["availability"], "%"),
        ("cost", s["cost_usd"], "$"),
    ]
    if s.get("ttft_s", {}).get("p50") is not None:  # an LLM engine ran
        kv = s["kv_utilisation"] or {}
        rows += [
            ("TTFT p50", s["ttft_s"]["p50"], "s"),
            ("TTFT p99", s["ttft_s"]["p99"], "s"),
            ("TPOT p50", s["tpot_s"]["p50"], "s"),
            ("TPOT p99", s["tpot_s"]["p99"], "s"),
            ("inter-token p99", s["itl_s"]["p99"], "s"),
            ("output tokens", f"{_fmt(s['output_tokens_per_s'])} tok/s", ""),
            ("goodput", f"{_fmt(s['goodput_rps'])} req/s" if s["goodput_rps"] is not None else "—", ""),
            ("prefix hit ratio", s["prefix_hit_ratio"], "%"),
            ("preemptions", s["preemptions"], ""),
            ("KV utilisation mean / max", f"{_fmt(kv.get('mean'), '%')} / {_fmt(kv.get('max'), '%')}", ""),
        ]
    for name, v, unit in rows:
        t.add_row(name, v if isinstance(v, str) else _fmt(v, unit))
    out.print(t)


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar fed by the library's ``progress(done, total)`` callback."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=err, transient=True) as prog:
        task = prog.add_task(what, total=1)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


# --------------------------------------------------------------------------- simulate


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
) -> dict[str, Any]:
    from servewise.config import load_deployment
    from servewise.simulator import simulate as run_sim

    dep = load_deployment(deployment)
    tr = _load_trace(trace, **trace_kwargs, seed=seed)
    with _progress(not quiet, "simulating") as progress:
        result = run_sim(dep, tr, seed=seed, warmup_s=warmup_s, progress=progress)
    json_path, csv_path = result.write(out_dir)
    if not quiet:
        _print_summary(result.summary, title)
        slo = result.data.get("slo")
        if slo is not None:
            verdict = "[green]met[/]" if slo["pass"] else "[red]violated[/]"
            out.print(f"SLO {verdict}: " + ", ".join(f"{k} {'ok' if c['pass'] else 'FAIL'}" for k, c in slo["checks"].items()))
        out.print(f"wrote {json_path} and {csv_path}", markup=False)
    return result.data


@app.command()
def simulate(
    deployment: Annotated[Path, typer.Option("--deployment", "-d", help="Deployment YAML.")],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace file (Azure, Mooncake, BurstGPT, generic CSV/JSONL).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for result.json and requests.csv.")],
    seed: Annotated[int, typer.Option(help="Random seed; same inputs + seed give byte-identical results.")] = 0,
    warmup_s: Annotated[float, typer.Option("--warmup-s", help="Leave requests arriving before this out of the summary.")] = 0.0,
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    window: Annotated[str | None, typer.Option(help="Keep arrivals in START:END seconds (re-based to 0).")] = None,
    rate_scale: Annotated[float | None, typer.Option("--rate-scale", help="Multiply the arrival rate by this.")] = None,
    repeat: Annotated[int | None, typer.Option(help="Replay the trace this many times back to back.")] = None,
    zipf_keys: Annotated[int | None, typer.Option("--zipf-keys", help="Draw request keys from N keys (for the cache).")] = None,
    zipf_alpha: Annotated[float | None, typer.Option("--zipf-alpha", help="Zipf exponent of key popularity.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Simulate a deployment serving a trace; write DIR/result.json and DIR/requests.csv."""
    with _errors():
        _simulate(
            deployment,
            trace,
            out_dir,
            seed=seed,
            warmup_s=warmup_s,
            quiet=quiet,
            title=f"simulation of {deployment.name}",
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
) -> None:
    """Run the whole loop on the built-in defaults (no GPU, no network).

    Profiles all-MiniLM-L6-v2 (fp32, bf16) on this machine, advises over the built-in
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

        doc = run_loop(
            LoopSettings(out_dir=out_dir, seed=seed, profile=profile, space=space, rate_scale=rate_scale,
                         max_requests=max_requests, jobs=jobs),
            progress=lambda text: err.print(text, markup=False, highlight=False),
        )  # fmt: skip
        t = doc["timings_s"]
        out.print(
            "stages: " + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in t.items() if k != "total_s")
            + f" (total {t['total_s']:.0f} s)",
            markup=False,
        )
        w = doc["winner"]
        if w is None:
            out.print("[red]no candidate meets the SLOs[/]: see the plan's closest candidates in the report")
        else:
            out.print(f"winner: {escape(w['label'])} at ${w['cost_per_hour_usd']:.3f}/h")
            val = json.loads((out_dir / doc["artifacts"]["validation"]).read_text())
            colour = {"pass": "green", "fail": "red"}.get(val["verdict"], "yellow")
            out.print(f"validation (predicted vs measured live): [bold {colour}]{val['verdict']}[/]")
            for k, m in val["metrics"].items():
                rel = m["relative_error"]
                out.print(
                    f"  {k:16} predicted {_fmt(m['predicted'])}  measured {_fmt(m['measured'])}  "
                    f"error {'—' if rel is None else f'{rel:+.1%}'} (±{m['tolerance']:.0%})",
                    markup=False,
                )
        out.print(f"report: {out_dir / doc['artifacts']['report']}", markup=False)
    if doc["winner"] is None:
        raise typer.Exit(EXIT_VIOLATION)


# --------------------------------------------------------------------------- advise


def _print_plan(plan: Any, top: int) -> None:
    d = plan.data
    srch = d["search"]
    table = Table(title=f"plan {d['name']} ({d['setting']}): {srch['candidates']} candidates, strategy {srch['strategy']}")
    for col, just in (("#", "right"), ("candidate", "left"), ("$/h", "right"), ("$/M req", "right"),
                      ("p95", "right"), ("p99", "right"), ("binding SLO", "left"), ("margin", "right"), ("ok", "center")):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    ranked = plan.ranked()
    shown = ranked[:top] if ranked else [plan.candidate(c) for c in d["closest"]]
    for k, c in enumerate(shown, 1):
        m = c["metrics"] or {}
        lat = m.get("ttft_s") if (m.get("ttft_s") or {}).get("p95") is not None else m.get("latency_s") or {}
        b = c["binding_slo"] or {}
        margin = b.get("margin")
        table.add_row(
            str(k),
            escape(c["label"]),
            _fmt(c["cost_per_hour_usd"]),
            _fmt(c["cost_per_million_requests_usd"]),
            _fmt((lat or {}).get("p95"), "s"),
            _fmt((lat or {}).get("p99"), "s"),
            escape(str(b.get("name") or "—")),
            "—" if margin is None else f"{margin:+.1%}",
            "[green]✓[/]" if c["feasible"] else "[red]✗[/]",
        )
    out.print(table, width=max(out.width, 150))
    st = srch["statuses"]
    out.print(
        f"{srch['combinations']} combinations, {srch['candidates']} valid; "
        + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(st.items()))
        + f"; {srch['simulations']} simulations ({srch['simulation_s']:.1f} s) in {srch['wall_s']:.1f} s on "
        f"{srch['jobs']} {srch['executor']} worker(s)",
        markup=False,
    )


def _explain_infeasible(plan: Any) -> str:
    d = plan.data
    parts = []
    for cid in d["closest"]:
        c = plan.candidate(cid)
        b = c["binding_slo"] or {}
        val = b.get("value")
        how = "bound" if b.get("bound") else ("static check" if c["status"] == "static_infeasible" else "simulated")
        parts.append(f"{c['label']} ({b.get('name')}: {how} {_fmt(val)} vs limit {_fmt(b.get('limit'))})")
    names = {(plan.candidate(cid)["binding_slo"] or {}).get("name") for cid in d["closest"]}
    binding = ", ".join(sorted(n for n in names if n)) or "unknown"
    return f"no candidate meets the SLOs; binding: {binding}; closest: " + "; ".join(parts)


@app.command()
def advise(
    space: Annotated[Path, typer.Option("--space", "-s", help="Search-space YAML (deployment fields with alternatives, slo).")],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace file to judge candidates on.")],
    profiles: Annotated[list[Path], typer.Option("--profile", "-p", help="Profile JSON (repeat: one per hardware).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for plan.json and deploy/.")],
    strategy: Annotated[str | None, typer.Option(help="halving (default), exhaustive or tpe; overrides the space's search.strategy.")] = None,
    executor: Annotated[str, typer.Option(help="local (processes on this machine) or ray.")] = "local",
    jobs: Annotated[int | None, typer.Option(help="Parallel simulations (default: the CPU count).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address (default: start a local Ray).")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulation seed; overrides the space's search.seed.")] = None,
    image: Annotated[str | None, typer.Option(help="Container image in the emitted Kubernetes / compose files.")] = None,
    top: Annotated[int, typer.Option(help="Rows of the ranking to print.")] = 10,
    fmt: FormatOpt = "auto",
    column_map: ColumnMapOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    window: Annotated[str | None, typer.Option(help="Keep arrivals in START:END seconds (re-based to 0).")] = None,
    rate_scale: Annotated[float | None, typer.Option("--rate-scale", help="Multiply the arrival rate by this.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the verdict.")] = False,
) -> None:
    """Search deployments for the cheapest one meeting the SLOs; write DIR/plan.json and DIR/deploy/.

    Exit code 1 when no candidate meets the SLOs (plan.json still names the closest ones).
    """
    with _errors():
        from servewise.advisor import advise as run_advise
        from servewise.advisor import write_outputs
        from servewise.space import load_space

        sp = load_space(space)
        updates: dict[str, Any] = {}
        if strategy is not None:
            if strategy not in ("halving", "exhaustive", "tpe"):
                raise CLIError(f"--strategy must be halving, exhaustive or tpe, got {strategy!r}")
            updates["strategy"] = strategy
        if seed is not None:
            updates["seed"] = seed
        if updates:
            sp = sp.model_copy(update={"search": sp.search.model_copy(update=updates)})
        if jobs is not None and jobs < 1:
            raise CLIError(f"--jobs must be >= 1, got {jobs}")
        tr = _load_trace(trace, fmt, column_map, skip_bad_rows, window=window, rate_scale=rate_scale)
        bar = None
        if not quiet and err.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                           TimeElapsedColumn(), console=err, transient=True)
        tasks: dict[str, Any] = {}

        def progress(what: str, done: int, total: int) -> None:
            if bar is None:
                return
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        if bar is not None:
            bar.start()
        try:
            plan = run_advise(sp, tr, list(profiles), space_source=str(space), executor=executor, jobs=jobs,
                              ray_address=ray_address, progress=progress)
        finally:
            if bar is not None:
                bar.stop()
        written = write_outputs(plan, tr, out_dir, image=image)
    if not quiet:
        _print_plan(plan, top)
    if not plan.feasible:
        err.print(f"[bold red]infeasible:[/] {escape(_explain_infeasible(plan))}", soft_wrap=True)
        err.print(f"wrote {written[0]}", markup=False)
        raise typer.Exit(EXIT_VIOLATION)
    w = plan.winner
    assert w is not None  # a feasible plan has a winner
    rob = w.get("robustness") or {}
    head = (rob.get("headroom") or {}).get("rate_multiplier")
    out.print(
        f"winner: {escape(w['label'])} at ${w['cost_per_hour_usd']:.4g}/h"
        + (f", SLOs met in {rob['pass_rate']:.0%} of {len(rob['seeds'])} seeds" if rob else "")
        + (f", load headroom ×{head:.2f}" if head else ""),
    )
    out.print(f"wrote {out_dir / 'plan.json'} and {out_dir / 'deploy'}/ ({len(written) - 1} files)", markup=False)


# --------------------------------------------------------------------------- trace


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
    servegen_file: Annotated[Path | None, typer.Option("--servegen-file", help="servegen: per-client rates file.")] = None,
    start_s: Annotated[float | None, typer.Option("--start-s", help="servegen: start time in the rate series.")] = None,
    rate_scale: Annotated[float | None, typer.Option("--rate-scale", help="servegen: scale every client's rate.")] = None,
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
        if (zipf_keys is None) != (zipf_alpha is None):
            raise CLIError("--zipf-keys and --zipf-alpha go together: give both or neither")
        if zipf_keys is not None and zipf_alpha is not None:
            t = t.with_zipf_keys(zipf_keys, zipf_alpha, seed=seed)
        save_trace(t, out_path)
    out.print(f"wrote {len(t):,} requests over {t.duration_s:,.1f} s to {out_path}", markup=False)


# --------------------------------------------------------------------------- deployment


@deployment_app.command("check")
def deployment_check(path: Annotated[Path, typer.Argument(help="Deployment YAML.")]) -> None:
    """Validate a deployment file; print it back with defaults filled in."""
    from servewise.config import dump_deployment, load_deployment

    with _errors():
        dep = load_deployment(path)
    out.print(f"[green]ok[/]: {escape(str(path))}")
    out.print(dump_deployment(dep), highlight=False, markup=False)


@deployment_app.command("example")
def deployment_example() -> None:
    """Print the built-in example deployment (a starting point to edit)."""
    from importlib.resources import files

    sys.stdout.write((files("servewise") / "data" / "default_deployment.yaml").read_text())


# --------------------------------------------------------------------------- profile


def _int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CLIError(f"{flag}: expected comma-separated positive integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise CLIError(f"{flag}: expected comma-separated positive integers, got {text!r}")
    return vals


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _accuracy_text(v: Any) -> str:
    a = v.accuracy
    if a is None:
        return "—" if not v.accuracy_error else "error"
    if a.metric == "next_token":
        return f"top1 {a.top1_agreement:.3f} KL {a.mean_kl:.1e}"
    return f"cos {a.cosine_mean:.4f}"


def _print_profile(prof: Any) -> None:
    title = escape(f"profile ({prof.status}) on {prof.hardware.catalog_name or prof.hardware.cpu_model}")
    t = Table(title=title + (" [estimated]" if prof.estimated else ""), header_style="bold")
    for col, just in (("variant", "left"), ("status", "left"), ("load", "right"), ("peak mem", "right"),
                      ("weights", "right"), ("p50 (b×s)", "right"), ("vs fp32", "left"), ("fit (CV MAPE)", "left")):
        t.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    models = prof.models()
    for model in models:
        if len(models) > 1:
            t.add_row(f"[bold]{escape(model)}[/]")
        for v in (v for v in prof.variants if v.model == model):
            measured = [p for p in v.points if p.status == "measured" and p.latency_s is not None]
            first = min(measured, key=lambda p: (p.batch_size, p.seq_len, p.phase != "prefill")) if measured else None
            lm = v.latency_model
            status = {"measured": "[green]measured[/]", "skipped": "[dim]skipped[/]", "failed": "[red]failed[/]"}.get(
                v.status, f"[yellow]{v.status}[/]"
            )
            t.add_row(
                escape(v.name), status,
                _fmt(v.load_time_s, "s"), _bytes(v.peak_mem_bytes), _bytes(v.weights_bytes),
                f"{_fmt(first.latency_s.p50, 's')} ({first.batch_size}×{first.seq_len})" if first and first.latency_s else "—",
                _accuracy_text(v),
                f"{lm.kind} {lm.cv_mape:.1%}" if lm else "—",
            )
    out.print(t)
    if len(models) == 1:
        out.print(f"model: {models[0]}", highlight=False, markup=False)
    for v in prof.variants:
        reason = v.skip_reason or v.error
        if reason:
            out.print(f"  {v.model}/{v.name}: {reason}", highlight=False, soft_wrap=True, markup=False)
        for w in v.warnings:
            out.print(f"  [yellow]{escape(f'{v.model}/{v.name}: {w}')}[/]", highlight=False, soft_wrap=True)


@profile_app.callback()
def profile(
    ctx: typer.Context,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model SPEC (repeatable): builtin:tiny-gpt2, builtin:minilm, hf:PATH, FILE.pt / FILE.pt2.")] = None,
    variants: Annotated[str, typer.Option(help="Comma list of variants, or all / cpu / gpu.")] = "all",
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Profile JSON to write.")] = None,
    batch_sizes: Annotated[str | None, typer.Option("--batch-sizes", help="Batch sizes (forward / prefill), e.g. 1,2,4,8.")] = None,
    seq_lens: Annotated[str | None, typer.Option("--seq-lens", help="Sequence / prompt lengths, e.g. 16,32,64,128.")] = None,
    decode_batch_sizes: Annotated[str | None, typer.Option("--decode-batch-sizes", help="Decoder: batch sizes of decode steps.")] = None,
    context_lens: Annotated[str | None, typer.Option("--context-lens", help="Decoder: context lengths of decode steps.")] = None,
    budget_s: Annotated[float | None, typer.Option("--budget-s", help="Seconds of timed repetitions per grid point at most.")] = None,
    target_ci: Annotated[float | None, typer.Option("--target-ci", help="Stop a point once the 95% CI of its median is within ± this fraction.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Passes over the grid; each point's samples are spread over them.")] = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: all CPUs this process may use).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of inputs and model fits.")] = 0,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing profile from the same machine (compare models).")] = False,
    fast: Annotated[bool, typer.Option("--fast", help="Preset: small grid, 0.2 s per point.")] = False,
    rigorous: Annotated[bool, typer.Option("--rigorous", help="Preset: 3 s per point, ±1% target.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Measure latency, memory, load time and accuracy drift of model variants; write a profile.

    Exit code 0 when every variant was measured or skipped (with its reason), 1 when a
    variant failed (the profile still holds everything measured), 130 on Ctrl-C (the
    profile is kept, marked incomplete), 2 on bad input.
    """
    if ctx.invoked_subcommand is not None:
        return
    with _errors():
        if fast and rigorous:
            raise CLIError("--fast and --rigorous conflict: give one")
        if not model:
            raise CLIError("--model is required (e.g. --model builtin:tiny-gpt2)")
        if out_path is None:
            raise CLIError("--out is required (the profile JSON to write)")
        from servewise.profiler import Grid, ProfileSettings, TimingSettings, parse_variants, run_profile

        grid = Grid(batch_sizes=(1, 4), seq_lens=(16, 64), decode_batch_sizes=(1, 4), context_lens=(32, 128)) if fast else Grid()
        over = {
            k: v for k, v in {
                "batch_sizes": _int_list(batch_sizes, "--batch-sizes"),
                "seq_lens": _int_list(seq_lens, "--seq-lens"),
                "decode_batch_sizes": _int_list(decode_batch_sizes, "--decode-batch-sizes"),
                "context_lens": _int_list(context_lens, "--context-lens"),
            }.items() if v is not None
        }
        from dataclasses import replace

        grid = replace(grid, **over)
        timing = (
            TimingSettings(budget_s=0.2, min_time_s=0.1)
            if fast
            else TimingSettings(budget_s=3.0, target_ci=0.01, min_time_s=1.0, rounds=5)
            if rigorous
            else TimingSettings()
        )
        if budget_s is not None:
            if budget_s <= 0:
                raise CLIError(f"--budget-s must be > 0, got {budget_s}")
            timing = replace(timing, budget_s=budget_s)
        if target_ci is not None:
            if not 0 < target_ci < 1:
                raise CLIError(f"--target-ci must be in (0, 1), got {target_ci}")
            timing = replace(timing, target_ci=target_ci)
        if rounds is not None:
            if rounds < 1:
                raise CLIError(f"--rounds must be >= 1, got {rounds}")
            timing = replace(timing, rounds=rounds)
        if threads < 0:
            raise CLIError(f"--threads must be >= 0, got {threads}")
        settings = ProfileSettings(grid=grid, timing=timing, threads=threads, seed=seed)
        names = parse_variants(variants)

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if quiet:
                return
            if kind == "hardware":
                hw = data["hardware"]
                err.print(f"hardware: {hw.cpu_model}, {hw.threads_used} threads" + (f", {hw.gpu_name}" if hw.gpu_name else ""), highlight=False, markup=False)
            elif kind == "prepare":
                err.print(f"{data['model']}: preparing (build / load, fp32 reference, ONNX export)", highlight=False, markup=False)
            elif kind == "variant":
                err.print(f"{data['model']}/{data['variant']}: measuring {data['points']} points in fresh workers", highlight=False, markup=False)
            elif kind == "variant_done":
                v = data["variant"]
                extra = v.skip_reason or v.error or (f"load {_fmt(v.load_time_s, 's')}, peak {_bytes(v.peak_mem_bytes)}")
                err.print(f"{v.model}/{v.name}: {v.status} — {extra}", highlight=False, soft_wrap=True, markup=False)
            elif kind == "model_failed":
                err.print(f"[red]{escape(str(data['model']) + ': ' + str(data['error']))}[/]", highlight=False, soft_wrap=True)

        prof = run_profile(model, names, out_path, settings, append=append, on_event=on_event)
        if not quiet:
            _print_profile(prof)
            out.print(f"wrote {out_path}", markup=False)
        if any(v.status == "failed" for v in prof.variants):
            err.print(f"[red]some variants failed; {escape(str(out_path))} holds everything measured[/]")
            raise typer.Exit(EXIT_VIOLATION)


@profile_app.command("show")
def profile_show(path: Annotated[Path, typer.Argument(help="Profile JSON.")]) -> None:
    """Print a profile's variants as a table."""
    with _errors():
        from servewise.profile import load_profile

        _print_profile(load_profile(path))


@profile_app.command("transfer")
def profile_transfer(
    path: Annotated[Path, typer.Argument(help="A measured profile JSON.")],
    to: Annotated[str, typer.Option("--to", help="Catalog instance type or alias (a10g, l4, h100, c7i.2xlarge...).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Estimated profile JSON to write.")],
    catalog: Annotated[Path | None, typer.Option(help="Your own hardware catalog YAML (default: the built-in one).")] = None,
    source: Annotated[str | None, typer.Option(help="Catalog entry of the measured machine (default: derived from its fingerprint).")] = None,
) -> None:
    """Estimate a profile for catalog hardware with a roofline model (marked estimated)."""
    with _errors():
        from servewise.hardware import load_catalog
        from servewise.profile import load_profile, save_profile
        from servewise.profiler.transfer import transfer_profile

        est = transfer_profile(load_profile(path), to, catalog=load_catalog(catalog), source=source)
        save_profile(est, out_path)
        _print_profile(est)
        out.print(f"wrote {out_path} (estimated for {to}, not measured)", markup=False)


# --------------------------------------------------------------------------- serve


StateDirOpt = Annotated[
    Path, typer.Option("--state-dir", help="Where deployment versions are kept (servewise deploy history).")
]


@app.command()
def serve(
    deployment: Annotated[Path, typer.Argument(help="Deployment YAML (e.g. the advisor's deploy/deployment.yaml).")],
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0: any free port).")] = 8000,
    mode: Annotated[str, typer.Option(help="real (run the profiled model), synthetic (sleep its service times), auto.")] = "auto",
    replicas: Annotated[int | None, typer.Option(help="Start this many replicas of each pool (overrides the file).")] = None,
    pool: Annotated[str | None, typer.Option(help="Serve only this pool of a multi-pool deployment.")] = None,
    token: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer TOKEN' (default: $SERVEWISE_TOKEN, else none).")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Larger request bodies get 413.")] = 1 << 20,
    max_pending: Annotated[
        int | None, typer.Option("--max-pending", help="Requests inside the router at once; more get 429.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads per replica (default: the profile's).")] = None,
    log_requests: Annotated[Path | None, typer.Option("--log-requests", help="Append a JSONL request log here.")] = None,
    log_sample: Annotated[float, typer.Option("--log-sample", help="Fraction of served requests logged (errors: all).")] = 1.0,
    redact: Annotated[bool, typer.Option("--redact/--no-redact", help="Log prompts and answers as hashes only.")] = True,
    drain_timeout_s: Annotated[float, typer.Option("--drain-timeout-s", help="On SIGTERM, wait this long for in-flight requests.")] = 30.0,
    worker_log: Annotated[Path | None, typer.Option("--worker-log", help="Append the replicas' stderr here.")] = None,
    state_dir: StateDirOpt = Path(".servewise"),
    ready_file: Annotated[Path | None, typer.Option("--ready-file", help="Write {url, pid} here once ready.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the balancer and of synthetic service times.")] = 0,
) -> None:
    """Serve a deployment live: a router plus one worker process per replica (Ctrl-C / SIGTERM drains)."""
    import os

    with _errors():
        if mode not in ("auto", "real", "synthetic"):
            raise CLIError(f"--mode must be auto, real or synthetic, got {mode!r}")
        if not 0.0 <= log_sample <= 1.0:
            raise CLIError(f"--log-sample must be in [0, 1], got {log_sample}")
        from servewise import serving
        from servewise.serving import ServeSettings

        tok = token if token is not None else os.environ.get("SERVEWISE_TOKEN") or None
        if host not in ("127.0.0.1", "localhost", "::1") and tok is None:
            err.print(f"warning: binding {host} without --token: anyone who can reach it can use the model", markup=False)
        settings = ServeSettings(
            host=host, port=port, mode=mode, replicas=replicas, pool=pool, token=tok, max_body_bytes=max_body_bytes,  # type: ignore[arg-type]
            max_pending=max_pending, threads=threads, log_path=log_requests, log_sample=log_sample, log_redact=redact,
            drain_timeout_s=drain_timeout_s, worker_log=worker_log, seed=seed,
        )  # fmt: skip

        def announce(info: dict[str, Any]) -> None:
            n = len(info["replicas"])
            err.print(f"serving {deployment} ({info['mode']}, {n} replica(s)) on {info['url']}", markup=False)

        code = serving.serve(deployment, settings, state_dir=state_dir, ready_file=ready_file, announce=announce)
    raise typer.Exit(code)


@deploy_app.command("history")
def deploy_history(
    name: Annotated[str | None, typer.Argument(help="Deployment name (default: the only one recorded).")] = None,
    state_dir: StateDirOpt = Path(".servewise"),
) -> None:
    """List the recorded versions of a deployment (newest last; * = current)."""
    with _errors():
        from servewise.serving import VersionStore

        store = VersionStore(state_dir, _deployment_name(state_dir, name))
        versions = store.history()
        cur = store.current()
        t = Table(title=f"deployment {store.name}", header_style="bold")
        for col in ("", "version", "created (UTC)", "sha256", "source"):
            t.add_column(col)
        for v in versions:
            src = v.source + (f"  (rollback to v{v.rollback_of})" if v.rollback_of else "")
            t.add_row("*" if cur and v.version == cur.version else "", str(v.version), v.created_utc, v.sha256[:12], src)
        out.print(t)
        running = store.running_server()
        if running:
            out.print(f"running: pid {running['pid']} at {running['url']}", markup=False)


@deploy_app.command("rollback")
def deploy_rollback(
    name: Annotated[str | None, typer.Argument(help="Deployment name (default: the only one recorded).")] = None,
    to: Annotated[int | None, typer.Option(help="Version to go back to (default: the one before the current).")] = None,
    state_dir: StateDirOpt = Path(".servewise"),
) -> None:
    """Make an earlier version current again; a running server rolls its replicas onto it."""
    with _errors():
        from servewise.serving import VersionStore

        store = VersionStore(state_dir, _deployment_name(state_dir, name))
        v = store.rollback(to)
        out.print(f"deployment {store.name}: version {v.version} is current (= version {v.rollback_of})", markup=False)
        pid = store.notify_reload()
        if pid is not None:
            out.print(f"told the running server (pid {pid}) to reload", markup=False)


def _deployment_name(state_dir: Path, name: str | None) -> str:
    if name is not None:
        return name
    root = state_dir / "deployments"
    names = sorted(p.name for p in root.iterdir() if (p / "history.json").exists()) if root.is_dir() else []
    if len(names) == 1:
        return names[0]
    if not names:
        raise CLIError(f"no deployment versions in {state_dir} (servewise serve records them; see --state-dir)")
    raise CLIError(f"several deployments are recorded in {state_dir} ({', '.join(names)}): name one")



# --------------------------------------------------------------------------- loadtest + validate


def _print_measured(doc: dict[str, Any], title: str) -> None:
    s = doc["summary"]
    t = Table(title=title, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    lat = s.get("latency_s") or {}
    rows = [
        ("requests", _fmt(s.get("requests"))),
        ("completed / cache hits", f"{_fmt(s.get('completed'))} / {_fmt(s.get('cache_hits'))}"),
        ("rejected (429) / failed", f"{_fmt(s.get('rejected'))} / {_fmt(s.get('failed'))}"),
        ("throughput", f"{_fmt(s.get('throughput_rps'))} req/s"),
        *((f"latency {k}", _fmt(lat.get(k), "s")) for k in ("p50", "p95", "p99")),
    ]
    ttft = s.get("ttft_s") or {}
    if ttft.get("p50") is not None:
        rows += [("TTFT p50 / p95", f"{_fmt(ttft.get('p50'), 's')} / {_fmt(ttft.get('p95'), 's')}")]
        rows += [("TPOT p50", _fmt((s.get("tpot_s") or {}).get("p50"), "s"))]
    gen = doc.get("generator") or {}
    lag = gen.get("send_lag_s") or {}
    rows += [
        ("offered / achieved rate", f"{_fmt(gen.get('offered_rps'))} / {_fmt(gen.get('achieved_rps'))} req/s"),
        ("send lag p99", _fmt(lag.get("p99"), "s")),
        ("load generator", "[green]valid[/]" if gen.get("valid", True) else "[red]INVALID[/]: " + "; ".join(gen.get("invalid_reasons", []))),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)


ApiOpt = Annotated[
    str | None, typer.Option(help="openai (POST /v1/completions) or predict (POST /predict); default: from the trace.")
]


@app.command()
def loadtest(
    url: Annotated[str, typer.Option("--url", help="Endpoint base URL (http://host:port) or full path.")],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace to replay (arrival times, token counts, keys).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for measured.json and requests.csv.")],
    time_scale: Annotated[float, typer.Option("--time-scale", help="Replay k times faster (k > 0).")] = 1.0,
    max_requests: Annotated[int | None, typer.Option("--max-requests", help="Replay only the first N requests.")] = None,
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
        if processes < 1:
            raise CLIError(f"--processes must be >= 1, got {processes}")
        from servewise import loadtest as lt
        tr = _load_trace(trace, fmt, column_map, False)
        doc = lt.run_loadtest(
            url, tr, out_dir=out_dir, time_scale=time_scale, max_requests=max_requests, api=api,  # type: ignore[arg-type]
            stream=stream, model=model, token=token if token is not None else os.environ.get("SERVEWISE_TOKEN") or None,
            processes=processes, timeout_s=timeout_s, max_send_lag_s=max_send_lag_s,
        )  # fmt: skip
        _print_measured(doc, f"load test of {url}")
        out.print(f"wrote {out_dir / 'measured.json'} and {out_dir / 'requests.csv'}", markup=False)
        if not doc.get("generator", {}).get("valid", True):
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
    url: Annotated[str | None, typer.Option("--url", help="Or: an endpoint already running (needs --expected).")] = None,
    expected: Annotated[Path | None, typer.Option("--expected", help="The advisor's expected.json (with --url).")] = None,
    time_scale: Annotated[float, typer.Option("--time-scale", help="Replay k times faster (k > 0).")] = 1.0,
    max_requests: Annotated[int | None, typer.Option("--max-requests", help="Use only the first N requests.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulation and of the server's policies.")] = 0,
    mode: Annotated[str | None, typer.Option(help="Server mode: real or synthetic (default: real with a model).")] = None,
    serve_arg: Annotated[
        list[str] | None, typer.Option("--serve-arg", help="Extra option for servewise serve, e.g. --serve-arg=--threads=1.")
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
        from servewise.loadtest.validate import validate as run_validate

        tr = _load_trace(trace, fmt, column_map, False)
        serve_args = [*(["--mode", mode] if mode else []), *(serve_arg or [])]
        doc = run_validate(
            tr, out_dir, deployment_path=deployment, url=url, expected_path=expected, max_requests=max_requests,
            time_scale=time_scale, seed=seed, serve_args=serve_args, stream=stream, api=api,
            token=token if token is not None else os.environ.get("SERVEWISE_TOKEN") or None, processes=processes,
            progress=lambda text: err.print(text, markup=False),
        )  # fmt: skip
        t = Table(title=f"validation: {doc['verdict']}", header_style="bold")
        for col in ("metric", "predicted", "measured", "error", "tolerance", ""):
            t.add_column(col, justify="right" if col not in ("metric", "") else "left")
        for k, m in doc["metrics"].items():
            unit = "s" if "_s." in k or k.endswith("_s") else ""
            rel = m["relative_error"]
            t.add_row(
                k, _fmt(m["predicted"], unit), _fmt(m["measured"], unit), "—" if rel is None else f"{rel:+.1%}",
                f"±{m['tolerance']:.0%}", "[green]pass[/]" if m["pass"] else "[red]FAIL[/]",
            )  # fmt: skip
        out.print(t)
        for reason in doc.get("invalid_reasons") or []:
            err.print(f"invalid: {reason}", markup=False)
        out.print(f"wrote {out_dir / 'validation.json'}", markup=False)
    if doc["verdict"] == "fail":
        raise typer.Exit(EXIT_VIOLATION)
    if doc["verdict"] == "invalid":
        raise typer.Exit(EXIT_INVALID)


# --------------------------------------------------------------------------- report and gate


@app.command()
def report(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifacts: profile.json, result folders, plan.json, ...")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write one self-contained HTML page for these artifacts (any kind, in the order given)."""
    with _errors():
        from servewise import reports
        path = reports.write_report(artifacts, out_path, title=title)
        out.print(f"wrote {path}", markup=False)


def _percent(text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise CLIError(f"--max-regression: expected a fraction or a percentage like 5%, got {text!r}") from None
    if not 0 <= v < 10:
        raise CLIError(f"--max-regression: expected 0%..1000%, got {text!r}")
    return v


@app.command()
def gate(
    current: Annotated[Path, typer.Option("--current", "-c", help="The artifact under test.")],
    baseline: Annotated[Path | None, typer.Option("--baseline", "-b", help="The artifact to compare against.")] = None,
    max_regression: Annotated[
        str, typer.Option("--max-regression", help="Largest tolerated slowdown: 5% or 0.05.")
    ] = "5%",
    slo: Annotated[list[str] | None, typer.Option("--slo", help="An SLO expression, e.g. 'p95_latency_s<=0.5' (repeatable).")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the regression tests.")] = 0.01,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown summary here (CI job summary).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the checks as JSON here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    no_calibration: Annotated[
        bool, typer.Option("--no-calibration", help="Compare profiles on raw timings, not speed-adjusted.")
    ] = False,
) -> None:
    """Judge an artifact: against a baseline (regressions) and/or SLO expressions.

    Exit 0 when every check passes, 1 on a regression, an SLO violation or missing
    data, 2 when the inputs cannot be compared (other hardware or library versions,
    other kinds, a bad expression).
    """
    from servewise.io import atomic_write_text, write_json

    with _errors():
        from servewise import reports
        res = reports.run_gate(
            current=current, baseline=baseline, max_regression=_percent(max_regression), slos=slo or [],
            alpha=alpha, seed=seed, calibrate=not no_calibration,
        )  # fmt: skip
        if markdown is not None:
            atomic_write_text(markdown, res.markdown())
        if junit is not None:
            atomic_write_text(junit, res.junit_xml())
        if json_out is not None:
            write_json(json_out, res.to_dict())
        failed = [c for c in res.checks if c.status != "pass"]
        t = Table(title=f"gate: {'pass' if res.passed else 'FAIL'} ({len(res.checks)} checks, {len(failed)} not passed)")
        for col in ("check", "status", "detail"):
            t.add_column(col)
        shown = failed + [c for c in res.checks if c.status == "pass"][: max(0, 20 - len(failed))]
        for c in shown:
            colour = {"pass": "green", "fail": "red"}.get(c.status, "yellow")
            t.add_row(escape(c.name), f"[{colour}]{c.status}[/]", escape(c.message))
        out.print(t, width=max(out.width, 140))
        if len(shown) < len(res.checks):
            out.print(f"... and {len(res.checks) - len(shown)} more passing checks", markup=False)
    if res.exit_code:
        raise typer.Exit(res.exit_code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
