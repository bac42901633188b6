"""Helpers for tests that run ``servewise serve`` for real on 127.0.0.1 (synthetic replicas).

Every server is a child process started with ``--port 0`` and stopped by its PID; every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from servewise.procs import child_env
from servewise.serving import ServerProcess, start_server


def write_deployment(path: Path, **fields: Any) -> Path:
    doc: dict[str, Any] = {"kind": "deployment", "schema_version": 1, "name": "live-test"}
    doc.update(fields)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start(tmp_path: Path, deployment: Path, *args: str) -> ServerProcess:
    return start_server(deployment, workdir=tmp_path / "server", args=["--mode", "synthetic", *args], timeout_s=60)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


async def _one(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            payload = await resp.read()
            return {
                "status": resp.status,
                "latency_s": time.monotonic() - t0,
                "headers": dict(resp.headers),
                "body": payload,
                "sent": t0,
            }
    except aiohttp.ClientError as err:
        return {"status": -1, "latency_s": time.monotonic() - t0, "headers": {}, "body": str(err).encode(), "sent": t0}


def open_loop(
    url: str, *, rate_rps: float, duration_s: float, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Send POSTs at a fixed rate (open loop: a slow answer never delays the next send)."""

    async def run() -> list[dict[str, Any]]:
        n = int(rate_rps * duration_s)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            t0 = time.monotonic()
            tasks = []
            for i in range(n):
                delay = t0 + i / rate_rps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(
                    asyncio.ensure_future(
                        _one(session, url, body or {"prompt": [1, 2, 3], "max_tokens": 4}, headers or {})
                    )
                )
            return list(await asyncio.gather(*tasks))

    return asyncio.run(run())


def burst(url: str, n: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``n`` POSTs at once."""

    async def run() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            return list(
                await asyncio.gather(
                    *(_one(session, url, body or {"prompt": [1, 2, 3], "max_tokens": 4}, headers or {}) for _ in range(n))
                )
            )

    return asyncio.run(run())


_SERVE_WITH = """
import sys
from pathlib import Path
from servewise.serving import ServeSettings, serve
settings = ServeSettings.model_validate_json(sys.argv[2])
sys.exit(serve(sys.argv[1], settings, state_dir=Path(sys.argv[3]), ready_file=Path(sys.argv[4])))
"""


def start_with(tmp_path: Path, deployment: Path, *, nofile: int | None = None, **settings: Any) -> ServerProcess:
    """``servewise.serving.serve`` in a child process, with ServeSettings the CLI has no option for.

    Synthetic mode on 127.0.0.1, port 0; ``nofile`` lowers the child's file-descriptor limit.
    """
    import json
    import resource
    import subprocess
    import sys

    workdir = tmp_path / "server"
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "server-ready.json"
    ready.unlink(missing_ok=True)
    err_path = workdir / "server.log"
    doc = json.dumps({"mode": "synthetic", "port": 0, **{k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}})

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    cmd = [sys.executable, "-c", _SERVE_WITH, str(deployment), doc, str(workdir / "state"), str(ready)]
    with open(err_path, "ab") as err_f:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_f, preexec_fn=limit, env=child_env()
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready.exists():
            try:
                info = json.loads(ready.read_text())
            except ValueError:
                info = None
            if info is not None:
                return ServerProcess(info["url"], proc.pid, info, proc, err_path)
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with code {proc.returncode}: {err_path.read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"the server was not ready within 60 s: {err_path.read_text()[-2000:]}")
