"""The fleet runner's and status report's pure decisions, without a database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support.helpers import REPO

from aggregator.errors import StoreError
from aggregator.fleet.member import FleetMember
from aggregator.fleet.plan import FleetTiming
from aggregator.fleet.report import node_reports
from aggregator.fleet.runner import FAILED_RUN_RETRY, FAR_FUTURE, FleetRunner, busy_wait, next_due
from aggregator.index.fleet.hosts import HostBusy
from aggregator.index.fleet.nodes import NodeInfo

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def node(name: str, started_ago: float, heartbeat_ago: float) -> NodeInfo:
    return NodeInfo(
        node=name,
        hostname="h",
        pid=1,
        port=8080,
        started=NOW - timedelta(seconds=started_ago),
        heartbeat=NOW - timedelta(seconds=heartbeat_ago),
        leases=2,
    )


def test_a_source_with_no_planned_poll_is_handed_back_far_off() -> None:
    planned = NOW + timedelta(seconds=30)
    assert next_due(planned, NOW) == planned
    assert next_due(None, NOW) == NOW + FAR_FUTURE


def test_a_busy_host_is_asked_again_at_its_retry_after_or_after_a_short_pause() -> None:
    assert busy_wait(HostBusy("h", NOW + timedelta(seconds=40)), NOW) == 40
    assert busy_wait(HostBusy("h", NOW - timedelta(seconds=5)), NOW) == 0
    assert 0 < busy_wait(HostBusy("h"), NOW) <= 1


def test_status_lists_live_nodes_first_and_a_silent_one_as_gone() -> None:
    reports = node_reports([node("old-gone", 100, 50), node("b", 20, 1), node("a", 30, 2)], NOW, lease=12)
    assert [(r.info.node, r.alive) for r in reports] == [("a", True), ("b", True), ("old-gone", False)]
    assert reports[2].public_json()["alive"] is False
    assert reports[0].public_json()["leases"] == 2


def test_the_fleet_example_config_is_valid_and_its_nodes_share_posts_and_feeds() -> None:
    import yaml

    from aggregator.config import load_config

    example = REPO / "examples" / "fleet"
    config = load_config(example / "aggregator.yaml")
    assert config.index is not None and config.index.startswith("postgresql://")
    compose = yaml.safe_load((example / "compose.yaml").read_text(encoding="utf-8"))
    nodes = [name for name in compose["services"] if name.startswith("node")]
    assert len(nodes) >= 2
    for name in nodes:
        volumes = compose["services"][name]["volumes"]
        assert "posts:/srv/aggregator/posts" in volumes and "feeds:/srv/aggregator/feeds" in volumes
    assert len({compose["services"][name]["ports"][0] for name in nodes}) == len(nodes)


class FailingPoller:
    """A daemon whose store fails on every poll (the runner's side is what is tested)."""

    def __init__(self, postgres_url: str) -> None:
        self.postgres_url = postgres_url
        self.polled: list[str] = []
        self.leased_at_flush: list[str | None] = []  # who held the lease as the states were written

    def has_source(self, name: str) -> bool:
        return name != "not-mine"

    async def poll(self, name: str) -> datetime | None:
        self.polled.append(name)
        raise StoreError("disk full")

    def flush_states(self) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            row = conn.execute("SELECT lease_node FROM fleet_sources WHERE source='failing'").fetchone()
        self.leased_at_flush.append(row[0] if row else None)


@pytest.mark.postgres
def test_a_failed_run_and_a_source_not_in_the_config_are_handed_back(postgres_url: str) -> None:
    async def scenario() -> tuple[list[tuple[str, str | None, datetime]], list[str | None]]:
        member = FleetMember(postgres_url, FleetTiming(lease=30, heartbeat=5), node="node-a")
        await member.start(["failing", "not-mine"])
        poller = FailingPoller(postgres_url)
        runner = FleetRunner(member, poller, capacity=4, tick=0.05)
        runner.start()
        deadline = asyncio.get_running_loop().time() + 10
        while not (poller.polled and member.declined):
            assert asyncio.get_running_loop().time() < deadline, "no poll"
            await asyncio.sleep(0.02)
        while runner.state().in_flight:  # the failed run hands its source back
            assert asyncio.get_running_loop().time() < deadline, "the failed run never ended"
            await asyncio.sleep(0.02)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT source, lease_node, next_due FROM fleet_sources ORDER BY source"
            ).fetchall()
        await runner.stop(1)
        await runner.leave()
        return [(row[0], row[1], row[2]) for row in rows], poller.leased_at_flush

    started = datetime.now(UTC)
    rows, leased_at_flush = asyncio.run(scenario())
    failing = next(row for row in rows if row[0] == "failing")
    declined = next(row for row in rows if row[0] == "not-mine")
    # Not left leased (the heartbeat would renew the lease for ever), and due again in a minute.
    assert failing[1] is None
    assert (
        started + FAILED_RUN_RETRY - timedelta(seconds=5)
        < failing[2]
        < started + FAILED_RUN_RETRY + timedelta(seconds=15)
    )
    assert declined[1] is None
    # The states the poll saved were written while this node still held the lease: the next
    # node to claim the source reads them.
    assert leased_at_flush == ["node-a"]
