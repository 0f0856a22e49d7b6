"""The posts part of the index: one row a post, its feeds, and the copies merged into it.

``PostStore`` decides and writes the files; this is the SQL that keeps the
index in step with them: what the decider needs to know about entries already
stored, recording written posts (and the feeds they belong to, marked pending
for a rebuild), forgetting them (with a tombstone first, so they are not
fetched back), what retention would remove, and what ``verify`` compares.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring  # the C one that json.dumps(ensure_ascii=False) uses
from typing import Any

from aggregator.decide import AliasForUpdate, EntryForUpdate
from aggregator.index.feeds import chunks, merged_entries
from aggregator.index.states import tombstone_reasons
from aggregator.keys import ALL_KEY, feed_keys_for
from aggregator.model import Post
from aggregator.normalize import canonical_link

_ROW_COLUMNS = (
    "source, entry_id, path, title, link, author, date_ts, updated_ts, first_seen_ts, categories, tags, "
    "headimg, enclosures, body, summary, content_hash, rewrites, last_rewrite_ts, file_mtime_ns, "
    "file_size, upstream_hash, upstream_updated_ts, canon_link, merged"
)
_ROW_MARKS = ",".join("?" * len(_ROW_COLUMNS.split(",")))
_KNOWN_COLUMNS = "path, upstream_hash, upstream_updated_ts, rewrites, last_rewrite_ts, first_seen_ts, merged"


@dataclass(frozen=True)
class PostRecord:
    """A post whose file is written, as the index records it.

    ``replacing`` says an earlier row of the same entry may exist (an update,
    a merge, a file adopted by sync): its feeds and aliases are replaced. New
    posts' rows are inserted together, one call for the lot.
    """

    post: Post
    path: str
    upstream_hash: str
    upstream_updated_ts: float | None
    rewrites: int
    last_rewrite_ts: float | None
    replacing: bool
    file_mtime_ns: int
    file_size: int


@dataclass(frozen=True)
class KnownEntries:
    """What the index knows of some entries of one source, for ``aggregator.decide``.

    Every ``file_exists`` is True here: whether a file is there is for the caller to check.
    """

    known: dict[str, EntryForUpdate]
    buried: dict[str, str]  # entry id -> tombstone reason
    aliased: dict[str, AliasForUpdate]  # entry id -> the post it was merged into


class PostRows:
    """The posts-side SQL of the SQLite index (over its connection and its transactions)."""

    db: sqlite3.Connection
    _pending: set[str]

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    # What the decider reads ------------------------------------------------

    def known_entries(self, source: str, ids: Sequence[str]) -> KnownEntries:
        known: dict[str, EntryForUpdate] = {}
        buried: dict[str, str] = {}
        aliased: dict[str, AliasForUpdate] = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for entry_id, *row in self.db.execute(
                f"SELECT entry_id, {_KNOWN_COLUMNS} FROM posts WHERE source=? AND entry_id IN ({marks})",
                (source, *chunk),
            ):
                known[entry_id] = _entry_for_update(row)
            buried.update(tombstone_reasons(self.db, source, chunk))
            for entry_id, path in self.db.execute(
                "SELECT a.entry_id, p.path FROM aliases a JOIN posts p "
                "ON p.source=a.target_source AND p.entry_id=a.target_id "
                f"WHERE a.source=? AND a.entry_id IN ({marks})",
                (source, *chunk),
            ):
                aliased[entry_id] = AliasForUpdate(path)
        return KnownEntries(known, buried, aliased)

    def merge_candidate(self, link: str, source: str) -> EntryForUpdate | None:
        """The earliest post of another source with this canonical link."""
        row = self.db.execute(
            f"SELECT {_KNOWN_COLUMNS} "
            "FROM posts WHERE canon_link=? AND source!=? ORDER BY date_ts, source, entry_id LIMIT 1",
            (link, source),
        ).fetchone()
        return _entry_for_update(row) if row else None

    def path_owner(self, path: str) -> tuple[str, str] | None:
        """The (source, entry id) whose post file is at ``path``, if any."""
        row = self.db.execute("SELECT source, entry_id FROM posts WHERE path=?", (path,)).fetchone()
        return (row[0], row[1]) if row else None

    def path_owners(self, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """The (source, entry id) at each of ``paths`` that a post holds."""
        found = {}
        for chunk in chunks(list(paths), 500):
            marks = ",".join("?" * len(chunk))
            for path, source, entry_id in self.db.execute(
                f"SELECT path, source, entry_id FROM posts WHERE path IN ({marks})", chunk
            ):
                found[path] = (source, entry_id)
        return found

    def first_seen(self, source: str, ids: Iterable[str]) -> dict[str, datetime]:
        """When each already-known entry was first seen (its date fallback)."""
        result = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for entry_id, ts in self.db.execute(
                f"SELECT entry_id, first_seen_ts FROM posts WHERE source=? AND entry_id IN ({marks})",
                (source, *chunk),
            ):
                result[entry_id] = datetime.fromtimestamp(ts, UTC)
        return result

    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int:
        """How many of ``source``'s posts are dated in (since, until]: its pace, for adaptive polling."""
        return recent_entry_count(self.db, source, since, until)

    # Recording and forgetting (inside the caller's transaction) -------------

    def record_posts(self, records: Sequence[PostRecord]) -> None:
        """Index written posts; their feeds become pending. Call inside ``transaction()``."""
        new_rows: list[tuple[Any, ...]] = []
        new_feeds: list[tuple[str, str, str, float]] = []
        for record in records:
            post = record.post
            row = _row(record)
            keys = feed_keys_for(post.source, post.categories)
            for other in post.merged:
                keys += [key for key in feed_keys_for(other.source, other.categories) if key not in keys]
            self._pending.update(keys)
            feed_rows = [(key, post.source, post.id, post.date.timestamp()) for key in keys]
            if not record.replacing and not post.merged:
                new_rows.append(row)
                new_feeds += feed_rows
                continue
            self.db.execute(f"INSERT OR REPLACE INTO posts ({_ROW_COLUMNS}) VALUES ({_ROW_MARKS})", row)
            if record.replacing:
                self._pending.update(self._forget_feeds(post.source, post.id))
            self.db.execute(
                "DELETE FROM aliases WHERE target_source=? AND target_id=?", (post.source, post.id)
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO aliases VALUES (?,?,?,?)",
                [(m.source, m.id, post.source, post.id) for m in post.merged],
            )
            self.db.executemany("INSERT OR REPLACE INTO post_feeds VALUES (?,?,?,?)", feed_rows)
        self.db.executemany(f"INSERT OR REPLACE INTO posts ({_ROW_COLUMNS}) VALUES ({_ROW_MARKS})", new_rows)
        self.db.executemany("INSERT OR REPLACE INTO post_feeds VALUES (?,?,?,?)", new_feeds)

    def forget(self, source: str, entry_id: str) -> set[str]:
        """Drop a post's rows (inside ``transaction()``); return the feed keys it leaves, now pending."""
        self.db.execute("DELETE FROM posts WHERE source=? AND entry_id=?", (source, entry_id))
        self.db.execute("DELETE FROM aliases WHERE target_source=? AND target_id=?", (source, entry_id))
        keys = self._forget_feeds(source, entry_id)
        self._pending.update(keys)
        return keys

    def _forget_feeds(self, source: str, entry_id: str) -> set[str]:
        keys = {
            row[0]
            for row in self.db.execute(
                "SELECT feed_key FROM post_feeds WHERE source=? AND entry_id=?", (source, entry_id)
            )
        }
        self.db.execute("DELETE FROM post_feeds WHERE source=? AND entry_id=?", (source, entry_id))
        return keys

    def bury(self, keys: Sequence[tuple[str, str]], reason: str, now: datetime) -> None:
        """Record tombstones for indexed posts (and the copies merged into them), titles kept.

        A transaction of its own, committed before the posts are forgotten: SQLite
        commits the two files one after the other, and a tombstone beside a row
        (``sync_with_files`` settles it) is better than a row gone without one.
        """
        ts = now.timestamp()
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO state.tombstones (source, entry_id, removed_ts, reason, title) "
                "SELECT source, entry_id, ?, ?, title FROM posts WHERE source=? AND entry_id=?",
                [(ts, reason, source, entry_id) for source, entry_id in keys],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO state.tombstones (source, entry_id, removed_ts, reason, title) "
                "SELECT a.source, a.entry_id, ?, ?, p.title FROM aliases a JOIN posts p "
                "ON p.source=a.target_source AND p.entry_id=a.target_id "
                "WHERE a.target_source=? AND a.target_id=?",
                [(ts, reason, source, entry_id) for source, entry_id in keys],
            )

    def forget_all_posts(self) -> None:
        """Empty the posts part (``reindex`` fills it again, inside the same transaction).

        Every published feed is owed a rebuild, and forgotten: those no post
        belongs to any more are then removed.
        """
        self.db.execute("DELETE FROM posts")
        self.db.execute("DELETE FROM post_feeds")
        self.db.execute("DELETE FROM aliases")
        self._pending.update(row[0] for row in self.db.execute("SELECT key FROM feeds"))
        self.db.execute("DELETE FROM feeds")

    # Reading the whole ------------------------------------------------------

    def iter_paths(self) -> Iterator[tuple[str, str, str, int, int]]:
        """(source, entry id, path, file mtime in ns, file size) of every indexed post."""
        yield from self.db.execute("SELECT source, entry_id, path, file_mtime_ns, file_size FROM posts")

    def tombstoned_posts(self) -> list[tuple[str, str, str, str]]:
        """(source, entry id, reason, path) of indexed posts that also have a tombstone."""
        return self.db.execute(
            "SELECT p.source, p.entry_id, t.reason, p.path FROM state.tombstones t "
            "JOIN posts p ON p.source=t.source AND p.entry_id=t.entry_id ORDER BY p.source, p.entry_id"
        ).fetchall()

    def posts_without_feed(self) -> int:
        """How many indexed posts are missing from the feed of everything (an inconsistency)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM posts p WHERE NOT EXISTS (SELECT 1 FROM post_feeds f "
            "WHERE f.feed_key=? AND f.source=p.source AND f.entry_id=p.entry_id)",
            (ALL_KEY,),
        ).fetchone()
        return int(row[0])

    def posts_older_than(self, key: str, cutoff: datetime) -> dict[tuple[str, str], str]:
        """Posts of feed ``key`` dated before ``cutoff``, with their paths (for retention)."""
        rows = self.db.execute(
            "SELECT p.source, p.entry_id, p.path FROM post_feeds f JOIN posts p "
            "ON p.source=f.source AND p.entry_id=f.entry_id WHERE f.feed_key=? AND f.date_ts < ?",
            (key, cutoff.timestamp()),
        )
        return {(source, entry_id): path for source, entry_id, path in rows}

    def posts_beyond(self, key: str, count: int) -> dict[tuple[str, str], str]:
        """Posts of feed ``key`` after its newest ``count``, with their paths (for retention)."""
        rows = self.db.execute(
            "SELECT p.source, p.entry_id, p.path FROM post_feeds f JOIN posts p "
            "ON p.source=f.source AND p.entry_id=f.entry_id WHERE f.feed_key=? "
            "ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT -1 OFFSET ?",
            (key, count),
        )
        return {(source, entry_id): path for source, entry_id, path in rows}


def recent_entry_count(db: sqlite3.Connection, source: str, since: datetime, until: datetime) -> int:
    """The SQLite count behind ``recent_entry_count`` (the dashboard's read-only reader asks it too)."""
    row = db.execute(
        "SELECT COUNT(*) FROM posts WHERE source=? AND date_ts > ? AND date_ts <= ?",
        (source, since.timestamp(), until.timestamp()),
    ).fetchone()
    return int(row[0])


def _entry_for_update(row: Sequence[Any]) -> EntryForUpdate:
    """An index row of ``_KNOWN_COLUMNS`` as the decider takes it."""
    path, upstream_hash, upstream_ts, rewrites, last_rewrite_ts, first_seen_ts, merged = row
    return EntryForUpdate(
        path, upstream_hash, upstream_ts, rewrites, last_rewrite_ts, first_seen_ts, merged_entries(merged)
    )


def _row(record: PostRecord) -> tuple[Any, ...]:
    post = record.post
    first_seen = post.first_seen or post.date
    return (
        post.source,
        post.id,
        record.path,
        post.title,
        post.link,
        post.author,
        post.date.timestamp(),
        post.updated.timestamp() if post.updated is not None else None,
        first_seen.timestamp(),
        json_texts(_all_categories(post)),
        json_texts(post.tags),
        post.headimg,
        json.dumps([[e.url, e.type, e.length] for e in post.enclosures]) if post.enclosures else "[]",
        post.body,
        post.summary,  # made in the parser worker (see normalize.prepared)
        post.content_hash,
        record.rewrites,
        record.last_rewrite_ts,
        record.file_mtime_ns,
        record.file_size,
        record.upstream_hash,
        record.upstream_updated_ts,
        canonical_link(post.link),
        json.dumps([[m.source, m.id, list(m.categories)] for m in post.merged], ensure_ascii=False)
        if post.merged
        else "[]",
    )


def json_texts(items: Iterable[str]) -> str:
    """``json.dumps(list(items), ensure_ascii=False)``, without making an encoder a call:
    a quarter of the cost (3.4 -> 0.8 us for a post's three categories)."""
    return f"[{', '.join(map(encode_basestring, items))}]"


def _all_categories(post: Post) -> list[str]:
    """The post's categories and those of the copies merged into it, each once."""
    names = dict.fromkeys(post.categories)
    for other in post.merged:
        names.update(dict.fromkeys(other.categories))
    return list(names)
