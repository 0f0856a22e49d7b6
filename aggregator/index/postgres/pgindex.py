"""``PgIndex``: the ``Index`` Protocol on PostgreSQL (``index: postgresql://...`` in the config).

Opening it connects once to bring the schema up to date (``aggregator.index.pg_schema``, which
refuses a database newer than this program), then serves every call from a small pool of
autocommit connections (``connection.PgConnections``). Several processes, on one machine or
many, may open the same database at once: nothing here is a lock on it.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from aggregator.index import pg_schema
from aggregator.index.postgres.connection import Connection, store_error
from aggregator.index.postgres.feeds import PgPublishedFeeds
from aggregator.index.postgres.posts import PgPostRows
from aggregator.index.postgres.states import PgSourceStates
from aggregator.index.postgres.status import PgStatusEvents
from aggregator.index.readers import ReaderSpec
from aggregator.state import SourceState

CONNECT_SECONDS = 10
# The store is used by one thread at a time; a second connection serves a call made while
# another thread's transaction holds the first.
POOL_SIZE = 2


class PgIndex(PgPostRows, PgPublishedFeeds, PgSourceStates, PgStatusEvents):
    """The index, source states and tombstones in one PostgreSQL database."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self._local = threading.local()
        self._pending: set[str] = set()
        self._deferred: dict[str, SourceState] | None = None
        self._read_ahead: dict[str, SourceState] = {}
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_SECONDS) as conn:
                found = pg_schema.schema_version(conn)
                pg_schema.migrate(conn)
        except psycopg.Error as error:
            raise store_error(url, error) from error
        # 0: no index yet (a new database, or one only a fleet's tables were made in), which
        # the store fills from the post files.
        self.found_version = found if found >= pg_schema.INDEX_VERSION else 0
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            kwargs={"autocommit": True},
            open=False,
            name="aggregator-index",
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_SECONDS)
        except PoolTimeout as error:
            self.pool.close()
            raise store_error(url, error) from error

    def close(self) -> None:
        self.pool.close()

    def schema_version(self) -> int:
        with self._connection() as conn:
            return pg_schema.schema_version(conn)

    def reader_spec(self) -> ReaderSpec:
        return ReaderSpec(postgres_url=self.url)
