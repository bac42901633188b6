"""Service-time models, per request and per batch, vectorised and seeded.

Shared by the simulator and by the live server's synthetic mode (``servewise serve``).

A deployment's ``service_time`` distribution is sampled by :class:`ServiceModel`; a
profiled ``model`` is evaluated by :class:`ProfileServiceModel`. :func:`build_service`
picks the one the deployment asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from servewise.config import (
    Deployment,
    Deterministic,
    Empirical,
    Exponential,
    HyperExponential,
    Linear,
    LogNormal,
    Uniform,
)
from servewise.errors import ConfigError
from servewise.profile import Variant

__all__ = ["draw", "Service", "ServiceModel", "ProfileServiceModel", "build_service", "generation_times"]

_CHUNK_ROWS = 1 << 20
"""Decode-step rows evaluated at once by :func:`generation_times` (bounds its memory)."""


class Service(Protocol):
    """Service times of one deployment on a replica of speed 1, in seconds."""

    def request_times(self) -> np.ndarray:
        """One un-batched service time per request of the trace."""
        ...

    def batch_time(self, members: list[int]) -> float:
        """Time of one batch of the given request indices."""
        ...

    def batch_time_of(self, input_tokens: Sequence[int], output_tokens: Sequence[int]) -> float:
        """Time of one batch given by its members' token counts (no trace: the live server)."""
        ...


def build_service(
    deployment: Deployment,
    *,
    batch_cost_factor: float,
    rng: np.random.Generator,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
) -> Service:
    """The service model of ``deployment``: its distribution, or its profiled model."""
    if deployment.model is not None:
        return ProfileServiceModel(
            deployment.model.loaded(), rng=rng, input_tokens=input_tokens, output_tokens=output_tokens
        )
    return ServiceModel(
        deployment.service_time,
        batch_cost_factor=batch_cost_factor,
        rng=rng,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def _lognormal_params(mean: float, cv: float) -> tuple[float, float]:
    sigma2 = np.log1p(cv * cv)
    return float(np.log(mean) - sigma2 / 2), float(np.sqrt(sigma2))


def draw(dist: object, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` i.i.d. draws (seconds) of a non-linear service-time distribution."""
    if isinstance(dist, Exponential):
        return rng.exponential(dist.mean_s, n)
    if isinstance(dist, Deterministic):
        return np.full(n, dist.mean_s)
    if isinstance(dist, Uniform):
        return rng.uniform(dist.low_s, dist.high_s, n)
    if isinstance(dist, LogNormal):
        mu, sigma = _lognormal_params(dist.mean_s, dist.cv)
        return rng.lognormal(mu, sigma, n)
    if isinstance(dist, HyperExponential):
        # Balanced means (each phase carries half the mean): p1/mu1 = p2/mu2.
        c2 = dist.cv**2
        p1 = 0.5 * (1 + np.sqrt((c2 - 1) / (c2 + 1)))
        m1 = dist.mean_s / (2 * p1)
        m2 = dist.mean_s / (2 * (1 - p1))
        pick = rng.random(n) < p1
        return np.where(pick, rng.exponential(m1, n), rng.exponential(m2, n))
    if isinstance(dist, Empirical):
        if dist.samples_s is None:
            raise ConfigError("service_time.samples_file was not loaded (use load_deployment)")
        samples = np.asarray(dist.samples_s, dtype=float)
        return samples[rng.integers(0, len(samples), n)]
    raise ConfigError(f"service_time: cannot sample distribution {type(dist).__name__}")


class ServiceModel:
    """Service times for a deployment, on a replica of speed 1.

    ``request_times(trace)`` gives each request's un-batched time (drawn once per request
    so that retries and deployments compared on the same seed share them); ``batch_time``
    gives the time of a batch of requests (a fresh draw per batch).
    """

    def __init__(
        self,
        dist: object,
        *,
        batch_cost_factor: float,
        rng: np.random.Generator,
        input_tokens: np.ndarray,
        output_tokens: np.ndarray,
    ) -> None:
        self.dist = dist
        self.factor = batch_cost_factor
        self._rng = rng
        self._in = input_tokens
        self._out = output_tokens
        self._buf = np.empty(0)
        self._pos = 0
        self._linear = isinstance(dist, Linear)
        if self._linear:
            assert isinstance(dist, Linear)
            self._noise: Callable[[int], np.ndarray] | None = None
            if dist.noise_cv > 0:
                mu, sigma = _lognormal_params(1.0, dist.noise_cv)
                self._noise = lambda n: rng.lognormal(mu, sigma, n)

    def request_times(self) -> np.ndarray:
        """One un-batched service time (seconds) per request of the trace."""
        n = len(self._in)
        dist = self.dist
        if isinstance(dist, Linear):
            t = (
                dist.base_s
                + dist.per_item_s
                + dist.per_input_token_s * self._in
                + dist.per_output_token_s * self._out
            ).astype(float)
            if self._noise is not None:
                t = t * self._noise(n)
            return t
        return draw(dist, self._rng, n)

    def _one(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = draw(self.dist, self._rng, 4096)
            self._pos = 0
        v = float(self._buf[self._pos])
        self._pos += 1
        return v

    def batch_time(self, members: list[int]) -> float:
        """Time (seconds) of one batch of the given request indices, speed 1."""
        n = len(members)
        if isinstance(self.dist, Linear):
            tin = int(self._in[members].sum()) if n > 1 else int(self._in[members[0]])
            tout = int(self._out[members].sum()) if n > 1 else int(self._out[members[0]])
            return self._linear_time(self.dist, n, tin, tout)
        return self._one() * (1.0 + self.factor * (n - 1))

    def batch_time_of(self, input_tokens: Sequence[int], output_tokens: Sequence[int]) -> float:
        """:meth:`batch_time` of a batch given by its members' token counts instead of trace indices."""
        n = len(input_tokens)
        if isinstance(self.dist, Linear):
            return self._linear_time(self.dist, n, int(sum(input_tokens)), int(sum(output_tokens)))
        return self._one() * (1.0 + self.factor * (n - 1))

    def _linear_time(self, dist: Linear, n: int, tin: int, tout: int) -> float:
        t = dist.base_s + dist.per_item_s * n + dist.per_input_token_s * tin + dist.per_output_token_s * tout
        if self._noise is not None:
            t *= float(self._noise(1)[0])
        return t


def generation_times(variant: Variant, prompt_len: np.ndarray, output_len: np.ndarray) -> np.ndarray:
    """``variant.generation_time(1, p, o)`` for each pair ``(p, o)``, vectorised.

    Each distinct pair is evaluated once: its prefill, then one decode step per output
    token after the first (context ``p + 1 .. p + o - 1``), the steps of many pairs in one
    call of the latency model (at most ``_CHUNK_ROWS`` rows at a time).
    """
    p = np.asarray(prompt_len, dtype=np.int64)
    o = np.asarray(output_len, dtype=np.int64)
    if p.size == 0:
        return np.zeros(0)
    key = p * (int(o.max()) + 1) + o
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    up, uo = p[first], o[first]
    total = variant.step_time(up, 0, 0, 1).astype(float)
    steps = np.maximum(uo - 1, 0)
    decode = np.zeros(len(uniq))
    ends = np.cumsum(steps)
    lo = 0
    while lo < len(uniq):
        # pairs [lo, hi) whose steps fit in one chunk (at least one pair)
        base = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, base + _CHUNK_ROWS, side="right")), lo + 1)
        s = steps[lo:hi]
        n = int(s.sum())
        if n:
            owner = np.repeat(np.arange(hi - lo), s)
            start = np.cumsum(s) - s
            k = np.arange(n) - start[owner] + 1  # 1 .. steps of each pair
            rows = variant.step_time(0, 1, up[lo:hi][owner] + k)
            decode[lo:hi] = np.bincount(owner, weights=rows, minlength=hi - lo)
        lo = hi
    return (total + decode)[inverse.reshape(-1)]


class ProfileServiceModel:
    """Service times from a profiled variant's latency model (seconds, speed 1).

    A request alone takes ``variant.service_time(1, input_tokens, output_tokens)``: for a
    classic or encoder model one forward pass of ``input_tokens`` tokens, for a decoder a
    static generation (prefill, then a decode step per further output token). A batch is
    padded to its longest member: ``variant.service_time(n, max input, max output)``.
    Prompts are clipped to the model's window as the server clips them
    (:meth:`~servewise.profile.Variant.served_prompt`).
    A request with 0 tokens counts as 1 token (the shortest sequence a profile models);
    a trace with no token counts at all (every count 0) is refused. Each time is
    multiplied by a log-normal factor of median 1 and CV ``variant.noise_cv`` (none at 0),
    after :meth:`~servewise.profile.Variant.live_time` once the variant is calibrated
    through the live serving path (``servewise calibrate``: ``service_fixed_s`` +
    ``service_scale`` × the prediction, and the CV is the live one).
    """

    def __init__(
        self,
        variant: Variant,
        *,
        rng: np.random.Generator,
        input_tokens: np.ndarray,
        output_tokens: np.ndarray,
    ) -> None:
        self.variant = variant
        self._rng = rng
        self._decoder = variant.model_kind == "decoder"
        needed = [("input_tokens", input_tokens)] + ([("output_tokens", output_tokens)] if self._decoder else [])
        for name, col in needed:
            if len(col) and not np.any(col):
                raise ConfigError(
                    f"the trace has no {name} (0 for every request), but the deployment's model "
                    f"{variant.label} (a {variant.model_kind} model) computes service times from them: use a "
                    "trace with token counts, or give a service_time distribution instead of model"
                )
        self._out = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
        self._in = variant.served_prompt(np.asarray(input_tokens, dtype=np.int64), self._out)
        self._sigma = float(np.sqrt(np.log1p(variant.noise_cv**2)))
        self._calibrated = variant.serving is not None  # then live_time: fixed + scale × predicted
        self._cache: dict[tuple[int, int, int], float] = {}
        self._noise_buf = np.empty(0)
        self._noise_pos = 0

    @property
    def served_input_tokens(self) -> np.ndarray:
        """Each request's prompt tokens as the server runs them (clipped to the window)."""
        return self._in

    def request_times(self) -> np.ndarray:
        """One un-batched service time (seconds) per request of the trace."""
        if self._decoder:
            t = generation_times(self.variant, self._in, self._out)
        else:
            t = self.variant.batch_time(1, self._in).astype(float)
        if self._calibrated:
            t = self.variant.live_time(t)
        if self._sigma > 0:
            t = t * self._rng.lognormal(0.0, self._sigma, len(t))
        return t

    def batch_time(self, members: list[int]) -> float:
        """Time (seconds) of one batch of the given request indices, padded to its longest member."""
        n = len(members)
        if n == 1:
            i = members[0]
            key = (1, int(self._in[i]), int(self._out[i]) if self._decoder else 1)
        else:
            key = (n, int(self._in[members].max()), int(self._out[members].max()) if self._decoder else 1)
        return self._keyed(key)

    def batch_time_of(self, input_tokens: Sequence[int], output_tokens: Sequence[int]) -> float:
        """:meth:`batch_time` of a batch given by its members' token counts instead of trace indices."""
        longest_out = max(max(output_tokens), 1) if self._decoder else 1
        return self._keyed((len(input_tokens), max(max(input_tokens), 1), longest_out))

    def _keyed(self, key: tuple[int, int, int]) -> float:
        """The time of a ``(batch size, longest input, longest output)`` batch, with its noise."""
        t = self._cache.get(key)
        if t is None:
            n, longest_in, longest_out = key
            served = int(self.variant.served_prompt(np.asarray(longest_in), np.asarray(longest_out)))
            t = float(self.variant.service_time(n, served, longest_out))
            t = self._cache[key] = float(self.variant.live_time(t)) if self._calibrated else t
        if self._sigma > 0:
            if self._noise_pos >= len(self._noise_buf):
                self._noise_buf = self._rng.lognormal(0.0, self._sigma, 4096)
                self._noise_pos = 0
            t *= float(self._noise_buf[self._noise_pos])
            self._noise_pos += 1
        return t
