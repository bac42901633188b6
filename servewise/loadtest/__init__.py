"""The load-test stage: replay a trace against a live server, open loop, and measure it.

``run_loadtest(url, trace, out_dir=...)`` sends every request of the trace at its
scheduled time from Locust generator processes (gevent, FastHttpUser), whatever the
server does, and writes ``measured.json`` (the summary, in the simulator's keys, plus the
generator's own health) and ``requests.csv`` (one row per request) into ``out_dir``.
``load_measured(path)`` reads a ``measured.json`` back.

Importing this package is cheap and never imports Locust or gevent: they run only in the
generator processes, which gevent monkey-patches.
"""

from __future__ import annotations

from servewise.results import Measured

from ._measured import SCHEMA_VERSION, load_measured
from ._run import run_loadtest

__all__ = ["run_loadtest", "load_measured", "Measured", "SCHEMA_VERSION"]
