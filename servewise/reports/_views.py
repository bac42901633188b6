"""One view per artifact kind: what a reader needs to see of it, as a :class:`Section`.

- profile (:mod:`._view_profile`): the machine, the variants, latency against batch size
  and sequence length, memory and load time, instability flags;
- sim_result and measured (:mod:`._view_run`): SLO checks, percentiles and CDFs,
  replicas / queue / cold starts / cache hits over time, cost per pool; a load test's
  generator health;
- plan (:mod:`._view_plan`): the verdict, the ranking, the Pareto plot, the winner's
  binding SLO and robustness, the deploy files;
- validation (:mod:`._view_validation`): the verdict first, predicted and measured side by
  side, overlaid CDFs;
- benchmark (:mod:`._view_benchmark`): each case's samples.

Views read typed records (:mod:`servewise.results`, :class:`servewise.profile.Profile`)
and the checked ``requests.csv`` beside them; they never import a stage.
"""

from __future__ import annotations

from collections.abc import Callable

from servewise.reports._artifacts import Artifact
from servewise.reports._blocks import Section
from servewise.reports._view_benchmark import benchmark_view
from servewise.reports._view_common import Links
from servewise.reports._view_plan import plan_view
from servewise.reports._view_profile import profile_view
from servewise.reports._view_run import measured_view, sim_view
from servewise.reports._view_validation import validation_view

__all__ = ["VIEWS", "Links", "section_for"]

VIEWS: dict[str, Callable[[Artifact, Links], Section]] = {
    "profile": profile_view,
    "sim_result": sim_view,
    "measured": measured_view,
    "validation": validation_view,
    "plan": plan_view,
    "benchmark": benchmark_view,
}


def section_for(a: Artifact, links: Links) -> Section:
    """The section of one artifact."""
    return VIEWS[a.kind](a, links)
