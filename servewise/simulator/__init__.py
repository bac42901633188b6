"""The simulate stage: replay a trace against a deployment in a discrete-event simulation.

``simulate(deployment, trace, seed=...)`` returns a :class:`SimResult`; ``SimResult.write``
puts ``result.json`` and ``requests.csv`` in a folder.
"""

from __future__ import annotations

from collections.abc import Callable

from servewise.config import Deployment
from servewise.trace import Trace

from ._engine import Engine
from ._llm import LLMEngine, ProfileStepModel, StepModel
from ._result import SCHEMA_VERSION, SLO_FIELDS, SimResult, build_result, load_result

__all__ = ["simulate", "SimResult", "load_result", "SCHEMA_VERSION", "SLO_FIELDS", "StepModel", "ProfileStepModel"]


def simulate(
    deployment: Deployment,
    trace: Trace,
    *,
    seed: int = 0,
    warmup_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    step_model: StepModel | None = None,
) -> SimResult:
    """Simulate ``deployment`` serving ``trace``; same inputs and seed give the same result.

    ``warmup_s``: requests arriving before this time are simulated but left out of the summary.
    ``progress(done, total)`` is called now and then with the arrivals processed so far.
    ``step_model`` replaces the profile's iteration-time model of a continuous engine
    (what-if studies, tests against queueing theory).
    """
    if warmup_s < 0:
        from servewise.errors import ConfigError

        raise ConfigError(f"warmup_s must be >= 0, got {warmup_s}")
    if deployment.engine is not None:
        raw = LLMEngine(
            deployment, trace, seed=seed, warmup_s=warmup_s, step_model=step_model, progress=progress
        ).run()
    else:
        if step_model is not None:
            from servewise.errors import ConfigError

            raise ConfigError("step_model applies to a deployment with engine: {kind: continuous}")
        raw = Engine(deployment, trace, seed=seed, progress=progress).run()
    return build_result(raw, warmup_s=warmup_s)
