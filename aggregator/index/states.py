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

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aggregator.decide import RETENTION
from aggregator.errors import StoreError

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
    if version > STATE_SCHEMA_VERSION:
        raise StoreError(
            f"{path}: state database schema version {version} is newer than this program "
            f"understands ({STATE_SCHEMA_VERSION}); upgrade aggregator"
        )
    if version == STATE_SCHEMA_VERSION:
        return
    try:
        db.executescript(
            f"BEGIN IMMEDIATE; {_CREATE}; INSERT OR REPLACE INTO {SCHEMA}.meta "
            f"VALUES ('schema_version', '{STATE_SCHEMA_VERSION}'); COMMIT;"
        )
    except sqlite3.Error as error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StoreError(f"{path}: cannot create the state database: {error}") from error


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
