"""What ``aggregator status`` shows of the fleet: each node, its leases, its last heartbeat."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from aggregator.dburl import redact
from aggregator.errors import StoreError
from aggregator.fleet.plan import fleet_timing, node_alive
from aggregator.index.fleet import nodes
from aggregator.index.fleet.nodes import NodeInfo


@dataclass(frozen=True)
class NodeReport:
    """One node as status shows it: alive while its heartbeat is younger than a lease."""

    info: NodeInfo
    alive: bool

    def public_json(self) -> dict[str, Any]:
        info = self.info
        return {
            "node": info.node,
            "hostname": info.hostname,
            "pid": info.pid,
            "port": info.port,
            "started": info.started.isoformat(),
            "heartbeat": info.heartbeat.isoformat(),
            "alive": self.alive,
            "leases": info.leases,
        }


def node_reports(infos: list[NodeInfo], now: datetime, lease: float) -> list[NodeReport]:
    """The live nodes first (oldest first), then the gone ones."""
    reports = [NodeReport(info, node_alive(info.heartbeat, now, lease)) for info in infos]
    return sorted(reports, key=lambda r: (not r.alive, r.info.started, r.info.node))


def read_fleet(
    url: str, lease: float, heartbeat: float | None, deadline: float, now: datetime
) -> list[NodeReport]:
    """The fleet's nodes from the database at ``url`` (none before any daemon joined)."""
    timing = fleet_timing(lease, heartbeat, deadline)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            infos = nodes.list_nodes(conn) if nodes.fleet_exists(conn) else []
    except psycopg.Error as error:
        raise StoreError(f"fleet database {redact(url)}: {error}") from error
    return node_reports(infos, now, timing.lease)
