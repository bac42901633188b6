"""Synthetic arrival processes (private; see servewise.trace).

Every generator is keyword-only, takes ``seed`` and draws from
``numpy.random.default_rng(seed)``: arrivals first, then token lengths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servewise._trace_model import Trace, _check_seed
from servewise.errors import ConfigError, TraceError

__all__ = [
    "TokenSpec",
    "poisson",
    "gamma_renewal",
    "diurnal",
    "mmpp",
    "servegen",
    "GENERATORS",
]

SERVEGEN_WINDOW_S = 600.0
"""Length of one ServeGen rate window, in seconds."""
_MAX_REQUESTS = 50_000_000


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok or isinstance(value, bool):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


@dataclass(frozen=True)
class TokenSpec:
    """Token lengths: lognormal with the given mean and coefficient of variation (CV).

    CV 0 gives the constant mean. Draws are rounded to integers >= 1.
    """

    input_mean: float = 512
    """Mean prompt length, tokens (> 0)."""
    input_cv: float = 0.0
    """Coefficient of variation (std / mean) of prompt lengths, >= 0."""
    output_mean: float = 128
    """Mean generated length, tokens (> 0)."""
    output_cv: float = 0.0
    """Coefficient of variation (std / mean) of generated lengths, >= 0."""

    def __post_init__(self) -> None:
        _positive("TokenSpec.input_mean", self.input_mean)
        _positive("TokenSpec.output_mean", self.output_mean)
        _positive("TokenSpec.input_cv", self.input_cv, allow_zero=True)
        _positive("TokenSpec.output_cv", self.output_cv, allow_zero=True)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_tokens, output_tokens) for ``n`` requests, int64 >= 1."""
        return (
            _lognormal(rng, float(self.input_mean), float(self.input_cv), n),
            _lognormal(rng, float(self.output_mean), float(self.output_cv), n),
        )


def _lognormal(rng: np.random.Generator, mean: float, cv: float, n: int) -> np.ndarray:
    if cv == 0.0:
        x = np.full(n, mean)
    else:
        sigma2 = math.log1p(cv * cv)
        x = rng.lognormal(math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2), size=n)
    return np.maximum(1, np.rint(x)).astype(np.int64)


def _finish(
    rng: np.random.Generator,
    arrival_s: np.ndarray,
    tokens: TokenSpec,
    source: str,
    **extra: Any,
) -> Trace:
    if not isinstance(tokens, TokenSpec):
        raise ConfigError(f"tokens must be a TokenSpec, got {type(tokens).__name__}")
    inp, out = tokens.sample(rng, arrival_s.size)
    return Trace._trusted(
        arrival_s=arrival_s.astype(np.float64),
        input_tokens=inp,
        output_tokens=out,
        source=source,
        **extra,
    )


def _span(duration_s: float | None, n_requests: int | None) -> tuple[float | None, int | None]:
    if (duration_s is None) == (n_requests is None):
        raise ConfigError(
            f"give exactly one of duration_s and n_requests, got duration_s={duration_s!r}, n_requests={n_requests!r}"
        )
    if n_requests is not None:
        if isinstance(n_requests, bool) or not isinstance(n_requests, (int, np.integer)) or n_requests < 1:
            raise ConfigError(f"n_requests must be an integer >= 1, got {n_requests!r}")
        return None, int(n_requests)
    return _positive("duration_s", duration_s), None


def _renewal(
    draw: Callable[[int], np.ndarray],
    mean_iat_s: float,
    duration_s: float | None,
    n_requests: int | None,
) -> np.ndarray:
    """Arrivals of a renewal process started at 0: n of them, or all before duration_s."""
    if n_requests is not None:
        return np.cumsum(draw(n_requests))
    assert duration_s is not None
    expected = duration_s / mean_iat_s
    if expected > _MAX_REQUESTS:
        raise ConfigError(
            f"the trace would hold about {expected:.3g} requests, more than {_MAX_REQUESTS}; "
            f"lower duration_s or the rate"
        )
    chunks: list[np.ndarray] = []
    t = 0.0
    batch = int(expected * 1.05 + 10 * math.sqrt(expected) + 16)
    while t < duration_s:
        arr = t + np.cumsum(draw(batch))
        chunks.append(arr)
        t = float(arr[-1])
        batch = max(16, batch // 4)
    arrival = np.concatenate(chunks)
    return arrival[arrival < duration_s]


def poisson(
    *,
    rate_rps: float,
    duration_s: float | None = None,
    n_requests: int | None = None,
    seed: int,
    tokens: TokenSpec = TokenSpec(),
) -> Trace:
    """Poisson arrivals at ``rate_rps``: ``n_requests`` of them, or all in [0, duration_s)."""
    rate = _positive("rate_rps", rate_rps)
    dur, n = _span(duration_s, n_requests)
    rng = np.random.default_rng(_check_seed(seed))
    arrival = _renewal(lambda k: rng.exponential(1.0 / rate, size=k), 1.0 / rate, dur, n)
    span = f"duration_s={dur:g}" if dur is not None else f"n_requests={n}"
    return _finish(rng, arrival, tokens, f"poisson(rate_rps={rate:g}, {span}, seed={seed})")


def gamma_renewal(
    *,
    rate_rps: float,
    cv: float,
    duration_s: float | None = None,
    n_requests: int | None = None,
    seed: int,
    tokens: TokenSpec = TokenSpec(),
) -> Trace:
    """Renewal arrivals with gamma inter-arrival times: mean 1/rate_rps, std/mean = cv.

    cv = 1 is Poisson; cv > 1 is burstier, cv < 1 more regular.
    """
    rate = _positive("rate_rps", rate_rps)
    c = _positive("cv", cv)
    dur, n = _span(duration_s, n_requests)
    rng = np.random.default_rng(_check_seed(seed))
    shape = 1.0 / (c * c)
    scale = 1.0 / (rate * shape)
    arrival = _renewal(lambda k: rng.gamma(shape, scale, size=k), 1.0 / rate, dur, n)
    span = f"duration_s={dur:g}" if dur is not None else f"n_requests={n}"
    return _finish(rng, arrival, tokens, f"gamma(rate_rps={rate:g}, cv={c:g}, {span}, seed={seed})")


def diurnal(
    *,
    mean_rate_rps: float,
    amplitude: float,
    period_s: float,
    duration_s: float,
    seed: int,
    phase_s: float = 0.0,
    tokens: TokenSpec = TokenSpec(),
) -> Trace:
    """Nonhomogeneous Poisson with rate(t) = mean·(1 + amplitude·sin(2π(t + phase_s)/period_s)).

    0 <= amplitude <= 1. Generated by thinning a Poisson process at the peak rate.
    """
    mean = _positive("mean_rate_rps", mean_rate_rps)
    amp = _positive("amplitude", amplitude, allow_zero=True)
    if amp > 1:
        raise ConfigError(f"amplitude must be in [0, 1], got {amplitude!r}")
    period = _positive("period_s", period_s)
    dur = _positive("duration_s", duration_s)
    phase = float(phase_s)
    if not math.isfinite(phase):
        raise ConfigError(f"phase_s must be a finite number, got {phase_s!r}")
    rng = np.random.default_rng(_check_seed(seed))
    peak = mean * (1.0 + amp)
    if peak * dur > _MAX_REQUESTS:
        raise ConfigError(
            f"the trace would need {peak * dur:.3g} candidate requests, more than "
            f"{_MAX_REQUESTS}; lower duration_s or the rate"
        )
    count = rng.poisson(peak * dur)
    cand = np.sort(rng.random(count) * dur)
    rate = mean * (1.0 + amp * np.sin(2.0 * np.pi * (cand + phase) / period))
    arrival = cand[rng.random(count) * peak < rate]
    return _finish(
        rng,
        arrival,
        tokens,
        f"diurnal(mean_rate_rps={mean:g}, amplitude={amp:g}, period_s={period:g}, "
        f"duration_s={dur:g}, phase_s={phase:g}, seed={seed})",
    )


def mmpp(
    *,
    on_rate_rps: float,
    off_rate_rps: float,
    mean_on_s: float,
    mean_off_s: float,
    duration_s: float,
    seed: int,
    tokens: TokenSpec = TokenSpec(),
) -> Trace:
    """Two-state Markov-modulated Poisson process (on/off bursts) over [0, duration_s).

    Sojourns are exponential with means ``mean_on_s`` / ``mean_off_s``; the first state
    is drawn from the stationary law, so the mean rate is
    (on_rate·mean_on + off_rate·mean_off) / (mean_on + mean_off).
    """
    on_rate = _positive("on_rate_rps", on_rate_rps, allow_zero=True)
    off_rate = _positive("off_rate_rps", off_rate_rps, allow_zero=True)
    mean_on = _positive("mean_on_s", mean_on_s)
    mean_off = _positive("mean_off_s", mean_off_s)
    dur = _positive("duration_s", duration_s)
    if max(on_rate, off_rate) * dur > _MAX_REQUESTS:
        raise ConfigError(
            f"the trace could hold {max(on_rate, off_rate) * dur:.3g} requests, more than "
            f"{_MAX_REQUESTS}; lower duration_s or the rates"
        )
    rng = np.random.default_rng(_check_seed(seed))
    start_on = bool(rng.random() < mean_on / (mean_on + mean_off))
    means = np.array([mean_on, mean_off] if start_on else [mean_off, mean_on])
    rates = np.array([on_rate, off_rate] if start_on else [off_rate, on_rate])
    ends: list[np.ndarray] = []
    t = 0.0
    batch = int(2 * dur / (mean_on + mean_off)) + 8  # even: states keep alternating
    batch += batch % 2
    while t < dur:
        lengths = rng.exponential(np.tile(means, batch // 2))
        e = t + np.cumsum(lengths)
        ends.append(e)
        t = float(e[-1])
    seg_end = np.minimum(np.concatenate(ends), dur)
    seg_start = np.concatenate([[0.0], seg_end[:-1]])
    live = seg_start < dur
    seg_start, seg_end = seg_start[live], seg_end[live]
    seg_rate = np.resize(rates, seg_start.size)
    seg_len = seg_end - seg_start
    counts = rng.poisson(seg_rate * seg_len)
    arrival = np.repeat(seg_start, counts) + rng.random(int(counts.sum())) * np.repeat(seg_len, counts)
    arrival = np.sort(arrival)
    return _finish(
        rng,
        arrival,
        tokens,
        f"mmpp(on_rate_rps={on_rate:g}, off_rate_rps={off_rate:g}, mean_on_s={mean_on:g}, "
        f"mean_off_s={mean_off:g}, duration_s={dur:g}, seed={seed})",
    )


_SERVEGEN_COLUMNS = (
    "client_id",
    "window_start_s",
    "rate_rps",
    "iat_cv",
    "iat_dist",
    "dist_param1",
    "dist_param2",
)


def servegen(
    *,
    path: str | os.PathLike[str],
    duration_s: float | None = None,
    start_s: float = 0.0,
    clients: Sequence[int] | None = None,
    rate_scale: float = 1.0,
    seed: int,
    tokens: TokenSpec = TokenSpec(),
) -> Trace:
    """Requests from ServeGen per-client rate windows (600 s each; traces README §3).

    Uses windows starting in [start_s, start_s + duration_s) (both multiples of 600;
    duration None = to the end) of the given ``clients`` (None = all). A window with
    rate r holds round(r·600·rate_scale) requests whose gaps follow its fitted Gamma or
    Weibull law (shape, scale), rescaled to fill the window. Arrivals are relative to
    start_s; each client is the traffic class ``client-<id>``.
    """
    start, dur = _servegen_span(start_s, duration_s)
    scale_factor = _positive("rate_scale", rate_scale)
    name = str(path)
    df = _read_servegen(Path(path), name)
    windows = _servegen_windows(df, name, start, dur, clients, scale_factor)
    span = "to the end" if dur is None else f"duration_s={dur:g}"
    who = "all clients" if clients is None else f"clients={list(clients)}"
    desc = f"servegen({name}, start_s={start:g}, {span}, {who}, rate_scale={scale_factor:g}, seed={seed})"
    rng = np.random.default_rng(_check_seed(seed))
    iat, gaps_per = _servegen_gaps(rng, windows)
    if iat.size == 0:
        return _finish(rng, np.zeros(0), tokens, desc)
    t, cl = _servegen_arrivals(iat, gaps_per, windows)
    codes, uniq = pd.factorize(cl, sort=False)
    return _finish(
        rng,
        t,
        tokens,
        desc,
        traffic_class=codes.astype(np.int32),
        class_names=tuple(f"client-{c}" for c in uniq) if uniq.size else ("default",),
    )


def _servegen_span(start_s: float, duration_s: float | None) -> tuple[float, float | None]:
    """Checked ``start_s`` and ``duration_s`` (None = to the end): multiples of a window."""
    start = _positive("start_s", start_s, allow_zero=True)
    if start % SERVEGEN_WINDOW_S:
        raise ConfigError(f"start_s must be a multiple of {SERVEGEN_WINDOW_S:g} s, got {start_s!r}")
    dur: float | None = None
    if duration_s is not None:
        dur = _positive("duration_s", duration_s)
        if dur % SERVEGEN_WINDOW_S:
            raise ConfigError(f"duration_s must be a multiple of {SERVEGEN_WINDOW_S:g} s, got {duration_s!r}")
    return start, dur


@dataclass(frozen=True)
class _Windows:
    """The active ServeGen windows (rate > 0) to generate, one entry per window."""

    counts: np.ndarray  # int64 requests in the window
    start_s: np.ndarray  # window start, seconds since the trace's start_s
    shape: np.ndarray  # the gap law's shape (dist_param1)
    scale: np.ndarray  # the gap law's scale (dist_param2)
    is_gamma: np.ndarray  # True: Gamma gaps; False: Weibull
    client: np.ndarray  # int64 client id


def _servegen_windows(
    df: pd.DataFrame,
    name: str,
    start: float,
    dur: float | None,
    clients: Sequence[int] | None,
    scale_factor: float,
) -> _Windows:
    """The windows of ``clients`` starting in [start, start + dur), with their request
    counts at ``scale_factor``; raises for an unknown client, too many requests, or an
    active window without a usable gap law."""
    end = math.inf if dur is None else start + dur
    ws = df["window_start_s"].to_numpy(dtype=np.float64)
    sel = (ws >= start) & (ws < end)
    if clients is not None:
        wanted = np.array([int(c) for c in clients], dtype=np.int64)
        have = np.unique(df["client_id"].to_numpy(dtype=np.int64))
        missing = np.setdiff1d(wanted, have)
        if missing.size:
            raise ConfigError(
                f"servegen clients {missing.tolist()} are not in {name}; it has "
                f"{have.size} clients ({have.min()}..{have.max()})"
            )
        sel &= np.isin(df["client_id"].to_numpy(dtype=np.int64), wanted)
    rows = df[sel]
    lines = rows.index.to_numpy() + 2  # header is line 1
    rate = rows["rate_rps"].to_numpy(dtype=np.float64)
    counts = np.rint(rate * SERVEGEN_WINDOW_S * scale_factor).astype(np.int64)
    if counts.sum() > _MAX_REQUESTS:
        raise ConfigError(
            f"servegen would generate {int(counts.sum())} requests, more than {_MAX_REQUESTS}; "
            f"choose a shorter duration_s, fewer clients or a smaller rate_scale"
        )
    active = counts > 0
    dist = rows["iat_dist"].to_numpy(dtype=object)
    p1 = rows["dist_param1"].to_numpy(dtype=np.float64)
    p2 = rows["dist_param2"].to_numpy(dtype=np.float64)
    is_gamma = dist == "Gamma"
    is_weibull = dist == "Weibull"
    bad = active & ~(is_gamma | is_weibull)
    bad |= active & ~((p1 > 0) & (p2 > 0) & np.isfinite(p1) & np.isfinite(p2))
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(
            f"{name}:{lines[i]}: an active window (rate_rps > 0) needs iat_dist 'Gamma' or "
            f"'Weibull' with dist_param1, dist_param2 > 0, got {dist[i]!r}, {p1[i]!r}, {p2[i]!r}"
        )
    return _Windows(
        counts=counts[active],
        start_s=ws[sel][active] - start,
        shape=p1[active],
        scale=p2[active],
        is_gamma=is_gamma[active],
        client=rows["client_id"].to_numpy(dtype=np.int64)[active],
    )


def _servegen_gaps(rng: np.random.Generator, w: _Windows) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, gaps per window): n + 1 gaps per window, n arrivals then the gap to its end."""
    gaps_per = w.counts + 1
    total = int(gaps_per.sum())
    sh = np.repeat(w.shape, gaps_per)
    sc = np.repeat(w.scale, gaps_per)
    g = np.repeat(w.is_gamma, gaps_per)
    iat = np.empty(total, dtype=np.float64)
    iat[g] = rng.gamma(sh[g], sc[g])  # scipy.stats.gamma(a=shape, scale=scale)
    iat[~g] = sc[~g] * rng.weibull(sh[~g])  # scipy.stats.weibull_min(c=shape, scale=scale)
    return iat, gaps_per


def _servegen_arrivals(iat: np.ndarray, gaps_per: np.ndarray, w: _Windows) -> tuple[np.ndarray, np.ndarray]:
    """(arrival times, client ids) sorted by time: each window's gaps rescaled to fill it."""
    total = iat.size
    first = np.concatenate([[0], np.cumsum(gaps_per)[:-1]])
    win_total = np.add.reduceat(iat, first)
    # normalise each window's gaps to sum to 1, so cumulative sums stay well-conditioned
    x = iat / np.repeat(np.where(win_total > 0, win_total, 1.0), gaps_per)
    cx = np.cumsum(x)
    base = np.concatenate([[0.0], cx])[first]
    frac = np.clip(cx - np.repeat(base, gaps_per), 0.0, 1.0)
    # a window whose gaps all underflowed to 0: spread its arrivals evenly instead
    flat = np.repeat(win_total <= 0, gaps_per)
    if flat.any():
        k = np.arange(total) - np.repeat(first, gaps_per) + 1
        frac[flat] = k[flat] / np.repeat(gaps_per, gaps_per)[flat]
    is_arrival = np.ones(total, dtype=bool)
    is_arrival[first + w.counts] = False  # drop each window's closing gap
    ws_rep = np.repeat(w.start_s, gaps_per)
    t = ws_rep + frac * SERVEGEN_WINDOW_S
    last_ok = np.nextafter(ws_rep + SERVEGEN_WINDOW_S, -np.inf)
    t = np.minimum(t, last_ok)[is_arrival]
    cl = np.repeat(w.client, w.counts)
    order = np.lexsort((cl, t))
    return t[order], cl[order]


def _read_servegen(path: Path, name: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, compression="infer", keep_default_na=True)
    except FileNotFoundError:
        raise TraceError(f"{name}: no such ServeGen rate file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise TraceError(f"{name}: expected a ServeGen rate CSV, got {exc}") from None
    missing = [c for c in _SERVEGEN_COLUMNS if c not in df.columns]
    if missing:
        raise TraceError(
            f"{name}:1: missing required column {missing[0]!r} (ServeGen rates need "
            f"{','.join(_SERVEGEN_COLUMNS)}); got columns: {','.join(map(str, df.columns))}"
        )
    for col in ("client_id", "window_start_s", "rate_rps"):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() | (vals < 0)
        if col == "client_id":
            bad |= vals != vals.round()
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            what = "an integer >= 0" if col == "client_id" else "a number >= 0"
            raise TraceError(f"{name}:{i + 2}: column {col!r} must be {what}, got {df[col].iloc[i]!r}")
        df[col] = vals
    for col in ("dist_param1", "dist_param2"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


GENERATORS: dict[str, Callable[..., Trace]] = {
    "poisson": poisson,
    "gamma": gamma_renewal,
    "diurnal": diurnal,
    "mmpp": mmpp,
    "servegen": servegen,
}
"""Synthetic generators by name; each takes keyword arguments and ``seed``."""
