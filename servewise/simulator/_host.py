"""The local host's cores, shared by processor sharing (``Deployment.host``).

Replicas served on one machine contend for its cores: each busy slot of a local replica
runs a service on ``threads`` intra-op threads, and the router and the load generator
take CPU for every request. The host is modelled as egalitarian processor sharing: the
running services all progress at the same rate

    rate = 1                      while wanted <= left
    rate = left / wanted          otherwise,

where ``wanted`` = running services × ``threads`` and ``left`` = ``cores`` less the
router's and load generator's share (their background cores, plus their CPU per request
× the arrivals of the last second; they wake briefly, and the kernel's scheduler runs
such sleepers first), at least a tenth of the cores. Service times are in seconds of uncontended service; a service
that started at virtual time ``v0`` with work ``w`` ends when the host's virtual time
reaches ``v0 + w``, so the order in which running services end is known when they start
(the classic virtual-time construction for processor sharing), and each end's real time
follows from the rate, which is constant between events.

It is work conserving: two one-thread replicas on one core serve exactly as one server
at full speed whenever any of them is busy (with exponential services, the M/M/1 number
in system), which a slowdown fixed at each service's start would not.
"""

from __future__ import annotations

import bisect
import heapq
import math
from typing import Any

__all__ = ["SharedHost"]


class SharedHost:
    """Processor sharing of ``cores`` among running services of ``threads`` threads each."""

    __slots__ = ("cores", "threads", "cpu_s", "arr", "v", "t", "heap", "running", "_seq", "_rate", "_floor")

    def __init__(
        self, cores: float, threads: int, cpu_per_request_s: float, arrivals: list[float], background_cores: float = 0.0
    ) -> None:
        self.cores = float(cores) - background_cores
        self.threads = threads
        self.cpu_s = cpu_per_request_s
        self.arr = arrivals
        self.v = 0.0  # work (uncontended seconds) each running service has received since time 0
        self.t = 0.0  # the real time at which the host's virtual time is v
        self.heap: list[tuple[float, int, Any]] = []  # (virtual end, sequence, payload)
        self.running = 0
        self._seq = 0
        self._rate = 1.0
        self._floor = 0.1 * float(cores)

    def left(self, t: float) -> float:
        """Cores the router and load generator leave to the replicas at ``t``."""
        if self.cpu_s <= 0.0:
            return max(self.cores, self._floor)
        arr = self.arr
        recent = bisect.bisect_right(arr, t) - bisect.bisect_left(arr, t - 1.0)
        return max(self.cores - recent * self.cpu_s, self._floor)

    def _update_rate(self) -> None:
        wanted = self.running * self.threads
        left = self.left(self.t)
        self._rate = left / wanted if wanted > left else 1.0

    def _advance(self, t: float) -> None:
        if t > self.t:
            self.v += (t - self.t) * self._rate
            self.t = t

    def start(self, t: float, work_s: float, payload: Any) -> None:
        """A service of ``work_s`` uncontended seconds starts at ``t`` (not before the last event)."""
        self._advance(t)
        heapq.heappush(self.heap, (self.v + work_s, self._seq, payload))
        self._seq += 1
        self.running += 1
        self._update_rate()

    def next_end(self) -> float:
        """Real time of the next service's end at the current rate (inf when none runs)."""
        if not self.heap:
            return math.inf
        return self.t + max(self.heap[0][0] - self.v, 0.0) / self._rate

    def finish(self) -> tuple[float, Any]:
        """End the next service: its real end time and payload."""
        t = self.next_end()
        self._advance(t)
        _, _, payload = heapq.heappop(self.heap)
        self.running -= 1
        self._update_rate()
        return t, payload

    def arrival(self, t: float) -> None:
        """The arrival rate changed at ``t`` (the router's share): fix the rate from then on."""
        if self.cpu_s > 0.0 and self.running:
            self._advance(t)
            self._update_rate()
