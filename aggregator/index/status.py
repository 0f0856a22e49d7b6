"""The source-health events (see ``aggregator.status_feed``), in a table of the index."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from aggregator.status_feed import FEED_ITEMS, StatusEvent

KEEP_EVENTS = 500


class StatusLog:
    """The events, in a table of the index (shares the store's connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS status_events ("
            "id TEXT PRIMARY KEY, source TEXT NOT NULL, kind TEXT NOT NULL, "
            "at_ts REAL NOT NULL, detail TEXT NOT NULL, url TEXT NOT NULL)"
        )

    def record(self, events: Sequence[StatusEvent]) -> None:
        if not events:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO status_events VALUES (?,?,?,?,?,?)",
                [(e.id, e.source, e.kind, e.at.timestamp(), e.detail, e.url) for e in events],
            )
            self.db.execute(
                "DELETE FROM status_events WHERE id NOT IN "
                "(SELECT id FROM status_events ORDER BY at_ts DESC, id LIMIT ?)",
                (KEEP_EVENTS,),
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def recent(self, limit: int = FEED_ITEMS) -> list[StatusEvent]:
        rows = self.db.execute(
            "SELECT source, kind, at_ts, detail, url FROM status_events ORDER BY at_ts DESC, id LIMIT ?",
            (limit,),
        )
        return [
            StatusEvent(source, kind, datetime.fromtimestamp(ts, UTC), detail, url)
            for source, kind, ts, detail, url in rows
        ]
