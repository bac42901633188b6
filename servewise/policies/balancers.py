"""Load balancers: which replica serves the next request.

Every balancer is a small class registered in :data:`lb_policies` with one method,
``choose(replicas, request) -> index``. They are pure and clock-free: the simulator
and the live router call the very same objects. The replica sequence may change between
calls (autoscaling, failures), so any state is kept by replica ``id``, never by
position. Randomness comes only from the injected ``numpy.random.Generator``; the same
seed and the same call sequence give the same choices.

Hot path: the simulator calls ``choose`` about a million times per second of budget, so
random draws come from a block of uniforms refilled with one ``rng.random(4096)`` call
(a numpy call per choice would cost several microseconds).
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

import numpy as np

from servewise.policies._params import check_float, check_int, check_rng
from servewise.policies._registry import Registry

if TYPE_CHECKING:
    from servewise.trace import Request

__all__ = [
    "ReplicaView",
    "LoadBalancer",
    "lb_policies",
    "RoundRobin",
    "RandomBalancer",
    "LeastOutstanding",
    "PowerOfDChoices",
    "ConsistentHash",
    "SmoothWeighted",
    "LLMReplicaView",
    "LeastKV",
    "PrefixAffinity",
]

_BLOCK = 4096
"""Uniforms drawn per ``rng.random`` call."""

_MASK64 = (1 << 64) - 1


class ReplicaView(Protocol):
    """What a balancer may read about a replica, at the instant of the choice."""

    @property
    def id(self) -> int:
        """Stable and unique for the run; a replica that is replaced gets a new id."""
        ...

    @property
    def outstanding(self) -> int:
        """Requests queued plus in service on this replica right now."""
        ...

    @property
    def weight(self) -> float:
        """Relative capacity (> 0), for heterogeneous replicas."""
        ...


class LoadBalancer(Protocol):
    """Picks the replica for one request."""

    name: ClassVar[str]

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        """Return an index into ``replicas`` (the caller guarantees ``len >= 1``)."""
        ...


lb_policies: Registry[LoadBalancer] = Registry("load balancer")
"""Every load balancer by name: ``lb_policies.get("p2c")(rng=rng, d=2)``."""


# --------------------------------------------------------------------------- helpers


class _Uniforms:
    """Uniform floats in [0, 1) from ``rng``, drawn in blocks of :data:`_BLOCK`.

    ``take(k)`` returns the position of ``k`` consecutive fresh uniforms in ``buf``. A
    block's unused tail is dropped when it cannot hold ``k`` more: this keeps the stream
    a pure function of the seed and the call sequence.
    """

    __slots__ = ("_rng", "buf", "pos")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.buf: list[float] = []
        self.pos = 0

    def take(self, k: int) -> int:
        pos = self.pos
        if pos + k > len(self.buf):
            self.buf = self._rng.random(_BLOCK).tolist()
            pos = 0
        self.pos = pos + k
        return pos

    def one(self) -> float:
        pos = self.pos
        if pos >= len(self.buf):
            self.buf = self._rng.random(_BLOCK).tolist()
            pos = 0
        self.pos = pos + 1
        return self.buf[pos]


# int(u * n) < n for every u in [0, 1) and every n < 2**53: the product rounds below n
# unless n is a power of two, where it is exact. So int(u * n) is a uniform index.


def _least_outstanding(replicas: Sequence[ReplicaView], uniforms: _Uniforms) -> int:
    """Index of a replica with minimal ``outstanding``; ties broken uniformly at random.

    Draws one uniform only when there is a tie.
    """
    outs = [r.outstanding for r in replicas]
    low = min(outs)
    ties = outs.count(low)
    if ties == 1:
        return outs.index(low)
    k = int(uniforms.one() * ties)
    idx = outs.index(low)
    for _ in range(k):
        idx = outs.index(low, idx + 1)
    return idx


# --------------------------------------------------------------------------- policies


@lb_policies.register("round_robin")
class RoundRobin:
    """Cycles over the replicas in the order they are given.

    After the set changes it continues with the replica that follows the last chosen
    id; if that replica is gone, with the one now at its former position (the replica
    that followed it). No parameters.
    """

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator) -> None:
        check_rng("round_robin", rng)
        self._last_id: int | None = None
        self._last_idx = -1

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        n = len(replicas)
        idx = self._last_idx
        if 0 <= idx < n and replicas[idx].id == self._last_id:
            nxt = idx + 1
        else:
            nxt = idx + 1  # first call (idx == -1): start at 0
            last = self._last_id
            for i, r in enumerate(replicas):
                if r.id == last:
                    nxt = i + 1
                    break
            else:
                if last is not None:
                    nxt = idx  # the last replica left: its successor moved into its slot
        if nxt >= n:
            nxt = 0
        self._last_idx = nxt
        self._last_id = replicas[nxt].id
        return nxt


@lb_policies.register("random")
class RandomBalancer:
    """Picks a replica uniformly at random. No parameters."""

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator) -> None:
        self._u = _Uniforms(check_rng("random", rng))

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        n = len(replicas)
        if n == 1:
            return 0  # no draw, like p2c with d >= n: keeps p2c(d=1) == random exactly
        u = self._u
        pos = u.take(1)
        return int(u.buf[pos] * n)


@lb_policies.register("least_outstanding")
class LeastOutstanding:
    """Picks the replica with the fewest outstanding requests (join the shortest queue).

    Ties are broken uniformly at random. No parameters. Costs O(n) per choice.
    """

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator) -> None:
        self._u = _Uniforms(check_rng("least_outstanding", rng))

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        return _least_outstanding(replicas, self._u)


@lb_policies.register("p2c")
class PowerOfDChoices:
    """Power of d choices: sample ``d`` distinct replicas, send to the least loaded.

    The ``d`` replicas are drawn uniformly without replacement; the one with the fewest
    outstanding requests wins, a tie goes to the first sampled. With ``d >= n`` this is
    :class:`LeastOutstanding` over all replicas (random tie-break), with ``d == 1`` it is
    :class:`RandomBalancer` (both consume the same random stream, so they agree exactly
    for the same seed).
    """

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator, d: int = 2) -> None:
        self.d = check_int("p2c", "d", d, 1)
        """Replicas sampled per choice."""
        self._u = _Uniforms(check_rng("p2c", rng))

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        n = len(replicas)
        d = self.d
        if d >= n:
            return _least_outstanding(replicas, self._u)
        u = self._u
        pos = u.take(d)
        buf = u.buf
        first = int(buf[pos] * n)
        if d == 1:
            return first
        if d == 2:
            # second: uniform over the other n - 1 indices
            second = int(buf[pos + 1] * (n - 1))
            if second >= first:
                second += 1
            return second if replicas[second].outstanding < replicas[first].outstanding else first
        # general d: the k-th draw picks the j-th not-yet-sampled index, j uniform
        best = first
        best_out = replicas[first].outstanding
        taken = [first]
        for k in range(1, d):
            j = int(buf[pos + k] * (n - k))
            for s in taken:  # ascending
                if j >= s:
                    j += 1
                else:
                    break
            insort(taken, j)
            out = replicas[j].outstanding
            if out < best_out:
                best, best_out = j, out
        return best


def _stable_hash64(text: str) -> int:
    """A 64-bit hash that is the same in every process (unlike the salted ``hash()``)."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


def _key_hash64(key: object) -> int:
    """Position of a request key on the ring: splitmix64 for ints, blake2b otherwise."""
    if type(key) is int:
        z = (key + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)
    return _stable_hash64(repr(key))


@lb_policies.register("consistent_hash")
class ConsistentHash:
    """Consistent hashing on ``request.key`` (``request.id`` when the key is None).

    Each replica id owns ``virtual_nodes`` points on a 64-bit ring, placed by blake2b of
    ``f"{id}#{v}"`` so the ring is the same in every process; a request goes to the
    owner of the first point clockwise from its key's hash. Adding one replica to ``n``
    remaps about ``1/(n+1)`` of the keys. The ring is rebuilt only when the set of ids
    changes.

    With ``load_bound = c`` (>= 1) this is consistent hashing with bounded loads
    (Mirrokni, Thorup, Zadimoghaddam 2018): walking clockwise, a replica is skipped when
    ``outstanding + 1 > ceil(c * (total_outstanding + 1) / n)``. Some replica always
    fits, since the least loaded one does.
    """

    name: ClassVar[str]

    def __init__(
        self,
        *,
        rng: np.random.Generator,
        virtual_nodes: int = 100,
        load_bound: float | None = None,
    ) -> None:
        check_rng("consistent_hash", rng)
        self.virtual_nodes = check_int("consistent_hash", "virtual_nodes", virtual_nodes, 1)
        """Ring points per replica; more points give a more even key spread."""
        self.load_bound = None if load_bound is None else check_float("consistent_hash", "load_bound", load_bound, 1.0)
        """Max load as a multiple of the mean (None: unbounded, plain consistent hashing)."""
        self._ids: list[int] = []
        self._index: dict[int, int] = {}
        self._points: list[int] = []
        self._owners: list[int] = []
        self._point_cache: dict[int, list[int]] = {}

    def _sync(self, replicas: Sequence[ReplicaView]) -> None:
        ids = [r.id for r in replicas]
        if ids == self._ids:
            return
        old = set(self._ids)
        self._ids = ids
        self._index = {rid: i for i, rid in enumerate(ids)}
        if set(ids) == old:
            return  # same set, new order: the ring is unchanged
        cache = self._point_cache
        for rid in old.difference(ids):
            cache.pop(rid, None)
        ring: list[tuple[int, int]] = []
        for rid in ids:
            pts = cache.get(rid)
            if pts is None:
                pts = [_stable_hash64(f"{rid}#{v}") for v in range(self.virtual_nodes)]
                cache[rid] = pts
            ring.extend((p, rid) for p in pts)
        ring.sort()
        self._points = [p for p, _ in ring]
        self._owners = [rid for _, rid in ring]

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        self._sync(replicas)
        key = request.key
        h = _key_hash64(request.id if key is None else key)
        points = self._points
        b = bisect_right(points, h)
        if b == len(points):
            b = 0
        if self.load_bound is None:
            return self._index[self._owners[b]]
        outs = [r.outstanding for r in replicas]
        n = len(outs)
        bound = math.ceil(self.load_bound * (sum(outs) + 1) / n)
        owners, index = self._owners, self._index
        seen: set[int] = set()
        m = len(owners)
        for step in range(m):
            rid = owners[(b + step) % m]
            if rid in seen:
                continue
            i = index[rid]
            if outs[i] + 1 <= bound:
                return i
            seen.add(rid)
            if len(seen) == n:
                break
        # Unreachable for load_bound >= 1 (the least loaded replica always fits); kept
        # so that a float-rounding corner can never loop or fail.
        return outs.index(min(outs))


@lb_policies.register("weighted")
class SmoothWeighted:
    """Smooth weighted round-robin over ``replica.weight`` (nginx's algorithm).

    Each choice adds every replica's weight to its running score, picks the highest
    score (first on ties) and subtracts the total weight from the winner. With integer
    weights every cycle of ``sum(weights)`` choices gives each replica exactly its
    weight, interleaved rather than in bursts. Scores are kept by id; a new replica
    starts at 0. No parameters.
    """

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator) -> None:
        check_rng("weighted", rng)
        self._ids: list[int] = []
        self._scores: list[float] = []

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        ids = [r.id for r in replicas]
        if ids != self._ids:
            old = dict(zip(self._ids, self._scores, strict=True))
            self._scores = [old.get(rid, 0.0) for rid in ids]
            self._ids = ids
        scores = self._scores
        total = 0.0
        best = 0
        best_score = -math.inf
        for i, r in enumerate(replicas):
            w = r.weight
            total += w
            s = scores[i] + w
            scores[i] = s
            if s > best_score:
                best, best_score = i, s
        scores[best] -= total
        return best


# --------------------------------------------------------------------------- LLM-aware policies


class LLMReplicaView(ReplicaView, Protocol):
    """A replica running an LLM engine: what ``least_kv`` and ``prefix_affinity`` read."""

    @property
    def kv_load(self) -> float:
        """KV-cache demand over capacity: blocks held by running sequences plus the blocks
        the waiting prompts will need, divided by the replica's blocks (may exceed 1)."""
        ...

    def prefix_match(self, request: Request) -> int:
        """How many of ``request.prefix_blocks``, from the first, this replica has cached."""
        ...


def _least_by(keys: list[tuple[float, int]], uniforms: _Uniforms) -> int:
    """Index of a minimal key; exact ties broken uniformly at random (one draw, only on a tie)."""
    low = min(keys)
    ties = [i for i, k in enumerate(keys) if k == low]
    if len(ties) == 1:
        return ties[0]
    return ties[int(uniforms.one() * len(ties))]


@lb_policies.register("least_kv")
class LeastKV:
    """Picks the replica with the least KV-cache load (``replica.kv_load``).

    Ties go to the fewer outstanding requests, then uniformly at random. Unlike
    ``least_outstanding`` it sees that ten short chats weigh less than two long
    documents. No parameters; needs replicas running an LLM engine.
    """

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator) -> None:
        self._u = _Uniforms(check_rng("least_kv", rng))

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        llm = cast("Sequence[LLMReplicaView]", replicas)
        return _least_by([(r.kv_load, r.outstanding) for r in llm], self._u)


@lb_policies.register("prefix_affinity")
class PrefixAffinity:
    """Sends a request where most of its prompt prefix is cached, within a load bound.

    Replicas whose ``outstanding + 1`` exceeds ``ceil(load_bound · (total_outstanding + 1) / n)``
    are skipped (bounded loads, as in ``consistent_hash``; the least loaded replica always
    fits). Among the rest the one with the most cached prefix blocks
    (``replica.prefix_match``) wins; ties (including "nothing cached anywhere") go to
    the fewer outstanding requests, then uniformly at random. A request without prefix
    blocks goes to the least loaded replica. Like SGLang's cache-aware router, it
    trades cache hits against balance; ``load_bound`` sets the trade (default 1.25).
    """

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator, load_bound: float = 1.25) -> None:
        self._u = _Uniforms(check_rng("prefix_affinity", rng))
        self.load_bound = check_float("prefix_affinity", "load_bound", load_bound, 1.0)
        """Max load as a multiple of the mean."""

    def choose(self, replicas: Sequence[ReplicaView], request: Request) -> int:
        llm = cast("Sequence[LLMReplicaView]", replicas)
        outs = [r.outstanding for r in llm]
        if not request.prefix_blocks:
            return _least_by([(0.0, o) for o in outs], self._u)
        bound = math.ceil(self.load_bound * (sum(outs) + 1) / len(outs))
        keys = [
            (-float(r.prefix_match(request)) if o + 1 <= bound else math.inf, o)
            for r, o in zip(llm, outs, strict=True)
        ]
        return _least_by(keys, self._u)
