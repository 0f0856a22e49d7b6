"""The source-health events (see ``aggregator.status_feed``) in the PostgreSQL index."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from aggregator.index.postgres.connection import PgConnections
from aggregator.index.status import KEEP_EVENTS
from aggregator.status_feed import FEED_ITEMS, StatusEvent


class PgStatusEvents(PgConnections):
    """The status-event SQL of the PostgreSQL index (the newest ``KEEP_EVENTS`` are kept)."""

    def record_status_events(self, events: Sequence[StatusEvent]) -> None:
        if not events:
            return
        with self.transaction(), self._connection() as conn:
            conn.cursor().executemany(
                "INSERT INTO status_events (id, source, kind, at_ts, detail, url) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                [(e.id, e.source, e.kind, e.at.timestamp(), e.detail, e.url) for e in events],
            )
            conn.execute(
                "DELETE FROM status_events WHERE id NOT IN "
                "(SELECT id FROM status_events ORDER BY at_ts DESC, id LIMIT %s)",
                (KEEP_EVENTS,),
            )

    def recent_status_events(self, limit: int = FEED_ITEMS) -> list[StatusEvent]:
        rows = self._all(
            "SELECT source, kind, at_ts, detail, url FROM status_events ORDER BY at_ts DESC, id LIMIT %s",
            (limit,),
        )
        return [
            StatusEvent(source, kind, datetime.fromtimestamp(ts, UTC), detail, url)
            for source, kind, ts, detail, url in rows
        ]
