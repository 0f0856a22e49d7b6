"""What every fleet module shares: the connection type, the clock in SQL, the autocommit rule."""

from __future__ import annotations

from typing import Any

import psycopg

Connection = psycopg.Connection[Any]

# A ``now`` the caller gives, else the database's clock: the one clock every node shares.
# statement_timestamp() is stable within a statement (clock_timestamp() is volatile), so a
# comparison with it is an index condition, and every row of one statement sees one ``now``.
NOW = "COALESCE(%(now)s::timestamptz, statement_timestamp())"


def require_autocommit(conn: Connection) -> None:
    """Fleet statements commit at once: one left in an open transaction would hold its row locks.

    A single statement is then one round trip; steps of several statements open their own
    transaction. The node's pool makes autocommit connections (``kwargs={"autocommit": True}``).
    """
    if not conn.autocommit:
        raise ValueError("the fleet needs an autocommit connection (psycopg.connect(..., autocommit=True))")
