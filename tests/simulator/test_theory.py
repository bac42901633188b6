"""The simulator against queueing theory (STYLE.md practice 16).

Every expected number is computed in this file from a textbook closed form (the helpers
below cite their source); no number comes from an earlier run of the simulator.

Method. Each case runs ``R`` independent replications with fixed seeds (a different
trace seed and simulator seed per replication), deletes the warm-up with ``warmup_s``,
turns each replication into one estimate, and compares the mean of the ``R`` estimates
with theory::

    |mean - theory| <= max(Z * SE, floor)

``SE`` is the sample standard deviation of the ``R`` estimates over sqrt(R); ``Z = 4``.
With ``R`` mostly 16 (8 to 12 for cheap or floor-dominated checks) a correct simulator
exceeds 4 SE with probability ~1e-3 per check (Student t, R - 1 d.o.f.), so a change of
random streams rarely trips a check; fixed seeds make every run deterministic anyway.
One caveat shapes the run lengths: at high load a replication's mean wait is
right-skewed, and a sample that misses the rare long busy periods has both a low mean
and a small SE, so short replications make "4 SE" fragile on the low side. High-load
cases therefore use long replications (tens of thousands of requests per server).
``floor`` is a small relative (or absolute) allowance, stated per test: either a known
model bias (an approximation such as Che's or the mean-field limit of power-of-d, each
explained where used) or, for exact results, 1 % so that a lucky tiny SE cannot turn
rounding-level noise into a failure. Every check also asserts that ``Z * SE`` is below
``power`` × |theory| (10 % unless stated): a test too noisy to see a 10 % error fails
loudly instead of passing vacuously.

Heavier versions are marked ``slow`` (CI runs them; deselect locally with
``-m "not slow"``). Each check prints one ``[theory]`` line; ``pytest -rP`` shows them.

This folder deliberately has no ``__init__.py``: it would make ``tests/simulator`` a
package named ``simulator`` that shadows the real one at collection time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from servewise.config import parse_deployment
from servewise.simulator import SimResult, simulate
from servewise.trace import Trace, poisson

Z = 4.0
"""Standard errors allowed between the replication mean and theory."""

EXP1: dict[str, Any] = {"distribution": "exponential", "mean_s": 1.0}
"""Exponential service, mean 1 s (mu = 1/s)."""


# =========================================================================== theory


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of M/G/c/c with offered load ``a = lambda * E[S]`` Erlangs.

    Erlang's loss formula B(c, a) = (a^c / c!) / sum_{k<=c} a^k / k!, evaluated with the
    stable recursion B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)). Insensitive to the
    service distribution beyond its mean (Sevastyanov 1957). Ref: Gross, Shortle,
    Thompson & Harris, *Fundamentals of Queueing Theory*, 4th ed. (2008), Sec. 2.6
    (M/M/c/c); Kleinrock, *Queueing Systems* Vol. 1 (1975), Sec. 3.6.
    """
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load ``a < c`` Erlangs.

    C(c, a) = c B(c, a) / (c - a (1 - B(c, a))). Ref: Gross et al. (2008), Sec. 2.3
    (M/M/c); Kleinrock Vol. 1 (1975), Sec. 3.5.
    """
    assert a < c
    b = erlang_b(c, a)
    return c * b / (c - a * (1.0 - b))


def mmck_distribution(c: int, k: int, a: float) -> np.ndarray:
    """Stationary P(N = n), n = 0..k, of M/M/c/K (K = c + waiting room), ``a = lambda/mu``.

    p_n ∝ a^n / n! for n <= c and a^c / c! (a/c)^(n-c) for c < n <= K. By PASTA an
    arrival is blocked with probability p_K. Ref: Gross et al. (2008), Sec. 2.5.
    """
    w = np.empty(k + 1)
    for n in range(k + 1):
        if n <= c:
            w[n] = a**n / math.factorial(n)
        else:
            w[n] = a**c / math.factorial(c) * (a / c) ** (n - c)
    return w / w.sum()


def pk_mean_wait(lam: float, es: float, es2: float) -> float:
    """Pollaczek–Khinchine mean wait in M/G/1: Wq = lambda E[S^2] / (2 (1 - rho)).

    Ref: Kleinrock Vol. 1 (1975), Sec. 5.6, eq. for W; Gross et al. (2008), Sec. 5.1.1.
    """
    rho = lam * es
    assert rho < 1
    return lam * es2 / (2.0 * (1.0 - rho))


def gim1_sigma(lst: Callable[[float], float], mu: float) -> float:
    """The GI/M/1 root: the unique sigma in (0, 1) with sigma = A*(mu (1 - sigma)).

    ``lst`` is the Laplace–Stieltjes transform A*(s) of the inter-arrival time. An arrival
    finds the server busy with probability sigma, and the sojourn time is exponential
    with rate mu (1 - sigma): W = 1 / (mu (1 - sigma)). Ref: Kleinrock Vol. 1 (1975),
    Sec. 6.4 (the queue G/M/1); Gross et al. (2008), Sec. 6.3.
    """
    return brentq(lambda s: lst(mu * (1.0 - s)) - s, 0.0, 1.0 - 1e-9, xtol=1e-14)


def erlang_lst(n: int, rate: float) -> Callable[[float], float]:
    """LST of an Erlang-n inter-arrival time of mean ``1/rate``: (n rate / (n rate + s))^n."""
    return lambda s: (n * rate / (n * rate + s)) ** n


def supermarket_tail(lam: float, d: int, i: int) -> float:
    """Fraction of servers holding >= i jobs in the power-of-d supermarket model, n -> inf.

    s_i = lam^((d^i - 1) / (d - 1)) (per-server arrival rate ``lam``, mu = 1). Ref:
    Mitzenmacher, "The power of two choices in randomized load balancing", IEEE TPDS
    12(10), 2001; Vvedenskaya, Dobrushin & Karpelevich, Probl. Inf. Transm. 32(1), 1996.
    """
    return lam ** ((d**i - 1) / (d - 1))


def supermarket_sojourn(lam: float, d: int) -> float:
    """Mean sojourn of the power-of-d supermarket model (mu = 1), n -> inf.

    T = sum_{i>=1} s_i / lam = sum_{i>=1} lam^((d^i - d) / (d - 1)) (Little's law on the
    fixed point above). Ref: Mitzenmacher (2001), as for :func:`supermarket_tail`.
    """
    total, i = 0.0, 1
    while True:
        term = lam ** ((d**i - d) / (d - 1))
        total += term
        if term < 1e-16:
            return total
        i += 1


def zipf_popularity(n_keys: int, alpha: float) -> np.ndarray:
    """P(key of rank i) ∝ i^-alpha, i = 1..n_keys (the independent reference model)."""
    w = np.arange(1, n_keys + 1, dtype=float) ** -alpha
    return w / w.sum()


def che_hit_ratio(p: np.ndarray, capacity: int) -> float:
    """LRU hit ratio under the independent reference model, by Che's approximation.

    The characteristic time t_C solves sum_i (1 - exp(-p_i t_C)) = C; the hit ratio is
    sum_i p_i (1 - exp(-p_i t_C)) (time measured in requests). Ref: Che, Tung & Wang,
    IEEE JSAC 20(7), 2002; Fricker, Robert & Roberts, ITC 2012 (why it is accurate).
    """
    assert capacity < len(p)

    def filled(t: float) -> float:
        return float(np.sum(-np.expm1(-p * t))) - capacity

    hi = 1.0
    while filled(hi) < 0:
        hi *= 2.0
    t_c = brentq(filled, 0.0, hi, xtol=1e-12, rtol=1e-14)
    return float(np.sum(p * -np.expm1(-p * t_c)))


def alternating_renewal_availability(mtbf_s: float, mttr_s: float) -> float:
    """Long-run fraction of time up of an up/down alternating renewal process.

    E[up] / (E[up] + E[down]) = MTBF / (MTBF + MTTR), whatever the laws. Ref: Ross,
    *Stochastic Processes*, 2nd ed. (1996), Thm. 3.4.4.
    """
    return mtbf_s / (mtbf_s + mttr_s)


# =========================================================================== harness


def replicate(
    deployment: dict[str, Any],
    metrics: dict[str, Callable[[SimResult], float]],
    *,
    rate_rps: float,
    n_requests: int,
    warmup_s: float,
    reps: int,
    seed: int,
    zipf_keys: tuple[int, float] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``reps`` independent replications; each metric gives one value per replication.

    Replication k uses trace seed ``seed + k`` (Poisson arrivals), simulator seed
    ``seed + 50_000 + k`` and, with ``zipf_keys = (n_keys, alpha)``, key seed
    ``seed + 100_000 + k``: all streams independent, all fixed.
    """
    dep = parse_deployment(deployment)
    out: dict[str, list[float]] = {name: [] for name in metrics}
    for k in range(reps):
        trace = poisson(rate_rps=rate_rps, n_requests=n_requests, seed=seed + k)
        if zipf_keys is not None:
            trace = trace.with_zipf_keys(zipf_keys[0], zipf_keys[1], seed=seed + 100_000 + k)
        res = simulate(dep, trace, seed=seed + 50_000 + k, warmup_s=warmup_s)
        for name, fn in metrics.items():
            out[name].append(float(fn(res)))
    return {name: np.asarray(v, dtype=float) for name, v in out.items()}


def assert_agrees(
    label: str,
    values: np.ndarray,
    theory: float,
    *,
    rel: float = 0.01,
    abs_: float = 0.0,
    power: float = 0.10,
) -> None:
    """Replication mean within max(Z·SE, rel·|theory|, abs_) of ``theory``; see the module doc."""
    v = np.asarray(values, dtype=float)
    assert v.size >= 2 and np.all(np.isfinite(v)), f"{label}: need >= 2 finite replications, got {v}"
    mean = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(v.size))
    tol = max(Z * se, rel * abs(theory), abs_)
    print(
        f"[theory] {label}: theory={theory:.5g} sim={mean:.5g} se={se:.2g} "
        f"diff={mean - theory:+.3g} ({(mean - theory) / theory:+.2%}) tol={tol:.3g} reps={v.size}"
    )
    assert Z * se <= power * abs(theory), (
        f"{label}: replications too noisy to test: {Z:g}·SE = {Z * se:.3g} > {power:.0%} of theory "
        f"{theory:.5g}; add requests or replications"
    )
    assert abs(mean - theory) <= tol, (
        f"{label}: theory {theory:.6g}, simulated {mean:.6g} (SE {se:.3g} over {v.size} replications, "
        f"per replication {np.array2string(v, precision=4)}); |diff| = {abs(mean - theory):.3g} > "
        f"tolerance {tol:.3g}"
    )


def _counted(res: SimResult) -> pd.DataFrame:
    """Rows of requests that arrived after the warm-up."""
    q = res.requests
    return q[~q["warmup"].to_numpy(dtype=bool)]


def _served(res: SimResult) -> pd.DataFrame:
    """Counted requests completed on a replica (not rejected, failed or cache hits)."""
    q = _counted(res)
    return q[q["status"].to_numpy() == "completed"]


def mean_latency(res: SimResult) -> float:
    return res.summary.latency_s.mean


def mean_wait(res: SimResult) -> float:
    return res.summary.queue_s.mean


def p_wait(res: SimResult) -> float:
    """Fraction of served requests that waited at all (queue_s > 0)."""
    return float((_served(res)["queue_s"].to_numpy() > 0).mean())


def p_wait_longer(t_s: float) -> Callable[[SimResult], float]:
    return lambda res: float((_served(res)["queue_s"].to_numpy() > t_s).mean())


def latency_quantile(key: str) -> Callable[[SimResult], float]:
    return lambda res: getattr(res.summary.latency_s, key)


def utilisation(res: SimResult) -> float:
    return res.summary.utilisation


def rejection_ratio(res: SimResult) -> float:
    return res.summary.rejection_ratio


def single_server(service_time: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"replicas": 1, "concurrency": 1, "service_time": service_time, **extra}


# =========================================================================== the formulas themselves


def test_formulas_match_textbook_values() -> None:
    """The helpers reproduce published table values and reduce to known special cases."""
    assert erlang_b(5, 4.0) == pytest.approx(0.1991, abs=5e-5)  # Erlang B table
    assert erlang_b(10, 5.0) == pytest.approx(0.01838, abs=5e-6)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)  # M/M/2, a = 1: 2·(1/5)/(2 - 4/5) = 1/3
    # M/M/c/c is M/M/c/K with no waiting room
    assert mmck_distribution(5, 5, 4.0)[-1] == pytest.approx(erlang_b(5, 4.0))
    # M/M/1/K: p_n = (1 - rho) rho^n / (1 - rho^(K+1))
    rho, k = 0.9, 5
    assert mmck_distribution(1, k, rho) == pytest.approx([(1 - rho) * rho**n / (1 - rho ** (k + 1)) for n in range(k + 1)])
    # P-K with exponential service is M/M/1: rho/(mu - lambda)
    assert pk_mean_wait(0.8, 1.0, 2.0) == pytest.approx(0.8 / 0.2)
    # GI/M/1 with Poisson arrivals (Erlang-1) is M/M/1: sigma = rho
    assert gim1_sigma(erlang_lst(1, 0.8), 1.0) == pytest.approx(0.8)
    # supermarket: d = 2, lambda = 0.9 (Mitzenmacher 2001, Table 1 gives T ≈ 2.6 at 0.9)
    assert supermarket_tail(0.9, 2, 1) == pytest.approx(0.9)
    assert supermarket_sojourn(0.9, 2) == pytest.approx(1 + 0.9**2 + 0.9**6 + 0.9**14 + 0.9**30 + 0.9**62, rel=1e-4)
    # Che: uniform popularity, C of N keys -> hit ratio ~ C/N
    assert che_hit_ratio(zipf_popularity(1000, 0.0), 100) == pytest.approx(0.1, rel=1e-9)
    assert alternating_renewal_availability(100.0, 25.0) == pytest.approx(0.8)


# =========================================================================== 1. M/M/1


@pytest.mark.parametrize(
    ("rho", "n_requests", "reps"),
    [(0.5, 50_000, 16), (0.8, 150_000, 16)],
)
def test_mm1(rho: float, n_requests: int, reps: int) -> None:
    """M/M/1: sojourn ~ Exp(mu - lambda); Wq = rho/(mu - lambda); P(wait) = U = rho.

    The sojourn-time CDF is 1 - exp(-(mu - lambda) y), so its q-quantile is
    -ln(1 - q)/(mu - lambda). Ref: Kleinrock Vol. 1 (1975), Sec. 3.2; Gross et al. (2008),
    Sec. 2.2 (M/M/1 waiting-time distributions). Exact results: 1 % floor.
    """
    mu = 1.0
    lam = rho * mu
    m = replicate(
        single_server(EXP1),
        {
            "sojourn": mean_latency,
            "wait": mean_wait,
            "p_wait": p_wait,
            "util": utilisation,
            "p50": latency_quantile("p50"),
            "p95": latency_quantile("p95"),
        },
        rate_rps=lam,
        n_requests=n_requests,
        warmup_s=1_000.0,
        reps=reps,
        seed=1_000,
    )
    case = f"M/M/1 rho={rho}"
    assert_agrees(f"{case} mean sojourn 1/(mu-lambda)", m["sojourn"], 1 / (mu - lam))
    assert_agrees(f"{case} mean wait rho/(mu-lambda)", m["wait"], rho / (mu - lam))
    assert_agrees(f"{case} P(wait>0) = rho", m["p_wait"], rho)
    assert_agrees(f"{case} utilisation = rho", m["util"], rho)
    assert_agrees(f"{case} sojourn p50 = ln2/(mu-lambda)", m["p50"], math.log(2) / (mu - lam))
    assert_agrees(f"{case} sojourn p95 = ln20/(mu-lambda)", m["p95"], -math.log(0.05) / (mu - lam))


# =========================================================================== 2. M/M/c


@pytest.mark.parametrize("rho", [0.7, 0.9])
def test_mmc_erlang_c(rho: float) -> None:
    """M/M/c as one replica with ``concurrency: c`` (c = 4, mu = 1).

    P(wait) = C(c, a); Wq = C / (c mu - lambda); the wait of a waiting request is
    Exp(c mu - lambda), so P(Wq > t) = C exp(-(c mu - lambda) t). Ref: Gross et al.
    (2008), Sec. 2.3. Exact results: 1 % floor.
    """
    c, mu = 4, 1.0
    lam = rho * c * mu
    a = lam / mu
    C = erlang_c(c, a)
    m = replicate(
        {"replicas": 1, "concurrency": c, "service_time": EXP1},
        {"sojourn": mean_latency, "wait": mean_wait, "p_wait": p_wait, "p_wait_1s": p_wait_longer(1.0), "util": utilisation},
        rate_rps=lam,
        n_requests=150_000 if rho >= 0.9 else 75_000,
        warmup_s=1_000.0,
        reps=16,
        seed=2_000,
    )
    case = f"M/M/{c} rho={rho}"
    assert_agrees(f"{case} P(wait>0) = Erlang C", m["p_wait"], C)
    assert_agrees(f"{case} mean wait C/(c mu - lambda)", m["wait"], C / (c * mu - lam))
    assert_agrees(f"{case} P(wait>1s) = C e^-(c mu-lambda)", m["p_wait_1s"], C * math.exp(-(c * mu - lam)))
    assert_agrees(f"{case} mean sojourn", m["sojourn"], C / (c * mu - lam) + 1 / mu)
    assert_agrees(f"{case} utilisation", m["util"], rho)


# =========================================================================== 3. M/G/1


# (label, service_time, E[S], E[S^2]) — E[S^2] from the distribution's definition:
#   deterministic m: m^2; uniform(a, b): (a^2 + ab + b^2)/3;
#   lognormal / hyperexponential with mean m and CV c: Var = (c m)^2, E[S^2] = m^2 (1 + c^2).
_MG1_LIGHT = [
    ("M/D/1", {"distribution": "deterministic", "mean_s": 1.0}, 1.0, 1.0),
    ("M/U/1 U(0,2)", {"distribution": "uniform", "low_s": 0.0, "high_s": 2.0}, 1.0, 4.0 / 3.0),
    ("M/U/1 U(0.5,1.5)", {"distribution": "uniform", "low_s": 0.5, "high_s": 1.5}, 1.0, (0.25 + 0.75 + 2.25) / 3),
]
_MG1_HEAVY = [
    ("M/LN/1 cv=2", {"distribution": "lognormal", "mean_s": 1.0, "cv": 2.0}, 1.0, 5.0),
    ("M/H2/1 cv=3", {"distribution": "hyperexponential", "mean_s": 1.0, "cv": 3.0}, 1.0, 10.0),
]


def _check_mg1(label: str, service: dict[str, Any], es: float, es2: float, *, rho: float, n: int, reps: int, rel: float, seed: int) -> None:
    lam = rho / es
    m = replicate(
        single_server(service),
        {"wait": mean_wait, "sojourn": mean_latency, "p_wait": p_wait},
        rate_rps=lam,
        n_requests=n,
        warmup_s=1_000.0,
        reps=reps,
        seed=seed,
    )
    wq = pk_mean_wait(lam, es, es2)
    case = f"{label} rho={rho}"
    assert_agrees(f"{case} P-K mean wait", m["wait"], wq, rel=rel)
    assert_agrees(f"{case} mean sojourn Wq + E[S]", m["sojourn"], wq + es, rel=rel)
    assert_agrees(f"{case} P(wait>0) = rho", m["p_wait"], rho)


@pytest.mark.parametrize(("label", "service", "es", "es2"), _MG1_LIGHT, ids=[c[0] for c in _MG1_LIGHT])
def test_mg1_pollaczek_khinchine(label: str, service: dict[str, Any], es: float, es2: float) -> None:
    """M/G/1 with light-tailed service at rho = 0.7: Wq = lambda E[S^2]/(2(1-rho)). 1 % floor."""
    _check_mg1(label, service, es, es2, rho=0.7, n=75_000, reps=16, rel=0.01, seed=3_000)


@pytest.mark.parametrize(("label", "service", "es", "es2"), _MG1_HEAVY, ids=[c[0] for c in _MG1_HEAVY])
def test_mg1_pollaczek_khinchine_heavy(label: str, service: dict[str, Any], es: float, es2: float) -> None:
    """M/G/1, high-variance service at rho = 0.5 (16 x 200k requests).

    The per-replication mean wait is right-skewed (it is driven by rare very long
    services), so its mean converges slowly and a replication set typically lands a
    little *below* P-K; SE over 16 replications captures this. Floor 3 %.
    """
    _check_mg1(label, service, es, es2, rho=0.5, n=200_000, reps=16, rel=0.03, seed=3_100)


@pytest.mark.slow
@pytest.mark.parametrize(("label", "service", "es", "es2"), _MG1_HEAVY, ids=[c[0] for c in _MG1_HEAVY])
def test_mg1_pollaczek_khinchine_heavy_high_load(label: str, service: dict[str, Any], es: float, es2: float) -> None:
    """As above at rho = 0.7, where the wait's variance is ~4x larger: 16 x 800k requests, floor 3 %."""
    _check_mg1(label, service, es, es2, rho=0.7, n=800_000, reps=16, rel=0.03, seed=3_200)


# =========================================================================== 4. loss and finite queues


@pytest.mark.parametrize(
    ("label", "service"),
    [
        ("exponential", EXP1),
        ("deterministic", {"distribution": "deterministic", "mean_s": 1.0}),
        ("lognormal cv=2", {"distribution": "lognormal", "mean_s": 1.0, "cv": 2.0}),
    ],
)
def test_erlang_b_loss_system(label: str, service: dict[str, Any]) -> None:
    """M/G/c/c (``queue.capacity: 0``), c = 5, offered 4 Erlangs: rejection = B(5, 4) ≈ 0.1991.

    Erlang B is insensitive to the service law beyond its mean (Sevastyanov 1957), so it
    holds for every service distribution here. Exact: 1 % floor.
    """
    c, a = 5, 4.0
    m = replicate(
        {"replicas": 1, "concurrency": c, "service_time": service, "queue": {"capacity": 0}},
        {"blocked": rejection_ratio, "p_wait": p_wait, "sojourn": mean_latency},
        rate_rps=a,
        n_requests=50_000,
        warmup_s=100.0,
        reps=12,
        seed=4_000,
    )
    assert_agrees(f"M/G/{c}/{c} {label} a={a} rejection_ratio = Erlang B", m["blocked"], erlang_b(c, a))
    assert np.all(m["p_wait"] == 0.0), f"a loss system never queues, got P(wait>0) = {m['p_wait']}"
    # admitted requests are not selected by their size: mean latency = E[S]
    assert_agrees(f"M/G/{c}/{c} {label} admitted mean sojourn = E[S]", m["sojourn"], 1.0, rel=0.02)


@pytest.mark.parametrize(
    ("c", "k", "a"),
    [(1, 5, 0.9), (3, 6, 3.0), (2, 4, 1.5)],
    ids=["M/M/1/5", "M/M/3/6", "M/M/2/4"],
)
def test_mmck_blocking(c: int, k: int, a: float) -> None:
    """M/M/c/K with ``concurrency: c`` and ``queue.capacity: K - c``.

    Blocking = p_K of the stationary distribution (PASTA); admitted mean sojourn by
    Little's law = L / (lambda (1 - p_K)). Ref: Gross et al. (2008), Sec. 2.5. Exact: 1 % floor.
    """
    mu = 1.0
    lam = a * mu
    p = mmck_distribution(c, k, a)
    L = float(np.dot(np.arange(k + 1), p))
    m = replicate(
        {"replicas": 1, "concurrency": c, "service_time": EXP1, "queue": {"capacity": k - c}},
        {"blocked": rejection_ratio, "sojourn": mean_latency},
        rate_rps=lam,
        n_requests=75_000,
        warmup_s=100.0,
        reps=12,
        seed=4_100,
    )
    case = f"M/M/{c}/{k} a={a}"
    assert_agrees(f"{case} rejection_ratio = p_K", m["blocked"], float(p[-1]))
    assert_agrees(f"{case} admitted mean sojourn = L/(lambda(1-p_K))", m["sojourn"], L / (lam * (1 - p[-1])))


# =========================================================================== 5. splitting


def test_random_split_is_independent_mm1_queues() -> None:
    """n = 4 replicas, ``random`` balancer: Poisson thinning gives 4 independent M/M/1 with
    lambda/n each (rho = 0.7): T = 1/(mu - lambda/n) = 3.33 s, P(wait) = U = 0.7. Exact: 1 %."""
    n, mu, rho = 4, 1.0, 0.7
    lam = n * rho * mu
    m = replicate(
        {"replicas": n, "concurrency": 1, "service_time": EXP1, "balancer": {"policy": "random"}},
        {"sojourn": mean_latency, "p_wait": p_wait, "util": utilisation},
        rate_rps=lam,
        n_requests=100_000,
        warmup_s=500.0,
        reps=16,
        seed=5_000,
    )
    assert_agrees("random split n=4 rho=0.7 mean sojourn", m["sojourn"], 1 / (mu - lam / n))
    assert_agrees("random split n=4 rho=0.7 P(wait>0)", m["p_wait"], rho)
    assert_agrees("random split n=4 rho=0.7 utilisation", m["util"], rho)


@pytest.mark.parametrize("policy", ["round_robin", "weighted"])
def test_round_robin_is_erlang_n_over_m_over_1(policy: str) -> None:
    """n = 4 replicas served in strict rotation (``round_robin``; ``weighted`` with equal
    weights is the same rotation): each replica sees every 4th Poisson arrival, i.e.
    Erlang-4 inter-arrivals of rate lambda/4, so each is an E4/M/1 queue.

    GI/M/1 (Kleinrock Vol. 1, Sec. 6.4): sigma = A*(mu(1 - sigma)) with
    A*(s) = (4 lambda'/(4 lambda' + s))^4; W = 1/(mu(1 - sigma)), P(wait) = sigma.
    At rho = 0.7: sigma ≈ 0.5529, W ≈ 2.237 s vs 3.333 s for random splitting. Exact: 1 %.
    """
    n, mu, rho = 4, 1.0, 0.7
    lam = n * rho * mu
    sigma = gim1_sigma(erlang_lst(n, lam / n), mu)
    m = replicate(
        {"replicas": n, "concurrency": 1, "service_time": EXP1, "balancer": {"policy": policy}},
        {"sojourn": mean_latency, "p_wait": p_wait, "wait": mean_wait},
        rate_rps=lam,
        n_requests=100_000,
        warmup_s=500.0,
        reps=16,
        seed=5_100 if policy == "round_robin" else 5_200,
    )
    case = f"{policy} n=4 rho=0.7 (E4/M/1)"
    assert_agrees(f"{case} mean sojourn 1/(mu(1-sigma))", m["sojourn"], 1 / (mu * (1 - sigma)))
    assert_agrees(f"{case} P(wait>0) = sigma", m["p_wait"], sigma)
    assert_agrees(f"{case} mean wait sigma/(mu(1-sigma))", m["wait"], sigma / (mu * (1 - sigma)))
    # round robin clearly beats random splitting (M/M/1 per replica: 3.33 s; theory ratio 0.67)
    t_random = 1 / (mu - lam / n)
    assert m["sojourn"].mean() < 0.8 * t_random, f"{case}: round robin should clearly beat random ({t_random:.3g} s)"


# =========================================================================== 6. power of d choices


def _check_p2c(lam: float, *, n_requests: int, reps: int, seed: int) -> None:
    """Power-of-2 choices over 100 replicas vs the supermarket model's fixed point.

    The fixed point is the n -> inf (mean-field) limit; for finite n the error is O(1/n)
    (Gast, "Expected values estimated via mean-field approximation are 1/N-accurate",
    SIGMETRICS 2017), and the finite system is slightly *worse* than the limit (the d
    sampled queues are not quite independent). At n = 100 that is ~1-3 % here; the floor
    is 5 % of theory for the sojourn and 5 % for P(wait) = s_1^d = lambda^2.
    """
    n_srv, d = 100, 2
    base = {"replicas": n_srv, "concurrency": 1, "service_time": EXP1}

    def run(balancer: dict[str, Any], metrics: dict[str, Callable[[SimResult], float]], seed: int) -> dict[str, np.ndarray]:
        return replicate(
            {**base, "balancer": balancer},
            metrics,
            rate_rps=lam * n_srv,
            n_requests=n_requests,
            warmup_s=200.0,
            reps=reps,
            seed=seed,
        )

    m = run({"policy": "p2c", "d": d}, {"sojourn": mean_latency, "p_wait": p_wait}, seed)
    r = run({"policy": "random"}, {"sojourn": mean_latency}, seed + 500)
    case = f"p2c d=2 n=100 lambda={lam}"
    assert_agrees(f"{case} mean sojourn (supermarket T)", m["sojourn"], supermarket_sojourn(lam, d), rel=0.05)
    assert_agrees(f"{case} P(wait>0) = lambda^d", m["p_wait"], supermarket_tail(lam, d, 1) ** d, rel=0.05)
    assert_agrees(f"random n=100 lambda={lam} mean sojourn (M/M/1)", r["sojourn"], 1 / (1 - lam), rel=0.02)
    # p2c beats random clearly: theory ratio T_p2c / T_random = 0.53 (0.7), 0.26 (0.9)
    ratio = m["sojourn"].mean() / r["sojourn"].mean()
    assert ratio < 0.7, f"{case}: p2c should clearly beat random, got T_p2c/T_random = {ratio:.3f}"


def test_power_of_two_choices_supermarket() -> None:
    _check_p2c(0.7, n_requests=100_000, reps=8, seed=6_000)


@pytest.mark.slow
def test_power_of_two_choices_supermarket_high_load() -> None:
    _check_p2c(0.9, n_requests=300_000, reps=12, seed=6_100)


# =========================================================================== 7. serverless keep-alive


@pytest.mark.parametrize("lam_t", [0.5, 1.0, 2.0])
def test_serverless_cold_start_probability(lam_t: float) -> None:
    """One serverless instance (max_replicas 1) with keep-alive T = 1 s, Poisson lambda.

    With a deterministic service s and cold start x both tiny (1e-4 s), the instance is
    still alive at the next arrival iff the gap is < s + T, so each request is cold with
    probability exp(-lambda (T + s)) (the gaps are i.i.d. Exp(lambda)). Neglected: arrivals
    during a cold start or a service, and the extra x after a cold request; both change
    the probability by O(lambda (x + s)) <= 4e-4. Floor 1 %.
    """
    keep_s, svc_s, cold_s = 1.0, 1e-4, 1e-4
    lam = lam_t / keep_s
    dep = {
        "replicas": 0,
        "concurrency": 1,
        "service_time": {"distribution": "deterministic", "mean_s": svc_s},
        "scaling": {"mode": "serverless", "max_replicas": 1, "keep_alive_s": keep_s, "cold_start_s": cold_s},
    }
    m = replicate(
        dep,
        {
            "p_cold": lambda r: r.summary.cold_start_requests / r.summary.requests,
            "served": lambda r: r.summary.completed / r.summary.requests,
        },
        rate_rps=lam,
        n_requests=20_000,
        warmup_s=10.0,
        reps=8,
        seed=7_000,
    )
    assert_agrees(f"serverless lambda*T={lam_t} P(cold) = exp(-lambda(T+s))", m["p_cold"], math.exp(-lam * (keep_s + svc_s)))
    assert np.all(m["served"] == 1.0)


# =========================================================================== 8. LRU cache


@pytest.mark.parametrize("alpha", [0.8, 1.2])
@pytest.mark.parametrize("capacity", [50, 200])
def test_lru_hit_ratio_che_approximation(alpha: float, capacity: int) -> None:
    """LRU cache (capacity C) under i.i.d. Zipf(alpha) keys over N = 1000, vs Che.

    The service time is 1 µs at 1 request/s, so a miss is filled before the next lookup
    (the IRM model). The hit ratio is measured after the warm-up (cache hits / counted
    requests). Che's approximation is within ~1 point of exact LRU for N = 1000 (Fricker
    et al. 2012); floor 2 percentage points.
    """
    n_keys = 1000
    theory = che_hit_ratio(zipf_popularity(n_keys, alpha), capacity)
    dep = {
        "replicas": 1,
        "concurrency": 1,
        "service_time": {"distribution": "deterministic", "mean_s": 1e-6},
        "cache": {"policy": "lru", "capacity": capacity},
    }
    m = replicate(
        dep,
        {"hit": lambda r: r.summary.cache_hits / r.summary.requests},
        rate_rps=1.0,
        n_requests=30_000,
        warmup_s=5_000.0,
        reps=8,
        seed=8_000,
        zipf_keys=(n_keys, alpha),
    )
    assert_agrees(f"LRU N={n_keys} alpha={alpha} C={capacity} hit ratio (Che)", m["hit"], theory, rel=0.0, abs_=0.02)


# =========================================================================== 9. failures


@pytest.mark.parametrize("repair", ["exponential", "deterministic"])
def test_availability_alternating_renewal(repair: str) -> None:
    """5 replicas fail after Exp(MTBF = 100 s) up-times and repair in MTTR = 25 s
    (exponential or fixed): availability = MTBF/(MTBF + MTTR) = 0.8 whatever the repair
    law. Low load (0.5 req/s, 0.1 s services), 20 000 s per replication: ~800 failure
    cycles per replication. Exact in the long run: 1 % floor.
    """
    mtbf, mttr = 100.0, 25.0
    dep = {
        "replicas": 5,
        "concurrency": 4,
        "service_time": {"distribution": "exponential", "mean_s": 0.1},
        "balancer": {"policy": "round_robin"},
        "faults": {"mtbf_s": mtbf, "mttr_s": mttr, "repair": repair},
    }
    m = replicate(
        dep,
        {"avail": lambda r: r.summary.availability},
        rate_rps=0.5,
        n_requests=10_000,
        warmup_s=0.0,
        reps=12,
        seed=9_000,
    )
    assert_agrees(f"availability 5 replicas MTBF={mtbf:g} MTTR={mttr:g} {repair} repair", m["avail"], alternating_renewal_availability(mtbf, mttr))


# =========================================================================== 10. infinite server


def _in_system_at_arrival(res: SimResult) -> np.ndarray:
    """For each counted request: requests in the system just before it arrived."""
    q = res.requests
    arr = q["arrival_s"].to_numpy()
    end = np.sort(q["end_s"].to_numpy())
    idx = np.arange(arr.size)
    n = idx - np.searchsorted(end, arr, side="right")  # arrived before minus ended by then
    return n[~q["warmup"].to_numpy(dtype=bool)]


@pytest.mark.parametrize(
    ("label", "service"),
    [
        ("M/M/inf", EXP1),
        ("M/H2/inf cv=3", {"distribution": "hyperexponential", "mean_s": 1.0, "cv": 3.0}),
    ],
)
def test_infinite_server(label: str, service: dict[str, Any]) -> None:
    """M/G/inf via 2 replicas x concurrency 100 at 10 req/s, E[S] = 1 s.

    No request ever waits (P(wait) = 0 exactly: 100 busy slots on a replica has
    probability ~1e-60 under Poisson(5)); latency = service, so its mean is E[S]; and
    the number in system seen by an arrival is Poisson(lambda E[S]) = Poisson(10)
    (PASTA + M/G/inf insensitivity, Gross et al. 2008 Sec. 2.7 / Takács 1962): mean 10,
    variance 10, P(0) = e^-10. Exact: 1 % floor (2 % for the H2 mean, whose per-request
    variance is 10x).
    """
    lam = 10.0
    m = replicate(
        {"replicas": 2, "concurrency": 100, "service_time": service, "balancer": {"policy": "random"}},
        {
            "sojourn": mean_latency,
            "max_wait": lambda r: float(np.nanmax(_served(r)["queue_s"].to_numpy())),
            "n_mean": lambda r: float(_in_system_at_arrival(r).mean()),
            "n_var": lambda r: float(_in_system_at_arrival(r).var(ddof=1)),
        },
        rate_rps=lam,
        n_requests=60_000,
        warmup_s=100.0,
        reps=12,
        seed=10_000,
    )
    assert np.all(m["max_wait"] == 0.0), f"{label}: someone waited: max queue_s per replication {m['max_wait']}"
    assert_agrees(f"{label} mean latency = E[S]", m["sojourn"], 1.0, rel=0.02)
    assert_agrees(f"{label} E[N at arrival] = lambda E[S]", m["n_mean"], lam)
    assert_agrees(f"{label} Var[N at arrival] = lambda E[S] (Poisson)", m["n_var"], lam, rel=0.02)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=1, max_size=60),
    service_s=st.floats(min_value=1e-3, max_value=10.0),
)
def test_infinite_server_invariant(gaps: list[float], service_s: float) -> None:
    """With at least as many slots as requests nobody waits and latency = service exactly."""
    arrival = np.cumsum(gaps)
    n = arrival.size
    trace = Trace(
        arrival_s=arrival,
        input_tokens=np.zeros(n, dtype=np.int64),
        output_tokens=np.zeros(n, dtype=np.int64),
        source="hypothesis",
    )
    dep = parse_deployment({"replicas": 1, "concurrency": n, "service_time": {"distribution": "deterministic", "mean_s": service_s}})
    q = simulate(dep, trace, seed=0).requests
    assert (q["status"] == "completed").all()
    assert (q["queue_s"].to_numpy() == 0.0).all()
    np.testing.assert_allclose(q["latency_s"].to_numpy(), service_s, rtol=1e-12, atol=1e-12)
