"""The per-request tables (``requests.csv``) beside a ``result.json`` or a ``measured.json``.

Read through :func:`read_requests`, which checks what the reports and the gate rely on:
a ``status`` column with the known outcomes, a ``latency_s`` column, and numbers in every
column that holds numbers. A bad table is one :class:`~servewise.errors.ArtifactError`
naming the file, the column and the first bad row.

:func:`write_requests` writes one, atomically, as CSV or Parquet (``requests.parquet``,
the same columns). The CSV is streamed through Arrow's writer in blocks of rows, two
blocks formatted at a time: floats are spelled shortest round-trip (the exact double;
``1e-07`` may read ``1e-7``, a whole number keeps its ``.0`` as pandas writes it, so a
column of floats still reads as floats), empty strings and NaN as empty cells, booleans
as ``True``/``False``. Reading it back gives the same frame as the pandas writer's file.
"""

from __future__ import annotations

import csv
import io
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from servewise.errors import ArtifactError
from servewise.io import atomic_write_binary

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "STATUSES",
    "SERVED",
    "REQUIRED_COLUMNS",
    "NUMERIC_COLUMNS",
    "REQUEST_FORMATS",
    "REQUEST_FILES",
    "read_requests",
    "write_requests",
    "requests_path",
    "served",
]

REQUEST_FORMATS: tuple[str, ...] = ("csv", "parquet")
"""How a per-request table can be written."""

REQUEST_FILES: dict[str, str] = {"csv": "requests.csv", "parquet": "requests.parquet"}
"""The table's file name in a result folder, by format."""

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
        "replica_idle_s",
    }
)  # fmt: skip
"""Columns that hold numbers (or are empty) wherever they appear."""


def requests_path(folder: str | Path) -> Path:
    """The per-request table in a result folder: ``requests.parquet`` when there is one, else ``requests.csv``."""
    d = Path(folder)
    parquet = d / REQUEST_FILES["parquet"]
    return parquet if parquet.is_file() else d / REQUEST_FILES["csv"]


def read_requests(path: str | Path) -> pd.DataFrame:
    """The table at ``path`` (CSV, or Parquet when it ends in ``.parquet``), checked (see the
    module); an :class:`ArtifactError` naming it otherwise."""
    import pandas as pd

    p = Path(path)
    try:
        table = _read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p, low_memory=False)
    except FileNotFoundError:
        raise ArtifactError(f"{p}: no such per-request table") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:  # parser errors (pandas', Arrow's) are ValueErrors
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


def _read_parquet(p: Path) -> pd.DataFrame:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    if not p.is_file():  # Arrow says "Failed to open local file" for both
        if p.exists():
            raise ArtifactError(f"{p}: expected a per-request table, got a folder")
        raise FileNotFoundError(p)
    table = pq.read_table(p).to_pandas()
    if len(table):  # a column with no value at all reads from CSV as float NaN: the same here
        for col in table.columns:
            if not pd.api.types.is_float_dtype(table[col]) and table[col].isna().all():
                table[col] = np.full(len(table), np.nan)
    return table


# -- writing ---------------------------------------------------------------------------

_BLOCK_ROWS = 1 << 16
"""Rows formatted at a time: bounds the writer's memory to a few blocks' text."""


def write_requests(table: pd.DataFrame, path: str | Path, format: str | None = None) -> Path:
    """Write ``table`` to ``path`` atomically as ``format`` (``"csv"`` or ``"parquet"``; by
    default from the file's suffix). A failure leaves the file that was there (or none)."""
    p = Path(path)
    fmt = format or ("parquet" if p.suffix.lower() == ".parquet" else "csv")
    if fmt not in REQUEST_FORMATS:
        raise ArtifactError(
            f"{p}: unknown per-request table format {fmt!r}; expected one of: {', '.join(REQUEST_FORMATS)}"
        )
    columns = [str(c) for c in table.columns]
    sources = [_source(table[c]) for c in table.columns]
    n = len(table)
    if fmt == "csv":
        atomic_write_binary(p, lambda f: _write_csv(f, columns, sources, n))
    else:
        atomic_write_binary(p, lambda f: _write_parquet(f, columns, sources, n))
    return p


def _source(col: pd.Series) -> tuple[str, Any]:
    """(kind, values) of one column, kind one of float, bool, int, str."""
    import numpy as np
    import pandas as pd

    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return "bool", col.to_numpy()
    if pd.api.types.is_float_dtype(dtype):
        return "float", col.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_integer_dtype(dtype):
        return "int", col  # numpy or nullable integers: Arrow keeps the missing ones missing
    return "str", col


def _array(kind: str, values: Any, a: int, b: int, text: bool) -> pa.Array:
    """Rows ``a:b`` of one column as Arrow: as the CSV cells' text where ``text``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "float":
        x = values[a:b]
        nan = np.isnan(x)
        arr = pa.array(x, mask=nan if nan.any() else None)
        return _float_text(x, arr) if text else arr
    if kind == "bool":
        arr = pa.array(values[a:b])
        return pc.if_else(arr, "True", "False") if text else arr
    if kind == "int":
        return pa.Array.from_pandas(values.iloc[a:b]).cast(pa.int64())
    arr = pa.Array.from_pandas(values.iloc[a:b]).cast(pa.string())
    return pc.if_else(
        pc.equal(arr, pa.scalar("")), pa.scalar(None, pa.string()), arr
    )  # "" reads back as missing either way


def _float_text(x: np.ndarray, arr: pa.Array) -> pa.Array:
    """Arrow's shortest round-trip text of ``x``, with pandas' ``.0`` on whole numbers."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    out = pc.cast(arr, pa.string())
    zero = x == 0.0
    if zero.any():
        neg = np.signbit(x) & zero
        out = pc.if_else(pa.array(zero & ~neg), "0.0", out)
        if neg.any():
            out = pc.if_else(pa.array(neg), "-0.0", out)
    whole = (x == np.floor(x)) & ~zero  # Arrow spells these "2" (or "1e+16", left as it is)
    if whole.any():
        idx = np.flatnonzero(whole)
        sub = out.take(idx)
        sub = pc.replace_substring_regex(sub, r"^(-?[0-9]+)$", r"\1.0")
        out = pc.replace_with_mask(out, pa.array(whole), sub)
    return out


def _blocks(columns: list[str], sources: list[tuple[str, Any]], n: int, text: bool) -> Iterator[pa.RecordBatch]:
    """The table as record batches in order, formatted two at a time (Arrow frees the GIL)."""
    import pyarrow as pa

    def block(a: int) -> pa.RecordBatch:
        b = min(a + _BLOCK_ROWS, n)
        return pa.RecordBatch.from_arrays([_array(k, v, a, b, text) for k, v in sources], names=columns)

    workers = max(1, min(2, os.cpu_count() or 1))
    starts = iter(range(0, n, _BLOCK_ROWS))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[pa.RecordBatch]] = deque()
        for a in starts:
            pending.append(pool.submit(block, a))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _schema(columns: list[str], sources: list[tuple[str, Any]], text: bool) -> pa.Schema:
    import pyarrow as pa

    types: dict[str, pa.DataType] = {"float": pa.float64(), "bool": pa.bool_(), "int": pa.int64(), "str": pa.string()}
    return pa.schema(
        [
            (c, pa.string() if text and k in ("float", "bool") else types[k])
            for c, (k, _) in zip(columns, sources, strict=True)
        ]
    )


def _write_csv(f: IO[bytes], columns: list[str], sources: list[tuple[str, Any]], n: int) -> None:
    import pyarrow.csv as pcsv

    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(columns)  # as pandas writes it: quoted only where needed
    f.write(head.getvalue().encode("utf-8"))
    schema = _schema(columns, sources, text=True)
    quoting: Literal["needed", "none"] = "needed" if _needs_quotes(sources) else "none"  # "needed" quotes every string
    options = pcsv.WriteOptions(include_header=False, quoting_style=quoting)
    with pcsv.CSVWriter(f, schema, write_options=options) as writer:
        for batch in _blocks(columns, sources, n, text=True):
            writer.write_batch(batch)


def _needs_quotes(sources: list[tuple[str, Any]]) -> bool:
    """Whether a string cell holds a comma, a quote or a line break."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for kind, values in sources:
        if kind == "str":
            arr = pa.Array.from_pandas(values).cast(pa.string())
            if pc.any(pc.match_substring_regex(arr, '[,"\r\n]')).as_py():
                return True
    return False


def _write_parquet(f: IO[bytes], columns: list[str], sources: list[tuple[str, Any]], n: int) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(f, _schema(columns, sources, text=False)) as writer:
        for batch in _blocks(columns, sources, n, text=False):
            writer.write_batch(batch)


def served(table: pd.DataFrame | None, column: str = "latency_s") -> np.ndarray:
    """The finite values of ``column`` over the served requests (empty without the table or column)."""
    import numpy as np

    if table is None or column not in table.columns or "status" not in table.columns:
        return np.zeros(0)
    v = table.loc[table["status"].isin(SERVED), column].to_numpy(dtype=float, na_value=np.nan)
    return v[np.isfinite(v)]
