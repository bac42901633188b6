"""The server's warnings on stderr, and the ones that must not flood it.

When the process runs out of file descriptors, asyncio logs every failed ``accept()``
with its traceback — on Linux up to a backlog's worth (100) per loop tick, megabytes a
second. :class:`AcceptErrorHandler` is a loop exception handler that writes the first
one, then at most one line per ``every_s`` seconds counting the ones it held back;
every other context goes to the loop's default handler.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

__all__ = ["warn", "Throttled", "AcceptErrorHandler", "install_accept_error_handler"]


def warn(msg: str, *, out: TextIO | None = None) -> None:
    """One line ``servewise serve: msg`` on stderr."""
    print(f"servewise serve: {msg}", file=out or sys.stderr, flush=True)


class Throttled:
    """:func:`warn` at most once per ``every_s`` seconds; a line says how many were held back."""

    def __init__(self, every_s: float, out: TextIO | None = None) -> None:
        self.every_s = every_s
        self.out = out
        self.seen = 0
        """Warnings asked for in all (written or held back)."""
        self.written = 0
        """Lines written."""
        self._last = -float("inf")
        self._held = 0

    def warn(self, msg: str, *, now: float | None = None) -> bool:
        """Write ``msg`` unless a line went out less than ``every_s`` ago; returns whether it was written."""
        t = time.monotonic() if now is None else now
        self.seen += 1
        if t - self._last < self.every_s:
            self._held += 1
            return False
        more = f" ({self._held} more like it in the last {t - self._last:.0f} s)" if self._held else ""
        warn(msg + more, out=self.out)
        self.written += 1
        self._last = t
        self._held = 0
        return True


class AcceptErrorHandler:
    """An ``asyncio`` exception handler that aggregates ``accept()`` resource errors (EMFILE, ENFILE, ...)."""

    def __init__(self, every_s: float = 10.0, out: TextIO | None = None) -> None:
        self.throttle = Throttled(every_s, out)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        msg = str(context.get("message", ""))
        if not msg.startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        exc = context.get("exception")
        self.throttle.warn(
            f"cannot accept connections: {exc or msg} (out of file descriptors? raise `ulimit -n` or lower the "
            f"load); one line per {self.throttle.every_s:g} s while it lasts"
        )


def install_accept_error_handler(loop: asyncio.AbstractEventLoop, every_s: float = 10.0) -> AcceptErrorHandler:
    """Make ``loop`` aggregate its ``accept()`` resource errors (see :class:`AcceptErrorHandler`)."""
    handler = AcceptErrorHandler(every_s)
    loop.set_exception_handler(handler)
    return handler
