"""The simulate stage: replay a trace against a deployment in a discrete-event simulation.

``simulate(deployment, trace, seed=...)`` returns a :class:`SimResult`; ``SimResult.write``
puts ``result.json`` and ``requests.csv`` in a folder.
"""

from __future__ import annotations

from collections.abc import Callable

from servewise.config import Deployment
from servewise.trace import Trace

from ._engine import Engine
from ._result import SCHEMA_VERSION, SimResult, build_result, load_result

__all__ = ["simulate", "SimResult", "load_result", "SCHEMA_VERSION"]


def simulate(
    deployment: Deployment,
    trace: Trace,
    *,
    seed: int = 0,
    warmup_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Simulate ``deployment`` serving ``trace``; same inputs and seed give the same result.

    ``warmup_s``: requests arriving before this time are simulated but left out of the summary.
    ``progress(done, total)`` is called now and then with the arrivals processed so far.
    """
    if warmup_s < 0:
        from servewise.errors import ConfigError

        raise ConfigError(f"warmup_s must be >= 0, got {warmup_s}")
    raw = Engine(deployment, trace, seed=seed, progress=progress).run()
    return build_result(raw, warmup_s=warmup_s)
