"""Autoscaling rules against hand-computed sequences of the Kubernetes HPA algorithm."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servewise.errors import ConfigError
from servewise.policies import WARM_ROUTING, FixedReplicas, TargetInFlight, autoscale_rules, warm_instance


def hpa(**overrides) -> TargetInFlight:
    params = {"target": 10.0, "min_replicas": 1, "max_replicas": 20}
    params.update(overrides)
    return TargetInFlight(**params)


def test_registry():
    assert set(autoscale_rules.names()) >= {"target_in_flight", "fixed"}
    assert autoscale_rules.get("target_in_flight") is TargetInFlight


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window():
    rule = hpa(scale_down_stabilization_s=300.0)
    # (now_s, current, in_flight) -> wanted, computed by hand:
    assert rule.desired(0.0, 2, 50) == 5  # ceil(50/10) = 5 > 2: up at once
    assert rule.desired(15.0, 5, 52) == 5  # 52/50 = 1.04, inside the 10 % band
    assert rule.desired(30.0, 5, 10) == 5  # wants 1, but 5 was proposed at 0 and 15
    assert rule.desired(314.0, 5, 10) == 5  # (15, 5) is still inside (14, 314]
    assert rule.desired(315.0, 5, 10) == 1  # window (15, 315]: proposals 1, 1, 1
    assert rule.desired(330.0, 1, 10) == 1


def test_scale_down_goes_to_the_largest_recent_proposal():
    rule = hpa(scale_down_stabilization_s=60.0, tolerance=0.0)
    assert rule.desired(0.0, 8, 80) == 8
    assert rule.desired(20.0, 8, 60) == 8  # proposes 6; 8 from t=0 holds
    assert rule.desired(40.0, 8, 30) == 8  # proposes 3
    assert rule.desired(60.0, 8, 30) == 6  # (0, 8) left the window; max(6, 3, 3) = 6
    assert rule.desired(80.0, 6, 30) == 3  # max(3, 3, 3)


def test_scale_up_stabilization_takes_the_smallest_recent_proposal():
    rule = hpa(scale_up_stabilization_s=60.0, scale_down_stabilization_s=0.0)
    assert rule.desired(0.0, 2, 20) == 2  # on target
    assert rule.desired(30.0, 2, 50) == 2  # proposes 5, but 2 was proposed at 0
    assert rule.desired(60.0, 2, 50) == 5  # window (0, 60]: min(5, 5) = 5


def test_a_spike_inside_the_up_window_is_ignored():
    rule = hpa(scale_up_stabilization_s=60.0, scale_down_stabilization_s=0.0)
    assert rule.desired(0.0, 3, 30) == 3
    assert rule.desired(20.0, 3, 200) == 3  # spike: 20 proposed, min is 3
    assert rule.desired(40.0, 3, 30) == 3


@pytest.mark.parametrize(
    ("in_flight", "wanted"),
    [
        (43, 4),  # 43/40 = 1.075: inside the band, no change
        (37, 4),  # 0.925: inside
        (45, 5),  # 1.125: ceil(4.5) = 5
        (29, 3),  # 0.725: ceil(2.9) = 3
        (0, 1),  # nothing in flight: down to min_replicas
    ],
)
def test_tolerance_band(in_flight, wanted):
    rule = hpa(scale_down_stabilization_s=0.0)
    assert rule.desired(0.0, 4, in_flight) == wanted


def test_zero_tolerance_reacts_to_any_deviation():
    rule = hpa(scale_down_stabilization_s=0.0, tolerance=0.0)
    assert rule.desired(0.0, 4, 41) == 5


def test_clamped_to_min_and_max():
    rule = hpa(min_replicas=2, max_replicas=6, scale_down_stabilization_s=0.0)
    assert rule.desired(0.0, 3, 0) == 2
    assert rule.desired(1.0, 3, 1000) == 6
    assert rule.desired(2.0, 9, 90) == 6  # on target, but above max
    assert rule.desired(3.0, 1, 10) == 2  # on target, but below min


def test_current_zero():
    rule = hpa(min_replicas=0, scale_down_stabilization_s=300.0)
    assert rule.desired(0.0, 0, 25) == 3  # ceil(25/10), no ratio to take
    rule = hpa(min_replicas=0)
    assert rule.desired(0.0, 0, 0) == 0
    assert hpa(min_replicas=1).desired(0.0, 0, 0) == 1


def test_scale_to_zero_after_the_window():
    rule = hpa(min_replicas=0, scale_down_stabilization_s=100.0)
    assert rule.desired(0.0, 2, 20) == 2
    assert rule.desired(50.0, 2, 0) == 2
    assert rule.desired(100.0, 2, 0) == 0


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(0, 5),
    span=st.integers(0, 10),
    steps=st.lists(st.tuples(st.floats(0, 120), st.integers(0, 30), st.integers(0, 400)), max_size=40),
)
def test_answer_always_within_bounds_and_history_is_pruned(lo, span, steps):
    hi = max(lo + span, 1)
    rule = hpa(min_replicas=lo, max_replicas=hi, scale_down_stabilization_s=300.0)
    now_s = 0.0
    for dt, current, in_flight in steps:
        now_s += dt
        assert lo <= rule.desired(now_s, current, in_flight) <= hi
        assert all(t > now_s - 300.0 for t, _ in rule._history)


@settings(max_examples=200, deadline=None)
@given(current=st.integers(0, 50), in_flight=st.integers(0, 1000), tol=st.sampled_from([0, 0.1]))
def test_without_windows_it_is_the_plain_hpa_formula(current, in_flight, tol):
    rule = hpa(scale_down_stabilization_s=0.0, min_replicas=0, max_replicas=1000, tolerance=tol)
    ratio = in_flight / (current * 10.0) if current else None
    if ratio is not None and abs(ratio - 1.0) <= tol:
        expected = current
    else:
        expected = math.ceil(in_flight / 10.0)
    assert rule.desired(0.0, current, in_flight) == expected


def test_fixed_always_returns_its_count():
    rule = FixedReplicas(replicas=3)
    assert [rule.desired(t, c, f) for t, c, f in [(0, 0, 0), (1, 10, 999), (2, 3, 1)]] == [3] * 3


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fixed", {"replicas": 0}, "The 'replicas' parameter of fixed must be an int >= 1. Got 0"),
        (
            "target_in_flight",
            {"target": 0, "min_replicas": 0, "max_replicas": 1},
            "The 'target' parameter of target_in_flight must be a float > 0. Got 0 instead.",
        ),
        (
            "target_in_flight",
            {"target": 1, "min_replicas": 3, "max_replicas": 2},
            "'max_replicas' parameter of target_in_flight must be an int >= min_replicas (3)",
        ),
        (
            "target_in_flight",
            {"target": 1, "min_replicas": 0, "max_replicas": 0},
            "'max_replicas' parameter of target_in_flight must be an int >= 1",
        ),
        (
            "target_in_flight",
            {"target": 1, "min_replicas": -1, "max_replicas": 2},
            "'min_replicas' parameter",
        ),
        (
            "target_in_flight",
            {"target": 1, "min_replicas": 0, "max_replicas": 2, "scale_down_stabilization_s": -1},
            "'scale_down_stabilization_s' parameter",
        ),
        (
            "target_in_flight",
            {"target": 1, "min_replicas": 0, "max_replicas": 2, "tolerance": -0.1},
            "'tolerance' parameter",
        ),
    ],
)
def test_bad_params_raise_config_error(name, params, message):
    with pytest.raises(ConfigError) as err:
        autoscale_rules.get(name)(**params)
    assert message in str(err.value)


class _Inst:
    def __init__(self, id: int, launched_at: float, last_routed: float) -> None:
        self.id, self.launched_at, self.last_routed = id, launched_at, last_routed


def test_warm_instance_newest_most_recent_and_spread():
    free = [_Inst(0, 10.0, 50.0), _Inst(1, 30.0, 40.0), _Inst(2, 20.0, 60.0)]
    assert warm_instance("newest", free) == 1  # started last (SimFaaS's rule for AWS Lambda)
    assert warm_instance("most_recent", free) == 2  # sent a request last
    assert warm_instance("spread", free) is None  # the load balancer chooses
    assert warm_instance("newest", []) is None
    tie = [_Inst(4, 5.0, 5.0), _Inst(7, 5.0, 5.0)]
    assert warm_instance("newest", tie) == 1 and warm_instance("most_recent", tie) == 1  # the larger id
    assert WARM_ROUTING == ("newest", "most_recent", "spread")
