"""``from_config``: the one place a deployment's policy objects are built (private to servewise.policies).

The simulator and the live router both call :func:`from_config`, so the twin cannot
drift: the same deployment gives the same balancer, cache, batching rule and scaling
rule, with the same parameters, on either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servewise.config import Batching, Deployment, Scaling

from .balancers import LoadBalancer, lb_policies
from .batching import BatchingRule, batching_rules
from .caches import ResponseCache, cache_policies
from .scaling import ScalingRule, autoscale_rules

__all__ = ["PolicySet", "from_config", "batching_from_config"]

PolicyConfig = tuple[str, dict[str, Any]]
"""A policy's registered name and the keyword parameters it was built with (no rng)."""


@dataclass(frozen=True)
class PolicySet:
    """The decisions of one deployment, built by :func:`from_config`.

    ``configs`` records, per family (``balancer``, ``cache``, ``batching``, ``scaling``),
    the registered name and parameters each object was built with, or None where the
    deployment has none: two sides built from one deployment have equal ``configs``.
    """

    balancer: LoadBalancer
    cache: ResponseCache | None
    """The exact-match response cache; None without ``cache``."""
    batching: BatchingRule | None
    """The dynamic batching rule; None without batching (``max_batch_size`` 1 and no wait is none)."""
    scaling: ScalingRule | None
    """The autoscaling rule; None unless ``scaling.mode`` is ``autoscale``."""
    configs: dict[str, PolicyConfig | None] = field(default_factory=dict)


def _batching_config(bat: Batching | None) -> PolicyConfig | None:
    # as the simulator always did: max_batch_size 1 without a wait is no batching at all
    if bat is None or (bat.max_batch_size <= 1 and bat.max_wait_s <= 0):
        return None
    return "dynamic", {"max_batch_size": bat.max_batch_size, "max_wait_s": bat.max_wait_s}


def _scaling_config(sc: Scaling) -> PolicyConfig | None:
    if sc.mode != "autoscale":
        return None
    return "target_in_flight", {
        "target": sc.target_in_flight,
        "min_replicas": sc.min_replicas,
        "max_replicas": sc.max_replicas,
        "scale_down_stabilization_s": sc.scale_down_stabilization_s,
        "scale_up_stabilization_s": sc.scale_up_stabilization_s,
        "tolerance": sc.tolerance,
    }


def batching_from_config(batching: Batching | None) -> BatchingRule | None:
    """The batching rule of a deployment's ``batching`` (None: no batching), as :func:`from_config` builds it."""
    cfg = _batching_config(batching)
    return batching_rules.get(cfg[0])(**cfg[1]) if cfg is not None else None


def from_config(deployment: Deployment, *, rng: np.random.Generator) -> PolicySet:
    """Build every policy object of ``deployment``; ``rng`` feeds the balancer's random choices."""
    b = deployment.balancer
    configs: dict[str, PolicyConfig | None] = {
        "balancer": (b.policy, b.params()),
        "cache": (deployment.cache.policy, deployment.cache.params()) if deployment.cache is not None else None,
        "batching": _batching_config(deployment.batching),
        "scaling": _scaling_config(deployment.scaling),
    }
    cache = configs["cache"]
    scaling = configs["scaling"]
    return PolicySet(
        balancer=lb_policies.get(b.policy)(rng=rng, **b.params()),
        cache=cache_policies.get(cache[0])(**cache[1]) if cache is not None else None,
        batching=batching_from_config(deployment.batching),
        scaling=autoscale_rules.get(scaling[0])(**scaling[1]) if scaling is not None else None,
        configs=configs,
    )
