"""The posts part of the PostgreSQL index, as ``aggregator.index.posts`` is SQLite's.

The same rows and the same answers; batches go to the server in pipelines (one round trip
for the three reads of ``known_entries``, ``executemany`` for the rows of a save).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from aggregator.decide import AliasForUpdate, EntryForUpdate
from aggregator.index.postgres.connection import Connection, PgConnections
from aggregator.index.posts import _ROW_COLUMNS, KnownEntries, PostRecord, _entry_for_update, _row
from aggregator.keys import ALL_KEY, feed_keys_for

_ROW_MARKS = ",".join(["%s"] * len(_ROW_COLUMNS.split(",")))
_KEY_COLUMNS = ("source", "entry_id")
# Binary COPY sends each value as its column's type exactly (checked against the schema in
# tests/test_index_contract.py): the columns that are not text.
_NOT_TEXT = {
    "date_ts": "float8", "updated_ts": "float8", "first_seen_ts": "float8", "last_rewrite_ts": "float8",
    "upstream_updated_ts": "float8", "rewrites": "int4", "file_mtime_ns": "int8", "file_size": "int8",
}  # fmt: skip
_ROW_TYPES = [_NOT_TEXT.get(column.strip(), "text") for column in _ROW_COLUMNS.split(",")]
_FEED_COLUMNS = "feed_key, source, entry_id, date_ts"
_FEED_TYPES = ["text", "text", "text", "float8"]
_UPSERT_POST = (
    f"INSERT INTO posts ({_ROW_COLUMNS}) VALUES ({_ROW_MARKS}) ON CONFLICT (source, entry_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = EXCLUDED.{c}" for c in (c.strip() for c in _ROW_COLUMNS.split(",")) if c not in _KEY_COLUMNS
    )
)
_UPSERT_POST_FEED = (
    f"INSERT INTO post_feeds ({_FEED_COLUMNS}) VALUES (%s,%s,%s,%s) "
    "ON CONFLICT (feed_key, source, entry_id) DO UPDATE SET date_ts = EXCLUDED.date_ts"
)
_UPSERT_ALIAS = (
    "INSERT INTO aliases (source, entry_id, target_source, target_id) VALUES (%s,%s,%s,%s) "
    "ON CONFLICT (source, entry_id) DO UPDATE SET "
    "target_source = EXCLUDED.target_source, target_id = EXCLUDED.target_id"
)
_KNOWN_COLUMNS = "path, upstream_hash, upstream_updated_ts, rewrites, last_rewrite_ts, first_seen_ts, merged"
_BURY_POSTS = (
    "INSERT INTO tombstones (source, entry_id, removed_ts, reason, title) "
    "SELECT source, entry_id, %s, %s, title FROM posts WHERE source=%s AND entry_id=%s "
    "ON CONFLICT DO NOTHING"
)
_BURY_ALIASES = (
    "INSERT INTO tombstones (source, entry_id, removed_ts, reason, title) "
    "SELECT a.source, a.entry_id, %s, %s, p.title FROM aliases a JOIN posts p "
    "ON p.source=a.target_source AND p.entry_id=a.target_id "
    "WHERE a.target_source=%s AND a.target_id=%s ON CONFLICT DO NOTHING"
)


class PgPostRows(PgConnections):
    """The posts-side SQL of the PostgreSQL index."""

    _pending: set[str]

    # What the decider reads ------------------------------------------------

    def known_entries(self, source: str, ids: Sequence[str]) -> KnownEntries:
        wanted = list(ids)
        with self._connection() as conn:
            with conn.pipeline():
                posts = conn.execute(
                    f"SELECT entry_id, {_KNOWN_COLUMNS} FROM posts WHERE source=%s AND entry_id = ANY(%s)",
                    (source, wanted),
                )
                buried = conn.execute(
                    "SELECT entry_id, reason FROM tombstones WHERE source=%s AND entry_id = ANY(%s)",
                    (source, wanted),
                )
                aliased = conn.execute(
                    "SELECT a.entry_id, p.path FROM aliases a JOIN posts p "
                    "ON p.source=a.target_source AND p.entry_id=a.target_id "
                    "WHERE a.source=%s AND a.entry_id = ANY(%s)",
                    (source, wanted),
                )
            return KnownEntries(
                {entry_id: _entry_for_update(row) for entry_id, *row in posts.fetchall()},
                {entry_id: reason for entry_id, reason in buried.fetchall()},
                {entry_id: AliasForUpdate(path) for entry_id, path in aliased.fetchall()},
            )

    def merge_candidate(self, link: str, source: str) -> EntryForUpdate | None:
        """The earliest post of another source with this canonical link."""
        row = self._one(
            f"SELECT {_KNOWN_COLUMNS} FROM posts WHERE canon_link=%s AND source<>%s "
            "ORDER BY date_ts, source, entry_id LIMIT 1",
            (link, source),
        )
        return _entry_for_update(row) if row else None

    def path_owner(self, path: str) -> tuple[str, str] | None:
        """The (source, entry id) whose post file is at ``path``, if any."""
        row = self._one("SELECT source, entry_id FROM posts WHERE path=%s", (path,))
        return (row[0], row[1]) if row else None

    def path_owners(self, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """The (source, entry id) at each of ``paths`` that a post holds (one query)."""
        wanted = list(paths)
        if not wanted:
            return {}
        rows = self._all("SELECT path, source, entry_id FROM posts WHERE path = ANY(%s)", (wanted,))
        return {path: (source, entry_id) for path, source, entry_id in rows}

    def first_seen(self, source: str, ids: Iterable[str]) -> dict[str, datetime]:
        """When each already-known entry was first seen (its date fallback)."""
        rows = self._all(
            "SELECT entry_id, first_seen_ts FROM posts WHERE source=%s AND entry_id = ANY(%s)",
            (source, list(ids)),
        )
        return {entry_id: datetime.fromtimestamp(ts, UTC) for entry_id, ts in rows}

    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int:
        """How many of ``source``'s posts are dated in (since, until]: its pace, for adaptive polling."""
        with self._connection() as conn:
            return recent_entry_count(conn, source, since, until)

    # Recording and forgetting (inside the caller's transaction) -------------

    def record_posts(self, records: Sequence[PostRecord]) -> None:
        """Index written posts; their feeds become pending. Call inside ``transaction()``."""
        new_rows: list[tuple[Any, ...]] = []
        new_feeds: list[tuple[str, str, str, float]] = []
        with self._connection() as conn:
            cursor = conn.cursor()
            for record in records:
                post = record.post
                keys = feed_keys_for(post.source, post.categories)
                for other in post.merged:
                    keys += [key for key in feed_keys_for(other.source, other.categories) if key not in keys]
                self._pending.update(keys)
                feed_rows = [(key, post.source, post.id, post.date.timestamp()) for key in keys]
                if not record.replacing and not post.merged:
                    new_rows.append(_row(record))
                    new_feeds += feed_rows
                    continue
                with conn.pipeline():
                    cursor.execute(_UPSERT_POST, _row(record))
                    if record.replacing:
                        self._pending.update(_forget_feeds(conn, post.source, post.id))
                    cursor.execute(
                        "DELETE FROM aliases WHERE target_source=%s AND target_id=%s", (post.source, post.id)
                    )
                    if post.merged:
                        cursor.executemany(
                            _UPSERT_ALIAS, [(m.source, m.id, post.source, post.id) for m in post.merged]
                        )
                    cursor.executemany(_UPSERT_POST_FEED, feed_rows)
            if new_rows:
                _insert_new(conn, new_rows, new_feeds)

    def forget(self, source: str, entry_id: str) -> set[str]:
        """Drop a post's rows (inside ``transaction()``); return the feed keys it leaves, now pending."""
        with self._connection() as conn, conn.pipeline():
            conn.execute("DELETE FROM posts WHERE source=%s AND entry_id=%s", (source, entry_id))
            conn.execute("DELETE FROM aliases WHERE target_source=%s AND target_id=%s", (source, entry_id))
            keys = _forget_feeds(conn, source, entry_id)
        self._pending.update(keys)
        return keys

    def bury(self, keys: Sequence[tuple[str, str]], reason: str, now: datetime) -> None:
        """Record tombstones for indexed posts (and the copies merged into them), titles kept.

        Committed before the posts are forgotten, as SQLite's (here within the caller's
        transaction when there is one: the tombstones are in the same database).
        """
        ts = now.timestamp()
        rows = [(ts, reason, source, entry_id) for source, entry_id in keys]
        with self.transaction(), self._connection() as conn:
            cursor = conn.cursor()
            cursor.executemany(_BURY_POSTS, rows)
            cursor.executemany(_BURY_ALIASES, rows)

    def forget_all_posts(self) -> None:
        """Empty the posts part (``reindex`` fills it again, inside the same transaction).

        Every published feed is owed a rebuild, and forgotten: those no post
        belongs to any more are then removed.
        """
        with self._connection() as conn:
            conn.execute("DELETE FROM posts")
            conn.execute("DELETE FROM post_feeds")
            conn.execute("DELETE FROM aliases")
            self._pending.update(row[0] for row in conn.execute("DELETE FROM feeds RETURNING key"))

    # Reading the whole ------------------------------------------------------

    def iter_paths(self) -> Iterator[tuple[str, str, str, int, int]]:
        """(source, entry id, path, file mtime in ns, file size) of every indexed post."""
        yield from self._all("SELECT source, entry_id, path, file_mtime_ns, file_size FROM posts")

    def tombstoned_posts(self) -> list[tuple[str, str, str, str]]:
        """(source, entry id, reason, path) of indexed posts that also have a tombstone."""
        return self._all(
            "SELECT p.source, p.entry_id, t.reason, p.path FROM tombstones t "
            "JOIN posts p ON p.source=t.source AND p.entry_id=t.entry_id ORDER BY p.source, p.entry_id"
        )

    def posts_without_feed(self) -> int:
        """How many indexed posts are missing from the feed of everything (an inconsistency)."""
        row = self._one(
            "SELECT COUNT(*) FROM posts p WHERE NOT EXISTS (SELECT 1 FROM post_feeds f "
            "WHERE f.feed_key=%s AND f.source=p.source AND f.entry_id=p.entry_id)",
            (ALL_KEY,),
        )
        return int(row[0]) if row else 0

    def posts_older_than(self, key: str, cutoff: datetime) -> dict[tuple[str, str], str]:
        """Posts of feed ``key`` dated before ``cutoff``, with their paths (for retention)."""
        rows = self._all(
            "SELECT p.source, p.entry_id, p.path FROM post_feeds f JOIN posts p "
            "ON p.source=f.source AND p.entry_id=f.entry_id WHERE f.feed_key=%s AND f.date_ts < %s",
            (key, cutoff.timestamp()),
        )
        return {(source, entry_id): path for source, entry_id, path in rows}

    def posts_beyond(self, key: str, count: int) -> dict[tuple[str, str], str]:
        """Posts of feed ``key`` after its newest ``count``, with their paths (for retention)."""
        rows = self._all(
            "SELECT p.source, p.entry_id, p.path FROM post_feeds f JOIN posts p "
            "ON p.source=f.source AND p.entry_id=f.entry_id WHERE f.feed_key=%s "
            "ORDER BY f.date_ts DESC, p.source, p.entry_id OFFSET %s",
            (key, count),
        )
        return {(source, entry_id): path for source, entry_id, path in rows}


def recent_entry_count(conn: Connection, source: str, since: datetime, until: datetime) -> int:
    """The PostgreSQL count behind ``recent_entry_count`` (the dashboard's read-only reader asks it too)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM posts WHERE source=%s AND date_ts > %s AND date_ts <= %s",
        (source, since.timestamp(), until.timestamp()),
    ).fetchone()
    return int(row[0]) if row else 0


def _insert_new(
    conn: Connection, rows: list[tuple[Any, ...]], feed_rows: list[tuple[str, str, str, float]]
) -> None:
    """New posts' rows and their feeds by binary COPY, which costs less than upserts on both sides.

    ``python -m bench.pg_writes``, a post: the server's CPU 45-48 us against 69-73 for
    ``executemany`` upserts in one pipeline, ours 26-28 us against 60-65 (bench/results.md).
    A row thought new may be indexed by the time it is written (by a node that took the source
    over while this one stalled past its lease): the COPY then fails on the key, its savepoint
    is rolled back, and the rows go in as upserts, as before.
    """
    cursor = conn.cursor()
    try:
        with conn.transaction():  # a savepoint
            with cursor.copy(f"COPY posts ({_ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_ROW_TYPES)
                for row in rows:
                    copy.write_row(row)
            with cursor.copy(f"COPY post_feeds ({_FEED_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_FEED_TYPES)
                for feed_row in feed_rows:
                    copy.write_row(feed_row)
    except psycopg.errors.UniqueViolation:
        with conn.pipeline():  # the posts and their feeds: one round trip
            cursor.executemany(_UPSERT_POST, rows)
            cursor.executemany(_UPSERT_POST_FEED, feed_rows)


def _forget_feeds(conn: Connection, source: str, entry_id: str) -> set[str]:
    cursor = conn.execute(
        "DELETE FROM post_feeds WHERE source=%s AND entry_id=%s RETURNING feed_key", (source, entry_id)
    )
    return {row[0] for row in cursor.fetchall()}
