"""``servewise report and gate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from servewise.cli._common import (
    _errors,
    app,
    err,
    out,
)
from servewise.errors import CLIError


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
    slo: Annotated[
        list[str] | None, typer.Option("--slo", help="An SLO expression, e.g. 'p95_latency_s<=0.5' (repeatable).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the regression tests.")] = 0.01,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    markdown: Annotated[
        str | None, typer.Option("--markdown", metavar="<path>", help="Write a Markdown summary here (CI job summary).")
    ] = None,
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
        if markdown == "":  # e.g. --markdown "$GITHUB_STEP_SUMMARY" outside GitHub Actions
            err.print(
                "note: --markdown is empty ($GITHUB_STEP_SUMMARY unset?): no Markdown summary written", markup=False
            )
        elif markdown is not None:
            atomic_write_text(markdown, res.markdown())
        if junit is not None:
            atomic_write_text(junit, res.junit_xml())
        if json_out is not None:
            write_json(json_out, res.to_dict())
        failed = [c for c in res.checks if c.status != "pass"]
        t = Table(
            title=f"gate: {'pass' if res.passed else 'FAIL'} ({len(res.checks)} checks, {len(failed)} not passed)",
            box=box.SIMPLE_HEAD,
            show_edge=False,
        )
        t.add_column("check", overflow="fold", ratio=2)  # fits 80 columns: long names fold
        t.add_column("status", no_wrap=True)
        t.add_column("detail", overflow="fold", ratio=3)
        shown = failed + [c for c in res.checks if c.status == "pass"][: max(0, 20 - len(failed))]
        for c in shown:
            colour = {"pass": "green", "fail": "red"}.get(c.status, "yellow")
            t.add_row(escape(c.name), f"[{colour}]{c.status}[/]", escape(c.message))
        out.print(t)
        if len(shown) < len(res.checks):
            out.print(f"... and {len(res.checks) - len(shown)} more passing checks", markup=False)
    if res.exit_code:
        raise typer.Exit(res.exit_code)
