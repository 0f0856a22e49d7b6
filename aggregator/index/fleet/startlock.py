"""One node at a time starts: a PostgreSQL session advisory lock held from joining to the end of its sync.

A node that finds no other node alive syncs the index with the post files and sweeps the
temporary files of crashed writers; either would go wrong beside a node that polls and
writes at the same time. Holding this lock from before it joins until its sync is over, a
node makes the next one to start wait: that one joins afterwards, so it sees the first alive
and leaves the files alone, and it writes no post before the first one's sync has ended.
The lock belongs to the connection, so a node that dies mid-sync frees it.
"""

from __future__ import annotations

from aggregator.index.fleet.db import Connection, require_autocommit

# pg_advisory_lock key of a node's start ("aggstart" in ASCII).
STARTUP_LOCK_KEY = 0x6167677374617274


def wait_startup_lock(conn: Connection) -> None:
    """Take the start-up lock on ``conn``, waiting while another node starts."""
    require_autocommit(conn)
    conn.execute("SELECT pg_advisory_lock(%s)", (STARTUP_LOCK_KEY,))


def release_startup_lock(conn: Connection) -> None:
    """Give the start-up lock back (a closed connection's was given back by the server)."""
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s)", (STARTUP_LOCK_KEY,))
