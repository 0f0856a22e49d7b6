"""Three nodes polling one set of sources through their leases, in real time, with one killed.

What the issue asks of a fleet, at the level of the leases: each source is polled once per
interval across the fleet, never by two nodes at once, none skipped; a node killed mid-poll
(no leave, no heartbeat) loses its sources to the others within lease + interval.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.fleet.member import FleetMember
from aggregator.fleet.plan import FleetTiming

pytestmark = pytest.mark.postgres

SOURCES = [f"source-{i:02d}" for i in range(24)]
INTERVAL = 0.5
LEASE = 1.0
POLL_SECONDS = 0.02
TICK = 0.02


class Polls:
    """Every poll's start, by source and node; an overlap of two polls of one source is an error."""

    def __init__(self) -> None:
        self.starts: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.active: dict[str, str] = {}
        self.overlaps: list[str] = []

    def begin(self, source: str, node: str) -> None:
        if source in self.active:
            self.overlaps.append(f"{source}: {node} while {self.active[source]} polls it")
        self.active[source] = node
        self.starts[source].append((time.monotonic(), node))

    def end(self, source: str) -> None:
        self.active.pop(source, None)

    def polled_since(self, moment: float, by: set[str]) -> set[str]:
        return {s for s, starts in self.starts.items() if any(t > moment and n in by for t, n in starts)}


async def node_loop(member: FleetMember, polls: Polls, stop: asyncio.Event) -> None:
    """A node's claim loop: claim for free places, poll, complete with the next due time."""
    in_flight: set[asyncio.Task[None]] = set()

    async def poll(source: str) -> None:
        polls.begin(source, member.node)
        try:
            await asyncio.sleep(POLL_SECONDS)  # the fetch
        finally:
            polls.end(source)
        await member.complete(source, datetime.now(UTC) + timedelta(seconds=INTERVAL))

    try:
        while not stop.is_set():
            for lease in await member.claim(capacity=6, in_flight=len(in_flight)):
                task = asyncio.create_task(poll(lease.source))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.sleep(TICK)
    finally:
        for task in list(in_flight):
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``condition()`` with a deadline; the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - began


def test_three_nodes_poll_each_source_once_per_interval_and_survive_a_kill(postgres_url: str) -> None:
    async def main() -> None:
        timing = FleetTiming(lease=LEASE, heartbeat=LEASE / 4)
        members = [FleetMember(postgres_url, timing, node=f"node-{n}") for n in "abc"]
        for member in members:
            await member.start(SOURCES)
        polls = Polls()
        stops = [asyncio.Event() for _ in members]
        loops = [asyncio.create_task(node_loop(m, polls, s)) for m, s in zip(members, stops, strict=True)]
        try:
            await until(
                lambda: all(len(polls.starts[s]) >= 3 for s in SOURCES), 30, "three polls of every source"
            )
            # SIGKILL of node c, mid-poll: no leave, no more heartbeats, its leases stay behind.
            await until(lambda: "node-c" in polls.active.values(), 30, "node c to be polling")
            killed = members[2]
            held_at_kill = {source for source, node in polls.active.items() if node == "node-c"}
            loops[2].cancel()
            assert killed._heartbeat is not None
            killed._heartbeat.cancel()
            await asyncio.gather(loops[2], killed._heartbeat, return_exceptions=True)
            killed.pool.close()
            moment = time.monotonic()
            survivors = {"node-a", "node-b"}
            took = await until(
                lambda: polls.polled_since(moment, survivors) == set(SOURCES),
                LEASE + INTERVAL + 10,
                "the survivors to poll every source, the dead node's too",
            )
            print(f"the survivors polled every source {took:.2f}s after the kill")
            assert took <= LEASE + INTERVAL + 3, f"the dead node's sources waited {took:.1f}s"
            assert held_at_kill <= polls.polled_since(moment, survivors)
        finally:
            for stop in stops:
                stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
            for member in members[:2]:
                await member.leave()
        assert polls.overlaps == [], "a source polled by two nodes at once"
        for source, starts in polls.starts.items():
            gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(starts)]
            assert min(gaps) >= INTERVAL * 0.9, f"{source} polled twice within an interval: {gaps}"
        assert {node for starts in polls.starts.values() for _, node in starts} == {
            "node-a",
            "node-b",
            "node-c",
        }

    asyncio.run(main())
