"""``servewise advise``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from servewise.cli._common import (
    EXIT_VIOLATION,
    ColumnMapOpt,
    FormatOpt,
    SkipBadOpt,
    _errors,
    _fmt,
    _load_trace,
    app,
    err,
    out,
)
from servewise.errors import CLIError


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:,.1f}"


def _print_plan(plan: Any, top: int) -> None:
    d = plan.data
    srch = d["search"]
    table = Table(
        title=f"plan {d['name']} ({d['setting']}): {srch['candidates']} candidates, strategy {srch['strategy']}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
    )
    ranked = plan.ranked()
    shown = ranked[:top] if ranked else [plan.candidate(c) for c in d["closest"]]
    rows = []
    for k, c in enumerate(shown, 1):
        m = c["metrics"] or {}
        lat = m.get("ttft_s") if (m.get("ttft_s") or {}).get("p95") is not None else m.get("latency_s") or {}
        b = c["binding_slo"] or {}
        margin = b.get("margin")
        rows.append((
            str(k), escape(c["label"]), f"{c['cost_per_hour_usd']:,.3f}", _fmt(c["cost_per_million_requests_usd"]),
            _ms((lat or {}).get("p95")), _ms((lat or {}).get("p99")), escape(str(b.get("name") or "—")),
            "—" if margin is None else f"{margin:+.1%}", "[green]✓[/]" if c["feasible"] else "[red]✗[/]",
        ))  # fmt: skip
    # Numbers keep their exact width; the two text columns fold into what is left, so
    # the ranking reads at 80 columns (CI logs, pipes) as well as on a wide terminal.
    header = ("#", "candidate", "$/h", "$/M req", "p95 ms", "p99 ms", "binding SLO", "margin", "ok")
    for col in header:
        if col in ("candidate", "binding SLO"):
            table.add_column(col, overflow="fold", ratio=2 if col == "candidate" else 1)
        else:
            table.add_column(col, justify="center" if col == "ok" else "right", no_wrap=True)
    for r in rows:
        table.add_row(*r)
    out.print(table)
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
    space: Annotated[
        Path, typer.Option("--space", "-s", help="Search-space YAML (deployment fields with alternatives, slo).")
    ],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Trace file to judge candidates on.")],
    profiles: Annotated[list[Path], typer.Option("--profile", "-p", help="Profile JSON (repeat: one per hardware).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for plan.json and deploy/.")],
    strategy: Annotated[
        str | None, typer.Option(help="halving (default), exhaustive or tpe; overrides the space's search.strategy.")
    ] = None,
    executor: Annotated[str, typer.Option(help="local (processes on this machine) or ray.")] = "local",
    jobs: Annotated[int | None, typer.Option(help="Parallel simulations (default: the CPU count).")] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster address (default: start a local Ray).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Simulation seed; overrides the space's search.seed.")] = None,
    image: Annotated[
        str | None, typer.Option(help="Container image in the emitted Kubernetes / compose files.")
    ] = None,
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

            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
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
            plan = run_advise(
                sp,
                tr,
                list(profiles),
                space_source=str(space),
                executor=executor,
                jobs=jobs,
                ray_address=ray_address,
                progress=progress,
            )
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
