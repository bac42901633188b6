"""`Request` and `Trace`: the in-memory shape of traffic (private; see servewise.trace)."""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servewise.errors import ConfigError

__all__ = ["Request", "Trace"]


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a trace, as the simulator and the load generator see it."""

    id: int
    """Index of the request in its trace, 0..n-1 (arrival order)."""
    arrival_s: float
    """Arrival time in seconds since the start of the trace."""
    input_tokens: int
    """Prompt length in tokens (0 when the trace has no input lengths)."""
    output_tokens: int
    """Generated length in tokens (0 when the trace has no output lengths)."""
    key: int | None
    """Response-cache key code (dense 0..K-1); None when the trace has no keys."""
    prefix_blocks: tuple[int, ...]
    """Prefix block hashes (Mooncake ``hash_ids``); () when the trace has none."""
    traffic_class: str
    """Name of the request's traffic class; "default" when the trace has none."""


def _readonly(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a.setflags(write=False)
    return a


def _int_column(name: str, values: Any, n: int | None) -> np.ndarray:
    """Copy ``values`` to a read-only int64 column of integers >= 0 (ConfigError otherwise)."""
    a = np.array(values, copy=True)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        got = a.shape if a.ndim != 1 else f"length {a.shape[0]}"
        raise ConfigError(f"Trace.{name} must be a 1-D array of length {n}, got {got}")
    if a.size and a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ConfigError(f"Trace.{name} must hold integers, got non-integral values")
    elif a.size and a.dtype.kind not in "iub":
        raise ConfigError(f"Trace.{name} must hold integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ConfigError(f"Trace.{name} must be >= 0, got {int(a.min())}")
    return _readonly(a)


def _labels(name: str, labels: Any) -> tuple[str, ...]:
    labels = tuple(labels)
    for lab in labels:
        if not isinstance(lab, str) or not lab:
            raise ConfigError(f"Trace.{name} must be non-empty strings, got {lab!r}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"Trace.{name} must be distinct, got duplicates in {labels!r}")
    return labels


def _arrivals(values: Any) -> np.ndarray:
    """Copy ``values`` to a read-only float64 column of finite, non-decreasing times >= 0."""
    arr = np.array(values, dtype=np.float64, copy=True)
    if arr.ndim != 1:
        raise ConfigError(f"Trace.arrival_s must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0]:
        if not np.all(np.isfinite(arr)) or arr.min() < 0:
            raise ConfigError("Trace.arrival_s must be finite and >= 0, got other values")
        bad = np.flatnonzero(np.diff(arr) < 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise ConfigError(
                f"Trace.arrival_s must be non-decreasing, got {arr[i]!r} after {arr[i - 1]!r} at index {i}"
            )
    return _readonly(arr)


def _keys(key: Any, key_labels: Any, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The key column and its labels; without labels, code k is labelled ``str(k)``."""
    codes = _int_column("key", key, n)
    if key_labels is None:
        k = int(codes.max()) + 1 if n else 0
        return codes, tuple(str(i) for i in range(k))
    labels = _labels("key_labels", key_labels)
    if n and codes.max() >= len(labels):
        raise ConfigError(f"Trace.key codes must be < len(key_labels) = {len(labels)}, got {int(codes.max())}")
    return codes, labels


def _classes(traffic_class: Any, class_names: Any, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The read-only int32 traffic-class column (all class 0 when None) and the class names."""
    names = _labels("class_names", class_names)
    if not names:
        raise ConfigError("Trace.class_names must name at least one class, got ()")
    if traffic_class is None:
        tc = np.zeros(n, dtype=np.int32)
    else:
        tc = _int_column("traffic_class", traffic_class, n)
        if n and tc.max() >= len(names):
            raise ConfigError(
                f"Trace.traffic_class codes must be < len(class_names) = {len(names)}, got {int(tc.max())}"
            )
        tc = tc.astype(np.int32)
    return _readonly(tc), names


def _prefix_blocks(blocks: Any, n: int) -> tuple[tuple[int, ...], ...]:
    """One tuple of integer block ids per request."""
    try:
        pb = tuple(tuple(map(operator.index, row)) for row in blocks)
    except TypeError as exc:
        raise ConfigError(f"Trace.prefix_blocks must be sequences of integers, got {exc}") from None
    if len(pb) != n:
        raise ConfigError(f"Trace.prefix_blocks must have one entry per request ({n}), got {len(pb)}")
    return pb


def _canonical_codes(codes: np.ndarray, labels: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Renumber codes densely in order of first appearance; labels follow their codes."""
    if codes.size == 0:
        return _readonly(codes.astype(np.int64)), ()
    uniq, first = np.unique(codes, return_index=True)
    order = uniq[np.argsort(first, kind="stable")]  # old codes by first appearance
    remap = np.empty(int(uniq.max()) + 1, dtype=np.int64)
    remap[order] = np.arange(order.size, dtype=np.int64)
    return _readonly(remap[codes]), tuple(labels[int(c)] for c in order)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Trace:
    """Immutable, columnar request trace, sorted by arrival.

    Columns are read-only numpy arrays of equal length; request ``i`` is row ``i``.
    Construct with keywords only; arrays are copied and validated (ConfigError).
    """

    arrival_s: np.ndarray
    """float64 arrival times in seconds since trace start: finite, >= 0, non-decreasing."""
    input_tokens: np.ndarray
    """int64 prompt lengths in tokens, >= 0."""
    output_tokens: np.ndarray
    """int64 generated lengths in tokens, >= 0."""
    key: np.ndarray | None = None
    """int64 response-cache key codes 0..K-1, or None when the trace has no keys."""
    key_labels: tuple[str, ...] | None = None
    """Original label of each key code (``key_labels[code]``); None iff ``key`` is None."""
    traffic_class: np.ndarray = None  # type: ignore[assignment]
    """int32 codes into ``class_names``; all 0 ("default") when not given."""
    class_names: tuple[str, ...] = ("default",)
    """Name of each traffic-class code; ("default",) when the trace has no classes."""
    prefix_blocks: tuple[tuple[int, ...], ...] | None = None
    """Per-request prefix block hashes, or None when the trace has none."""
    block_tokens: int | None = None
    """Tokens per prefix block (512 for Mooncake), None when unknown."""
    source: str = ""
    """Where the trace came from: a file path or a generator description."""
    skipped_rows: int = 0
    """Malformed rows skipped by ``load_trace(..., skip_bad_rows=True)``."""

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        arr = _arrivals(self.arrival_s)
        n = arr.shape[0]
        setattr_(self, "arrival_s", arr)
        setattr_(self, "input_tokens", _int_column("input_tokens", self.input_tokens, n))
        setattr_(self, "output_tokens", _int_column("output_tokens", self.output_tokens, n))
        if self.key is None:
            if self.key_labels is not None:
                raise ConfigError("Trace.key_labels must be None when Trace.key is None")
        else:
            key, labels = _keys(self.key, self.key_labels, n)
            setattr_(self, "key", key)
            setattr_(self, "key_labels", labels)
        tc, names = _classes(self.traffic_class, self.class_names, n)
        setattr_(self, "class_names", names)
        setattr_(self, "traffic_class", tc)
        if self.prefix_blocks is not None:
            setattr_(self, "prefix_blocks", _prefix_blocks(self.prefix_blocks, n))
        if self.block_tokens is not None:
            bt = self.block_tokens
            if isinstance(bt, bool) or not isinstance(bt, (int, np.integer)) or bt < 1:
                raise ConfigError(f"Trace.block_tokens must be an integer >= 1, got {bt!r}")
            setattr_(self, "block_tokens", int(bt))
        if not isinstance(self.source, str):
            raise ConfigError(f"Trace.source must be a string, got {self.source!r}")
        sk = self.skipped_rows
        if isinstance(sk, bool) or not isinstance(sk, (int, np.integer)) or sk < 0:
            raise ConfigError(f"Trace.skipped_rows must be an integer >= 0, got {sk!r}")
        setattr_(self, "skipped_rows", int(sk))

    @classmethod
    def _trusted(cls, **fields: Any) -> Trace:
        """Build from columns already in canonical, validated form (no copies, no checks)."""
        self = object.__new__(cls)
        defaults: dict[str, Any] = {
            "key": None,
            "key_labels": None,
            "class_names": ("default",),
            "prefix_blocks": None,
            "block_tokens": None,
            "source": "",
            "skipped_rows": 0,
        }
        defaults.update(fields)
        if defaults.get("traffic_class") is None:
            defaults["traffic_class"] = np.zeros(len(defaults["arrival_s"]), dtype=np.int32)
        for name, value in defaults.items():
            if isinstance(value, np.ndarray):
                value = _readonly(value)
            object.__setattr__(self, name, value)
        return self

    def _replace(self, **changes: Any) -> Trace:
        fields = {name: getattr(self, name) for name in _FIELDS}
        fields.update(changes)
        return Trace._trusted(**fields)

    # -- sequence protocol -------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def __getitem__(self, i: int) -> Request:
        n = len(self)
        idx = operator.index(i)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"request index must be in [-{n}, {n}), got {i}")
        return Request(
            id=idx,
            arrival_s=float(self.arrival_s[idx]),
            input_tokens=int(self.input_tokens[idx]),
            output_tokens=int(self.output_tokens[idx]),
            key=None if self.key is None else int(self.key[idx]),
            prefix_blocks=() if self.prefix_blocks is None else self.prefix_blocks[idx],
            traffic_class=self.class_names[int(self.traffic_class[idx])],
        )

    def __iter__(self) -> Iterator[Request]:
        n = len(self)
        keys: Sequence[int | None] = [None] * n if self.key is None else self.key.tolist()
        blocks: Sequence[tuple[int, ...]] = [()] * n if self.prefix_blocks is None else self.prefix_blocks
        names = self.class_names
        rows = zip(
            self.arrival_s.tolist(),
            self.input_tokens.tolist(),
            self.output_tokens.tolist(),
            keys,
            blocks,
            self.traffic_class.tolist(),
            strict=True,
        )
        for i, (t, inp, out, k, pb, tc) in enumerate(rows):
            yield Request(i, t, inp, out, k, pb, names[tc])

    def __repr__(self) -> str:
        return f"Trace(requests={len(self)}, duration_s={self.duration_s:.6g}, source={self.source!r})"

    # -- derived traces ----------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Last arrival minus first arrival, in seconds; 0.0 for fewer than 2 requests."""
        if len(self) < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    def _take(self, sel: slice | np.ndarray) -> dict[str, Any]:
        """Columns of the selected rows; keys renumbered densely, class names kept."""
        out: dict[str, Any] = {
            "arrival_s": self.arrival_s[sel],
            "input_tokens": self.input_tokens[sel],
            "output_tokens": self.output_tokens[sel],
            "traffic_class": self.traffic_class[sel],
        }
        if self.key is not None:
            assert self.key_labels is not None
            out["key"], out["key_labels"] = _canonical_codes(self.key[sel], self.key_labels)
        if self.prefix_blocks is not None:
            if isinstance(sel, slice):
                out["prefix_blocks"] = self.prefix_blocks[sel]
            else:
                pb = self.prefix_blocks
                out["prefix_blocks"] = tuple(pb[i] for i in np.asarray(sel).tolist())
        return out

    def window(self, start_s: float, end_s: float, *, rebase: bool = True) -> Trace:
        """Requests with ``start_s <= arrival_s < end_s``.

        With ``rebase`` every arrival is shifted by ``-start_s`` (the window starts at 0).
        Key codes are renumbered densely for the subset; class names are kept.
        """
        start_s, end_s = float(start_s), float(end_s)
        if math.isnan(start_s) or math.isnan(end_s) or end_s < start_s:
            raise ConfigError(f"window needs start_s <= end_s (seconds), got start_s={start_s!r}, end_s={end_s!r}")
        lo = int(np.searchsorted(self.arrival_s, start_s, side="left"))
        hi = int(np.searchsorted(self.arrival_s, end_s, side="left"))
        cols = self._take(slice(lo, hi))
        if rebase and start_s != 0.0:
            if not math.isfinite(start_s):
                raise ConfigError(f"window with rebase needs a finite start_s, got {start_s!r}")
            cols["arrival_s"] = cols["arrival_s"] - start_s  # >= 0: every kept t >= start_s
        op = f"window({start_s:g}, {end_s:g}{'' if rebase else ', rebase=False'})"
        return self._replace(**cols, source=_derived(self.source, op))

    def head(self, n: int) -> Trace:
        """The first ``n`` requests (all of them when the trace is shorter)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"head needs an integer >= 1, got {n!r}")
        if n >= len(self):
            return self
        return self._replace(**self._take(slice(0, int(n))), source=_derived(self.source, f"head({int(n)})"))

    def scale_rate(self, factor: float) -> Trace:
        """The same requests at ``factor`` times the rate: arrival times divided by factor."""
        f = float(factor)
        if not math.isfinite(f) or f <= 0:
            raise ConfigError(f"scale_rate factor must be a finite number > 0, got {factor!r}")
        return self._replace(arrival_s=self.arrival_s / f, source=_derived(self.source, f"scale_rate({f:g})"))

    def repeat(self, times: int) -> Trace:
        """``times`` back-to-back copies; copy k is shifted by k × (duration_s + mean gap).

        The mean gap is duration_s / (n - 1), so the seam looks like an average gap.
        Keys and prefix blocks repeat too (a copy re-sends the same prompts).
        """
        if isinstance(times, bool) or not isinstance(times, (int, np.integer)) or times < 1:
            raise ConfigError(f"repeat times must be an integer >= 1, got {times!r}")
        times = int(times)
        n = len(self)
        if times == 1:
            return self._replace(source=_derived(self.source, "repeat(1)"))
        if n < 2:
            raise ConfigError(f"repeat needs a trace with at least 2 requests, got {n}")
        period = self.duration_s + self.duration_s / (n - 1)
        offsets = np.arange(times, dtype=np.float64) * period
        arrival = (self.arrival_s[None, :] + offsets[:, None]).ravel()
        # guard against rounding making a seam decrease (only possible if period ~ 0)
        arrival = np.maximum.accumulate(arrival)
        cols: dict[str, Any] = {
            "arrival_s": arrival,
            "input_tokens": np.tile(self.input_tokens, times),
            "output_tokens": np.tile(self.output_tokens, times),
            "traffic_class": np.tile(self.traffic_class, times),
            "source": _derived(self.source, f"repeat({times})"),
        }
        if self.key is not None:
            cols["key"] = np.tile(self.key, times)
        if self.prefix_blocks is not None:
            cols["prefix_blocks"] = self.prefix_blocks * times
        return self._replace(**cols)

    def with_zipf_keys(self, n_keys: int, alpha: float, seed: int, *, overwrite: bool = False) -> Trace:
        """Cache keys drawn i.i.d. with P(rank i) ∝ i**-alpha over ranks 1..n_keys.

        alpha = 0 is uniform. Key codes are dense in order of first appearance and
        ``key_labels`` hold the rank ("1" is the most popular). Refuses to replace
        existing keys unless ``overwrite=True``.
        """
        if self.key is not None and not overwrite:
            raise ConfigError("with_zipf_keys: the trace already has keys; pass overwrite=True to replace them")
        if isinstance(n_keys, bool) or not isinstance(n_keys, (int, np.integer)) or n_keys < 1:
            raise ConfigError(f"with_zipf_keys n_keys must be an integer >= 1, got {n_keys!r}")
        a = float(alpha)
        if not math.isfinite(a) or a < 0:
            raise ConfigError(f"with_zipf_keys alpha must be a finite number >= 0, got {alpha!r}")
        rng = np.random.default_rng(_check_seed(seed))
        weights = np.arange(1, int(n_keys) + 1, dtype=np.float64) ** -a
        ranks0 = rng.choice(int(n_keys), size=len(self), p=weights / weights.sum())
        labels = tuple(str(i) for i in range(1, int(n_keys) + 1))
        codes, used = _canonical_codes(ranks0.astype(np.int64), labels)
        return self._replace(
            key=codes,
            key_labels=used,
            source=_derived(self.source, f"zipf_keys(n_keys={n_keys}, alpha={a:g}, seed={seed})"),
        )

    # -- provenance --------------------------------------------------------------------

    def content_hash(self) -> str:
        """SHA-256 (hex) of the columns, labels and block size; same on every platform.

        ``source`` and ``skipped_rows`` are not part of it: a saved and reloaded trace
        has the same hash.
        """
        h = hashlib.sha256(b"servewise.trace/v1\0")

        def part(name: str, data: bytes) -> None:
            h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

        part("arrival_s", self.arrival_s.astype("<f8").tobytes())
        part("input_tokens", self.input_tokens.astype("<i8").tobytes())
        part("output_tokens", self.output_tokens.astype("<i8").tobytes())
        if self.key is not None:
            part("key", self.key.astype("<i8").tobytes())
            part("key_labels", json.dumps(self.key_labels).encode())
        part("traffic_class", self.traffic_class.astype("<i4").tobytes())
        part("class_names", json.dumps(self.class_names).encode())
        if self.prefix_blocks is not None:
            text = "\n".join(" ".join(map(str, row)) for row in self.prefix_blocks)
            part("prefix_blocks", text.encode())
        part("block_tokens", json.dumps(self.block_tokens).encode())
        return h.hexdigest()


_FIELDS = (
    "arrival_s",
    "input_tokens",
    "output_tokens",
    "key",
    "key_labels",
    "traffic_class",
    "class_names",
    "prefix_blocks",
    "block_tokens",
    "source",
    "skipped_rows",
)


def _derived(source: str, op: str) -> str:
    """Provenance of a derived trace: the parent's source, then the operation."""
    return f"{source} | {op}" if source else op


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)
