"""The suite relies on ``--dist loadgroup`` keeping an ``xdist_group`` on one worker: module
fixtures that profile a model run once, and the "serving" tests do not start servers side
by side. pytest 9.2 silently broke that with pytest-xdist 3.8 (the group suffix on a
test's id was dropped, so groups were spread over the workers); this fails if it happens
again."""

from __future__ import annotations

import os

import pytest


@pytest.mark.xdist_group("selfcheck")
def test_a_grouped_test_carries_its_group_under_xdist(request: pytest.FixtureRequest) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("not under pytest-xdist: there are no workers to group tests on")
    assert request.config.getoption("dist") == "no"  # a worker runs what it is sent
    assert request.config.option.loadgroup, "the suite must run with --dist loadgroup (pyproject addopts)"
    assert request.node.nodeid.endswith("@selfcheck"), (
        f"pytest-xdist did not tag {request.node.nodeid!r} with its group: xdist_group is not honoured "
        "(pytest 9.2 with pytest-xdist 3.8 does this; see the pin in pyproject.toml)"
    )
