"""Every query the dashboard makes, over one read-only connection to the index.

The connection is the index opened ``mode=ro`` with the state database attached
read-only as ``state`` (the schema the store's own SQL uses), so nothing here can
write, and the daemon's writer is never held up by a lock of ours. Every function
takes that connection: pointing the dashboard at another reader means changing
this module only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aggregator.categories import display_path, first_spellings, spelling_in
from aggregator.config import Config, category_paths
from aggregator.errors import StoreError
from aggregator.index.feeds import PublishedFeeds
from aggregator.index.states import SCHEMA
from aggregator.keys import CATEGORY_PREFIX, feed_keys_for, source_key, split_key
from aggregator.publish.specs import FeedSpec, spec_for
from aggregator.state import SourceState

# The index page's order: everything, the categories as a tree, then the sources.
LISTING_ORDER = ("all", "category", "source")


def open_reader(index_path: Path, state_path: Path) -> sqlite3.Connection:
    """The index and the state database, read-only; usable from any one thread at a time."""
    try:
        db = sqlite3.connect(
            f"{index_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5, check_same_thread=False
        )
        db.execute("PRAGMA busy_timeout=5000")
        db.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (f"{state_path.resolve().as_uri()}?mode=ro",))
        db.execute("PRAGMA query_only=ON")
    except sqlite3.Error as error:
        raise StoreError(f"cannot read the index at {index_path}: {error}") from error
    return db


class _Published(PublishedFeeds):
    """The index's own feed queries, on our connection (only its read methods are called)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


# Sources ------------------------------------------------------------------------------------


def source_states(db: sqlite3.Connection) -> dict[str, SourceState]:
    """Every saved source state by name (a source never polled has none)."""
    rows = db.execute(f"SELECT state FROM {SCHEMA}.sources")
    states = (SourceState.from_json(json.loads(row[0])) for row in rows)
    return {state.name: state for state in states}


def entries_per_day(
    db: sqlite3.Connection, sources: Iterable[str], since: datetime, until: datetime
) -> dict[str, dict[int, int]]:
    """Each source's posts dated in [since, until], counted per UTC day (days since the epoch).

    One query per source on the feed index (feed key, date): it covers the query, so no post row
    is read (a scan of the posts table read every body: half a second at 50,000 posts).
    """
    query = (
        "SELECT CAST(date_ts / 86400 AS INTEGER), COUNT(*) FROM post_feeds "
        "WHERE feed_key=? AND date_ts >= ? AND date_ts <= ? GROUP BY 1"
    )
    low, high = since.timestamp(), until.timestamp()
    return {
        source: {int(day): int(count) for day, count in db.execute(query, (source_key(source), low, high))}
        for source in sources
    }


class EntryCounts:
    """``schedule.EntryCounts`` on our connection: the pace adaptive polling reads."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM posts WHERE source=? AND date_ts > ? AND date_ts <= ?",
            (source, since.timestamp(), until.timestamp()),
        ).fetchone()
        return int(row[0])


# Feeds --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedListing:
    """A published feed as the index page lists it."""

    spec: FeedSpec
    count: int  # on the live page: every post the feed key holds; in the static page: the feed's items
    newest: datetime | None


def published_listings(db: sqlite3.Connection, config: Config) -> list[FeedListing]:
    """Every published feed, everything first, then categories (as a tree), then sources."""
    published = _Published(db).published_feeds()
    counts = dict(db.execute("SELECT feed_key, COUNT(*) FROM post_feeds GROUP BY feed_key").fetchall())
    names = _CategoryNames(db, config)
    listings = [
        FeedListing(names.spec(key), int(counts.get(key, 0)), newest)
        for key, _title, _items, newest in published
    ]
    return sort_listings(listings)


def sort_listings(listings: Iterable[FeedListing]) -> list[FeedListing]:
    """The order of index.html: everything, each category before its children, then the sources."""
    return sorted(listings, key=lambda f: (LISTING_ORDER.index(f.spec.kind), f.spec.parts))


class _CategoryNames:
    """How each category level is titled: its first spelling in the config, else in its earliest post.

    The builder's rule (``FeedBuilder._level_name``), read from the same index.
    """

    def __init__(self, db: sqlite3.Connection, config: Config) -> None:
        self.db = db
        self.config = config
        self.configured = first_spellings(category_paths(config))
        self.from_posts: dict[tuple[str, ...], str | None] = {}

    def spec(self, key: str) -> FeedSpec:
        if not key.startswith(CATEGORY_PREFIX):
            return spec_for(key, self.config)
        return spec_for(key, self.config, display_path(split_key(key)[1], self._level))

    def _level(self, slugs: tuple[str, ...]) -> str | None:
        name = self.configured.get(slugs)
        if name is None:
            if slugs not in self.from_posts:
                paths = _Published(self.db).first_post_categories(CATEGORY_PREFIX + "\x1f".join(slugs))
                spelt = spelling_in(slugs, paths)
                self.from_posts[slugs] = spelt[-1] if spelt else None
            name = self.from_posts[slugs]
        return name


# Posts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostSummary:
    """A post as the newest-posts list shows it."""

    source: str
    id: str
    path: str  # the post file, relative to the posts folder: the post page's address
    title: str
    link: str
    author: str
    date: datetime
    headimg: str | None
    categories: tuple[str, ...]


_SUMMARY_COLUMNS = (
    "p.source, p.entry_id, p.path, p.title, p.link, p.author, p.date_ts, p.headimg, p.categories"
)


def newest_posts(db: sqlite3.Connection, limit: int) -> list[PostSummary]:
    """The newest ``limit`` posts (through the ``all`` feed's date index: no sort of every post)."""
    rows = db.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM post_feeds f "
        "JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
        "WHERE f.feed_key='all' ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT ?",
        (limit,),
    )
    return [_summary(row) for row in rows]


def post_at(db: sqlite3.Connection, path: str) -> PostSummary | None:
    row = db.execute(f"SELECT {_SUMMARY_COLUMNS} FROM posts p WHERE p.path=?", (path,)).fetchone()
    return _summary(row) if row else None


def feeds_of(db: sqlite3.Connection, config: Config, post: PostSummary) -> list[FeedSpec]:
    """The published feeds that hold ``post``, in index.html's order."""
    keys = [row[0] for row in db.execute(
        "SELECT feed_key FROM post_feeds WHERE source=? AND entry_id=?", (post.source, post.id)
    )]  # fmt: skip
    if not keys:  # not indexed into feeds yet: the keys it will be in
        keys = feed_keys_for(post.source, post.categories)
    names = _CategoryNames(db, config)
    return [f.spec for f in sort_listings(FeedListing(names.spec(key), 0, None) for key in keys)]


def _summary(row: Sequence[object]) -> PostSummary:
    source, entry_id, path, title, link, author, date_ts, headimg, categories = row
    return PostSummary(
        source=str(source),
        id=str(entry_id),
        path=str(path),
        title=str(title),
        link=str(link),
        author=str(author),
        date=datetime.fromtimestamp(float(date_ts), UTC),  # type: ignore[arg-type]
        headimg=str(headimg) if headimg else None,
        categories=tuple(json.loads(str(categories))),
    )


def post_body(db: sqlite3.Connection, source: str, entry_id: str) -> str:
    """The body the index holds for a post (its file's, as last read or written)."""
    row = db.execute("SELECT body FROM posts WHERE source=? AND entry_id=?", (source, entry_id)).fetchone()
    return str(row[0]) if row else ""
