"""The per-request tables (``requests.csv``) beside a ``result.json`` or a ``measured.json``.

Read through :func:`read_requests`, which checks what the reports and the gate rely on:
a ``status`` column with the known outcomes, a ``latency_s`` column, and numbers in every
column that holds numbers. A bad table is one :class:`~servewise.errors.ArtifactError`
naming the file, the column and the first bad row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from servewise.errors import ArtifactError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["STATUSES", "SERVED", "REQUIRED_COLUMNS", "NUMERIC_COLUMNS", "read_requests", "served"]

STATUSES: tuple[str, ...] = ("completed", "cache_hit", "rejected", "failed")
"""Every request's outcome."""

SERVED: tuple[str, ...] = ("completed", "cache_hit")
"""The outcomes that count as served."""

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "status", "latency_s")

NUMERIC_COLUMNS: frozenset[str] = frozenset(
    {
        # both
        "id", "latency_s", "ttft_s", "tpot_s", "itl_max_s", "input_tokens", "output_tokens", "end_s",
        # simulated
        "arrival_s", "replica", "dispatch_s", "start_s", "queue_s", "cold_start_s", "retries", "batch_size", "served_input_tokens", "overhead_s",
        "first_token_s", "generated_tokens", "cached_tokens", "prefilled_tokens", "preemptions",
        # measured
        "scheduled_s", "sent_s", "send_lag_s", "http_status", "tokens", "replica_queue_s", "replica_service_s",
    }
)  # fmt: skip
"""Columns that hold numbers (or are empty) wherever they appear."""


def read_requests(path: str | Path) -> pd.DataFrame:
    """The table at ``path``, checked (see the module); an :class:`ArtifactError` naming it otherwise."""
    import pandas as pd

    p = Path(path)
    try:
        table = pd.read_csv(p, low_memory=False)
    except FileNotFoundError:
        raise ArtifactError(f"{p}: no such per-request table") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:  # pandas' parser errors are ValueErrors
        raise ArtifactError(f"{p}: cannot read the per-request table ({' '.join(str(err).split())})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ArtifactError(f"{p}: missing column {', '.join(repr(c) for c in missing)} (a per-request table has "
                            f"{', '.join(REQUIRED_COLUMNS)}, ...)")  # fmt: skip
    for col in table.columns:
        if col in NUMERIC_COLUMNS and not pd.api.types.is_numeric_dtype(table[col]):
            values = table[col]
            as_number = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & as_number.isna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise ArtifactError(f"{p}: column '{col}': expected numbers, got {values.iloc[row]!r} (row {row + 1})")
            table[col] = as_number
    status = table["status"]
    bad = ~status.isin(STATUSES)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ArtifactError(
            f"{p}: column 'status': expected one of {', '.join(STATUSES)}, got {status.iloc[row]!r} (row {row + 1})"
        )
    table["status"] = status.astype(object)
    return table


def served(table: pd.DataFrame | None, column: str = "latency_s") -> np.ndarray:
    """The finite values of ``column`` over the served requests (empty without the table or column)."""
    import numpy as np

    if table is None or column not in table.columns or "status" not in table.columns:
        return np.zeros(0)
    v = table.loc[table["status"].isin(SERVED), column].to_numpy(dtype=float, na_value=np.nan)
    return v[np.isfinite(v)]
