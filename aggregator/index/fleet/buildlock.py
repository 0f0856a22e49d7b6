"""One node at a time builds the feeds: a PostgreSQL session advisory lock on a fixed key.

The lock belongs to the connection, so the server frees it when the node's connection
dies; the holder keeps that connection for the whole build.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aggregator.index.fleet.db import Connection, require_autocommit

# pg_try_advisory_lock key of the feed build ("aggbuild" in ASCII).
BUILD_LOCK_KEY = 0x6167676275696C64


def try_build_lock(conn: Connection) -> bool:
    """Take the build lock on ``conn`` if no other session holds it; never waits."""
    require_autocommit(conn)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (BUILD_LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def release_build_lock(conn: Connection) -> None:
    """Give the build lock back (a closed connection's was given back by the server)."""
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s)", (BUILD_LOCK_KEY,))


@contextmanager
def build_lock(conn: Connection) -> Iterator[bool]:
    """True inside when this node holds the build lock (and releases it after); False when another does.

    A node that finds the lock taken leaves the build to its holder.
    """
    held = try_build_lock(conn)
    try:
        yield held
    finally:
        if held:
            release_build_lock(conn)
