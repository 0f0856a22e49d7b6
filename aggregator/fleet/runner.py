"""The daemon's scheduling in fleet mode: the database's leases decide what this node polls.

The single-node daemon keeps one APScheduler job per source. With a PostgreSQL ``index:``
several daemons share the sources instead: this node claims the due ones as places in its
pool free up (and on a short tick), polls each, and hands it back with the time the
schedule decided for its next poll. A source this node's config does not have (another
node's config is newer) is declined. On stop the runs in flight finish, then every lease
goes back at once, so the others need not wait for it to run out.

:class:`FleetHostGate` is the fetcher's ``HostGate`` over the fleet's host slots: the
per-host limit holds across all nodes, and a host's Retry-After holds for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from aggregator.errors import AggregatorError, RateLimited
from aggregator.fleet.member import FleetMember
from aggregator.fleet.plan import SLOT_RETRY_MAX
from aggregator.index.fleet.hosts import HostBusy
from aggregator.state import utcnow

log = logging.getLogger("aggregator.fleet")

# How often a node asks for due sources when no run of its own ended meanwhile.
CLAIM_TICK_SECONDS = 0.5
# A run that failed on this node's side (its store): the source is due again after this long.
FAILED_RUN_RETRY = timedelta(minutes=1)
# A source's next poll when the schedule has none (it is never due on its own): far off.
FAR_FUTURE = timedelta(days=3650)


class Poller(Protocol):
    """What the runner needs from the daemon: which sources it has, and one poll of one."""

    def has_source(self, name: str) -> bool: ...

    async def poll(self, name: str) -> datetime | None:
        """Poll ``name`` now; when it is due next (None: not on its own)."""
        ...

    def flush_states(self) -> None:
        """Write the source states the polls saved: the next node to claim a source reads its state."""
        ...


@dataclass(frozen=True)
class RunnerState:
    """What ``/healthz`` shows of the runner."""

    running: bool
    in_flight: int
    claims: int
    completed: int


def next_due(planned: datetime | None, now: datetime) -> datetime:
    """The due time to hand back: the schedule's, or far off when it has none."""
    return planned if planned is not None else now + FAR_FUTURE


class FleetRunner:
    """Claims due sources for the free places of this node, polls them, hands them back."""

    def __init__(
        self,
        member: FleetMember,
        poller: Poller,
        capacity: int,
        *,
        tick: float = CLAIM_TICK_SECONDS,
    ) -> None:
        self.member = member
        self.poller = poller
        self.capacity = max(capacity, 1)
        self.tick = tick
        self._runs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.claims = 0
        self.completed = 0

    def start(self) -> None:
        self._loop = asyncio.create_task(self._claim_loop(), name="fleet claims")

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.done() and not self._stopping.is_set()

    def state(self) -> RunnerState:
        return RunnerState(self.running, len(self._runs), self.claims, self.completed)

    async def sync_sources(self, names: list[str]) -> None:
        """After a reload: new sources are registered (due now), declined ones are retried."""
        await self.member.sync_sources(names)
        self._wake.set()

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._claim_once()
            except AggregatorError as error:  # the database is away: ask again at the next tick
                log.warning("fleet: claim failed: %s", error)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)

    async def _claim_once(self) -> None:
        for lease in await self.member.claim(self.capacity, len(self._runs)):
            if self._stopping.is_set():
                break
            if not self.poller.has_source(lease.source):
                log.info("fleet: source=%s is not in this node's config: declined", lease.source)
                await self.member.decline(lease.source)
                continue
            self.claims += 1
            task = asyncio.create_task(self._run(lease.source), name=f"fleet poll {lease.source}")
            self._runs.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        self._wake.set()  # a place is free

    async def _run(self, name: str) -> None:
        try:
            planned = await self.poller.poll(name)
        except AggregatorError as error:
            # Handed back all the same: the heartbeat would keep renewing a lease never completed.
            log.error("fleet: source=%s run failed: %s", name, error)
            planned = utcnow() + FAILED_RUN_RETRY
        self.poller.flush_states()  # before the lease goes back
        try:
            if await self.member.complete(name, next_due(planned, utcnow())):
                self.completed += 1
            else:
                log.warning("fleet: source=%s: the lease was lost before the poll ended", name)
        except AggregatorError as error:
            log.error("fleet: source=%s not handed back: %s", name, error)

    async def stop(self, deadline: float) -> None:
        """No more claims; the runs in flight get ``deadline`` seconds (then :meth:`leave`)."""
        self._stopping.set()
        self._wake.set()
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._runs:
            _done, pending = await asyncio.wait(set(self._runs), timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def leave(self) -> None:
        """Every lease and host slot back at once; the node's pool is closed (no fleet call after)."""
        try:
            await self.member.leave()
        except AggregatorError as error:  # the leases run out on their own
            log.error("fleet: leaving failed: %s", error)


class FleetHostGate:
    """The fetcher's host gate over the fleet's host slots (``aggregator.fetch.HostGate``)."""

    def __init__(self, member: FleetMember, now: Callable[[], datetime] = utcnow) -> None:
        self.member = member
        self.now = now

    @contextlib.asynccontextmanager
    async def admit(self, host: str, limit: int, deadline: float) -> AsyncIterator[object]:
        async with self.member.waiting_host_slot(host, limit, deadline) as got:
            if isinstance(got, HostBusy):
                raise RateLimited(busy_message(got, self.now()), retry_after=busy_wait(got, self.now()))
            yield got

    async def defer(self, host: str, seconds: float) -> None:
        await self.member.defer_host(host, self.now() + timedelta(seconds=seconds), "Retry-After")


def busy_wait(busy: HostBusy, now: datetime) -> float:
    """Seconds until a busy host may be asked again: its Retry-After, else a short pause."""
    if busy.not_before is None:
        return SLOT_RETRY_MAX
    return max((busy.not_before - now).total_seconds(), 0.0)


def busy_message(busy: HostBusy, now: datetime) -> str:
    if busy.not_before is None:
        return f"{busy.host}: every place for it is taken across the fleet"
    return f"{busy.host}: asked the fleet to wait {busy_wait(busy, now):g}s"
