"""Reading and writing trace files (private; see servewise.trace).

Parsing is vectorised and every row keeps its 1-based physical line number, so the first
malformed row can be reported precisely as ``file:line: what was expected, what was got``.
A plain CSV (no quotes, no blank or ragged lines, at least two distinct named columns) is
read by Arrow's parser, its cells kept as Arrow strings and numeric columns converted by
Arrow in one pass; anything else takes pandas' parser, then the ``csv`` module's. Both
paths give the same trace and the same errors.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servewise._trace_model import Trace
from servewise.errors import ConfigError, TraceError
from servewise.io import atomic_write_bytes

__all__ = ["FORMATS", "load_trace", "save_trace"]

FORMATS: tuple[str, ...] = ("azure", "mooncake", "burstgpt", "generic")
"""Trace formats ``load_trace`` understands (besides ``"auto"``)."""

_FIELD_NAMES = ("arrival_s", "input_tokens", "output_tokens", "key", "traffic_class", "prefix_blocks")
_GENERIC_KIND = {
    "arrival_s": "seconds",
    "input_tokens": "count",
    "output_tokens": "count",
    "key": "label",
    "traffic_class": "label",
    "prefix_blocks": "blocks",
}


@dataclass(frozen=True)
class _Field:
    name: str  # our name (a Trace column)
    column: str  # the file's column / JSON key
    kind: str  # datetime | seconds | millis | count | label | blocks
    required: bool


_SPECS: dict[str, tuple[_Field, ...]] = {
    "azure": (
        _Field("arrival_s", "TIMESTAMP", "datetime", True),
        _Field("input_tokens", "ContextTokens", "count", True),
        _Field("output_tokens", "GeneratedTokens", "count", True),
    ),
    "mooncake": (
        _Field("arrival_s", "timestamp", "millis", True),
        _Field("input_tokens", "input_length", "count", True),
        _Field("output_tokens", "output_length", "count", True),
        _Field("prefix_blocks", "hash_ids", "blocks", False),
    ),
    "burstgpt": (
        _Field("arrival_s", "Timestamp", "seconds", True),
        _Field("traffic_class", "Model", "label", True),
        _Field("input_tokens", "Request tokens", "count", True),
        _Field("output_tokens", "Response tokens", "count", True),
    ),
    "generic": tuple(_Field(name, name, _GENERIC_KIND[name], name == "arrival_s") for name in _FIELD_NAMES),
}
_DETECT_ORDER = {"csv": ("azure", "burstgpt", "generic"), "jsonl": ("mooncake", "generic")}
_MOONCAKE_BLOCK_TOKENS = 512

_EXPECT = {
    "datetime": "a date-time such as '2023-11-16 18:15:46.6805900'",
    "seconds": "a number of seconds >= 0",
    "millis": "a number of milliseconds >= 0",
    "count": "an integer >= 0",
    "label": "a non-empty string",
    "blocks:csv": "space-separated integers",
    "blocks:jsonl": "a list of integers",
}


# -- raw tables ------------------------------------------------------------------------


@dataclass
class _Table:
    """Rows of a file as raw cells, each with its 1-based physical line number."""

    container: str  # "csv" | "jsonl"
    header: tuple[str, ...]  # CSV header, or the keys of the first JSON record
    header_line: int
    lines: np.ndarray  # int64, one per data row
    row_errors: dict[int, str]  # structural problems: row index -> "expected ..., got ..."
    _cells: dict[str, np.ndarray | _ArrowCells] | None = None  # CSV: column -> str cells
    _records: list[dict[str, Any] | None] | None = None  # JSONL: one dict per row

    def __len__(self) -> int:
        return int(self.lines.shape[0])

    @property
    def from_arrow(self) -> bool:
        """Whether Arrow's parser read the file (its cells are Arrow strings)."""
        return self._cells is not None and any(isinstance(c, _ArrowCells) for c in self._cells.values())

    def column(self, col: str) -> np.ndarray | _ArrowCells | None:
        """Object array of the column's cells (None = missing), or None if absent."""
        if self._cells is not None:
            return self._cells.get(col)
        records = self._records or []
        if not any(r is not None and col in r for r in records):
            return None
        n = len(records)
        return np.fromiter((None if r is None else r.get(col) for r in records), dtype=object, count=n)


class _ArrowCells:
    """One CSV column's cells as an Arrow string array (the fast path): numbers converted
    by Arrow when every cell is one, strings made only where needed (labels, messages)."""

    def __init__(self, cells: Any) -> None:
        self._cells = cells  # pyarrow.ChunkedArray of strings
        self.size = len(cells)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> str:
        return str(self._cells[i].as_py())

    def numbers(self) -> np.ndarray | None:
        """float64 values when Arrow reads every cell as a number (else None: the caller
        converts the cells one way for every file). Arrow's parse is correctly rounded,
        as ``float()`` is, and accepts no cell that ``float()`` refuses."""
        import pyarrow as pa

        try:
            return np.asarray(self._cells.cast(pa.float64()).to_numpy(), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def to_numpy(self) -> np.ndarray:
        """The cells as an object array of ``str``."""
        return np.asarray(self._cells.to_numpy(zero_copy_only=False), dtype=object)


def _read_bytes(path: Path, name: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TraceError(f"{name}: no such trace file") from None
    except IsADirectoryError:
        raise TraceError(f"{name}: expected a trace file, got a directory") from None
    except OSError as exc:
        raise TraceError(f"{name}: cannot read the trace file ({exc.strerror})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceError(f"{name}: expected a valid gzip file, got {exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data


def _container_of(path: Path, data: bytes) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext in (".csv", ".txt"):
        return "csv"
    return "jsonl" if data.lstrip()[:1] == b"{" else "csv"


def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(f"{name}:{line}: expected UTF-8 text, got {exc.reason}") from None


def _read_csv(data: bytes, name: str) -> _Table:
    if not data.isascii():  # ASCII is UTF-8: no need to decode a copy to check it
        _utf8(data, name)
    if not data.strip():
        raise TraceError(f"{name}:1: expected a CSV header line, got an empty file")
    if b'"' not in data:  # no quoting: one row per physical line
        fast = _read_csv_arrow(data)
        if fast is not None:
            return fast
        # pandas is exact here too (blank lines found below), though slower
        try:
            df = pd.read_csv(
                io.BytesIO(data),
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,
                encoding="utf-8",
            )
        except pd.errors.ParserError:  # a row with too many fields: take the exact path
            df = None
        if df is not None and not isinstance(df.index, pd.RangeIndex):
            df = None  # pandas took the first column as an index: a row has extra fields
        if df is not None:
            lines = data.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            body = lines[1:]
            if lines[0].strip() and len(body) == len(df):
                # a blank line reads as a row of empty cells: find them among such rows
                maybe = np.ones(len(df), dtype=bool)
                for c in df.columns[1:]:
                    maybe &= df[c].to_numpy(dtype=object) == ""
                blank = np.zeros(len(df), dtype=bool)
                for i in np.flatnonzero(maybe).tolist():
                    blank[i] = not body[i].strip()
                keep = np.flatnonzero(~blank)
                cells: dict[str, np.ndarray | _ArrowCells] = {
                    str(c): df[c].to_numpy(dtype=object)[keep] for c in df.columns
                }
                return _Table(
                    container="csv",
                    header=tuple(str(c) for c in df.columns),
                    header_line=1,
                    lines=(keep + 2).astype(np.int64),
                    row_errors={},
                    _cells=cells,
                )
    return _read_csv_exact(data, name)


def _read_csv_arrow(data: bytes) -> _Table | None:
    """Arrow's parser on a plain CSV, or None where its reading could differ from pandas':
    a blank, whitespace-only or ragged line, an empty or repeated column name (pandas
    renames those), a single column (where a whitespace-only line is blank to pandas)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    header = first.removesuffix(b"\r").decode("utf-8").split(",")
    if len(header) < 2 or len(set(header)) != len(header) or not all(h.strip() for h in header):
        return None
    try:
        table = pcsv.read_csv(
            pa.BufferReader(data),  # type: ignore[arg-type]  # the stubs miss Arrow's own streams
            parse_options=pcsv.ParseOptions(newlines_in_values=False, quote_char=False),
            convert_options=pcsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False, null_values=[]
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a ragged line (a blank one in a wide file)
        return None
    body = data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - 1
    if table.num_rows != body or table.column_names != header:
        return None  # Arrow skipped a blank line: line numbers would shift
    n = table.num_rows
    return _Table(
        container="csv",
        header=tuple(header),
        header_line=1,
        lines=np.arange(2, n + 2, dtype=np.int64),
        row_errors={},
        _cells={h: _ArrowCells(table.column(h)) for h in header},
    )


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's allocator cached for the parse back to the system (the
    simulation that follows allocates through numpy, which could not reuse it)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _read_csv_exact(data: bytes, name: str) -> _Table:
    """The csv module, for quoted fields and ragged rows (slower, line numbers exact)."""
    text = _utf8(data, name)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    errors: dict[int, str] = {}
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None:
                header, header_line = row, start
                continue
            if len(row) > len(header):
                errors[len(rows)] = f"expected {len(header)} fields, got {len(row)}"
                row = row[: len(header)]
            elif len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            rows.append(row)
            lines.append(start)
    except csv.Error as exc:
        raise TraceError(f"{name}:{last + 1}: expected CSV, got {exc}") from None
    if header is None:
        raise TraceError(f"{name}:1: expected a CSV header line, got an empty file")
    n = len(rows)
    cells: dict[str, np.ndarray | _ArrowCells] = {}
    for j, col in enumerate(header):
        cells[col] = np.fromiter((r[j] for r in rows), dtype=object, count=n)
    return _Table(
        container="csv",
        header=tuple(header),
        header_line=header_line,
        lines=np.asarray(lines, dtype=np.int64),
        row_errors=errors,
        _cells=cells,
    )


def _read_jsonl(data: bytes, name: str) -> _Table:
    records: list[dict[str, Any] | None] = []
    lines: list[int] = []
    errors: dict[int, str] = {}
    header: tuple[str, ...] | None = None
    header_line = 1
    text = _utf8(data, name)
    decode = json.JSONDecoder().decode
    for lineno, raw in enumerate(text.split("\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        obj: Any
        try:
            obj = decode(raw)
        except json.JSONDecodeError as exc:
            obj, why = None, f"invalid JSON ({exc.msg} at column {exc.colno})"
        else:
            why = f"a JSON {type(obj).__name__}"
        if isinstance(obj, dict):
            if header is None:
                header, header_line = tuple(str(k) for k in obj), lineno
        else:
            errors[len(records)] = f"expected a JSON object, got {why}"
            obj = None
        records.append(obj)
        lines.append(lineno)
    if not records:
        raise TraceError(f"{name}:1: expected JSON Lines records, got an empty file")
    return _Table(
        container="jsonl",
        header=header or (),
        header_line=header_line,
        lines=np.asarray(lines, dtype=np.int64),
        row_errors=errors,
        _records=records,
    )


# -- cell conversion -------------------------------------------------------------------


def _numeric(raw: np.ndarray, container: str) -> np.ndarray:
    """float64 values of the cells; NaN where a cell is not a number."""
    try:  # fast path: every cell is a number (float() rounds correctly, so floats round-trip)
        out = raw.astype(np.float64)
    except (TypeError, ValueError):
        try:
            num = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce")
            out = num.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):  # exotic cells (lists, dicts): one by one
            out = np.array([_one_number(v) for v in raw], dtype=np.float64)
    # JSON booleans are not numbers
    if container == "jsonl" and any(isinstance(v, bool) for v in raw):
        out[np.fromiter((isinstance(v, bool) for v in raw), dtype=bool, count=raw.size)] = np.nan
    return out


def _one_number(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _datetime_ns(raw: np.ndarray) -> np.ndarray:
    """int64 nanoseconds (UTC, naive times read as UTC); int64 min where unparseable."""
    try:
        return _to_ns(pd.to_datetime(pd.Series(raw, dtype=object), format="ISO8601", errors="coerce", utc=True))
    except (TypeError, ValueError, OverflowError):  # e.g. out-of-range dates: one by one
        return _to_ns(pd.Series([_one_datetime(v) for v in raw], dtype="datetime64[ns, UTC]"))


def _to_ns(ts: pd.Series) -> np.ndarray:
    ns = ts.dt.tz_convert(None).dt.as_unit("ns").to_numpy().view(np.int64).copy()
    ns[ts.isna().to_numpy()] = np.iinfo(np.int64).min
    return ns


def _one_datetime(v: Any) -> Any:
    try:
        return pd.to_datetime(v, format="ISO8601", utc=True).as_unit("ns")
    except (TypeError, ValueError, OverflowError, AttributeError):
        return pd.NaT


def _arrival_kind(field: _Field, raw: np.ndarray | _ArrowCells) -> _Field:
    """A generic arrival column holds seconds, or date-times when its first cell is one
    (then arrivals are seconds since the first row, as for Azure)."""
    first = raw[0] if raw.size else None
    if isinstance(first, str) and math.isnan(_one_number(first)) and _one_datetime(first) is not pd.NaT:
        return dataclasses.replace(field, kind="datetime")
    return field


def _blocks(raw: np.ndarray, container: str) -> tuple[list[tuple[int, ...]], np.ndarray]:
    out: list[tuple[int, ...]] = []
    bad = np.zeros(raw.size, dtype=bool)
    for i, v in enumerate(raw):
        try:
            if container == "csv":
                out.append(tuple(int(x) for x in v.split()))  # "" -> (): no blocks
            elif isinstance(v, list) and not any(isinstance(x, bool) or not isinstance(x, int) for x in v):
                out.append(tuple(v))
            else:
                raise ValueError
        except (ValueError, AttributeError):
            out.append(())
            bad[i] = True
    return out, bad


def _convert(field: _Field, cells: np.ndarray | _ArrowCells, container: str) -> tuple[Any, np.ndarray]:
    """(values, bad-row mask) of one column."""
    kind = field.kind
    numeric = kind in ("seconds", "millis", "count")
    if isinstance(cells, _ArrowCells):
        numbers = cells.numbers() if numeric else None
        if numbers is not None:
            return numbers, _bad_numbers(numbers, kind)
        raw = cells.to_numpy()
    else:
        raw = cells
    if numeric:
        v = _numeric(raw, container)
        return v, _bad_numbers(v, kind)
    if kind == "datetime":
        ns = _datetime_ns(raw)
        return ns, ns == np.iinfo(np.int64).min
    if kind == "label":
        if container == "csv":  # cells are already strings
            return raw, raw == ""
        bad = np.fromiter(
            (v is None or v == "" or isinstance(v, (list, dict)) for v in raw),
            dtype=bool,
            count=raw.size,
        )
        return np.array([str(v) for v in raw], dtype=object), bad
    if kind == "blocks":
        return _blocks(raw, container)
    raise AssertionError(kind)


def _bad_numbers(v: np.ndarray, kind: str) -> np.ndarray:
    """Rows that are not a finite number >= 0 (an integer, for counts)."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v < 0)
        if kind == "count":
            bad |= v != np.floor(v)
    return bad


def _shown(v: Any) -> str:
    if v is None:
        return "nothing (the value is missing)"
    s = repr(v) if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _col_desc(field: _Field) -> str:
    if field.column == field.name:
        return f"column {field.column!r}"
    return f"column {field.column!r} ({field.name})"


# -- load ------------------------------------------------------------------------------


def _fields_for(fmt: str, column_map: Mapping[str, str]) -> list[_Field]:
    fields = []
    for f in _SPECS[fmt]:
        if f.name in column_map:
            fields.append(_Field(f.name, column_map[f.name], f.kind, True))
        else:
            fields.append(f)
    have = {f.name for f in fields}
    for name in _FIELD_NAMES:  # a mapped field the format lacks: read it the generic way
        if name in column_map and name not in have:
            fields.append(_Field(name, column_map[name], _GENERIC_KIND[name], True))
    return fields


def _detect(table: _Table, name: str, column_map: Mapping[str, str]) -> str:
    header = set(table.header)
    for fmt in _DETECT_ORDER[table.container]:
        if fmt == "generic":
            if column_map.get("arrival_s", "arrival_s") in header:
                return fmt
        elif all(f.column in header for f in _SPECS[fmt] if f.required):
            return fmt
    got = ",".join(table.header) if table.header else "nothing"
    what = "header" if table.container == "csv" else "first record's keys"
    raise TraceError(
        f"{name}:{table.header_line}: cannot detect the trace format from the {what} ({got}); "
        f"expected one of: {_supported()}"
    )


def _supported() -> str:
    parts = []
    for fmt in FORMATS:
        cols = ",".join(f.column for f in _SPECS[fmt] if f.required or fmt == "generic")
        kind = "JSONL" if fmt == "mooncake" else ("CSV/JSONL" if fmt == "generic" else "CSV")
        parts.append(f"{fmt} ({kind}: {cols})")
    return "; ".join(parts)


def _check_options(format: str, column_map: Mapping[str, str] | None, block_tokens: int | None) -> dict[str, str]:
    if format != "auto" and format not in FORMATS:
        raise TraceError(f"unknown trace format {format!r}; expected 'auto' or one of: {_supported()}")
    cmap = dict(column_map or {})
    for k, v in cmap.items():
        if k not in _FIELD_NAMES:
            raise ConfigError(f"column_map key {k!r} is not a trace field; expected one of: {', '.join(_FIELD_NAMES)}")
        if not isinstance(v, str) or not v:
            raise ConfigError(f"column_map[{k!r}] must be a column name, got {v!r}")
    if block_tokens is not None and (
        isinstance(block_tokens, bool) or not isinstance(block_tokens, int) or block_tokens < 1
    ):
        raise ConfigError(f"block_tokens must be an integer >= 1, got {block_tokens!r}")
    return cmap


@dataclass
class _Columns:
    """The file's columns, each by its field name: raw cells, converted values, bad-row masks."""

    fields: list[_Field]  # the fields the file has, in reading order (generic arrivals resolved)
    raw: dict[str, np.ndarray | _ArrowCells]
    values: dict[str, Any]
    bad: dict[str, np.ndarray]

    @property
    def arrival(self) -> _Field:
        return next(f for f in self.fields if f.name == "arrival_s")


def _read_columns(table: _Table, fields: list[_Field], fmt: str, name: str) -> _Columns:
    """Convert every field the file has; a required column that is absent raises."""
    raws: dict[str, np.ndarray | _ArrowCells] = {}
    for f in fields:
        raw = table.column(f.column)
        if raw is None:
            if f.required:
                has = ",".join(table.header) if table.header else "nothing"
                raise TraceError(
                    f"{name}:{table.header_line}: missing required column {f.column!r} "
                    f"({fmt} format, field {f.name}); got columns: {has}"
                )
            continue
        raws[f.name] = raw
    present = [f for f in fields if f.name in raws]
    if fmt == "generic":
        present = [_arrival_kind(f, raws[f.name]) if f.name == "arrival_s" else f for f in present]
    values: dict[str, Any] = {}
    bad_by: dict[str, np.ndarray] = {}
    for f in present:
        values[f.name], bad_by[f.name] = _convert(f, raws[f.name], table.container)
    return _Columns(present, raws, values, bad_by)


def _bad_rows(table: _Table, cols: _Columns) -> np.ndarray:
    """Mask of rows that are malformed: structurally, or in any column."""
    bad = np.zeros(len(table), dtype=bool)
    if table.row_errors:
        bad[list(table.row_errors)] = True
    for m in cols.bad.values():
        bad |= m
    return bad


def _row_message(name: str, table: _Table, cols: _Columns, i: int) -> str:
    """``file:line: what was expected, what was got`` for the malformed row ``i``."""
    line = int(table.lines[i])
    if i in table.row_errors:
        return f"{name}:{line}: {table.row_errors[i]}"
    for f in cols.fields:
        if cols.bad[f.name][i]:
            kind = f"blocks:{table.container}" if f.kind == "blocks" else f.kind
            return f"{name}:{line}: {_col_desc(f)} must be {_EXPECT[kind]}, got {_shown(cols.raw[f.name][i])}"
    raise AssertionError(i)


def _unsorted_message(name: str, table: _Table, cols: _Columns, i: int, prev: int) -> str:
    raw = cols.raw["arrival_s"]
    return (
        f"{name}:{int(table.lines[i])}: {_col_desc(cols.arrival)} must not be earlier than "
        f"the previous row's {_shown(raw[prev])} (rows must be sorted by arrival), "
        f"got {_shown(raw[i])}"
    )


def _rows_to_keep(name: str, table: _Table, cols: _Columns, skip_bad_rows: bool) -> np.ndarray:
    """Indices of the rows to keep, in order: all of them, or, with ``skip_bad_rows``, the
    well-formed ones not earlier than a kept row before them. Without it, the first
    out-of-order row before the first malformed one raises, else the first malformed one."""
    n = len(table)
    bad = _bad_rows(table, cols)
    order = cols.values["arrival_s"]  # int64 ns or float; compared within the column's unit
    if not skip_bad_rows:
        first_bad = int(np.argmax(bad)) if bad.any() else n
        head = order[:first_bad]
        down = np.flatnonzero(head[1:] < head[:-1])
        if down.size:
            i = int(down[0]) + 1
            raise TraceError(_unsorted_message(name, table, cols, i, i - 1))
        if first_bad < n:
            raise TraceError(_row_message(name, table, cols, first_bad))
        return np.arange(n)
    keep = np.flatnonzero(~bad)
    ov = order[keep]
    if ov.size:
        running = np.maximum.accumulate(ov)
        in_order = np.ones(ov.size, dtype=bool)
        in_order[1:] = ov[1:] >= running[:-1]
        keep = keep[in_order]
    return keep


def _arrival_seconds(field: _Field, order: np.ndarray) -> np.ndarray:
    """Arrivals in float seconds; date-times become seconds since the first row."""
    if field.kind == "datetime":
        return (order - order[0]).astype(np.float64) / 1e9
    if field.kind == "millis":
        return order / 1000.0
    return order.astype(np.float64)


def _trace_fields(cols: _Columns, keep: np.ndarray) -> dict[str, Any]:
    """The kept rows as :class:`Trace` columns (labels factorised in order of appearance)."""
    values = cols.values

    def tokens(field: str) -> np.ndarray:
        if field in values:
            return values[field][keep].astype(np.int64)
        return np.zeros(keep.size, dtype=np.int64)

    out: dict[str, Any] = {
        "arrival_s": _arrival_seconds(cols.arrival, values["arrival_s"][keep]),
        "input_tokens": tokens("input_tokens"),
        "output_tokens": tokens("output_tokens"),
    }
    if "key" in values:
        codes, uniques = pd.factorize(values["key"][keep], sort=False)
        out["key"] = codes.astype(np.int64)
        out["key_labels"] = tuple(str(u) for u in uniques)
    if "traffic_class" in values:
        codes, uniques = pd.factorize(values["traffic_class"][keep], sort=False)
        out["traffic_class"] = codes.astype(np.int32)
        out["class_names"] = tuple(str(u) for u in uniques)
    if "prefix_blocks" in values:
        pb = values["prefix_blocks"]
        out["prefix_blocks"] = tuple(pb[i] for i in keep.tolist())
    return out


def load_trace(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    column_map: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
    block_tokens: int | None = None,
) -> Trace:
    """Read a trace file (``.gz`` transparently) into a :class:`Trace`.

    ``format`` is one of "auto", "azure", "mooncake", "burstgpt", "generic"; "auto"
    detects it from the extension and the header (or first JSON record). ``column_map``
    maps trace fields to the file's column names, e.g. ``{"arrival_s": "ts"}``; a mapped
    column is required. A malformed or out-of-order row raises :class:`TraceError`
    naming ``file:line``, unless ``skip_bad_rows`` (then it is skipped and counted).
    Generic files may omit ``input_tokens``/``output_tokens`` entirely (read as 0).
    """
    cmap = _check_options(format, column_map, block_tokens)
    p = Path(path)
    name = str(path)
    data = _read_bytes(p, name)
    container = _container_of(p, data)
    table = _read_jsonl(data, name) if container == "jsonl" else _read_csv(data, name)
    fmt = _detect(table, name, cmap) if format == "auto" else format
    cols = _read_columns(table, _fields_for(fmt, cmap), fmt, name)
    keep = _rows_to_keep(name, table, cols, skip_bad_rows)
    n = len(table)
    if keep.size == 0:
        detail = f"{n} data rows, all malformed or out of order" if n else "no data rows"
        raise TraceError(f"{name}: expected at least one valid request, got {detail}")

    fields = _trace_fields(cols, keep)
    fields.update(source=name, skipped_rows=n - keep.size)
    if block_tokens is not None:
        fields["block_tokens"] = block_tokens
    elif fmt == "mooncake" and "prefix_blocks" in cols.values:
        fields["block_tokens"] = _MOONCAKE_BLOCK_TOKENS
    if table.from_arrow:
        del table, cols  # the parse's buffers: free them, then hand them back
        _release_arrow_memory()
    return Trace(**fields)


# -- save ------------------------------------------------------------------------------


def _save_kind(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext == ".csv":
        return "csv", gz
    if ext == ".jsonl":
        return "jsonl", gz
    raise ConfigError(f"save_trace path must end in .csv or .jsonl (optionally .gz), got {path.name!r}")


def save_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write ``trace`` as generic CSV (``.csv``) or JSONL (``.jsonl``), atomically.

    Columns: arrival_s, input_tokens, output_tokens, then key, traffic_class and
    prefix_blocks when the trace has them. Floats are written shortest-exact, so
    ``load_trace`` gives back the same columns (the same ``content_hash`` when
    ``block_tokens`` is passed again, as files carry no block size).
    """
    p = Path(path)
    kind, gz = _save_kind(p)
    n = len(trace)
    cols: dict[str, list[Any]] = {
        "arrival_s": trace.arrival_s.tolist(),
        "input_tokens": trace.input_tokens.tolist(),
        "output_tokens": trace.output_tokens.tolist(),
    }
    if trace.key is not None:
        assert trace.key_labels is not None
        labels = trace.key_labels
        cols["key"] = [labels[k] for k in trace.key.tolist()]
    if trace.class_names != ("default",):
        names = trace.class_names
        cols["traffic_class"] = [names[c] for c in trace.traffic_class.tolist()]
    if trace.prefix_blocks is not None:
        if kind == "csv":
            cols["prefix_blocks"] = [" ".join(map(str, b)) for b in trace.prefix_blocks]
        else:
            cols["prefix_blocks"] = [list(b) for b in trace.prefix_blocks]
    names_ = list(cols)
    rows = zip(*(cols[c] for c in names_), strict=True) if n else iter(())
    if kind == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names_)
        writer.writerows(rows)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(dict(zip(names_, row, strict=True)), ensure_ascii=False) + "\n" for row in rows)
    data = text.encode("utf-8")
    if gz:
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(p, data)
