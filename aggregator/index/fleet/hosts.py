"""Politeness for the whole fleet: a per-host request limit and per-host waits, in the database.

``fleet_host_slots`` holds ``limit`` rows per host; a request takes a free row (``FOR UPDATE
SKIP LOCKED``) under a short lease, so all nodes together never have more than ``limit``
requests in flight to one host, and a node that crashes mid-request frees its slot when the
lease runs out (no connection is held during the request). ``fleet_host_waits`` records a
host's Retry-After or backoff ("not before"), which every node reads before taking a slot.

Every function takes ``now``; ``None`` means the database's clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.index.fleet.db import NOW, Connection, require_autocommit


@dataclass(frozen=True)
class HostSlot:
    """One of a host's ``limit`` places for a request in flight, held until ``until``."""

    host: str
    slot: int
    holder: str
    until: datetime


@dataclass(frozen=True)
class HostBusy:
    """No slot now: all are taken (``not_before`` is None), or the host asked to wait until then."""

    host: str
    not_before: datetime | None = None


_TAKE_SLOT = f"""
    WITH waiting AS MATERIALIZED (
        SELECT not_before FROM fleet_host_waits WHERE host = %(host)s AND not_before > {NOW}
    ),
    free AS (
        SELECT host, slot FROM fleet_host_slots
        WHERE host = %(host)s AND slot < %(limit)s
          AND (holder IS NULL OR lease_until <= {NOW})
          AND NOT EXISTS (SELECT 1 FROM waiting)
        ORDER BY slot
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ),
    taken AS (
        UPDATE fleet_host_slots AS s SET holder = %(holder)s, lease_until = {NOW} + %(lease)s
        FROM free
        WHERE s.host = free.host AND s.slot = free.slot
        RETURNING s.slot, s.lease_until
    )
    SELECT (SELECT not_before FROM waiting), taken.slot, taken.lease_until,
           (SELECT count(*) FROM fleet_host_slots WHERE host = %(host)s AND slot < %(limit)s)
    FROM (SELECT 1) AS one LEFT JOIN taken ON true
"""


def take_slot(
    conn: Connection, host: str, limit: int, holder: str, lease: timedelta, *, now: datetime | None = None
) -> HostSlot | HostBusy:
    """A free slot of ``host`` for ``holder`` (a node id), or why there is none.

    One statement (one round trip) once the host's rows exist; the first node to meet a host,
    or a higher limit, makes its rows and asks again.
    """
    if limit <= 0:
        raise ValueError("a per-host limit must be positive")
    require_autocommit(conn)
    params = {"host": host, "limit": limit, "holder": holder, "lease": lease, "now": now}
    for _attempt in range(2):
        row = conn.execute(_TAKE_SLOT, params).fetchone()
        assert row is not None  # the statement always returns its one row
        not_before, slot, until, rows = row
        if not_before is not None:
            return HostBusy(host, not_before=not_before)
        if slot is not None:
            return HostSlot(host=host, slot=slot, holder=holder, until=until)
        if rows >= limit:
            break
        conn.execute(
            "INSERT INTO fleet_host_slots (host, slot) SELECT %(host)s, generate_series(0, %(limit)s - 1) "
            "ON CONFLICT (host, slot) DO NOTHING",
            params,
        )
    return HostBusy(host)


def give_back(conn: Connection, slot: HostSlot) -> bool:
    """Free a slot after its request; False when its lease had run out and another holder took it."""
    require_autocommit(conn)
    cursor = conn.execute(
        "UPDATE fleet_host_slots SET holder = NULL, lease_until = NULL "
        "WHERE host = %s AND slot = %s AND holder = %s",
        (slot.host, slot.slot, slot.holder),
    )
    return cursor.rowcount == 1


def give_back_all(conn: Connection, holder: str) -> int:
    """Free every slot ``holder`` holds (a node stopping)."""
    require_autocommit(conn)
    cursor = conn.execute(
        "UPDATE fleet_host_slots SET holder = NULL, lease_until = NULL WHERE holder = %s", (holder,)
    )
    return cursor.rowcount


def in_flight(conn: Connection, host: str, *, now: datetime | None = None) -> int:
    """Slots of ``host`` held under a live lease."""
    require_autocommit(conn)
    row = conn.execute(
        f"SELECT count(*) FROM fleet_host_slots WHERE host = %(host)s AND lease_until > {NOW}",
        {"host": host, "now": now},
    ).fetchone()
    return int(row[0]) if row else 0


def defer_host(conn: Connection, host: str, until: datetime, reason: str = "") -> datetime:
    """No node requests ``host`` before ``until`` (Retry-After, backoff); the wait now in force.

    A shorter wait never shortens a longer one another node recorded.
    """
    require_autocommit(conn)
    row = conn.execute(
        "INSERT INTO fleet_host_waits (host, not_before, reason) "
        "VALUES (%(host)s, %(until)s, %(reason)s) "
        "ON CONFLICT (host) DO UPDATE SET "
        "reason = CASE WHEN excluded.not_before > fleet_host_waits.not_before "
        "THEN excluded.reason ELSE fleet_host_waits.reason END, "
        "not_before = GREATEST(fleet_host_waits.not_before, excluded.not_before) "
        "RETURNING not_before",
        {"host": host, "until": until, "reason": reason},
    ).fetchone()
    assert row is not None  # an upsert with RETURNING returns its row
    result: datetime = row[0]
    return result


def host_waits(
    conn: Connection, hosts: Iterable[str] | None = None, *, now: datetime | None = None
) -> dict[str, datetime]:
    """Hosts that must not be requested yet, and until when (of ``hosts``, or all)."""
    only = "" if hosts is None else "AND host = ANY(%(hosts)s::text[])"
    require_autocommit(conn)
    rows = conn.execute(
        f"SELECT host, not_before FROM fleet_host_waits WHERE not_before > {NOW} {only}",
        {"now": now, "hosts": list(hosts or ())},
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def clear_waits(conn: Connection, *, now: datetime | None = None) -> int:
    """Drop waits that are over (housekeeping; an expired wait already blocks nothing)."""
    require_autocommit(conn)
    cursor = conn.execute(f"DELETE FROM fleet_host_waits WHERE not_before <= {NOW}", {"now": now})
    return cursor.rowcount
