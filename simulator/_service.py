"""Service-time sampling: per request and per batch, vectorised and seeded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from servewise.config import (
    Deterministic,
    Empirical,
    Exponential,
    HyperExponential,
    Linear,
    LogNormal,
    Uniform,
)
from servewise.errors import ConfigError

__all__ = ["draw", "ServiceModel"]


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
        dist = self.dist
        n = len(members)
        if isinstance(dist, Linear):
            tin = int(self._in[members].sum()) if n > 1 else int(self._in[members[0]])
            tout = int(self._out[members].sum()) if n > 1 else int(self._out[members[0]])
            t = (
                dist.base_s
                + dist.per_item_s * n
                + dist.per_input_token_s * tin
                + dist.per_output_token_s * tout
            )
            if self._noise is not None:
                t *= float(self._noise(1)[0])
            return t
        return self._one() * (1.0 + self.factor * (n - 1))
