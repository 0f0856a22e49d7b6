"""The fleet's pure decisions, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.errors import StoreError
from aggregator.fleet.plan import (
    DEFAULT_LEASE_SECONDS,
    FleetTiming,
    claim_size,
    fleet_timing,
    node_alive,
    node_id,
    slot_lease_seconds,
    slot_retry_delay,
)
from aggregator.index.pg_schema import STEPS, Step, check_steps, pending_steps

NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def test_the_heartbeat_is_a_quarter_of_the_lease_unless_configured() -> None:
    assert fleet_timing(120, None) == FleetTiming(lease=120, heartbeat=30)
    assert fleet_timing(120, 10) == FleetTiming(lease=120, heartbeat=10)


def test_a_configured_heartbeat_stays_below_half_the_lease() -> None:
    assert fleet_timing(60, 50).heartbeat == 30
    assert FleetTiming().lease == DEFAULT_LEASE_SECONDS


def test_a_lease_outlasts_one_polls_deadline() -> None:
    assert fleet_timing(30, None, deadline=60).lease == 70
    assert fleet_timing(120, None, deadline=60).lease == 120
    assert fleet_timing(30, None, deadline=60).heartbeat == 17.5


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ValueError):
        fleet_timing(0, None)


def test_node_ids_name_host_and_pid_and_stay_readable() -> None:
    assert node_id("web-1.example", 4242, "a1b2c3") == "web-1.example-4242-a1b2c3"
    assert node_id("my host/ü", 7, "00") == "my-host-7-00"
    assert node_id("", 7, "00") == "node-7-00"


def test_a_node_is_alive_until_its_heartbeat_is_a_lease_old() -> None:
    assert node_alive(NOW - timedelta(seconds=119), NOW, 120)
    assert not node_alive(NOW - timedelta(seconds=120), NOW, 120)


@pytest.mark.parametrize(
    ("capacity", "in_flight", "batch", "expected"),
    [(16, 0, 50, 16), (16, 10, 50, 6), (16, 16, 50, 0), (16, 20, 50, 0), (100, 0, 50, 50)],
)
def test_a_node_claims_no_more_than_it_can_start(
    capacity: int, in_flight: int, batch: int, expected: int
) -> None:
    assert claim_size(capacity, in_flight, batch) == expected


def test_a_host_slot_outlives_the_request_deadline() -> None:
    assert slot_lease_seconds(60) > 60


def test_migration_steps_are_numbered_without_gaps() -> None:
    check_steps(STEPS)
    with pytest.raises(ValueError, match="expected 2"):
        check_steps([Step(1, "a", ""), Step(3, "b", "")])


def test_pending_steps_refuse_a_newer_database() -> None:
    steps = [Step(1, "a", ""), Step(2, "b", "")]
    assert [step.version for step in pending_steps(0, steps)] == [1, 2]
    assert [step.version for step in pending_steps(1, steps)] == [2]
    assert pending_steps(2, steps) == []
    with pytest.raises(StoreError, match="newer than this program"):
        pending_steps(3, steps)


def test_a_busy_host_is_asked_again_sooner_than_a_second_and_never_past_the_deadline() -> None:
    assert [slot_retry_delay(n, 60) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert slot_retry_delay(50, 60) == 1.0
    assert slot_retry_delay(0, 0.01) is None
    assert slot_retry_delay(5, 0.5) is None
