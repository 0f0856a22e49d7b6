"""What the feed builder reads from the PostgreSQL index, and what it records of published feeds.

As ``aggregator.index.feeds`` is SQLite's: the same queries and orders, the rows turned into
the same objects (``IndexedPost``, ``FeedRef``) by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from aggregator.index.feeds import (
    _POST_COLUMNS,
    FeedRef,
    IndexedPost,
    _indexed,
    _indexed_unsummarized,
    _terms,
    merged_entries,
)
from aggregator.index.postgres.connection import Connection, PgConnections

_COLUMNS = ", ".join(c.strip() for c in _POST_COLUMNS.split(","))
_P_COLUMNS = ", ".join("p." + c.strip() for c in _POST_COLUMNS.split(","))


class PgPublishedFeeds(PgConnections):
    """The feed-side SQL of the PostgreSQL index."""

    def pending_feed_keys(self) -> set[str]:
        """Feed keys whose posts changed since they were last built (whichever node saved them)."""
        return {row[0] for row in self._all("SELECT key FROM pending_feeds")}

    def clear_pending_feed_keys(self, keys: Iterable[str] | None = None) -> None:
        """Forget pending keys once their feeds are built (all of them when ``keys`` is None)."""
        with self.transaction(), self._connection() as conn:
            if keys is None:
                conn.execute("DELETE FROM pending_feeds")
            else:
                conn.execute("DELETE FROM pending_feeds WHERE key = ANY(%s)", (sorted(keys),))

    def post_count(self) -> int:
        row = self._one("SELECT COUNT(*) FROM posts")
        return int(row[0]) if row else 0

    def feed_keys(self) -> list[str]:
        return [row[0] for row in self._all("SELECT DISTINCT feed_key FROM post_feeds")]

    def feed_items(self, key: str, limit: int) -> list[IndexedPost]:
        rows = self._all(
            f"SELECT {_P_COLUMNS} "
            "FROM post_feeds f JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=%s ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT %s",
            (key, limit),
        )
        return [_indexed(row) for row in rows]

    def feed_signature(self, key: str) -> str | None:
        row = self._one("SELECT signature FROM feeds WHERE key=%s", (key,))
        return row[0] if row else None

    def record_feeds(self, feeds: Iterable[tuple[str, str, str, int, datetime | None]]) -> None:
        """Record each published feed (key, signature, title, count, newest), in one transaction."""
        rows = [(k, s, t, c, n.timestamp() if n else None) for k, s, t, c, n in feeds]
        rows.sort(key=_first)  # by key: two writers lock the rows in one order
        if not rows:
            return
        with self.transaction(), self._connection() as conn:
            conn.cursor().executemany(
                "INSERT INTO feeds (key, signature, title, item_count, newest_ts) VALUES (%s,%s,%s,%s,%s) "
                "ON CONFLICT (key) DO UPDATE SET signature = EXCLUDED.signature, title = EXCLUDED.title, "
                "item_count = EXCLUDED.item_count, newest_ts = EXCLUDED.newest_ts",
                rows,
            )

    def forget_feed(self, key: str) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM feeds WHERE key=%s", (key,))

    def published_feeds(self) -> list[tuple[str, str, int, datetime | None]]:
        return [
            (key, title, count, datetime.fromtimestamp(ts, UTC) if ts is not None else None)
            for key, title, count, ts in self._all(
                "SELECT key, title, item_count, newest_ts FROM feeds ORDER BY key"
            )
        ]

    def feed_refs(self, key: str, limit: int) -> list[FeedRef]:
        """The newest ``limit`` posts of a feed, without their bodies (same order as feed_items)."""
        rows = self._all(
            "SELECT p.source, p.entry_id, p.content_hash, p.date_ts, p.updated_ts "
            "FROM post_feeds f JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=%s ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT %s",
            (key, limit),
        )
        return [FeedRef(*row) for row in rows]

    def indexed_posts(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], IndexedPost]:
        """Posts by (source, entry id); unknown pairs are left out."""
        with self._connection() as conn:
            return indexed_posts(conn, pairs)

    def first_post_categories(self, key: str) -> list[tuple[str, ...]]:
        """The category paths of a feed's earliest post (its own first, then its merged copies')."""
        row = self._one(
            "SELECT p.categories, p.merged FROM post_feeds f "
            "JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=%s ORDER BY f.date_ts, f.source, f.entry_id LIMIT 1",
            (key,),
        )
        if row is None:
            return []
        return [_terms(row[0]), *(m.categories for m in merged_entries(row[1]))]

    def feed_keys_present(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` still have posts (one query, an index probe a key)."""
        rows = self._all(
            "SELECT k FROM unnest(%s::text[]) AS k "
            "WHERE EXISTS (SELECT 1 FROM post_feeds f WHERE f.feed_key = k)",
            (list(keys),),
        )
        return {row[0] for row in rows}


def _first(row: tuple[str, str, str, int, float | None]) -> str:
    return row[0]


def indexed_posts(conn: Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], IndexedPost]:
    """Posts by (source, entry id), in one query (the pairs as two arrays); unknown pairs left out."""
    sources: list[str] = []
    ids: list[str] = []
    for source, entry_id in pairs:
        sources.append(source)
        ids.append(entry_id)
    if not sources:
        return {}
    found: dict[tuple[str, str], IndexedPost] = {}
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM posts "
        "WHERE (source, entry_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (sources, ids),
    )
    for row in rows:
        post = _indexed_unsummarized(row)
        found[(post.source, post.id)] = post
    return found
