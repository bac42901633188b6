"""servewise: find the cheapest deployment of a model that meets its latency SLOs, and prove it.

The library calls a notebook needs are here; each stage loads on first use, so
``import servewise`` stays light and needs none of the optional extras::

    import servewise as sw

    trace = sw.load_trace("trace.csv")
    result = sw.simulate(sw.load_deployment("deployment.yaml"), trace, seed=0)
    result.requests                 # one row per request (pandas)
    plan = sw.load_plan("plan/plan.json")
    plan.to_frame()                 # one row per candidate

Every stage is importable as ``servewise.<stage>`` (``servewise.profiler``,
``servewise.simulator``, ``servewise.advisor``, ``servewise.serving``,
``servewise.loadtest``, ``servewise.reports``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Exported name -> (module, attribute); imported when first used (PEP 562).
_LAZY: dict[str, tuple[str, str]] = {
    "Trace": ("servewise.trace", "Trace"),
    "load_trace": ("servewise.trace", "load_trace"),
    "Deployment": ("servewise.config", "Deployment"),
    "load_deployment": ("servewise.config", "load_deployment"),
    "SearchSpace": ("servewise.space", "SearchSpace"),
    "load_space": ("servewise.space", "load_space"),
    "Profile": ("servewise.profile", "Profile"),
    "load_profile": ("servewise.profile", "load_profile"),
    "run_profile": ("servewise.profiler", "run_profile"),
    "simulate": ("servewise.simulator", "simulate"),
    "SimResult": ("servewise.simulator", "SimResult"),
    "load_result": ("servewise.simulator", "load_result"),
    "advise": ("servewise.advisor", "advise"),
    "Plan": ("servewise.advisor", "Plan"),
    "load_plan": ("servewise.advisor", "load_plan"),
    "load_measured": ("servewise.loadtest", "load_measured"),
    "load_artifact": ("servewise.results", "load_artifact"),
}

__all__ = [
    "__version__",
    "Trace",
    "load_trace",
    "Deployment",
    "load_deployment",
    "SearchSpace",
    "load_space",
    "Profile",
    "load_profile",
    "run_profile",
    "simulate",
    "SimResult",
    "load_result",
    "advise",
    "Plan",
    "load_plan",
    "load_measured",
    "load_artifact",
]

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from servewise.advisor import Plan, advise, load_plan
    from servewise.config import Deployment, load_deployment
    from servewise.loadtest import load_measured
    from servewise.profile import Profile, load_profile
    from servewise.profiler import run_profile
    from servewise.results import load_artifact
    from servewise.simulator import SimResult, load_result, simulate
    from servewise.space import SearchSpace, load_space
    from servewise.trace import Trace, load_trace


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'servewise' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
