"""/readyz: each reason to be not ready, and ready again once it clears."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka import TopicPartition

from detector.health import HealthState

OVERDUE_S = 30.1


def ready_state() -> HealthState:
    state = HealthState(stale_after_s=60, commit_overdue_s=OVERDUE_S)
    state.model_version = "v1"
    state.connected = True
    state.reason = "connected"
    state.partitions = 3
    return state


def test_a_connected_replica_with_a_model_and_partitions_is_ready() -> None:
    ok, why = ready_state().ready()
    assert ok and why == "model v1, 3 partitions"


@pytest.mark.parametrize(
    ("attribute", "bad", "message"),
    [
        ("model_version", None, "no model loaded"),
        ("connected", False, "not connected to Kafka"),
        ("broker_problem", "no group coordinator reachable", "Kafka unreachable: no group"),
        ("partitions", 0, "no partitions assigned"),
        ("held", {TopicPartition("t", 2): "records from offset 7 cannot be decoded"}, "t-2 held"),
    ],
)
def test_each_condition_makes_it_not_ready_and_clearing_it_makes_it_ready(
    attribute: str, bad: Any, message: str
) -> None:
    # Given a ready replica
    state = ready_state()
    good = getattr(state, attribute)
    # When one condition goes bad, Then it is not ready and says which
    setattr(state, attribute, bad)
    ok, why = state.ready()
    assert not ok and message in why
    # When it clears, Then it is ready again
    setattr(state, attribute, good)
    assert state.ready()[0]


def test_work_uncommitted_past_the_overdue_limit_is_not_ready_until_committed() -> None:
    # Given a ready replica whose oldest uncommitted work is younger than the limit
    state = ready_state()
    state.uncommitted_since = time.monotonic() - (OVERDUE_S - 5)
    assert state.ready()[0]
    # When that work has waited longer than the limit
    state.uncommitted_since = time.monotonic() - (OVERDUE_S + 5)
    # Then it is not ready and says how long
    ok, why = state.ready()
    assert not ok and "commit overdue" in why and f"> {OVERDUE_S:.1f} s" in why
    # When it is committed (nothing uncommitted, or only fresh work), Then ready again
    state.uncommitted_since = None
    assert state.ready()[0]
    state.uncommitted_since = time.monotonic()
    assert state.ready()[0]


def test_the_overdue_check_needs_no_update_from_a_stuck_loop() -> None:
    # Given work processed just now and a 0.2 s limit, and nobody updates the state
    state = ready_state()
    state.commit_overdue_s = 0.2
    state.uncommitted_since = time.monotonic()
    assert state.ready()[0]
    # When the probe asks again later, Then the age alone turns it not ready
    time.sleep(0.3)
    assert not state.ready()[0]
