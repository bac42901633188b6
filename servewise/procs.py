"""Child processes that run this very copy of servewise and die with their parent.

Every worker servewise starts (profiler workers, replica workers, load-generator
processes, the server ``validate`` starts) is launched with :func:`child_env` and calls
:func:`die_with_parent` first thing: on Linux the kernel sends it SIGKILL when the parent
dies (``prctl(PR_SET_PDEATHSIG)``), however the parent died — ``kill -9`` included;
elsewhere a daemon thread polls the parent's PID. A child never outlives the command that
started it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PARENT_ENV", "child_env", "die_with_parent", "sigterm_as_interrupt", "process_identity"]

PARENT_ENV = "SERVEWISE_PARENT_PID"
"""The environment variable that tells a child which process it must not outlive."""

_PR_SET_PDEATHSIG = 1
_ROOT = str(Path(__file__).resolve().parents[1])  # the folder holding this servewise package


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: this process's, with this servewise first on ``PYTHONPATH``
    (so the child imports the same copy) and this process as the parent to die with."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[PARENT_ENV] = str(os.getpid())
    if extra:
        env.update(extra)
    return env


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Arrange to receive ``sig`` when the parent named by ``$SERVEWISE_PARENT_PID`` dies.

    Returns False when this process was not started by servewise (no variable: nothing
    to do). If the parent is already gone, the process exits at once.
    """
    raw = os.environ.get(PARENT_ENV)
    if not raw:
        return False
    try:
        parent = int(raw)
    except ValueError:
        return False
    os.environ.pop(PARENT_ENV, None)  # our own children get their own parent from child_env
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch, args=(parent, sig), daemon=True, name="servewise-parent-watch").start()
    return True


def _watch(parent: int, sig: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), sig)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, a container stop, CI cancelling a job) acts like
    Ctrl-C: a :class:`KeyboardInterrupt` in the main thread, so the command stops its
    workers, keeps what it measured and exits 130 instead of dying mid-write.

    Outside the main thread (where signal handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def process_identity(pid: int) -> str | None:
    """What tells process ``pid`` apart from a later process given the same number.

    On Linux its start time (``/proc/PID/stat`` field 22, clock ticks since boot); elsewhere
    its PID while it is alive. ``None`` when no such process exists.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if stat:
        # the command name (field 2) is in parentheses and may hold spaces: split after it
        fields = stat[stat.rindex(")") + 2 :].split()
        return f"start:{fields[19]}"  # field 22 of the whole line
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return f"pid:{pid}"
