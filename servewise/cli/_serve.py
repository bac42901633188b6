"""``servewise serve, deploy history / rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from servewise.cli._common import (
    _errors,
    _settings,
    app,
    deploy_app,
    err,
    out,
)
from servewise.errors import CLIError

StateDirOpt = Annotated[
    Path, typer.Option("--state-dir", help="Where deployment versions are kept (servewise deploy history).")
]


@app.command()
def serve(
    deployment: Annotated[Path, typer.Argument(help="Deployment YAML (e.g. the advisor's deploy/deployment.yaml).")],
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0: any free port).")] = 8000,
    mode: Annotated[
        str, typer.Option(help="real (run the profiled model), synthetic (sleep its service times), auto.")
    ] = "auto",
    replicas: Annotated[
        int | None, typer.Option(help="Start this many replicas of each pool (overrides the file).")
    ] = None,
    pool: Annotated[str | None, typer.Option(help="Serve only this pool of a multi-pool deployment.")] = None,
    token: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer TOKEN' (default: $SERVEWISE_TOKEN, else none).")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Larger request bodies get 413.")] = 1 << 20,
    max_pending: Annotated[
        int | None, typer.Option("--max-pending", help="Requests inside the router at once; more get 429.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads per replica (default: CPUs ÷ replicas, at least 1; inter-op 1).")] = None,
    log_requests: Annotated[
        Path | None, typer.Option("--log-requests", help="Append a JSONL request log here.")
    ] = None,
    log_sample: Annotated[
        float, typer.Option("--log-sample", help="Fraction of served requests logged (errors: all).")
    ] = 1.0,
    redact: Annotated[
        bool, typer.Option("--redact/--no-redact", help="Log prompts and answers as hashes only.")
    ] = True,
    upstream_timeout_s: Annotated[
        float | None,
        typer.Option("--upstream-timeout-s", help="A replica taking longer over one request is ejected and the request retried (default: from the SLO / profile)."),
    ] = None,
    header_timeout_s: Annotated[float, typer.Option("--header-timeout-s", help="A client must send its request headers within this.")] = 10.0,
    body_timeout_s: Annotated[float, typer.Option("--body-timeout-s", help="A client must send its request body within this (else 408).")] = 30.0,
    drain_timeout_s: Annotated[
        float, typer.Option("--drain-timeout-s", help="On SIGTERM, wait this long for in-flight requests.")
    ] = 30.0,
    worker_log: Annotated[Path | None, typer.Option("--worker-log", help="Append the replicas' stderr here.")] = None,
    state_dir: StateDirOpt = Path(".servewise"),
    ready_file: Annotated[Path | None, typer.Option("--ready-file", help="Write {url, pid} here once ready.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the balancer and of synthetic service times.")] = 0,
) -> None:
    """Serve a deployment live: a router plus one worker process per replica (Ctrl-C / SIGTERM drains)."""
    import os

    with _errors():
        from servewise import serving
        from servewise.serving import ServeSettings

        tok = token if token is not None else os.environ.get("SERVEWISE_TOKEN") or None
        if host not in ("127.0.0.1", "localhost", "::1") and tok is None:
            err.print(
                f"warning: binding {host} without --token: anyone who can reach it can use the model", markup=False
            )
        settings = _settings(
            ServeSettings, {"log_path": "--log-requests", "log_redact": "--redact"},
            host=host, port=port, mode=mode, replicas=replicas, pool=pool, token=tok, max_body_bytes=max_body_bytes,  # type: ignore[arg-type]
            max_pending=max_pending, threads=threads, log_path=log_requests, log_sample=log_sample, log_redact=redact,
            drain_timeout_s=drain_timeout_s, worker_log=worker_log, seed=seed, upstream_timeout_s=upstream_timeout_s,
            header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
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
            t.add_row(
                "*" if cur and v.version == cur.version else "", str(v.version), v.created_utc, v.sha256[:12], src
            )
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
