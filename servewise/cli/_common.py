"""The app, its sub-apps, the consoles, the error-to-exit-code rule and the options and
printers several commands share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from servewise.errors import CLIError, ProfileInterrupted, ServewiseError

if TYPE_CHECKING:
    from servewise.results import Summary

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2

M = TypeVar("M", bound=BaseModel)


class _ReadableParams:
    """Help that reads well: no ``<bool>`` after a flag, ``<str>...`` for a repeatable option."""

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:  # typer's own parameter classes (not click's): duck-typed
            if p.metavar is not None:
                continue
            if getattr(p, "is_flag", False):
                p.metavar = ""
            elif p.param_type_name == "argument":
                if p.nargs != 1:
                    p.metavar = (p.name or "arg").upper()
                    elem = p.bare_type().removeprefix("list[").removesuffix("]").lower()
                    p.display_type_rich = lambda ctx, _t=f"<{elem}>...": _t
            elif getattr(p, "multiple", False):
                bare = p.bare_type() if hasattr(p, "bare_type") else "str"
                p.metavar = f"<{bare.removeprefix('list[').removesuffix(']')}>..."
        return params


class _Command(_ReadableParams, typer.core.TyperCommand):
    pass


class _Group(_ReadableParams, typer.core.TyperGroup):
    pass


class _Typer(typer.Typer):
    """A Typer app whose commands and groups use the readable help above."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(cls=_Group, **kw)

    def command(self, *args: Any, **kw: Any) -> Any:
        kw.setdefault("cls", _Command)
        return super().command(*args, **kw)


app = _Typer(
    name="servewise",
    help="Find the cheapest way to serve a model within its latency SLOs, and prove it holds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
trace_app = _Typer(help="Inspect and generate traffic traces.", no_args_is_help=True)
deployment_app = _Typer(help="Check and scaffold deployment files.", no_args_is_help=True)
profile_app = _Typer(
    help="Measure model variants on this machine (servewise profile --model SPEC --variants LIST --out FILE).",
    invoke_without_command=True,
)
app.add_typer(trace_app, name="trace")
app.add_typer(deployment_app, name="deployment")
app.add_typer(profile_app, name="profile")
deploy_app = _Typer(help="Deployment versions kept by servewise serve: history and rollback.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay one line (greppable) at any width


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE) from None


def _settings(model: type[M], flags: dict[str, str], **values: Any) -> M:
    """Build a settings model from options; a bad value is a :class:`CLIError` naming its flag.

    ``flags`` maps each field to the option that sets it (``{"port": "--port"}``); other
    fields are named ``--field-name``.
    """
    try:
        return model(**values)
    except ValidationError as e:
        raise flag_error(e, flags) from None


def flag_error(e: ValidationError, flags: dict[str, str] | None = None) -> CLIError:
    """The first error of ``e`` as a :class:`CLIError` naming the option (the innermost field)."""
    first = e.errors()[0]
    fields = [str(x) for x in first["loc"] if isinstance(x, str)]
    field = fields[-1] if fields else ""
    flag = (flags or {}).get(field, f"--{field.replace('_', '-')}")
    msg = first["msg"].removeprefix("Value error, ")
    return CLIError(f"{flag}: {msg} (got {first.get('input')!r})")


@contextmanager
def _errors() -> Iterator[None]:
    """Turn servewise errors into one line on stderr and exit code 2 (never a traceback)."""
    try:
        yield
    except ProfileInterrupted as e:
        err.print(f"[bold yellow]{escape(str(e))}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except ServewiseError as e:
        _fail(str(e))
    except OSError as e:  # the file system refused (a path the library did not name): still one line
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


# --------------------------------------------------------------------------- shared options

FormatOpt = Annotated[str, typer.Option("--format", help="Trace format: auto, azure, mooncake, burstgpt, generic.")]
ColumnMapOpt = Annotated[
    list[str] | None,
    typer.Option("--column-map", help="Map our column to the file's: arrival_s=ts (repeatable)."),
]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad-rows", help="Skip malformed rows (counted) instead of failing.")]


def _check(value: float | None, flag: str, *, gt: float | None = None, ge: float | None = None) -> None:
    """Refuse an option value outside its range, naming the flag (``None``: not given)."""
    if value is None:
        return
    bad = (not math.isfinite(value)) or (gt is not None and value <= gt) or (ge is not None and value < ge)
    if bad:
        bound = f"> {gt:g}" if gt is not None else f">= {ge:g}"
        raise CLIError(f"{flag}: expected a number {bound}, got {value:g}")


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

    _check(rate_scale, "--rate-scale", gt=0)
    _check(repeat, "--repeat", ge=1)
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
    return _with_keys(t, zipf_keys, zipf_alpha, seed=seed, overwrite=True)


def _with_keys(t: Any, zipf_keys: int | None, zipf_alpha: float | None, *, seed: int, overwrite: bool) -> Any:
    """``--zipf-keys N --zipf-alpha A``: request keys drawn from N keys (both or neither)."""
    if (zipf_keys is None) != (zipf_alpha is None):
        raise CLIError("--zipf-keys and --zipf-alpha go together: give both or neither")
    _check(zipf_keys, "--zipf-keys", ge=1)
    _check(zipf_alpha, "--zipf-alpha", ge=0)
    if zipf_keys is not None and zipf_alpha is not None:
        t = t.with_zipf_keys(zipf_keys, zipf_alpha, seed=seed, overwrite=overwrite)
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


def _print_summary(s: Summary, title: str) -> None:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows: list[tuple[str, Any, str]] = [
        ("requests", s.requests, ""),
        ("completed (incl. cache hits)", s.completed, ""),
        ("rejected", s.rejected, ""),
        ("failed", s.failed, ""),
        ("throughput", f"{_fmt(s.throughput_rps)} req/s", ""),
        ("latency mean", s.latency_s.mean, "s"),
        ("latency p50", s.latency_s.p50, "s"),
        ("latency p95", s.latency_s.p95, "s"),
        ("latency p99", s.latency_s.p99, "s"),
        ("queue wait p95", s.queue_s.p95, "s"),
        ("cache hit ratio", s.cache_hit_ratio, "%"),
        ("cold starts", s.cold_starts, ""),
        ("mean replicas", s.mean_replicas, ""),
        ("utilisation", s.utilisation, "%"),
        ("availability", s.availability, "%"),
        ("cost", s.cost_usd, "$"),
    ]
    if s.ttft_s.p50 is not None:  # an LLM engine ran
        kv = s.kv_utilisation
        rows += [
            ("TTFT p50", s.ttft_s.p50, "s"),
            ("TTFT p99", s.ttft_s.p99, "s"),
            ("TPOT p50", s.tpot_s.p50, "s"),
            ("TPOT p99", s.tpot_s.p99, "s"),
            ("inter-token p99", s.itl_s.p99, "s"),
            ("output tokens", f"{_fmt(s.output_tokens_per_s)} tok/s", ""),
            ("goodput", f"{_fmt(s.goodput_rps)} req/s" if s.goodput_rps is not None else "—", ""),
            ("prefix hit ratio", s.prefix_hit_ratio, "%"),
            ("preemptions", s.preemptions, ""),
            (
                "KV utilisation mean / max",
                f"{_fmt(kv.mean if kv is not None else None, '%')} / {_fmt(kv.max if kv is not None else None, '%')}",
                "",
            ),
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

    with Progress(
        TextColumn(what),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as prog:
        task = prog.add_task(what, total=1)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update
