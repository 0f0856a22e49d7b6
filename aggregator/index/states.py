"""The state database: what the post files cannot tell, kept out of the index.

The index (``index.sqlite3``) is a cache of the post files: ``reindex`` rebuilds
it from them. Two things are in no post file, and were lost with it:

- each source's polling state (ETag and Last-Modified, backoff, "gone" after a
  410, a permanent redirect learned from a 301/308, the next due time);
- tombstones: entries removed on purpose, by retention or by a person deleting
  the post file, which must not be fetched back while upstream still lists them.

They live in ``state.sqlite3`` beside the index. It is ATTACHed to the index's
connection as the schema ``state`` rather than opened on its own connection:
the store's SQL reaches it with a prefix (``state.tombstones``), and one
``BEGIN IMMEDIATE`` locks both files, so a tombstone and the index rows it
replaces are written under one lock. In WAL mode SQLite commits each file on
its own (not atomically across them), so the store writes a tombstone in a
transaction of its own before it forgets the post: a crash in between leaves a
tombstone beside a row, which ``PostStore.sync_with_files`` settles.

An index from before this file existed (schema 4 and older) holds a ``sources``
and a ``pruned`` table; ``adopt_legacy_tables`` copies them here once (again
after a crash: the copy ignores rows already present), before the index's
migration drops them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from aggregator.decide import RETENTION
from aggregator.errors import StoreError
from aggregator.index.deferral import DeferredStates
from aggregator.index.versions import refuse_newer, upgrade
from aggregator.state import SourceState

SCHEMA = "state"
STATE_FILE = "state.sqlite3"
STATE_SCHEMA_VERSION = 1

_CREATE = """
CREATE TABLE IF NOT EXISTS state.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state.sources (name TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state.tombstones (
    source TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    removed_ts REAL NOT NULL,
    reason TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (source, entry_id)
);
"""


@dataclass(frozen=True)
class Tombstone:
    """An entry kept from being published again, and why."""

    source: str
    entry_id: str
    title: str  # as the post had it, when known
    removed: datetime
    reason: str  # "retention" or "deleted"

    def to_json(self) -> dict[str, str]:
        return {
            "source": self.source,
            "id": self.entry_id,
            "title": self.title,
            "removed": self.removed.isoformat(),
            "reason": self.reason,
        }


def attach(db: sqlite3.Connection, path: Path) -> None:
    """Attach the state database at ``path`` as ``state``, creating or checking its schema."""
    try:
        db.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (str(path),))
        db.execute(f"PRAGMA {SCHEMA}.journal_mode=WAL")
        db.execute(f"PRAGMA {SCHEMA}.synchronous=NORMAL")
        has_meta = db.execute(
            f"SELECT 1 FROM {SCHEMA}.sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        row = (
            db.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key='schema_version'").fetchone()
            if has_meta
            else None
        )
        version = int(row[0]) if row else 0
    except (sqlite3.Error, ValueError) as error:
        raise StoreError(f"{path}: not a readable state database: {error}") from error
    refuse_newer(version, STATE_SCHEMA_VERSION, path, "state database", "upgrade aggregator")
    if version == STATE_SCHEMA_VERSION:
        return
    upgrade(
        db, _CREATE, meta=f"{SCHEMA}.meta", version=STATE_SCHEMA_VERSION,
        failure=f"{path}: cannot create the state database",
    )  # fmt: skip


def adopt_legacy_tables(db: sqlite3.Connection) -> None:
    """Copy the states and retention tombstones an older index kept into the state database.

    Rows already there win (they are newer), so running it twice changes nothing.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM main.sqlite_master WHERE type='table'")}
    statements = []
    if "sources" in tables:
        statements.append(f"INSERT OR IGNORE INTO {SCHEMA}.sources SELECT name, state FROM main.sources")
    if "pruned" in tables:
        statements.append(
            f"INSERT OR IGNORE INTO {SCHEMA}.tombstones (source, entry_id, removed_ts, reason) "
            f"SELECT source, entry_id, pruned_ts, '{RETENTION}' FROM main.pruned"
        )
    if statements:
        db.executescript("BEGIN IMMEDIATE; " + "; ".join(statements) + "; COMMIT;")


def tombstone_reasons(db: sqlite3.Connection, source: str, ids: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(entry id, reason) for those of ``ids`` that have a tombstone."""
    pending = list(ids)
    for start in range(0, len(pending), 500):
        chunk = pending[start : start + 500]
        marks = ",".join("?" * len(chunk))
        yield from db.execute(
            f"SELECT entry_id, reason FROM {SCHEMA}.tombstones WHERE source=? AND entry_id IN ({marks})",
            (source, *chunk),
        )


def tombstones(db: sqlite3.Connection, source: str | None = None) -> list[Tombstone]:
    """Every tombstone (of one source when given), newest first."""
    query = f"SELECT source, entry_id, title, removed_ts, reason FROM {SCHEMA}.tombstones"
    rows = db.execute(
        query
        + (" WHERE source=?" if source is not None else "")
        + " ORDER BY removed_ts DESC, source, entry_id",
        (source,) if source is not None else (),
    )
    return [
        Tombstone(source, entry_id, title, datetime.fromtimestamp(ts, UTC), reason)
        for source, entry_id, title, ts, reason in rows
    ]


class SourceStates(DeferredStates):
    """The state-database side of the SQLite index: tombstones and source states.

    Within ``deferred_states`` source states are held and written a group at a
    time (``aggregator.index.deferral``).
    """

    db: sqlite3.Connection

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    # Tombstones ------------------------------------------------------------

    def tombstones(self, source: str | None = None) -> list[Tombstone]:
        """Entries kept from being published again (deleted by hand or by retention), newest first."""
        return tombstones(self.db, source)

    def restore_tombstones(self, source: str, ids: Sequence[str]) -> list[Tombstone]:
        """Lift the tombstones of ``ids``, so the next fetch that finds them upstream writes them again.

        The source's ETag and Last-Modified are cleared with them: otherwise a feed
        unchanged since the deletion answers 304 and the entry waits for its next change.
        Returns the tombstones lifted; an id without one is left out.
        """
        lifted = [t for t in tombstones(self.db, source) if t.entry_id in set(ids)]
        if not lifted:
            return []
        self._flush_deferred()
        self._read_ahead.pop(source, None)
        state = self.source_state(source)
        with self.transaction():
            for tombstone in lifted:
                self.lift(source, tombstone.entry_id)
            if state.etag is not None or state.last_modified is not None:
                state = replace(state, etag=None, last_modified=None)
                self.db.execute(
                    "INSERT OR REPLACE INTO state.sources VALUES (?, ?)",
                    (state.name, json.dumps(state.to_json(), ensure_ascii=False)),
                )
        return lifted

    def lift(self, source: str, entry_id: str) -> None:
        """Remove one tombstone (inside ``transaction()``)."""
        self.db.execute("DELETE FROM state.tombstones WHERE source=? AND entry_id=?", (source, entry_id))

    # Source state (the batching is ``DeferredStates``'; this is the SQL under it) ------

    def states_version(self) -> int | None:
        """A number that changes whenever another connection commits to the state database.

        SQLite's ``data_version``: this connection's own commits leave it as it is, so a
        reader that keeps the states it wrote knows when to read them again.
        """
        row = self.db.execute(f"PRAGMA {SCHEMA}.data_version").fetchone()
        return int(row[0])

    def _stored_state(self, name: str) -> SourceState | None:
        row = self.db.execute("SELECT state FROM state.sources WHERE name=?", (name,)).fetchone()
        return SourceState.from_json(json.loads(row[0])) if row else None

    def _stored_states(self) -> list[SourceState]:
        rows = self.db.execute("SELECT state FROM state.sources")
        return [SourceState.from_json(json.loads(r[0])) for r in rows]

    def _store_states(self, states: Sequence[SourceState]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO state.sources VALUES (?, ?)",
                [(state.name, json.dumps(state.to_json(), ensure_ascii=False)) for state in states],
            )
