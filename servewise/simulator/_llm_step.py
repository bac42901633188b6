"""Iteration times of the LLM engine: the step model, per-replica noise, and KV capacity.

A step model gives the noise-free time of an iteration from its features (prefill
tokens, decoding sequences, context tokens, prefilling sequences); the engine draws a
multiplicative noise factor per iteration from the replica's own stream (:class:`_Noise`,
a pure function of the seed and the iteration index, so fast-forwarded spans and single
steps agree). :func:`kv_capacity` sizes a replica's KV cache from the engine settings, the
profile and the hardware catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from servewise.config import ContinuousEngine, Pool
from servewise.errors import ConfigError
from servewise.profile import Variant, step_features

__all__ = ["StepModel", "ProfileStepModel", "kv_capacity"]

_NOISE_CHUNK = 1024


class StepModel(Protocol):
    """Iteration times of an LLM engine on a replica of speed 1, seconds."""

    def times(self, prefill_tokens: np.ndarray, decode_seqs: np.ndarray, context_tokens: np.ndarray, prefill_seqs: np.ndarray) -> np.ndarray:
        """Noise-free time of each iteration (arrays of equal length)."""
        ...

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` multiplicative noise factors, one per iteration."""
        ...


def _one(step: StepModel, p: int, d: int, c: int, ps: int) -> float:
    f = getattr(step, "one", None)
    if f is not None:
        return float(f(p, d, c, ps))
    return float(step.times(np.array([float(p)]), np.array([float(d)]), np.array([float(c)]), np.array([float(ps)]))[0])


def _decode_run(step: StepModel, n: int, ctx: np.ndarray) -> np.ndarray:
    f = getattr(step, "decode_run", None)
    if f is not None:
        return np.asarray(f(n, ctx), dtype=float)
    m = len(ctx)
    return np.asarray(step.times(np.zeros(m), np.full(m, float(n)), ctx.astype(float), np.zeros(m)), dtype=float)


class ProfileStepModel:
    """A profiled decoder's ``step_time`` with log-normal noise (median 1, CV ``noise_cv``).

    The engine calls :meth:`one` for a single iteration and :meth:`decode_run` for a span.
    Both evaluate a linear model term by term (``intercept + Σ coef·feature``) in the same
    order, so an iteration's time is the same bit for bit whether it is evaluated alone
    or in a span (a tree ensemble goes through :meth:`times` either way).
    """

    def __init__(self, variant: Variant) -> None:
        lm = variant.latency_model
        if lm is None or lm.target != "step_time":
            raise ConfigError(f"{variant.label} has no step_time latency model: the continuous engine needs one")
        self._lm = lm
        self._sigma = float(np.sqrt(np.log1p(lm.noise_cv**2)))

    def times(self, prefill_tokens: np.ndarray, decode_seqs: np.ndarray, context_tokens: np.ndarray, prefill_seqs: np.ndarray) -> np.ndarray:
        return self._lm.predict(step_features(prefill_tokens, decode_seqs, context_tokens, prefill_seqs))

    def one(self, prefill_tokens: int, decode_seqs: int, context_tokens: int, prefill_seqs: int) -> float:
        """One iteration's time (what the engine calls; a linear model term by term)."""
        lm = self._lm
        if lm.kind == "linear":
            p = float(prefill_tokens)
            c0, c1, c2, c3, c4 = lm.coef_s
            t = lm.intercept_s + c0 * p
            t = t + c1 * (p * p / max(float(prefill_seqs), 1.0))
            t = t + c2 * float(decode_seqs)
            t = t + c3 * float(context_tokens)
            t = t + c4 * (1.0 if p > 0 else 0.0)
            return max(t, 1e-9)
        return float(self.times(np.array([prefill_tokens]), np.array([decode_seqs]), np.array([context_tokens]), np.array([prefill_seqs]))[0])

    def decode_run(self, decode_seqs: int, context_tokens: np.ndarray) -> np.ndarray:
        """Times of decode-only iterations of ``decode_seqs`` sequences (bit for bit :meth:`one`'s)."""
        lm = self._lm
        if lm.kind == "linear":
            c0, c1, c2, c3, c4 = lm.coef_s
            # the prefill terms are 0 (x + 0.0 == x), so this is one()'s arithmetic
            t = (lm.intercept_s + c2 * float(decode_seqs)) + c3 * context_tokens.astype(float)
            return np.maximum(t, 1e-9)
        m = len(context_tokens)
        return self.times(np.zeros(m), np.full(m, float(decode_seqs)), context_tokens.astype(float), np.zeros(m))

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self._sigma == 0:
            return np.ones(n)
        return rng.lognormal(0.0, self._sigma, n)


class _Noise:
    """A replica's noise factors by iteration index: a pure function of the seed and the index.

    Factors are drawn in chunks of :data:`_NOISE_CHUNK`; reads never go back before the
    start of an earlier read, so a refill drops what lies before the current one.
    """

    __slots__ = ("_rng", "_draw", "buf", "base")

    def __init__(self, rng: np.random.Generator, draw: Callable[[np.random.Generator, int], np.ndarray]) -> None:
        self._rng = rng
        self._draw = draw
        self.buf = np.empty(0)
        self.base = 0  # iteration index of buf[0]

    def get(self, start: int, n: int) -> np.ndarray:
        lo = start - self.base
        assert lo >= 0, "noise read before an earlier read"
        if lo + n > len(self.buf):
            chunks = -(-(lo + n - len(self.buf)) // _NOISE_CHUNK)
            parts = [self.buf] + [np.asarray(self._draw(self._rng, _NOISE_CHUNK), dtype=float) for _ in range(chunks)]
            self.buf = np.concatenate(parts)[lo:]
            self.base = start
            lo = 0
        return self.buf[lo : lo + n]


def kv_capacity(engine: ContinuousEngine, variant: Variant, pool: Pool, catalog: Any = None) -> tuple[int, str]:
    """KV-cache capacity of one replica of ``pool``, in tokens, and where it came from."""
    if engine.kv_capacity_tokens is not None:
        return engine.kv_capacity_tokens, "engine.kv_capacity_tokens"
    kvb = variant.kv_bytes_per_token
    if not kvb:
        raise ConfigError(
            f"{variant.label} has no kv_bytes_per_token (profile a decoder with servewise profile): "
            "set engine.kv_capacity_tokens"
        )
    if engine.kv_cache_bytes is not None:
        return engine.kv_cache_bytes // kvb, f"engine.kv_cache_bytes / kv_bytes_per_token ({kvb})"
    if pool.instance_type == "local":
        raise ConfigError(
            f"pool {pool.name!r}: the KV-cache size needs the replica's memory: give the pool an instance_type from "
            "the hardware catalog (servewise profile transfer --help lists them), or set engine.kv_cache_bytes "
            "or engine.kv_capacity_tokens"
        )
    if catalog is None:
        from servewise.hardware import load_catalog

        catalog = load_catalog()
    inst = catalog.get(pool.instance_type)
    if variant.weights_bytes is None:
        raise ConfigError(f"{variant.label} has no weights_bytes: set engine.kv_cache_bytes or engine.kv_capacity_tokens")
    mem = inst.device_mem_bytes
    free = int(mem * engine.memory_utilization) - variant.weights_bytes
    if free < kvb * engine.block_size:
        raise ConfigError(
            f"pool {pool.name!r}: {variant.label} does not fit on {inst.name}: weights {variant.weights_bytes} B, "
            f"device memory {mem} B × memory_utilization {engine.memory_utilization} leaves no KV-cache block"
        )
    return free // kvb, (
        f"{inst.name} device memory {mem} B × {engine.memory_utilization} − weights {variant.weights_bytes} B, "
        f"/ kv_bytes_per_token {kvb}"
    )
