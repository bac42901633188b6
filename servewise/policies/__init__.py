"""The decisions, pure and clock-free: load balancers, response caches, batching and autoscaling rules.

Each family is a :class:`Registry` of small classes looked up by name; the simulator
and the live router build and call the very same objects::

    rng = numpy.random.default_rng(seed)
    balancer = lb_policies.get("p2c")(rng=rng, d=2)
    cache = cache_policies.get("lru")(capacity=10_000, ttl_s=60.0)
    batching = batching_rules.get("dynamic")(max_batch_size=8, max_wait_s=0.005)
    rule = autoscale_rules.get("target_in_flight")(target=8, min_replicas=1, max_replicas=16)

A deployment's objects are built in one place, :func:`from_config` (``policies =
from_config(deployment, rng=rng)``: ``policies.balancer``, ``.cache``, ``.batching``,
``.scaling``), which the simulator and the router both call.
"""

from __future__ import annotations

from servewise.policies._factory import PolicySet, batching_from_config, from_config
from servewise.policies._registry import Registry
from servewise.policies.balancers import (
    ConsistentHash,
    LeastKV,
    LeastOutstanding,
    LLMReplicaView,
    LoadBalancer,
    PowerOfDChoices,
    PrefixAffinity,
    RandomBalancer,
    ReplicaView,
    RoundRobin,
    SmoothWeighted,
    lb_policies,
)
from servewise.policies.batching import BatchDecision, BatchingRule, DynamicBatching, batching_rules
from servewise.policies.caches import (
    FIFOCache,
    LRUCache,
    ResponseCache,
    TTLCache,
    cache_policies,
)
from servewise.policies.scaling import (
    WARM_ROUTING,
    FixedReplicas,
    InstanceView,
    ScalingRule,
    TargetInFlight,
    autoscale_rules,
    warm_instance,
)

__all__ = [
    "Registry",
    # a deployment's policies, built in one place
    "from_config",
    "PolicySet",
    "batching_from_config",
    # load balancers
    "lb_policies",
    "ReplicaView",
    "LoadBalancer",
    "RoundRobin",
    "RandomBalancer",
    "LeastOutstanding",
    "PowerOfDChoices",
    "ConsistentHash",
    "SmoothWeighted",
    "LLMReplicaView",
    "LeastKV",
    "PrefixAffinity",
    # response caches
    "cache_policies",
    "ResponseCache",
    "LRUCache",
    "TTLCache",
    "FIFOCache",
    # batching rules
    "batching_rules",
    "BatchingRule",
    "BatchDecision",
    "DynamicBatching",
    # autoscaling rules
    "autoscale_rules",
    "ScalingRule",
    "TargetInFlight",
    "FixedReplicas",
    # serverless: the warm instance a request goes to
    "WARM_ROUTING",
    "InstanceView",
    "warm_instance",
]
