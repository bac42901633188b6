"""``servewise advise``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from servewise.results import Candidate, Plan
    from servewise.space import SearchSpace


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:,.1f}"


def _print_plan(plan: Plan, top: int) -> None:
    srch = plan.search
    table = Table(
        title=f"plan {plan.name} ({plan.setting}): {srch.candidates} candidates, strategy {srch.strategy}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
    )
    ranked = plan.ranked()
    shown = ranked[:top] if ranked else [plan.candidate(c) for c in plan.closest]
    # Numbers keep their exact width; the two text columns fold into what is left, so
    # the ranking reads at 80 columns (CI logs, pipes) as well as on a wide terminal.
    header = ("#", "candidate", "$/h", "$/M req", "p95 ms", "p99 ms", "binding SLO", "margin", "ok")
    for col in header:
        if col in ("candidate", "binding SLO"):
            table.add_column(col, overflow="fold", ratio=2 if col == "candidate" else 1)
        else:
            table.add_column(col, justify="center" if col == "ok" else "right", no_wrap=True)
    for k, c in enumerate(shown, 1):
        table.add_row(*_plan_row(k, c))
    out.print(table)
    out.print(
        f"{srch.combinations} combinations, {srch.candidates} valid; "
        + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(srch.statuses.items()))
        + f"; {srch.simulations} simulations ({srch.simulation_s:.1f} s) in {srch.wall_s:.1f} s on "
        f"{srch.jobs} {srch.executor} worker(s)",
        markup=False,
    )


def _plan_row(k: int, c: Candidate) -> tuple[str, ...]:
    """One row of the ranking: cost, the tail latency (TTFT for an LLM engine), the binding SLO."""
    m = c.metrics
    lat = None if m is None else (m.ttft_s if m.ttft_s.p95 is not None else m.latency_s)
    b = c.binding_slo
    margin = b.margin if b is not None else None
    cost = "—" if c.cost_per_hour_usd is None else f"{c.cost_per_hour_usd:,.3f}"
    return (
        str(k), escape(c.label), cost, _fmt(c.cost_per_million_requests_usd),
        _ms(lat.p95 if lat is not None else None), _ms(lat.p99 if lat is not None else None),
        escape(str((b.name if b is not None else None) or "—")),
        "—" if margin is None else f"{margin:+.1%}", "[green]✓[/]" if c.feasible else "[red]✗[/]",
    )  # fmt: skip


def _explain_infeasible(plan: Plan) -> str:
    parts = []
    names = set()
    for cid in plan.closest:
        c = plan.candidate(cid)
        b = c.binding_slo
        if b is not None and b.name:
            names.add(b.name)
        how = "bound" if b is not None and b.bound else ("static check" if c.status == "static_infeasible" else "simulated")
        name, value, limit = (b.name, b.value, b.limit) if b is not None else (None, None, None)
        parts.append(f"{c.label} ({name}: {how} {_fmt(value)} vs limit {_fmt(limit)})")
    binding = ", ".join(sorted(names)) or "unknown"
    return f"no candidate meets the SLOs; binding: {binding}; closest: " + "; ".join(parts)


def _with_overrides(sp: SearchSpace, strategy: str | None, seed: int | None) -> SearchSpace:
    """The search space with ``--strategy`` and ``--seed`` applied to its search settings."""
    updates: dict[str, Any] = {}
    if strategy is not None:
        if strategy not in ("halving", "exhaustive", "tpe"):
            raise CLIError(f"--strategy must be halving, exhaustive or tpe, got {strategy!r}")
        updates["strategy"] = strategy
    if seed is not None:
        updates["seed"] = seed
    if not updates:
        return sp
    return sp.model_copy(update={"search": sp.search.model_copy(update=updates)})


@contextmanager
def _search_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """The advisor's ``progress(what, done, total)``: one rich bar per stage of the search, on a terminal."""
    if not enabled or not err.is_terminal:
        yield lambda what, done, total: None
        return
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
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)

    bar.start()
    try:
        yield progress
    finally:
        bar.stop()


def _print_winner(plan: Plan, out_dir: Path, written: list[Path]) -> None:
    w = plan.winner
    assert w is not None  # a feasible plan has a winner
    rob = w.robustness
    head = rob.headroom.rate_multiplier if rob is not None and rob.headroom is not None else None
    out.print(
        f"winner: {escape(w.label)} at ${w.cost_per_hour_usd:.4g}/h"
        + (f", SLOs met in {rob.pass_rate:.0%} of {len(rob.seeds)} seeds" if rob is not None else "")
        + (f", load headroom ×{head:.2f}" if head else ""),
    )
    out.print(f"wrote {out_dir / 'plan.json'} and {out_dir / 'deploy'}/ ({len(written) - 1} files)", markup=False)


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
    allow_unstable_profile: Annotated[
        bool,
        typer.Option("--allow-unstable-profile", help="Search with profile variants whose points are flagged unstable."),
    ] = False,
) -> None:
    """Search deployments for the cheapest one meeting the SLOs; write DIR/plan.json and DIR/deploy/.

    Exit code 1 when no candidate meets the SLOs (plan.json still names the closest ones).
    """
    with _errors():
        from servewise.advisor import advise as run_advise
        from servewise.advisor import write_outputs
        from servewise.space import load_space

        sp = _with_overrides(load_space(space), strategy, seed)
        if jobs is not None and jobs < 1:
            raise CLIError(f"--jobs must be >= 1, got {jobs}")
        tr = _load_trace(trace, fmt, column_map, skip_bad_rows, window=window, rate_scale=rate_scale)
        with _search_progress(not quiet) as progress:
            plan = run_advise(
                sp, tr, list(profiles), space_source=str(space), executor=executor, jobs=jobs,
                ray_address=ray_address, progress=progress, allow_unstable=allow_unstable_profile,
            )  # fmt: skip
        written = write_outputs(plan, tr, out_dir, image=image)
    if not quiet:
        _print_plan(plan, top)
    if not plan.feasible:
        err.print(f"[bold red]infeasible:[/] {escape(_explain_infeasible(plan))}", soft_wrap=True)
        err.print(f"wrote {written[0]}", markup=False)
        raise typer.Exit(EXIT_VIOLATION)
    _print_winner(plan, out_dir, written)
