"""What the feed builder reads from the index, and what the index records of published feeds.

The builder reads posts from the index, never from their files: a feed's
newest posts (``feed_refs``, then ``indexed_posts`` for the ones it has not
rendered yet), the category spellings to title a feed by, and each published
feed's signature (what it was built from), so an unchanged feed is not
rewritten. ``pending_feeds`` lists the feeds owed a rebuild, written in the
same transaction as the posts that changed them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from aggregator.errors import StoreError
from aggregator.model import Enclosure, MergedEntry
from aggregator.text import summary_of

_POST_COLUMNS = (
    "source, entry_id, path, title, link, author, date_ts, updated_ts, categories, tags, "
    "headimg, enclosures, body, summary, content_hash"
)


@dataclass(frozen=True)
class IndexedPost:
    """A post as the feed builder needs it, read from the index."""

    source: str
    id: str
    path: str
    title: str
    link: str
    author: str
    date: datetime
    updated: datetime | None
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    headimg: str | None
    enclosures: tuple[Enclosure, ...]
    body: str
    summary: str
    content_hash: str


class PublishedFeeds:
    """The feed-side SQL of the SQLite index (over its connection and its transactions)."""

    db: sqlite3.Connection

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def pending_feed_keys(self) -> set[str]:
        """Feed keys whose posts changed since they were last built (survives crashes)."""
        return {row[0] for row in self.db.execute("SELECT key FROM pending_feeds")}

    def clear_pending_feed_keys(self, keys: Iterable[str] | None = None) -> None:
        """Forget pending keys once their feeds are built (all of them when ``keys`` is None)."""
        with self.transaction():
            if keys is None:
                self.db.execute("DELETE FROM pending_feeds")
            else:
                self.db.executemany("DELETE FROM pending_feeds WHERE key=?", [(k,) for k in keys])

    def post_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM posts").fetchone()[0])

    def feed_keys(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT feed_key FROM post_feeds")]

    def feed_items(self, key: str, limit: int) -> list[IndexedPost]:
        rows = self.db.execute(
            f"SELECT {', '.join('p.' + c.strip() for c in _POST_COLUMNS.split(','))} "
            "FROM post_feeds f JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=? ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT ?",
            (key, limit),
        )
        return [_indexed(row) for row in rows]

    def feed_signature(self, key: str) -> str | None:
        row = self.db.execute("SELECT signature FROM feeds WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def record_feeds(self, feeds: Iterable[tuple[str, str, str, int, datetime | None]]) -> None:
        """Record each published feed (key, signature, title, count, newest), in one transaction
        (a full build records a thousand feeds: one commit, not a thousand)."""
        rows = [(k, s, t, c, n.timestamp() if n else None) for k, s, t, c, n in feeds]
        if not rows:
            return
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO feeds VALUES (?,?,?,?,?)", rows)

    def forget_feed(self, key: str) -> None:
        self.db.execute("DELETE FROM feeds WHERE key=?", (key,))

    def published_feeds(self) -> list[tuple[str, str, int, datetime | None]]:
        return [
            (key, title, count, datetime.fromtimestamp(ts, UTC) if ts is not None else None)
            for key, title, count, ts in self.db.execute(
                "SELECT key, title, item_count, newest_ts FROM feeds ORDER BY key"
            )
        ]

    # Read-only helpers for the feed builder (it renders each post once and reuses it).

    def feed_refs(self, key: str, limit: int) -> list[FeedRef]:
        """The newest ``limit`` posts of a feed, without their bodies (same order as feed_items)."""
        rows = self.db.execute(
            "SELECT p.source, p.entry_id, p.content_hash, p.date_ts, p.updated_ts "
            "FROM post_feeds f JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=? ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT ?",
            (key, limit),
        )
        return [FeedRef(*row) for row in rows]

    def indexed_posts(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], IndexedPost]:
        """Posts by (source, entry id); unknown pairs are left out."""
        return _indexed_posts(self.db, pairs)

    def first_post_categories(self, key: str) -> list[tuple[str, ...]]:
        """The category paths of a feed's earliest post (its own first, then its merged copies').

        The builder titles a category nobody configured by how this post spells it:
        earliest by date, then by source and id, so every build picks the same one.
        """
        row = self.db.execute(
            "SELECT p.categories, p.merged FROM post_feeds f "
            "JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=? ORDER BY f.date_ts, f.source, f.entry_id LIMIT 1",
            (key,),
        ).fetchone()
        if row is None:
            return []
        return [_terms(row[0]), *(m.categories for m in merged_entries(row[1]))]

    def feed_keys_present(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` still have posts (cheaper than feed_keys() for a few keys)."""
        query = "SELECT 1 FROM post_feeds WHERE feed_key=? LIMIT 1"
        return {key for key in keys if self.db.execute(query, (key,)).fetchone() is not None}


class IndexReader:
    """The index opened only to read posts, by a feed-building worker process.

    Unlike SqliteIndex it leaves no writer mark and sweeps nothing: the process
    that opened the store does both, and it outlives this reader.
    """

    def __init__(self, index_path: Path) -> None:
        try:
            uri = f"{index_path.resolve().as_uri()}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the index at {index_path}: {error}") from error

    def indexed_posts(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], IndexedPost]:
        """As SqliteIndex.indexed_posts."""
        return _indexed_posts(self.db, pairs)

    def close(self) -> None:
        self.db.close()


def _indexed_posts(
    db: sqlite3.Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], IndexedPost]:
    columns = ", ".join(c.strip() for c in _POST_COLUMNS.split(","))
    found: dict[tuple[str, str], IndexedPost] = {}
    by_source: dict[str, list[str]] = {}
    for source, entry_id in pairs:
        by_source.setdefault(source, []).append(entry_id)
    for source, ids in by_source.items():
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT {columns} FROM posts WHERE source=? AND entry_id IN ({marks})", (source, *chunk)
            ):
                post = _indexed_unsummarized(row)
                found[(post.source, post.id)] = post
    return found


class FeedRef(NamedTuple):
    """One post of a feed as the builder first needs it: identity, version and dates.

    A named tuple, not a frozen dataclass: a full build makes a hundred thousand of them."""

    source: str
    entry_id: str
    content_hash: str
    date_ts: float
    updated_ts: float | None


def _indexed(row: Sequence[Any], *, summarize: bool = True) -> IndexedPost:
    """An index row as an IndexedPost.

    A full build reads every post, so this is written for speed (a fifth of what it was):
    the JSON term lists repeat across posts and are parsed once each (``_terms``), and the
    frozen dataclass's fields are set in one ``__dict__`` update instead of one
    ``object.__setattr__`` each, which gives the same object as the constructor (a test holds this).
    """
    (source, entry_id, path, title, link, author, date_ts, updated_ts, categories, tags,
     headimg, enclosures, body, summary, content_hash) = row  # fmt: skip
    if summarize and not summary:
        summary = summary_of(body)  # as the stored summaries are made
    post: IndexedPost = object.__new__(IndexedPost)
    post.__dict__.update(
        source=source,
        id=entry_id,
        path=path,
        title=title,
        link=link,
        author=author,
        date=datetime.fromtimestamp(date_ts, UTC),
        updated=datetime.fromtimestamp(updated_ts, UTC) if updated_ts is not None else None,
        categories=_terms(categories),
        tags=_terms(tags),
        headimg=headimg,
        enclosures=_enclosures(enclosures),
        body=body,
        summary=summary,
        content_hash=content_hash,
    )
    return post


def _indexed_unsummarized(row: Sequence[Any]) -> IndexedPost:
    """As _indexed, but a summary never stored stays empty: the builder makes it from the body's start
    (plain_text over whole bodies was a third of a full build)."""
    return _indexed(row, summarize=False)


# Term lists (JSON text) already parsed, for _indexed: a few hundred distinct ones serve 50,000 posts.
@functools.lru_cache(maxsize=4096)
def _terms(data: str) -> tuple[str, ...]:
    return tuple(json.loads(data))


def _enclosures(data: str) -> tuple[Enclosure, ...]:
    if data == "[]":  # most posts: no JSON parse
        return ()
    return tuple(Enclosure(url=u, type=t, length=n) for u, t, n in json.loads(data))


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def merged_entries(data: str) -> tuple[MergedEntry, ...]:
    return tuple(MergedEntry(source, entry_id, tuple(cats)) for source, entry_id, cats in json.loads(data))
