"""Autoscaling rules: how many replicas are wanted now.

Every rule is a small class registered in :data:`autoscale_rules` with one method,
``desired(now_s, current, in_flight) -> replicas``. Rules are clock-free: time enters
only through ``now_s`` (seconds on the caller's clock, non-decreasing across calls).
The caller decides when to evaluate a rule (e.g. every 15 s, like the Kubernetes HPA)
and how long a new replica takes to become ready.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import ClassVar, Literal, Protocol

from servewise.errors import ConfigError
from servewise.policies._params import check_float, check_int
from servewise.policies._registry import Registry

__all__ = [
    "ScalingRule",
    "autoscale_rules",
    "TargetInFlight",
    "FixedReplicas",
    "WARM_ROUTING",
    "InstanceView",
    "warm_instance",
]

WARM_ROUTING: tuple[str, ...] = ("newest", "most_recent", "spread")
"""Serverless: which free warm instance takes a request (see :func:`warm_instance`)."""


class InstanceView(Protocol):
    """What :func:`warm_instance` reads of an instance (simulator and router alike)."""

    id: int
    launched_at: float
    """When the instance was started (the caller's clock)."""
    last_routed: float
    """When the last request was sent to it (its launch time before any)."""


def warm_instance(rule: Literal["newest", "most_recent", "spread"], free: Sequence[InstanceView]) -> int | None:
    """Index into ``free`` (instances with room for one more request) of the one a
    serverless platform gives the next request; None for ``spread`` (the deployment's
    load balancer chooses).

    - ``newest``: the most recently started instance, as SimFaaS models AWS Lambda
      (``ServerlessSimulator.schedule_warm_instance``: the idle instance of the largest
      creation time). Older instances then see no traffic and expire after the
      keep-alive, so the fleet shrinks to what the load needs.
    - ``most_recent``: the instance that was sent a request last (warm instances used
      as a stack, last in first out); the same effect on expiry.
    - ``spread``: none; spreading warm requests over every idle instance keeps them all
      alive, so at long keep-alives cold starts stop and instances pile up.

    Ties go to the larger ``id`` (the later launch).
    """
    if rule == "spread" or not free:
        return None
    if rule == "newest":
        return max(range(len(free)), key=lambda k: (free[k].launched_at, free[k].id))
    return max(range(len(free)), key=lambda k: (free[k].last_routed, free[k].id))


class ScalingRule(Protocol):
    """Decides the replica count."""

    name: ClassVar[str]

    def desired(self, now_s: float, current: int, in_flight: int) -> int:
        """Replicas wanted at ``now_s``, clamped to the rule's [min, max].

        ``current`` is the replica count now, ``in_flight`` the requests queued or in
        service across all replicas now.
        """
        ...


autoscale_rules: Registry[ScalingRule] = Registry("autoscale rule")
"""Every autoscaling rule by name: ``autoscale_rules.get("fixed")(replicas=2)``."""


@autoscale_rules.register("target_in_flight")
class TargetInFlight:
    """The Kubernetes HPA algorithm on a concurrency metric (as KEDA / Knative use it).

    Each evaluation proposes ``ceil(in_flight / target)`` replicas, or keeps ``current``
    when ``|in_flight / (current * target) - 1| <= tolerance`` (with ``current == 0``
    the proposal is always ``ceil(in_flight / target)``). Proposals are recorded with
    their time, then stabilised as the HPA does: the answer is ``current`` raised to the
    smallest proposal of the last ``scale_up_stabilization_s`` seconds and lowered to
    the largest proposal of the last ``scale_down_stabilization_s`` seconds (the current
    proposal included; "last w seconds" is ``now_s - w < t <= now_s``). So a rise is
    followed at once with the default 0 s up-window, and a fall only once every
    proposal of the down-window agrees. The answer is finally clamped to
    ``[min_replicas, max_replicas]``.
    """

    name: ClassVar[str]

    def __init__(
        self,
        *,
        target: float,
        min_replicas: int,
        max_replicas: int,
        scale_down_stabilization_s: float = 300.0,
        scale_up_stabilization_s: float = 0.0,
        tolerance: float = 0.1,
    ) -> None:
        policy = "target_in_flight"
        self.target = check_float(policy, "target", target, 0.0, strict=True)
        """In-flight requests wanted per replica."""
        self.min_replicas = check_int(policy, "min_replicas", min_replicas, 0)
        """Lower clamp of the answer (0 allows scale to zero)."""
        self.max_replicas = check_int(policy, "max_replicas", max_replicas, 1)
        """Upper clamp of the answer."""
        if self.max_replicas < self.min_replicas:
            raise ConfigError(
                f"The 'max_replicas' parameter of {policy} must be an int >= "
                f"min_replicas ({self.min_replicas}). Got {max_replicas!r} instead."
            )
        self.scale_down_stabilization_s = check_float(
            policy, "scale_down_stabilization_s", scale_down_stabilization_s, 0.0
        )
        """Window (s) whose largest proposal bounds a decrease."""
        self.scale_up_stabilization_s = check_float(policy, "scale_up_stabilization_s", scale_up_stabilization_s, 0.0)
        """Window (s) whose smallest proposal bounds an increase."""
        self.tolerance = check_float(policy, "tolerance", tolerance, 0.0)
        """Relative deviation from the target that causes no change."""
        self._history: deque[tuple[float, int]] = deque()  # (now_s, proposal), by time

    def proposal(self, current: int, in_flight: int) -> int:
        """The unstabilised, unclamped recommendation for this instant."""
        if current > 0 and abs(in_flight / (current * self.target) - 1.0) <= self.tolerance:
            return current
        return math.ceil(in_flight / self.target)

    def desired(self, now_s: float, current: int, in_flight: int) -> int:
        proposal = self.proposal(current, in_flight)
        history = self._history
        keep_s = max(self.scale_down_stabilization_s, self.scale_up_stabilization_s)
        while history and history[0][0] <= now_s - keep_s:
            history.popleft()
        up_cut = now_s - self.scale_up_stabilization_s
        down_cut = now_s - self.scale_down_stabilization_s
        up = down = proposal
        for t, p in history:
            if t > up_cut and p < up:
                up = p
            if t > down_cut and p > down:
                down = p
        history.append((now_s, proposal))
        wanted = min(max(current, up), down)
        return min(max(wanted, self.min_replicas), self.max_replicas)


@autoscale_rules.register("fixed")
class FixedReplicas:
    """Always the same number of replicas: no autoscaling."""

    name: ClassVar[str]

    def __init__(self, *, replicas: int) -> None:
        self.replicas = check_int("fixed", "replicas", replicas, 1)
        """The replica count, always."""

    def desired(self, now_s: float, current: int, in_flight: int) -> int:
        return self.replicas
