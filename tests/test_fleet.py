"""Fleet coordination against a real PostgreSQL server: leases, host slots, waits, the build lock.

Expiry is tested with explicit ``now`` values (the functions take one; None is the database's
clock), so no test waits for a lease to run out.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from support.helpers import wait_for

from aggregator.errors import StoreError
from aggregator.index.fleet import hosts, leases, nodes
from aggregator.index.fleet.buildlock import build_lock
from aggregator.index.pg_schema import STEPS, Step, latest_version, migrate, schema_version

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)
Connect = Callable[[], psycopg.Connection[Any]]


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


@pytest.fixture
def connect(postgres_url: str) -> Iterator[Connect]:
    """Open connections to a migrated database; all closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def open_one() -> psycopg.Connection[Any]:
        conn = psycopg.connect(postgres_url, autocommit=True)
        opened.append(conn)
        return conn

    migrate(open_one())
    yield open_one
    for conn in opened:
        conn.close()


def names(count: int) -> list[str]:
    return [f"source-{i:04d}" for i in range(count)]


# Migrations


def test_migrate_creates_the_fleet_tables_once(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert schema_version(conn) == 0
        assert migrate(conn) == latest_version()
        assert migrate(conn) == latest_version()
        tables = {
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {
        "aggregator_meta",
        "fleet_nodes",
        "fleet_sources",
        "fleet_host_slots",
        "fleet_host_waits",
    } <= tables


def test_nodes_starting_at_once_migrate_once(postgres_url: str) -> None:
    def start() -> int:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            return migrate(conn)

    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(lambda _: start(), range(6)))
    assert versions == [latest_version()] * 6


def test_a_later_step_applies_on_top_and_a_newer_database_is_refused(postgres_url: str) -> None:
    later = (*STEPS, Step(len(STEPS) + 1, "a later table", "CREATE TABLE later_things (id int)"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        migrate(conn)
        assert migrate(conn, later) == len(later)
        assert conn.execute("SELECT to_regclass('later_things') IS NOT NULL").fetchone() == (True,)
        with pytest.raises(StoreError, match="newer than this program"):
            migrate(conn)


def test_a_failing_step_leaves_the_previous_version(postgres_url: str) -> None:
    broken = (*STEPS, Step(len(STEPS) + 1, "broken", "CREATE TABLE half (id int); SELECT no_such_function()"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(StoreError, match="migration"):
            migrate(conn, broken)
        assert schema_version(conn) == len(STEPS)
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)


# Source leases


def test_concurrent_claimers_never_lease_a_source_twice_and_skip_none(connect: Connect) -> None:
    sources = names(200)
    leases.register_sources(connect(), sources, due=seconds(0))
    claimers = 8
    for round_start in (seconds(0), seconds(600)):
        start = threading.Barrier(claimers)

        def claim_all(index: int, now: datetime = round_start, start: threading.Barrier = start) -> list[str]:
            conn = connect()
            node = f"node-{index}"
            start.wait(timeout=30)
            mine: list[str] = []
            while batch := leases.claim(conn, node, 7, LEASE, now=now):
                mine += [lease.source for lease in batch]
            for source in mine:
                assert leases.complete(conn, node, source, now + timedelta(seconds=600), now=now)
            return mine

        with ThreadPoolExecutor(claimers) as pool:
            claimed = [source for mine in pool.map(claim_all, range(claimers)) for source in mine]
        counts = Counter(claimed)
        assert sorted(counts) == sources, "every source leased in the round"
        assert max(counts.values()) == 1, f"leased twice: {[s for s, n in counts.items() if n > 1]}"
        assert leases.claim(connect(), "late", 500, LEASE, now=round_start) == []


def test_a_live_lease_is_not_claimable_and_an_expired_one_is(connect: Connect) -> None:
    first, second = connect(), connect()
    leases.register_sources(first, ["a"], due=seconds(0))
    [held] = leases.claim(first, "node-1", 10, LEASE, now=seconds(0))
    assert held.until == seconds(120)
    assert leases.claim(second, "node-2", 10, LEASE, now=seconds(119)) == []
    [taken] = leases.claim(second, "node-2", 10, LEASE, now=seconds(120))
    assert taken.source == "a"
    assert [lease.source for lease in leases.held_by(second, "node-2")] == ["a"]
    # The first node's late results change nothing, and its heartbeat renews no lease it lost.
    assert not leases.complete(first, "node-1", "a", seconds(9999), now=seconds(121))
    assert leases.renew(first, "node-1", LEASE, now=seconds(121)) == 0
    assert leases.held_by(first, "node-1") == []


def test_a_heartbeat_keeps_a_long_poll_leased(connect: Connect) -> None:
    first, second = connect(), connect()
    nodes.join(first, "node-1", now=seconds(0))
    leases.register_sources(first, ["slow"], due=seconds(0))
    leases.claim(first, "node-1", 10, LEASE, now=seconds(0))
    assert nodes.heartbeat(first, "node-1", LEASE, now=seconds(100)) == 1
    assert leases.claim(second, "node-2", 10, LEASE, now=seconds(200)) == []
    assert len(leases.claim(second, "node-2", 10, LEASE, now=seconds(220))) == 1


def test_release_hands_every_lease_back_at_once(connect: Connect) -> None:
    first, second = connect(), connect()
    leases.register_sources(first, names(30))
    assert len(leases.claim(first, "node-1", 100, LEASE)) == 30
    assert leases.claim(second, "node-2", 100, LEASE) == []
    assert leases.release(first, "node-1") == 30
    assert len(leases.claim(second, "node-2", 100, LEASE)) == 30


def test_complete_sets_the_next_due_time_the_caller_decided(connect: Connect) -> None:
    conn = connect()
    leases.register_sources(conn, ["a", "b"], due=seconds(0))
    for lease in leases.claim(conn, "node-1", 10, LEASE, now=seconds(0)):
        assert leases.complete(conn, "node-1", lease.source, seconds(300 if lease.source == "a" else 900))
    assert leases.next_due(conn) == seconds(300)
    assert leases.claim(conn, "node-1", 10, LEASE, now=seconds(299)) == []
    assert [lease.source for lease in leases.claim(conn, "node-1", 10, LEASE, now=seconds(300))] == ["a"]


def test_the_longest_overdue_source_is_claimed_first(connect: Connect) -> None:
    conn = connect()
    leases.register_sources(conn, ["late"], due=seconds(10))
    leases.register_sources(conn, ["later"], due=seconds(20))
    leases.register_sources(conn, ["latest"], due=seconds(5))
    assert [lease.source for lease in leases.claim(conn, "n", 2, LEASE, now=seconds(30))] == [
        "latest",
        "late",
    ]


def test_registering_again_keeps_due_times_and_leases(connect: Connect) -> None:
    conn = connect()
    assert leases.register_sources(conn, ["a"], due=seconds(500)) == 1
    assert leases.register_sources(conn, ["a", "b"], due=seconds(0)) == 1
    assert [lease.source for lease in leases.claim(conn, "n", 10, LEASE, now=seconds(100))] == ["b"]


def test_a_node_skips_the_sources_it_declined(connect: Connect) -> None:
    conn = connect()
    leases.register_sources(conn, ["old", "new"], due=seconds(0))
    [met] = leases.claim(conn, "old-config", 1, LEASE, now=seconds(0), skip=["old"])
    assert met.source == "new"
    assert leases.release(conn, "old-config", ["new"]) == 1
    claimed = leases.claim(conn, "old-config", 10, LEASE, now=seconds(1), skip=["new"])
    assert [lease.source for lease in claimed] == ["old"]
    assert leases.forget_sources(conn, ["new"]) == 1
    assert leases.claim(conn, "n", 10, LEASE, now=seconds(2)) == [], "forgotten, and the other one leased"


# Nodes


def test_nodes_join_are_listed_with_their_leases_and_leave_cleanly(connect: Connect) -> None:
    conn = connect()
    nodes.join(conn, "node-1", port=8081, now=seconds(0))
    nodes.join(conn, "node-2", port=8082, now=seconds(1))
    leases.register_sources(conn, names(5), due=seconds(0))
    leases.claim(conn, "node-1", 3, LEASE, now=seconds(2))
    slot = hosts.take_slot(conn, "example.org", 2, "node-1", LEASE, now=seconds(2))
    assert isinstance(slot, hosts.HostSlot)
    listed = nodes.list_nodes(conn)
    assert [(n.node, n.port, n.leases) for n in listed] == [("node-1", 8081, 3), ("node-2", 8082, 0)]
    assert listed[0].started == seconds(0)
    assert nodes.leave(conn, "node-1") == 3
    assert [n.node for n in nodes.list_nodes(conn)] == ["node-2"]
    assert hosts.in_flight(conn, "example.org", now=seconds(3)) == 0
    assert len(leases.claim(conn, "node-2", 10, LEASE, now=seconds(3))) == 5


def test_silent_nodes_are_pruned(connect: Connect) -> None:
    conn = connect()
    nodes.join(conn, "quiet", now=seconds(0))
    nodes.join(conn, "busy", now=seconds(0))
    nodes.heartbeat(conn, "busy", LEASE, now=seconds(3000))
    assert nodes.prune_nodes(conn, timedelta(hours=1), now=seconds(3700)) == 1
    assert [n.node for n in nodes.list_nodes(conn)] == ["busy"]


# Host slots and waits


def test_a_host_has_no_more_slots_than_its_limit(connect: Connect) -> None:
    conn = connect()
    taken = [hosts.take_slot(conn, "h", 3, f"node-{i}", LEASE, now=seconds(0)) for i in range(4)]
    assert [t.slot for t in taken if isinstance(t, hosts.HostSlot)] == [0, 1, 2]
    assert taken[3] == hosts.HostBusy("h")
    first = taken[0]
    assert isinstance(first, hosts.HostSlot)
    assert hosts.give_back(conn, first)
    assert isinstance(hosts.take_slot(conn, "h", 3, "node-9", LEASE, now=seconds(1)), hosts.HostSlot)
    # A lower limit (a reloaded config) counts only the first slots.
    assert hosts.take_slot(conn, "h", 1, "node-9", LEASE, now=seconds(1)) == hosts.HostBusy("h")


def test_the_host_limit_holds_under_concurrent_claimers(connect: Connect) -> None:
    limit, claimers, requests = 3, 8, 40
    lock = threading.Lock()
    active = 0
    peak = 0
    granted = Counter[str]()
    start = threading.Barrier(claimers)

    def worker(index: int) -> None:
        nonlocal active, peak
        conn = connect()
        node = f"node-{index}"
        start.wait(timeout=30)
        done = 0
        while done < requests:
            slot = hosts.take_slot(conn, "busy.example", limit, node, LEASE)
            if isinstance(slot, hosts.HostBusy):
                continue
            with lock:
                active += 1
                peak = max(peak, active)
                granted[node] += 1
            # The "request": a round trip to the server while the slot is held.
            conn.execute("SELECT pg_sleep(0.002)")
            with lock:
                active -= 1
            assert hosts.give_back(conn, slot)
            done += 1

    with ThreadPoolExecutor(claimers) as pool:
        list(pool.map(worker, range(claimers)))
    assert sum(granted.values()) == claimers * requests
    assert 1 <= peak <= limit


def test_a_crashed_holders_slot_frees_when_its_lease_runs_out(connect: Connect, postgres_url: str) -> None:
    crashed = psycopg.connect(postgres_url, autocommit=True)
    slot = hosts.take_slot(crashed, "h", 1, "dead-node", timedelta(seconds=70), now=seconds(0))
    assert isinstance(slot, hosts.HostSlot)
    crashed.close()
    survivor = connect()
    assert hosts.take_slot(survivor, "h", 1, "node-2", LEASE, now=seconds(69)) == hosts.HostBusy("h")
    retaken = hosts.take_slot(survivor, "h", 1, "node-2", LEASE, now=seconds(70))
    assert isinstance(retaken, hosts.HostSlot) and retaken.slot == 0
    # The dead node's late give-back does not free the slot the survivor now holds.
    assert not hosts.give_back(survivor, slot)
    assert hosts.in_flight(survivor, "h", now=seconds(71)) == 1


def test_a_host_wait_is_shared_and_never_shortened(connect: Connect) -> None:
    first, second = connect(), connect()
    assert hosts.defer_host(first, "slow.example", seconds(60), "Retry-After: 60") == seconds(60)
    assert hosts.defer_host(second, "slow.example", seconds(30), "backoff") == seconds(60)
    assert hosts.take_slot(second, "slow.example", 2, "node-2", LEASE, now=seconds(59)) == hosts.HostBusy(
        "slow.example", not_before=seconds(60)
    )
    assert hosts.host_waits(second, now=seconds(10)) == {"slow.example": seconds(60)}
    assert hosts.host_waits(second, ["other.example"], now=seconds(10)) == {}
    assert isinstance(
        hosts.take_slot(second, "slow.example", 2, "node-2", LEASE, now=seconds(60)), hosts.HostSlot
    )
    assert hosts.clear_waits(first, now=seconds(61)) == 1


# The build lock


def test_the_build_lock_excludes_a_second_holder(connect: Connect) -> None:
    first, second = connect(), connect()
    with build_lock(first) as held:
        assert held
        with build_lock(second) as also:
            assert not also
    with build_lock(second) as held_now:
        assert held_now


def test_the_build_lock_frees_when_its_holders_connection_dies(connect: Connect, postgres_url: str) -> None:
    holder = psycopg.connect(postgres_url, autocommit=True)
    other = connect()

    def other_takes_it() -> bool:
        with build_lock(other) as taken:
            return taken

    with build_lock(holder) as held:
        assert held
        assert not other_takes_it()
        holder.close()
        # The server ends the dead connection's session, and its locks, a moment later.
        wait_for(other_takes_it, timeout=10, what="the build lock to free")


def test_a_connection_in_transaction_mode_is_refused(postgres_url: str, connect: Connect) -> None:
    with psycopg.connect(postgres_url) as conn, pytest.raises(ValueError, match="autocommit"):
        leases.claim(conn, "n", 1, LEASE)


def test_an_expired_lease_is_claimed_before_sources_merely_due(connect: Connect) -> None:
    first, second = connect(), connect()
    leases.register_sources(first, ["orphan"], due=seconds(0))
    leases.claim(first, "dead-node", 1, LEASE, now=seconds(0))
    leases.register_sources(first, ["fresh"], due=seconds(0))
    [taken] = leases.claim(second, "node-2", 1, LEASE, now=seconds(121))
    assert taken.source == "orphan"
