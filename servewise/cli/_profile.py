"""``servewise profile, profile show / transfer``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from servewise.cli._common import (
    EXIT_VIOLATION,
    _errors,
    _fmt,
    err,
    flag_error,
    out,
    profile_app,
)
from servewise.errors import CLIError


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
    for col, just in (
        ("variant", "left"),
        ("status", "left"),
        ("load", "right"),
        ("peak mem", "right"),
        ("weights", "right"),
        ("p50 (b×s)", "right"),
        ("vs fp32", "left"),
        ("fit (CV MAPE)", "left"),
    ):
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
                escape(v.name),
                status,
                _fmt(v.load_time_s, "s"),
                _bytes(v.peak_mem_bytes),
                _bytes(v.weights_bytes),
                f"{_fmt(first.latency_s.p50, 's')} ({first.batch_size}×{first.seq_len})"
                if first and first.latency_s
                else "—",
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
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model SPEC (repeatable): builtin:tiny-gpt2, builtin:minilm, hf:PATH, FILE.pt / FILE.pt2.",
        ),
    ] = None,
    variants: Annotated[str, typer.Option(help="Comma list of variants, or all / cpu / gpu.")] = "all",
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Profile JSON to write.")] = None,
    batch_sizes: Annotated[
        str | None, typer.Option("--batch-sizes", help="Batch sizes (forward / prefill), e.g. 1,2,4,8.")
    ] = None,
    seq_lens: Annotated[
        str | None, typer.Option("--seq-lens", help="Sequence / prompt lengths, e.g. 16,32,64,128.")
    ] = None,
    decode_batch_sizes: Annotated[
        str | None, typer.Option("--decode-batch-sizes", help="Decoder: batch sizes of decode steps.")
    ] = None,
    context_lens: Annotated[
        str | None, typer.Option("--context-lens", help="Decoder: context lengths of decode steps.")
    ] = None,
    budget_s: Annotated[
        float | None, typer.Option("--budget-s", help="Seconds of timed repetitions per grid point at most.")
    ] = None,
    target_ci: Annotated[
        float | None,
        typer.Option("--target-ci", help="Stop a point once the 95% CI of its median is within ± this fraction."),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Passes over the grid; each point's samples are spread over them.")
    ] = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: all CPUs this process may use).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of inputs and model fits.")] = 0,
    append: Annotated[
        bool, typer.Option("--append", help="Add to an existing profile from the same machine (compare models).")
    ] = False,
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
        from servewise.procs import sigterm_as_interrupt
        from servewise.profiler import parse_variants, run_profile

        settings = _profile_settings(
            "fast" if fast else "rigorous" if rigorous else "default",
            grid={
                "batch_sizes": _int_list(batch_sizes, "--batch-sizes"),
                "seq_lens": _int_list(seq_lens, "--seq-lens"),
                "decode_batch_sizes": _int_list(decode_batch_sizes, "--decode-batch-sizes"),
                "context_lens": _int_list(context_lens, "--context-lens"),
            },
            timing={"budget_s": budget_s, "target_ci": target_ci, "rounds": rounds},
            threads=threads,
            seed=seed,
        )
        names = parse_variants(variants)
        on_event = None if quiet else _print_event
        with sigterm_as_interrupt():
            prof = run_profile(model, names, out_path, settings, append=append, on_event=on_event)
        if not quiet:
            _print_profile(prof)
            out.print(f"wrote {out_path}", markup=False)
        if any(v.status == "failed" for v in prof.variants):
            err.print(f"[red]some variants failed; {escape(str(out_path))} holds everything measured[/]")
            raise typer.Exit(EXIT_VIOLATION)


def _profile_settings(preset: str, **values: Any) -> Any:
    """The profiler's settings: the preset, with what the options set; a bad value names its option."""
    from pydantic import ValidationError

    from servewise.profiler import ProfileSettings

    try:
        return ProfileSettings.preset(preset, **values)
    except ValidationError as e:
        raise flag_error(e) from None


def _print_event(kind: str, data: dict[str, Any]) -> None:
    """One line on stderr per stage of the profile (the profiler's ``on_event``)."""
    if kind == "hardware":
        hw = data["hardware"]
        err.print(
            f"hardware: {hw.cpu_model}, {hw.threads_used} threads" + (f", {hw.gpu_name}" if hw.gpu_name else ""),
            highlight=False,
            markup=False,
        )
    elif kind == "prepare":
        err.print(
            f"{data['model']}: preparing (build / load, fp32 reference, ONNX export)", highlight=False, markup=False
        )
    elif kind == "variant":
        err.print(
            f"{data['model']}/{data['variant']}: measuring {data['points']} points in fresh workers",
            highlight=False,
            markup=False,
        )
    elif kind == "variant_done":
        v = data["variant"]
        extra = v.skip_reason or v.error or (f"load {_fmt(v.load_time_s, 's')}, peak {_bytes(v.peak_mem_bytes)}")
        err.print(f"{v.model}/{v.name}: {v.status} — {extra}", highlight=False, soft_wrap=True, markup=False)
    elif kind == "model_failed":
        err.print(f"[red]{escape(str(data['model']) + ': ' + str(data['error']))}[/]", highlight=False, soft_wrap=True)


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
    catalog: Annotated[
        Path | None, typer.Option(help="Your own hardware catalog YAML (default: the built-in one).")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Catalog entry of the measured machine (default: derived from its fingerprint).")
    ] = None,
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
