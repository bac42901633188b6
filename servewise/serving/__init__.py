"""The serve stage: run a ``deployment.yaml`` live on this machine.

:func:`serve` runs the router in this process and one worker process per replica
(``serving._worker``), until SIGTERM / SIGINT (drain, then exit) — it is what
``servewise serve`` calls. :func:`start_server` runs the same thing as a child process
and returns once it is ready: what ``servewise validate`` and the tests use.

Importing this package imports neither aiohttp nor torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servewise.config import load_deployment
from servewise.errors import ConfigError, MissingExtraError
from servewise.io import write_json
from servewise.procs import child_env, die_with_parent

__all__ = ["serve", "start_server", "ServerProcess", "ServeSettings", "VersionStore", "DEFAULT_STATE_DIR"]

from servewise.serving._settings import ServeSettings
from servewise.serving._versions import DEFAULT_STATE_DIR, VersionStore


def _need_extras() -> None:
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as err:
        raise MissingExtraError(
            f"servewise serve needs {err.name} (pip install 'servewise[serve]')"
        ) from None


def serve(
    deployment_path: str | Path,
    settings: ServeSettings | None = None,
    *,
    state_dir: Path | None = DEFAULT_STATE_DIR,
    ready_file: Path | None = None,
    announce: Any = None,
) -> int:
    """Serve ``deployment_path`` until SIGTERM/SIGINT; returns the exit code (0 after a clean drain).

    With ``state_dir``, the deployment is recorded as a version (see ``servewise deploy
    history``) and SIGHUP reloads the current version. ``ready_file`` receives
    ``{"url", "pid", "replicas"}`` once every initial replica is up; ``announce(text)``
    is called with the same news for the terminal.
    """
    _need_extras()
    die_with_parent()  # when `servewise validate` started this server: never outlive it
    s = settings if settings is not None else ServeSettings()
    path = Path(deployment_path)
    dep = load_deployment(path)
    store: VersionStore | None = None
    served_path = path
    if state_dir is not None:
        store = VersionStore(state_dir, dep.name)
        version, _new = store.record(dep, path)
        served_path = store.path(version.version)
        dep = load_deployment(served_path)
    return asyncio.run(_serve(dep, served_path, s, store, ready_file, announce))


async def _serve(dep: Any, path: Path, s: ServeSettings, store: VersionStore | None, ready_file: Path | None, announce: Any) -> int:
    from aiohttp import web

    from servewise.serving._router import Router
    from servewise.serving._warn import install_accept_error_handler

    install_accept_error_handler(asyncio.get_running_loop())  # out of file descriptors: one line per 10 s, not a flood
    router = Router(dep, path, s)
    runner = web.AppRunner(
        router.app(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=s.drain_timeout_s,
        # aiohttp closes a connection that has not sent a whole request within this long of opening
        # (or of its previous answer): the header timeout; the body's is the router's (ServeSettings)
        keepalive_timeout=s.header_timeout_s,
        # after an answer given before the body was read (401, 408, 413), read and drop the rest of
        # it for at most this long, then close: a slow client cannot hold the connection beyond it
        lingering_time=min(s.body_timeout_s, 10.0),
    )
    await runner.setup()
    site = web.TCPSite(runner, s.host, s.port, reuse_address=True)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {s.host}:{s.port} ({err.strerror or err})") from None
    port = _bound_port(site) or s.port
    url = f"http://{'127.0.0.1' if s.host in ('0.0.0.0', '') else s.host}:{port}"
    stop = asyncio.Event()
    reload_req = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if store is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_req.set)
    try:
        try:
            await router.start()
        except BaseException:
            await router.close()
            raise
        if store is not None:
            store.register_server(os.getpid(), url)
        info = {"url": url, "pid": os.getpid(), "mode": router.mode, **router.stats()}
        if ready_file is not None:
            write_json(ready_file, info)
        if announce is not None:
            announce(info)
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload_req.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if reload_req.is_set() and not stop.is_set():
                reload_req.clear()
                assert store is not None
                cur = store.current()
                if cur is not None:
                    try:
                        await router.reload(load_deployment(store.path(cur.version)), store.path(cur.version))
                        print(f"servewise serve: reloaded version {cur.version}", file=sys.stderr, flush=True)
                    except ConfigError as err:
                        print(f"servewise serve: reload refused: {err}", file=sys.stderr, flush=True)
        await router.drain()
    finally:
        await site.stop()
        await runner.cleanup()
        if store is not None:
            store.unregister_server(os.getpid())
    return 0


def _bound_port(site: Any) -> int | None:
    server = getattr(site, "_server", None)
    socks = getattr(server, "sockets", None) or []
    for sock in socks:
        return int(sock.getsockname()[1])
    return None


# --------------------------------------------------------------------------- as a child process


@dataclass
class ServerProcess:
    """A ``servewise serve`` child process, ready to take requests."""

    url: str
    pid: int
    info: dict[str, Any]
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain), then SIGKILL after ``timeout_s``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def replica_pids(self) -> list[int]:
        return [int(r["pid"]) for r in self.info.get("replicas", []) if r.get("pid")]

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""


def start_server(
    deployment_path: str | Path,
    *,
    workdir: Path,
    args: list[str] | tuple[str, ...] = (),
    timeout_s: float = 300.0,
) -> ServerProcess:
    """Run ``servewise serve deployment_path --port 0 ARGS`` and wait until it is ready.

    Files (the ready file, the server's stderr, its state folder) go under ``workdir``.
    """
    _need_extras()
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "server-ready.json"
    ready.unlink(missing_ok=True)
    err_path = workdir / "server.log"
    cmd = [
        sys.executable, "-m", "servewise", "serve", str(deployment_path), "--port", "0",
        "--ready-file", str(ready), "--state-dir", str(workdir / "state"), *args,
    ]  # fmt: skip
    with open(err_path, "ab") as err_f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_f, env=child_env())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            with contextlib.suppress(ValueError, OSError):
                info = json.loads(ready.read_text())
                return ServerProcess(info["url"], proc.pid, info, proc, err_path)
        if proc.poll() is not None:
            text = err_path.read_text(errors="replace").strip().splitlines()
            raise ConfigError(f"servewise serve exited with code {proc.returncode}: {text[-1] if text else 'no output'}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise ConfigError(f"servewise serve was not ready within {timeout_s:g} s (see {err_path})")
