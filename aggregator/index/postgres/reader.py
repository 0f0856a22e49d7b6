"""``PgIndexReader``: a feed-building worker process's own read-only connection to the index."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from aggregator.index.feeds import IndexedPost
from aggregator.index.postgres.connection import read_only_connection, store_error
from aggregator.index.postgres.feeds import indexed_posts


class PgIndexReader:
    """Reads posts only (every transaction read-only); as ``aggregator.index.feeds.IndexReader``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = read_only_connection(url)

    def indexed_posts(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], IndexedPost]:
        try:
            return indexed_posts(self.conn, pairs)
        except psycopg.Error as error:
            raise store_error(self.url, error) from error

    def close(self) -> None:
        self.conn.close()
