"""The timing loop and its statistics, on a simulated clock (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from servewise.profiler._timing import TimingSettings, latency_stats, measure, median_ci, stability


def test_median_ci_covers_the_true_median_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    true_median = np.exp(0.0)  # lognormal(0, 0.5) has median 1
    reps, hits = 2000, 0
    for _ in range(reps):
        lo, hi = median_ci(rng.lognormal(0.0, 0.5, 60))
        hits += lo <= true_median <= hi
    # Order-statistic intervals are conservative: coverage at least nominal, not far above.
    assert 0.93 <= hits / reps <= 0.99


def test_latency_stats_are_exact() -> None:
    x = [0.003, 0.001, 0.002, 0.010, 0.004]
    s = latency_stats(x, 0.05)
    assert s["p50"] == 0.003 and s["min"] == 0.001 and s["max"] == 0.010 and s["n"] == 5
    assert s["mean"] == pytest.approx(0.004)
    assert s["iqr"] == pytest.approx(0.004 - 0.002)
    assert s["cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    assert s["p99"] == pytest.approx(np.percentile(x, 99))


class _Durations:
    """A fake workload: each call 'takes' the next duration, reported as its own time."""

    def __init__(self, durations: list[float]) -> None:
        self.d = durations
        self.i = 0
        self.now = 0.0

    def run(self) -> float:
        v = self.d[min(self.i, len(self.d) - 1)]
        self.i += 1
        self.now += v
        return v

    def clock(self) -> float:
        return self.now


def test_stable_workload_stops_as_soon_as_the_ci_is_tight() -> None:
    rng = np.random.default_rng(1)
    w = _Durations(list(1e-3 * (1 + 0.01 * rng.standard_normal(5000))))
    m = measure(w.run, TimingSettings(budget_s=10.0, target_ci=0.02, warmup_s=0.0, min_time_s=0.0), clock=w.clock)
    assert m.stable and m.instability is None
    assert 10 <= len(m.samples_s) <= 20  # 1% noise reaches ±2% at the first check
    assert m.ci_rel <= 0.02


def test_min_time_keeps_sampling_after_the_ci_target_is_met() -> None:
    rng = np.random.default_rng(1)
    w = _Durations(list(1e-3 * (1 + 0.01 * rng.standard_normal(5000))))
    m = measure(w.run, TimingSettings(budget_s=10.0, target_ci=0.02, warmup_s=0.0, min_time_s=0.2), clock=w.clock)
    assert 195 <= len(m.samples_s) <= 260  # 0.2 s of 1 ms calls
    assert m.ci_rel < 0.005  # tighter than the target: more samples


def test_rounds_split_the_budgets_and_the_ci_covers_earlier_rounds() -> None:
    s = TimingSettings(budget_s=0.9, min_time_s=0.3, rounds=3, min_samples=10, max_samples=1000)
    r = s.round()
    assert (r.budget_s, r.min_time_s, r.min_samples, r.max_samples) == pytest.approx((0.3, 0.1, 4, 334))
    # A later round stops at once when the earlier rounds' samples already meet the target.
    w = _Durations([1e-3] * 100)
    m = measure(w.run, TimingSettings(warmup_s=0.0, min_time_s=0.0, min_samples=1), clock=w.clock, prior=[1e-3] * 50)
    assert len(m.samples_s) == 1 and m.ci_rel == 0.0


def test_a_point_whose_median_moves_between_rounds_is_unstable() -> None:
    ci, stable, why = stability([1e-3] * 30 + [1.2e-3] * 30, [1e-3, 1e-3, 1.2e-3], target_ci=0.5)
    assert not stable and why is not None and "moved 20% between rounds" in why
    ci, stable, why = stability([1e-3] * 60, [1e-3, 1.01e-3, 1e-3], target_ci=0.02)
    assert stable and why is None and ci == 0.0


def test_warmup_waits_for_a_slow_first_call() -> None:
    # A 'compilation' of 5 s, then fast calls: the first call never counts as a sample.
    w = _Durations([5.0, 2.0, 1e-3] + [1e-3] * 500)
    m = measure(w.run, TimingSettings(budget_s=1.0, warmup_s=0.0, min_time_s=0.0), clock=w.clock)
    assert max(m.samples_s) == pytest.approx(1e-3)
    assert m.warmup_calls >= 3


def test_noisy_workload_is_flagged_with_reason_and_remedy() -> None:
    rng = np.random.default_rng(2)
    w = _Durations(list(1e-3 * rng.choice([1.0, 3.0], 100000)))
    m = measure(w.run, TimingSettings(budget_s=0.05, target_ci=0.02, warmup_s=0.0, max_samples=40, min_time_s=0.0), clock=w.clock)
    assert not m.stable
    assert m.instability is not None and "CI of the median" in m.instability and "--budget-s" in m.instability


def test_drift_during_the_run_is_flagged() -> None:
    # Tight within each half, but the second half is 30% slower (throttling, other load).
    jitter = [1.0, 1.0001] * 25
    w = _Durations([1e-3] * 3 + [1e-3 * j for j in jitter] + [1.3e-3 * j for j in jitter])
    m = measure(w.run, TimingSettings(budget_s=100.0, target_ci=1e-9, warmup_s=0.0, max_samples=100, min_time_s=0.0), clock=w.clock)
    assert not m.stable and m.instability is not None and "moved 30%" in m.instability


def test_reset_runs_untimed_after_every_call() -> None:
    calls: list[str] = []
    w = _Durations([1e-3] * 1000)

    def run() -> float:
        calls.append("run")
        return w.run()

    def reset() -> None:
        calls.append("reset")
        w.now += 1.0  # a slow reset must not show up in the samples

    m = measure(run, TimingSettings(budget_s=1e9, warmup_s=0.0, max_samples=12, min_time_s=0.0), reset=reset, clock=w.clock)
    assert calls[:4] == ["run", "reset", "run", "reset"]
    assert max(m.samples_s) == pytest.approx(1e-3)
