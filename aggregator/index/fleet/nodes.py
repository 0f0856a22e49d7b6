"""The fleet's nodes: who runs, since when, on which port, and when each last said so.

A node joins at start, beats its heart every ``FleetTiming.heartbeat`` (which also renews
its source leases), and leaves on SIGTERM, handing its leases and host slots back at once.
A node that died without leaving keeps its row: ``aggregator status`` shows it as gone once
its heartbeat is older than a lease, and :func:`prune_nodes` clears such rows later.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.index.fleet import hosts, leases
from aggregator.index.fleet.db import NOW, Connection, require_autocommit


@dataclass(frozen=True)
class NodeInfo:
    """One row of ``aggregator status``'s fleet table."""

    node: str
    hostname: str
    pid: int
    port: int | None
    started: datetime
    heartbeat: datetime
    leases: int


def join(conn: Connection, node: str, *, port: int | None = None, now: datetime | None = None) -> None:
    """Record this process (its host name and pid) as the live node ``node``, serving on ``port``."""
    require_autocommit(conn)
    conn.execute(
        "INSERT INTO fleet_nodes (node, hostname, pid, port, started, heartbeat) "
        f"VALUES (%(node)s, %(hostname)s, %(pid)s, %(port)s, {NOW}, {NOW}) "
        "ON CONFLICT (node) DO UPDATE SET port = excluded.port, heartbeat = excluded.heartbeat",
        {"node": node, "hostname": socket.gethostname(), "pid": os.getpid(), "port": port, "now": now},
    )


def heartbeat(conn: Connection, node: str, lease: timedelta, *, now: datetime | None = None) -> int:
    """Say ``node`` is alive and renew its source leases; how many leases it holds."""
    require_autocommit(conn)
    with conn.transaction():
        conn.execute(
            f"UPDATE fleet_nodes SET heartbeat = {NOW} WHERE node = %(node)s", {"node": node, "now": now}
        )
        return leases.renew(conn, node, lease, now=now)


def leave(conn: Connection, node: str) -> int:
    """Hand back every source lease and host slot of ``node`` and remove it; leases released."""
    require_autocommit(conn)
    with conn.transaction():
        released = leases.release(conn, node)
        hosts.give_back_all(conn, node)
        conn.execute("DELETE FROM fleet_nodes WHERE node = %s", (node,))
        return released


def fleet_exists(conn: Connection) -> bool:
    """Whether the fleet's tables are there (no daemon has joined a database that has none)."""
    row = conn.execute("SELECT to_regclass('fleet_nodes') IS NOT NULL").fetchone()
    return bool(row and row[0])


def list_nodes(conn: Connection) -> list[NodeInfo]:
    """Every recorded node with the number of source leases it holds, oldest first."""
    require_autocommit(conn)
    rows = conn.execute(
        "SELECT n.node, n.hostname, n.pid, n.port, n.started, n.heartbeat, "
        "(SELECT count(*) FROM fleet_sources s WHERE s.lease_node = n.node) "
        "FROM fleet_nodes n ORDER BY n.started, n.node"
    ).fetchall()
    return [
        NodeInfo(
            node=row[0],
            hostname=row[1],
            pid=row[2],
            port=row[3],
            started=row[4],
            heartbeat=row[5],
            leases=int(row[6]),
        )
        for row in rows
    ]


def prune_nodes(conn: Connection, older_than: timedelta, *, now: datetime | None = None) -> int:
    """Forget nodes silent for longer than ``older_than`` (their leases have long run out)."""
    require_autocommit(conn)
    cursor = conn.execute(
        f"DELETE FROM fleet_nodes WHERE heartbeat < {NOW} - %(age)s", {"now": now, "age": older_than}
    )
    return cursor.rowcount
