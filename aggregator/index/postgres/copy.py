"""``aggregator migrate-index``: a SQLite index and its state database, copied into PostgreSQL.

Everything either file holds goes over, in one PostgreSQL transaction (a failure leaves the
target as it was): posts, their feeds and aliases, the published feeds and the ones owed a
build, source-health events, source states and tombstones. The SQLite files are opened as
the program opens them (so an older index is first brought to the current schema) and only
read. The target must hold no index rows: copying twice, or into a fleet's live database,
is refused rather than merged. Rows go through COPY, the fastest way into PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from aggregator.dburl import redact
from aggregator.errors import StoreError
from aggregator.index.postgres.connection import store_error
from aggregator.index.postgres.pgindex import CONNECT_SECONDS, PgIndex
from aggregator.index.posts import _ROW_COLUMNS
from aggregator.index.sqlite import SqliteIndex


@dataclass(frozen=True)
class Table:
    """One table's copy: what to read from SQLite, into which PostgreSQL table and columns."""

    label: str  # as the summary line names it
    sqlite_from: str
    target: str
    columns: str


TABLES = (
    Table("posts", "main.posts", "posts", _ROW_COLUMNS),
    Table("feed memberships", "main.post_feeds", "post_feeds", "feed_key, source, entry_id, date_ts"),
    Table("merged copies", "main.aliases", "aliases", "source, entry_id, target_source, target_id"),
    Table("published feeds", "main.feeds", "feeds", "key, signature, title, item_count, newest_ts"),
    Table("feeds owed a build", "main.pending_feeds", "pending_feeds", "key"),
    Table("status events", "main.status_events", "status_events", "id, source, kind, at_ts, detail, url"),
    Table("source states", "state.sources", "source_states", "name, state"),
    Table("tombstones", "state.tombstones", "tombstones", "source, entry_id, removed_ts, reason, title"),
)


@dataclass(frozen=True)
class CopyReport:
    target: str  # the URL, password hidden
    counts: tuple[tuple[str, int], ...]  # (label, rows copied), in TABLES' order

    def line(self) -> str:
        return f"copied into {self.target}: " + ", ".join(f"{n} {label}" for label, n in self.counts)


def copy_sqlite_index(index_path: Path, state_path: Path, url: str) -> CopyReport:
    """Copy the SQLite index at ``index_path`` (and ``state_path``) into the empty database at ``url``."""
    if not index_path.exists():
        raise StoreError(f"no SQLite index at {index_path} to copy (run `aggregator fetch` first?)")
    source = SqliteIndex(index_path, state_path)
    try:
        PgIndex(url).close()  # the schema, made or checked (a newer one is refused)
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_SECONDS) as conn:
                targets = ", ".join(table.target for table in TABLES)
                # No node writes while the copy runs (and none has written: checked next).
                conn.execute(f"LOCK TABLE {targets} IN EXCLUSIVE MODE")
                held = [
                    (table.label, n)
                    for table in TABLES
                    if (n := _count(conn, f"SELECT COUNT(*) FROM {table.target}"))
                ]
                if held:
                    raise StoreError(
                        f"{redact(url)} already holds an index ("
                        + ", ".join(f"{n} {label}" for label, n in held)
                        + "); migrate-index copies into an empty database only"
                    )
                counts = []
                with conn.cursor() as cursor:
                    for table in TABLES:
                        rows = source.db.execute(f"SELECT {table.columns} FROM {table.sqlite_from}")
                        copied = 0
                        with cursor.copy(f"COPY {table.target} ({table.columns}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
                                copied += 1
                        counts.append((table.label, copied))
        except psycopg.Error as error:
            raise store_error(url, error) from error
    finally:
        source.close()
    return CopyReport(redact(url), tuple(counts))


def _count(conn: psycopg.Connection[tuple[int]], query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0
