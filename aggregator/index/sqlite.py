"""The SQLite index: one connection (WAL), the state database attached, the concerns mixed in.

Each concern's SQL is a module of its own (``posts``, ``feeds``, ``states``,
``status``); this class owns what they share: the connection, the schema
migration on open, and transactions, which record the feed keys touched inside
them as pending in the same commit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aggregator.index import schema, status
from aggregator.index.feeds import PublishedFeeds
from aggregator.index.posts import PostRows
from aggregator.index.readers import ReaderSpec
from aggregator.index.states import SourceStates
from aggregator.index.status import StatusEvents
from aggregator.state import SourceState


class SqliteIndex(PostRows, PublishedFeeds, SourceStates, StatusEvents):
    """The embedded index (``data/index.sqlite3`` and ``data/state.sqlite3``)."""

    def __init__(self, index_path: Path, state_path: Path) -> None:
        self.index_path = index_path
        self.state_path = state_path
        # Feed keys touched inside the current transaction; recorded as pending when it commits.
        self._pending: set[str] = set()
        # Source states saved but not yet written, while ``deferred_states`` is active.
        self._deferred: dict[str, SourceState] | None = None
        self._read_ahead: dict[str, SourceState] = {}  # states as the batch began
        self.db = schema.connect(index_path, state_path)
        try:
            # 0: a new index, which the store fills from the post files.
            self.found_version = schema.migrate(self.db, index_path, state_path)
            self.db.execute(status.CREATE)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def schema_version(self) -> int:
        return schema.schema_version(self.db)

    def reader_spec(self) -> ReaderSpec:
        return ReaderSpec(sqlite_path=self.index_path)

    def transaction(self) -> _Transaction:
        return _Transaction(self.db, self._pending)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

    The feed keys touched inside it are recorded as pending in the same commit.
    """

    def __init__(self, db: sqlite3.Connection, pending: set[str]) -> None:
        self.db = db
        self.pending = pending

    def __enter__(self) -> None:
        self.pending.clear()
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self.pending:
            self.db.executemany(
                "INSERT OR IGNORE INTO pending_feeds VALUES (?)", [(key,) for key in self.pending]
            )
        self.pending.clear()
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
