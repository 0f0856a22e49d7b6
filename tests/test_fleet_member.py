"""FleetMember, the daemon's side of the fleet, against a real PostgreSQL server.

Each test runs two members in one event loop, as two nodes would run on two machines.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from aggregator.errors import StoreError
from aggregator.fleet.member import FleetMember, this_node_id
from aggregator.fleet.plan import FleetTiming
from aggregator.index.fleet import leases
from aggregator.index.fleet.hosts import HostBusy, HostSlot

pytestmark = pytest.mark.postgres

SOURCES = [f"source-{i}" for i in range(10)]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "") -> None:
    """Await ``check`` until it is true, or fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def run(url: str, scenario: Callable[[FleetMember, FleetMember], Awaitable[None]], **timing: float) -> None:
    async def main() -> None:
        first = FleetMember(url, FleetTiming(**timing), node="node-a")
        second = FleetMember(url, FleetTiming(**timing), node="node-b")
        await first.start(SOURCES, port=8081)
        await second.start(SOURCES, port=8082)
        try:
            await scenario(first, second)
        finally:
            for member in (first, second):
                if not member.pool.closed:
                    await member.leave()

    asyncio.run(main())


def test_two_members_share_the_sources_and_leave_hands_them_back(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        mine = await first.claim(capacity=4, in_flight=0)
        theirs = await second.claim(capacity=16, in_flight=0)
        assert len(mine) == 4 and len(theirs) == 6
        assert not {lease.source for lease in mine} & {lease.source for lease in theirs}
        assert await first.claim(capacity=4, in_flight=4) == [], "a full node claims nothing"
        later = datetime.now(UTC) + timedelta(minutes=30)
        assert await second.complete(theirs[0].source, later)
        assert await first.leave() == 4
        back = await second.claim(capacity=16, in_flight=5)
        assert sorted(lease.source for lease in back) == sorted(lease.source for lease in mine)

    run(postgres_url, scenario)


def test_the_heartbeat_keeps_a_members_leases_alive(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        [held] = await first.claim(capacity=1, in_flight=0)

        async def renewed() -> bool:
            now_held = await asyncio.to_thread(_held, first, held.source)
            return now_held is not None and now_held > held.until

        await eventually(renewed, what="the heartbeat to renew the lease")
        # Past the first lease's end, the source is still the first member's.
        await eventually(lambda: _after(held.until), what="the first lease's end")
        assert held.source not in {lease.source for lease in await second.claim(capacity=20, in_flight=0)}

    run(postgres_url, scenario, lease=1.0, heartbeat=0.1)


def _held(member: FleetMember, source: str) -> datetime | None:
    with member.pool.connection() as conn:
        for lease in leases.held_by(conn, member.node):
            if lease.source == source:
                return lease.until
    return None


async def _after(moment: datetime) -> bool:
    return datetime.now(UTC) > moment


def test_a_declined_source_goes_to_another_member(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        claimed = await first.claim(capacity=20, in_flight=0)
        await first.decline(claimed[0].source)
        assert await first.claim(capacity=20, in_flight=0) == []
        [taken] = await second.claim(capacity=20, in_flight=0)
        assert taken.source == claimed[0].source

    run(postgres_url, scenario)


def test_the_host_limit_and_the_build_lock_hold_across_members(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        async with first.host_slot("example.org", 1, deadline=60) as slot:
            assert isinstance(slot, HostSlot)
            async with second.host_slot("example.org", 1, deadline=60) as other:
                assert other == HostBusy("example.org")
        async with second.host_slot("example.org", 1, deadline=60) as again:
            assert isinstance(again, HostSlot)
        until = datetime.now(UTC) + timedelta(minutes=5)
        assert await second.defer_host("example.org", until, "Retry-After") == until
        async with first.host_slot("example.org", 1, deadline=60) as waiting:
            assert waiting == HostBusy("example.org", not_before=until)
        async with first.build_lock() as building:
            assert building
            async with second.build_lock() as also:
                assert not also
        async with second.build_lock() as now_building:
            assert now_building

    run(postgres_url, scenario)


def test_a_waiting_member_gets_the_slot_when_the_holder_gives_it_back(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        released = asyncio.Event()

        async def wait_for_slot() -> HostSlot | HostBusy:
            async with second.waiting_host_slot("example.org", 1, deadline=30) as got:
                assert released.is_set(), "granted only once the holder gave its slot back"
                return got

        async with first.host_slot("example.org", 1, deadline=60) as held:
            assert isinstance(held, HostSlot)
            waiter = asyncio.create_task(wait_for_slot())
            await eventually(lambda: _retried(second), what="the waiter to find the host busy")
            assert not waiter.done()
            released.set()
        assert isinstance(await asyncio.wait_for(waiter, 30), HostSlot)
        # A host that asked for a pause is not waited for.
        until = datetime.now(UTC) + timedelta(minutes=1)
        await first.defer_host("example.org", until)
        async with second.waiting_host_slot("example.org", 1, deadline=30) as paused:
            assert paused == HostBusy("example.org", not_before=until)

    run(postgres_url, scenario)


def test_a_member_waits_no_longer_than_the_deadline(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        async with (
            first.host_slot("example.org", 1, deadline=60),
            second.waiting_host_slot("example.org", 1, deadline=0.3) as got,
        ):
            assert got == HostBusy("example.org")
        assert second.slot_waits >= 1

    run(postgres_url, scenario)


async def _retried(member: FleetMember) -> bool:
    """True once ``member`` has asked for a slot, been refused, and is waiting to ask again."""
    return member.slot_waits >= 1


def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    async def main() -> None:
        member = FleetMember(
            "postgresql://agg:hunter2@127.0.0.1:1/feeds?connect_timeout=1", FleetTiming(), open_timeout=1
        )
        with pytest.raises(StoreError) as caught:
            await member.start(SOURCES)
        assert "agg:***@127.0.0.1:1/feeds" in str(caught.value)
        assert "hunter2" not in str(caught.value)

    asyncio.run(main())


def test_pool_connections_commit_each_statement(postgres_url: str) -> None:
    async def scenario(first: FleetMember, second: FleetMember) -> None:
        with first.pool.connection() as conn:
            assert conn.autocommit
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT count(*) FROM fleet_nodes").fetchone()
        assert row == (2,)

    run(postgres_url, scenario)


def test_a_node_id_names_this_process() -> None:
    assert f"-{os.getpid()}-" in this_node_id()
    assert this_node_id() != this_node_id()
