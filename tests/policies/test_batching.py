"""Batching rules: exact decisions on hand-made queues, and invariants for every rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servewise.errors import ConfigError
from servewise.policies import BatchDecision, batching_rules


def make(name: str, **params: object):  # type: ignore[no-untyped-def]
    defaults = {"dynamic": {"max_batch_size": 4, "max_wait_s": 0.1}}[name]
    return batching_rules.get(name)(**{**defaults, **params})


def test_dynamic_full_batch_goes_at_once() -> None:
    rule = make("dynamic")
    assert rule.decide(4, 10.0, 10.0) == BatchDecision(4, None)
    assert rule.decide(9, 10.0, 10.0) == BatchDecision(4, None)  # never more than max


def test_dynamic_partial_batch_waits_for_the_oldest_deadline() -> None:
    rule = make("dynamic")
    assert rule.decide(2, 10.0, 10.05) == BatchDecision(0, pytest.approx(10.1))
    assert rule.decide(2, 10.0, 10.1) == BatchDecision(2, None)  # deadline reached: go with what waits
    assert rule.decide(3, 10.0, 11.0) == BatchDecision(3, None)


def test_dynamic_zero_wait_runs_what_is_queued() -> None:
    rule = make("dynamic", max_wait_s=0.0)
    assert rule.decide(1, 5.0, 5.0) == BatchDecision(1, None)


def test_empty_queue_does_nothing() -> None:
    assert make("dynamic").decide(0, 0.0, 1.0) == BatchDecision(0, None)


@pytest.mark.parametrize(("params", "needle"), [({"max_batch_size": 0}, "max_batch_size"), ({"max_wait_s": -1}, "max_wait_s")])
def test_bad_params_name_the_parameter(params: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make("dynamic", **params)


@pytest.mark.parametrize("name", batching_rules.names())
@settings(max_examples=200, deadline=None)
@given(
    queued=st.integers(0, 50),
    oldest=st.floats(0, 100, allow_nan=False),
    waited=st.floats(0, 5, allow_nan=False),
    size=st.integers(1, 16),
    wait=st.floats(0, 1, allow_nan=False),
)
def test_every_rule_takes_between_zero_and_max_and_wakes_in_the_future(
    name: str, queued: int, oldest: float, waited: float, size: int, wait: float
) -> None:
    rule = make(name, max_batch_size=size, max_wait_s=wait)
    now = oldest + waited
    take, wake = rule.decide(queued, oldest, now)
    assert 0 <= take <= min(queued, size)
    if take == 0 and queued > 0:
        assert wake is not None and wake > now  # a waiting request is never forgotten
    if take > 0:
        assert wake is None
