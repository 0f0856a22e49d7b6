"""The fleet runner's and status report's pure decisions, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.helpers import REPO

from aggregator.fleet.report import node_reports
from aggregator.fleet.runner import FAR_FUTURE, busy_wait, next_due
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
