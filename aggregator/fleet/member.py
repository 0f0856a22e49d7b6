"""This process as one node of the fleet: its connection pool, its id, its heartbeat.

The daemon's side of :mod:`aggregator.fleet`, for an asyncio program: each call runs the
blocking psycopg work in a thread on a pooled autocommit connection, and every psycopg
error becomes a :class:`~aggregator.errors.StoreError` naming the database with its
password hidden. The daemon's loop, in short::

    timing = fleet_timing(config.fleet.lease, config.fleet.heartbeat, config.defaults.deadline)
    member = FleetMember(config.index, timing)
    await member.start(names_of_configured_sources, port=...)
    for lease in await member.claim(capacity, in_flight):   # when a place is free, or on a tick
        ... poll lease.source ...
        await member.complete(lease.source, planned_next_poll)
    await member.leave()                                     # SIGTERM: every lease back at once
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from aggregator.dburl import redact
from aggregator.errors import StoreError
from aggregator.fleet.plan import FleetTiming, claim_size, node_id, slot_lease_seconds, slot_retry_delay
from aggregator.index.fleet import buildlock, hosts, leases, nodes, startlock
from aggregator.index.fleet.db import Connection
from aggregator.index.pg_schema import migrate

log = logging.getLogger("aggregator.fleet")

T = TypeVar("T")

# Sources one claim takes at most: a node that starts with 20,000 due takes them in steps.
CLAIM_BATCH = 50
POOL_OPEN_SECONDS = 30.0


def this_node_id() -> str:
    """A new id for this process: its host name, its pid and a random token."""
    return node_id(socket.gethostname(), os.getpid(), secrets.token_hex(3))


class FleetMember:
    """One node: joins the fleet, claims and completes sources, keeps its leases alive, leaves."""

    def __init__(
        self,
        url: str,
        timing: FleetTiming,
        *,
        node: str | None = None,
        connections: int = 4,
        open_timeout: float = POOL_OPEN_SECONDS,
    ) -> None:
        self.url = url
        self.timing = timing
        self.node = node or this_node_id()
        self.open_timeout = open_timeout
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=max(connections, 2),  # the heartbeat must not wait behind a build's connection
            open=False,
            name=f"fleet-{self.node}",
        )
        # Sources this node met in a claim but has no config for (another node's is newer).
        self.declined: set[str] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        # Times a request found all of its host's slots taken and waited (for the metrics).
        self.slot_waits = 0

    def _with_connection(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            with self.pool.connection() as conn:
                return work(conn, *args, **kwargs)
        except psycopg.Error as error:
            raise StoreError(f"fleet database {redact(self.url)}: {error}") from error

    async def _call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self._with_connection, work, *args, **kwargs)

    def _open(self) -> None:
        try:
            try:
                self.pool.open(wait=True, timeout=self.open_timeout)
            except psycopg.Error as error:
                raise StoreError(f"fleet database {redact(self.url)}: {error}") from error
            self._with_connection(migrate)
        except BaseException:
            self.pool.close()
            raise

    def _join(self, sources: list[str], port: int | None) -> None:
        try:
            self._with_connection(nodes.join, self.node, port=port)
            self._with_connection(leases.register_sources, sources)
        except BaseException:
            self.pool.close()
            raise

    async def open(self) -> None:
        """Open the pool and bring the schema up to date (before :meth:`join`)."""
        await asyncio.to_thread(self._open)

    async def join(self, sources: Iterable[str], *, port: int | None = None) -> None:
        """Join as a live node, register the configured sources, start the heartbeat."""
        await asyncio.to_thread(self._join, list(sources), port)
        self._heartbeat = asyncio.create_task(self._beat(), name=f"fleet heartbeat {self.node}")
        log.info("fleet: node %s joined %s", self.node, redact(self.url))

    async def start(self, sources: Iterable[str], *, port: int | None = None) -> None:
        """Open the pool, bring the schema up to date, join, register the configured sources."""
        await self.open()
        await self.join(sources, port=port)

    @contextlib.asynccontextmanager
    async def startup_lock(self) -> AsyncIterator[None]:
        """Held inside: no other node gets through its start (join, alone or not, sync) meanwhile.

        Waits while another node holds it (see :mod:`aggregator.index.fleet.startlock`).
        """
        try:
            conn = await asyncio.to_thread(self.pool.getconn)
        except psycopg.Error as error:
            raise StoreError(f"fleet database {redact(self.url)}: {error}") from error
        try:
            await asyncio.to_thread(startlock.wait_startup_lock, conn)
            try:
                yield
            finally:
                await asyncio.to_thread(startlock.release_startup_lock, conn)
        except psycopg.Error as error:
            raise StoreError(f"fleet database {redact(self.url)}: {error}") from error
        finally:
            await asyncio.to_thread(self.pool.putconn, conn)

    async def sync_sources(self, sources: Iterable[str]) -> int:
        """After a config reload: register new sources (due now); the ones declined are retried."""
        self.declined.clear()
        return await self._call(leases.register_sources, list(sources))

    async def claim(
        self, capacity: int, in_flight: int, *, now: datetime | None = None
    ) -> list[leases.Lease]:
        """Due sources for the free places of this node's pool (none when it is full)."""
        wanted = claim_size(capacity, in_flight, CLAIM_BATCH)
        if wanted == 0:
            return []
        return await self._call(
            leases.claim, self.node, wanted, self.timing.lease_delta, now=now, skip=sorted(self.declined)
        )

    async def complete(self, source: str, next_due: datetime) -> bool:
        """The poll of ``source`` is done; it is due again at ``next_due`` (the schedule's decision)."""
        return await self._call(leases.complete, self.node, source, next_due)

    async def decline(self, source: str) -> None:
        """Hand back a source this node's config does not have, and claim it no more."""
        self.declined.add(source)
        await self._call(leases.release, self.node, [source])

    async def beat(self) -> int:
        """One heartbeat: this node is alive and its leases run a full lease from now."""
        return await self._call(nodes.heartbeat, self.node, self.timing.lease_delta)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.timing.heartbeat)
            try:
                await self.beat()
            except StoreError as error:
                # The next beat may get through; the leases last a lease from the last one.
                log.warning("fleet: heartbeat failed: %s", error)

    @contextlib.asynccontextmanager
    async def host_slot(
        self, host: str, limit: int, deadline: float
    ) -> AsyncIterator[hosts.HostSlot | hosts.HostBusy]:
        """A place for one request to ``host`` among all nodes' requests, or why there is none.

        The slot is held for the request's ``deadline`` and a margin at most, so a node that
        dies mid-request frees it; it is given back as soon as the block ends.
        """
        lease = slot_lease_seconds(deadline)
        got = await self._call(hosts.take_slot, host, limit, self.node, timedelta(seconds=lease))
        try:
            yield got
        finally:
            if isinstance(got, hosts.HostSlot):
                await self._call(hosts.give_back, got)

    @contextlib.asynccontextmanager
    async def waiting_host_slot(
        self, host: str, limit: int, deadline: float
    ) -> AsyncIterator[hosts.HostSlot | hosts.HostBusy]:
        """Like :meth:`host_slot`, but waits while all of the host's slots are taken.

        Waits at most ``deadline`` seconds; a host that asked to be left alone (Retry-After)
        is not waited for: its ``HostBusy`` with ``not_before`` comes back at once.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        attempt = 0
        while True:
            async with self.host_slot(host, limit, deadline) as got:
                if isinstance(got, hosts.HostSlot) or got.not_before is not None:
                    yield got
                    return
            delay = slot_retry_delay(attempt, give_up - loop.time())
            if delay is None:
                yield got
                return
            self.slot_waits += 1
            await asyncio.sleep(delay)
            attempt += 1

    async def nodes(self) -> list[nodes.NodeInfo]:
        """Every node the database knows (``aggregator status``; is this node the only live one?)."""
        return await self._call(nodes.list_nodes)

    async def defer_host(self, host: str, until: datetime, reason: str = "") -> datetime:
        """Tell every node to leave ``host`` alone until ``until`` (Retry-After, backoff)."""
        return await self._call(hosts.defer_host, host, until, reason)

    @contextlib.asynccontextmanager
    async def build_lock(self) -> AsyncIterator[bool]:
        """True inside when this node is the one building the feeds now (the lock is held till the end)."""
        try:
            conn = await asyncio.to_thread(self.pool.getconn)
        except psycopg.Error as error:
            raise StoreError(f"fleet database {redact(self.url)}: {error}") from error
        try:
            held = await asyncio.to_thread(buildlock.try_build_lock, conn)
            try:
                yield held
            finally:
                if held:
                    await asyncio.to_thread(buildlock.release_build_lock, conn)
        except psycopg.Error as error:
            raise StoreError(f"fleet database {redact(self.url)}: {error}") from error
        finally:
            await asyncio.to_thread(self.pool.putconn, conn)

    async def leave(self) -> int:
        """Stop the heartbeat, hand every lease and host slot back, close the pool; leases released."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        try:
            released = await self._call(nodes.leave, self.node)
        finally:
            await asyncio.to_thread(self.pool.close)
        log.info("fleet: node %s left, %d leases handed back", self.node, released)
        return released
