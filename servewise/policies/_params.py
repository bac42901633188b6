"""Parameter checks shared by every policy family (private to servewise.policies).

Each raises :class:`ConfigError` in one shape: "The 'd' parameter of p2c must be an
int >= 1. Got 0 instead."
"""

from __future__ import annotations

import math

import numpy as np

from servewise.errors import ConfigError

__all__ = ["bad", "check_int", "check_float", "check_rng"]


def bad(policy: str, param: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"The {param!r} parameter of {policy} must be {expected}. Got {value!r} instead.")


def check_int(policy: str, param: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools are refused), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise bad(policy, param, f"an int >= {minimum}", value)
    return int(value)


def check_float(policy: str, param: str, value: object, minimum: float, *, strict: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (> if ``strict``), else ConfigError."""
    op = ">" if strict else ">="
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or (value <= minimum if strict else value < minimum)
    ):
        raise bad(policy, param, f"a float {op} {minimum:g}", value)
    return float(value)


def check_rng(policy: str, rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise bad(policy, "rng", "a numpy.random.Generator", type(rng).__name__)
    return rng
