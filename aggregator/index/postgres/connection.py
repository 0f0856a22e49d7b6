"""What every part of the PostgreSQL index shares: connections from the pool, and transactions.

Outside a transaction each call borrows an autocommit connection from the pool for its
statements (a read is its own snapshot, as with SQLite's autocommit). ``transaction()``
holds one connection for its thread until it commits; the calls made inside it, on that
thread, use it, and a transaction opened inside another joins it. The feed keys touched
inside are recorded as pending in the same commit. psycopg's errors become ``StoreError``,
with the URL's password hidden.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from aggregator.dburl import redact
from aggregator.errors import StoreError

Connection = psycopg.Connection[Any]

_RECORD_PENDING = "INSERT INTO pending_feeds (key) VALUES (%s) ON CONFLICT DO NOTHING"


def store_error(url: str, error: Exception) -> StoreError:
    """``error`` as a StoreError naming the database, its password hidden (libpq never quotes it)."""
    return StoreError(f"PostgreSQL index at {redact(url)}: {str(error).strip() or type(error).__name__}")


READ_ONLY_CONNECT_SECONDS = 10


def read_only_connection(url: str) -> Connection:
    """A connection of its own whose every transaction is read-only (a reader cannot write);
    a StoreError, password hidden, when it cannot be opened."""
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=READ_ONLY_CONNECT_SECONDS,
            options="-c default_transaction_read_only=on",
        )
    except psycopg.Error as error:
        raise store_error(url, error) from error


class PgConnections:
    """The pool, the thread's transaction, and the feed keys pending in it."""

    url: str
    pool: ConnectionPool[Connection]
    _local: threading.local
    _pending: set[str]

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The thread's transaction's connection, else one from the pool for this call."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as error:
            raise store_error(self.url, error) from error

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, rolled back on any exception; the feed keys touched become pending in it."""
        if getattr(self._local, "conn", None) is not None:
            yield  # inside this thread's transaction: part of it
            return
        self._pending.clear()
        try:
            with self.pool.connection() as conn:
                self._local.conn = conn
                try:
                    with conn.transaction():
                        yield
                        if self._pending:
                            # Sorted: two nodes recording the same keys lock them in one order.
                            conn.cursor().executemany(_RECORD_PENDING, [(k,) for k in sorted(self._pending)])
                finally:
                    self._local.conn = None
                    self._pending.clear()
        except (psycopg.Error, PoolTimeout) as error:
            raise store_error(self.url, error) from error

    def _one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._connection() as conn:
            return conn.execute(query, params).fetchone()

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()
