"""One node at a time builds the feeds: a PostgreSQL session advisory lock on a fixed key.

The lock belongs to the connection, so the server frees it when the node's connection
dies; the holder keeps that connection for the whole build.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aggregator.fleet.db import Connection, require_autocommit

# pg_try_advisory_lock key of the feed build ("aggbuild" in ASCII).
BUILD_LOCK_KEY = 0x6167676275696C64


@contextmanager
def build_lock(conn: Connection) -> Iterator[bool]:
    """True inside when this node holds the build lock (and releases it after); False when another does.

    Never waits: a node that finds the lock taken leaves the build to its holder.
    """
    require_autocommit(conn)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (BUILD_LOCK_KEY,)).fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        if held and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (BUILD_LOCK_KEY,))
