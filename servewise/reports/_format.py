"""Numbers as a report prints them: one function per unit, ``—`` for a missing value.

The artifacts keep seconds, bytes, ratios and dollars; the page shows them scaled to
a readable unit (``390.6 ms``, ``583.9 MiB``, ``38.12 %``, ``$0.299``). Nothing here
rounds a value that is compared: the raw number travels beside the text (``Cell.value``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MISSING", "number", "seconds", "nbytes", "percent", "usd", "rate", "count", "plain", "is_number"]

MISSING = "—"
"""What a table shows for a value the artifact does not have (None, NaN)."""


def is_number(v: Any) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def number(v: Any) -> float | None:
    """``v`` as a float when it is a finite number, else None."""
    return float(v) if is_number(v) else None


def seconds(v: Any) -> str:
    """Seconds in µs, ms or s with four significant digits: ``390.6 ms``, ``1.989 s``."""
    x = number(v)
    if x is None:
        return MISSING
    a = abs(x)
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{x * 1e6:.4g} µs"
    if a < 1:
        return f"{x * 1e3:.4g} ms"
    if a < 1000:
        return f"{x:.4g} s"
    return f"{x:,.0f} s"


def nbytes(v: Any) -> str:
    """Bytes in binary units: ``583.9 MiB``."""
    x = number(v)
    if x is None:
        return MISSING
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f} B"


def percent(v: Any, *, digits: int = 2, signed: bool = False) -> str:
    """A ratio (0.3812) as a percentage (``38.12 %``); ``signed`` adds ``+`` to gains."""
    x = number(v)
    if x is None:
        return MISSING
    sign = "+" if signed else ""
    return f"{x * 100:{sign}.{digits}f} %"


def usd(v: Any) -> str:
    """Dollars: two decimals from $1 up (``$104.23``), three significant digits below (``$0.299``)."""
    x = number(v)
    if x is None:
        return MISSING
    if abs(x) >= 1:
        return f"${x:,.2f}"
    return f"${x:.3g}"


def rate(v: Any, unit: str = "req/s") -> str:
    """A rate per second: ``4.765 req/s``."""
    x = number(v)
    if x is None:
        return MISSING
    return f"{x:.4g} {unit}" if abs(x) < 1e5 else f"{x:,.0f} {unit}"


def count(v: Any) -> str:
    """A whole number with thousands separators."""
    x = number(v)
    if x is None:
        return MISSING
    return f"{round(x):,}"


def plain(v: Any, digits: int = 4) -> str:
    """Any other number, ``digits`` significant digits; text as it is; None as ``—``."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else MISSING
    return str(v)
