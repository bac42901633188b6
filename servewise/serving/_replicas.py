"""Replica worker processes, as the router sees them.

A :class:`Replica` is one ``python -m serving._worker`` process: it binds an ephemeral
port on 127.0.0.1, loads the model (the real cold start) and then prints one JSON line
``{"event": "ready", "port": ..., "limits": {...}}``. The router tracks what a load balancer may read
about it (:class:`servewise.policies.ReplicaView`: ``id``, ``outstanding``, ``weight``)
and its state:

``starting`` → ``ready`` ⇄ ``ejected`` (failed health checks) → ``draining`` → ``stopped``;
any state → ``dead`` when the process exits unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from servewise.procs import child_env

__all__ = ["Replica", "WorkerSpec", "STARTING", "READY", "EJECTED", "DRAINING", "STOPPED", "DEAD"]

STARTING, READY, EJECTED, DRAINING, STOPPED, DEAD = "starting", "ready", "ejected", "draining", "stopped", "dead"


class WorkerSpec:
    """How to launch the workers of one pool."""

    def __init__(
        self, *, deployment_path: Path, pool: str, mode: str, threads: int, seed: int, workdir: Path, concurrency: int
    ) -> None:
        self.deployment_path = deployment_path
        self.pool = pool
        self.mode = mode
        self.threads = threads
        self.seed = seed
        self.workdir = workdir
        self.concurrency = concurrency

    def argv(self, replica_id: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "servewise.serving._worker",
            "--deployment",
            str(self.deployment_path),
            "--pool",
            self.pool,
            "--replica",
            str(replica_id),
            "--mode",
            self.mode,
            "--threads",
            str(self.threads),
            "--seed",
            str(self.seed + replica_id),
            "--workdir",
            str(self.workdir),
            "--port",
            "0",
        ]


class Replica:
    """One worker process and the router's bookkeeping for it."""

    def __init__(self, rid: int, pool: str, pool_index: int, spec: WorkerSpec, weight: float, *, initial: bool) -> None:
        self.id = rid
        self.pool = pool
        self.pool_index = pool_index
        self.spec = spec
        self.weight = weight
        self.initial = initial
        self.outstanding = 0
        self.state = STARTING
        self.port: int | None = None
        self.pid: int | None = None
        self.load_s: float | None = None
        self.launched_at = time.monotonic()
        self.last_routed = self.launched_at  # when the router last sent it a request (serverless warm routing)
        self.ready_at: float | None = None
        self.last_busy = time.monotonic()  # end of the last request (serverless keep-alive)
        self.health_failures = 0
        self.queued = 0  # from the worker's last health report
        self.error: str | None = None
        self.limits: dict[str, Any] = {}
        """What the worker reported of its model: ``kind``, ``window_tokens``, ``vocab_size`` (None: unknown)."""
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_event = asyncio.Event()
        self.gone_event = asyncio.Event()  # set when the process exited (any reason)
        self._stderr_task: asyncio.Task[None] | None = None

    # ReplicaView ------------------------------------------------------------------
    # ``id``, ``outstanding`` and ``weight`` are plain attributes.

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return str(self.id)

    @property
    def alive(self) -> bool:
        return self.state in (STARTING, READY, EJECTED, DRAINING)

    async def start(self, stderr_log: Path | None) -> None:
        """Launch the process and wait for its ready line (or its death)."""
        err_target: Any = asyncio.subprocess.DEVNULL
        log_f = None
        if stderr_log is not None:
            stderr_log.parent.mkdir(parents=True, exist_ok=True)
            log_f = open(stderr_log, "ab")  # noqa: SIM115 - handed to the child; closed below
            err_target = log_f
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.spec.argv(self.id),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err_target,
                env=child_env({"PYTHONUNBUFFERED": "1"}),  # dies with the router, even after kill -9
                start_new_session=True,  # a Ctrl-C on the router's terminal is the router's to handle
            )
        finally:
            if log_f is not None:
                log_f.close()
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        line = b""
        try:
            line = await self.proc.stdout.readline()
        except (asyncio.LimitOverrunError, ValueError):
            line = b""
        msg: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            msg = json.loads(line.decode() or "{}")
        if msg.get("event") == "ready":
            self.port = int(msg["port"])
            self.load_s = float(msg.get("load_s", 0.0))
            limits = msg.get("limits")
            self.limits = limits if isinstance(limits, dict) else {}
            if self.state == STARTING:
                self.state = READY
                self.ready_at = time.monotonic()
            self.ready_event.set()
        else:
            self.error = str(msg.get("message") or f"worker exited before it was ready (exit code {await self._wait()})")
            self.state = DEAD
            self.ready_event.set()
        asyncio.get_running_loop().create_task(self._watch())

    async def _wait(self) -> int | None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            return await self.proc.wait()
        return None

    async def _watch(self) -> None:
        code = await self._wait()
        if self.state not in (STOPPED, DEAD):
            self.state = DEAD
            self.error = self.error or f"worker process exited (code {code})"
        self.gone_event.set()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the worker finishes its queue), then SIGKILL after ``timeout_s``."""
        if self.state != DEAD:
            self.state = STOPPED
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._wait(), timeout_s)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self._wait()
