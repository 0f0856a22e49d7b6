"""The source-health events (see ``aggregator.status_feed``), in a table of the index."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from aggregator.status_feed import FEED_ITEMS, StatusEvent

KEEP_EVENTS = 500

CREATE = (
    "CREATE TABLE IF NOT EXISTS status_events ("
    "id TEXT PRIMARY KEY, source TEXT NOT NULL, kind TEXT NOT NULL, "
    "at_ts REAL NOT NULL, detail TEXT NOT NULL, url TEXT NOT NULL)"
)


class StatusEvents:
    """The status-event SQL of the SQLite index (the newest ``KEEP_EVENTS`` are kept)."""

    db: sqlite3.Connection

    def record_status_events(self, events: Sequence[StatusEvent]) -> None:
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

    def recent_status_events(self, limit: int = FEED_ITEMS) -> list[StatusEvent]:
        rows = self.db.execute(
            "SELECT source, kind, at_ts, detail, url FROM status_events ORDER BY at_ts DESC, id LIMIT ?",
            (limit,),
        )
        return [
            StatusEvent(source, kind, datetime.fromtimestamp(ts, UTC), detail, url)
            for source, kind, ts, detail, url in rows
        ]
