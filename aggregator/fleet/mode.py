"""The daemon as one node of a fleet: what :class:`aggregator.daemon.Daemon` selects with ``index:``.

It holds the node's :class:`FleetMember`, the fetcher's host gate over it and the
:class:`FleetRunner` that replaces the per-source scheduler jobs, and says what
``/healthz`` shows of them. Metrics get this node's id as a ``node`` label.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from aggregator.config import Config
from aggregator.errors import AggregatorError
from aggregator.fleet.member import FleetMember
from aggregator.fleet.plan import PENDING_CHECK_SECONDS, fleet_timing, node_alive
from aggregator.fleet.runner import FleetHostGate, FleetRunner, Poller
from aggregator.state import utcnow

log = logging.getLogger("aggregator.fleet")


class FleetMode:
    """This node's membership, host gate and claim loop, built from the config."""

    def __init__(self, config: Config, poller: Poller) -> None:
        assert config.index is not None
        self.config = config
        timing = fleet_timing(config.fleet.lease, config.fleet.heartbeat, config.defaults.deadline)
        self.member = FleetMember(config.index, timing)
        self.gate = FleetHostGate(self.member)
        # As many sources at once as the fetcher may fetch (its global limit).
        self.runner = FleetRunner(self.member, poller, config.defaults.concurrency)

    @contextlib.asynccontextmanager
    async def joining(self, port: int) -> AsyncIterator[bool]:
        """Join the fleet and register this node's sources; True inside when no other node is alive.

        The fleet's start-up lock is held from before joining to the end of the block (the
        start-up sync), so two nodes starting at once do not both count themselves alone, and
        the second writes nothing while the first one syncs.
        """
        await self.member.open()
        async with self.member.startup_lock():
            await self.member.join([source.name for source in self.config.sources], port=port)
            yield await self.alone()

    async def alone(self) -> bool:
        """Whether no other node is alive: only then may this one sweep temporary files and sync.

        A temporary file's name says which pid writes it, not on which machine, and a sync
        while others write could take a post being written for one deleted by hand.
        """
        now = utcnow()
        lease = self.member.timing.lease
        return not any(
            info.node != self.member.node and node_alive(info.heartbeat, now, lease)
            for info in await self.member.nodes()
        )

    async def build_left_pending(
        self, build: Callable[[], Awaitable[object]], stopping: asyncio.Event
    ) -> None:
        """Now and then, when no node is building, ``build()`` what other nodes left pending.

        A node that stops (or dies) while another holds the build lock leaves its keys in the
        index; the holder read the pending keys when its build began, and a fleet whose polls
        are all 304s would otherwise never build them. ``build`` publishes the index's pending
        keys (one query when there are none). Returns once ``stopping`` is set.
        """
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PENDING_CHECK_SECONDS)
            if stopping.is_set():
                return
            try:
                async with self.member.build_lock() as held:
                    if held:
                        await build()
            except AggregatorError as error:  # the database is away: the next round tries again
                log.warning("fleet: pending feeds not checked: %s", error)

    def run(self) -> None:
        self.runner.start()

    async def stop(self, deadline: float) -> None:
        """No more claims; the runs in flight finish or are cancelled at ``deadline``."""
        await self.runner.stop(deadline)

    async def leave(self) -> None:
        """Hand back what is left: after the last build, which needs the fleet's build lock."""
        await self.runner.leave()

    async def sync_sources(self, names: list[str]) -> None:
        await self.runner.sync_sources(names)

    def health(self, *, starting: bool, stopping: bool) -> dict[str, Any]:
        state = self.runner.state()
        alive = state.running and not stopping
        return {
            "ok": alive and not starting,
            "starting": starting,
            "scheduler": "fleet" if alive else "stopped",
            "node": self.member.node,
            "claims": state.claims,
            "completed": state.completed,
            "leases_in_flight": state.in_flight,
        }


class NodeRegistry(CollectorRegistry):
    """A registry whose every sample carries ``node="<this node's id>"``."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            metric.samples = [
                sample._replace(labels={**sample.labels, "node": self.node}) for sample in metric.samples
            ]
            yield metric
