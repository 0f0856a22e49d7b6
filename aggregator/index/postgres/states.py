"""Source states and tombstones in the PostgreSQL index: the same database as the posts.

SQLite keeps them in a file of their own (``aggregator.index.states``); here one transaction
covers a tombstone and the rows it replaces. States are batched as SQLite's are
(``aggregator.index.deferral``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from aggregator.index.deferral import DeferredStates
from aggregator.index.postgres.connection import Connection, PgConnections
from aggregator.index.states import Tombstone
from aggregator.state import SourceState

# A state from an earlier poll than the stored one's is not written: in a fleet, a node that
# stalled mid-poll past its lease ends that poll after the node that took the source over has
# polled it and saved a newer state (its own poll's time is in ``last_attempt``).
_UPSERT_STATE = (
    "INSERT INTO source_states AS stored (name, state) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state "
    "WHERE (stored.state::jsonb ->> 'last_attempt') IS NULL "
    "OR (EXCLUDED.state::jsonb ->> 'last_attempt') IS NULL "
    "OR (EXCLUDED.state::jsonb ->> 'last_attempt')::timestamptz "
    ">= (stored.state::jsonb ->> 'last_attempt')::timestamptz"
)


class PgSourceStates(DeferredStates, PgConnections):
    """Tombstones and source states of the PostgreSQL index."""

    # Tombstones ------------------------------------------------------------

    def tombstones(self, source: str | None = None) -> list[Tombstone]:
        """Entries kept from being published again (deleted by hand or by retention), newest first."""
        query = "SELECT source, entry_id, title, removed_ts, reason FROM tombstones"
        rows = self._all(
            query
            + (" WHERE source=%s" if source is not None else "")
            + " ORDER BY removed_ts DESC, source, entry_id",
            (source,) if source is not None else (),
        )
        return [
            Tombstone(source, entry_id, title, datetime.fromtimestamp(ts, UTC), reason)
            for source, entry_id, title, ts, reason in rows
        ]

    def restore_tombstones(self, source: str, ids: Sequence[str]) -> list[Tombstone]:
        """Lift the tombstones of ``ids``, clearing the source's ETag and Last-Modified with them
        (see ``aggregator.index.states.SourceStates.restore_tombstones``)."""
        wanted = set(ids)
        lifted = [t for t in self.tombstones(source) if t.entry_id in wanted]
        if not lifted:
            return []
        self._flush_deferred()
        self._read_ahead.pop(source, None)
        state = self.source_state(source)
        with self.transaction(), self._connection() as conn:
            for tombstone in lifted:
                self.lift(source, tombstone.entry_id)
            if state.etag is not None or state.last_modified is not None:
                state = replace(state, etag=None, last_modified=None)
                conn.execute(_UPSERT_STATE, (state.name, json.dumps(state.to_json(), ensure_ascii=False)))
        return lifted

    def lift(self, source: str, entry_id: str) -> None:
        """Remove one tombstone (inside ``transaction()``)."""
        with self._connection() as conn:
            conn.execute("DELETE FROM tombstones WHERE source=%s AND entry_id=%s", (source, entry_id))

    # Source state (the batching is ``DeferredStates``'; this is the SQL under it) ------

    def states_version(self) -> None:
        """None: the nodes of a fleet write states all the time, so none may be kept (read each time)."""
        return None

    def _stored_state(self, name: str) -> SourceState | None:
        row = self._one("SELECT state FROM source_states WHERE name=%s", (name,))
        return SourceState.from_json(json.loads(row[0])) if row else None

    def _stored_states(self) -> list[SourceState]:
        with self._connection() as conn:
            return stored_states(conn)

    def _store_states(self, states: Sequence[SourceState]) -> None:
        rows = sorted((s.name, json.dumps(s.to_json(), ensure_ascii=False)) for s in states)
        with self.transaction(), self._connection() as conn:
            conn.cursor().executemany(_UPSERT_STATE, rows)


def stored_states(conn: Connection) -> list[SourceState]:
    """Every saved source state, by name (the dashboard's read-only reader reads them too)."""
    rows = conn.execute("SELECT state FROM source_states ORDER BY name").fetchall()
    return [SourceState.from_json(json.loads(r[0])) for r in rows]
