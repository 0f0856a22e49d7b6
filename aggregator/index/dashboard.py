"""What the web dashboard reads (``aggregator.dashboard``), on a read-only connection of its own.

``DashboardIndex`` is what the pages ask, on either backend; ``DashboardReader`` answers it
from the SQLite files, ``aggregator.index.postgres.dashboard.PgDashboardReader`` from a
PostgreSQL index (``aggregator.index.opening.open_dashboard_reader`` picks one for a config).

The SQLite index is opened ``mode=ro`` with the state database attached read-only as
``state`` (the schema the store's own SQL uses), so nothing here can write and
the daemon's writer is never held up by a lock of ours. The feed queries are
the index's own (``PublishedFeeds``); the rest are the dashboard's: states,
entries per day, post counts per feed, the newest posts, one post.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from aggregator.errors import StoreError
from aggregator.index.feeds import PublishedFeeds
from aggregator.index.posts import recent_entry_count
from aggregator.index.states import SCHEMA
from aggregator.keys import source_key
from aggregator.state import SourceState

T = TypeVar("T")


@dataclass(frozen=True)
class PostSummary:
    """A post as the dashboard lists it."""

    source: str
    id: str
    path: str  # the post file, relative to the posts folder: the post page's address
    title: str
    link: str
    author: str
    date: datetime
    headimg: str | None
    categories: tuple[str, ...]


class DashboardIndex(Protocol):
    """What the dashboard reads of an index: the same answers, in the same order, on either backend.

    One thread at a time (the dashboard's lock). ``run`` turns the backend's database errors into
    ``StoreError``, after which the caller closes the reader and opens another.
    """

    def run(self, query: Callable[[DashboardIndex], T]) -> T: ...
    def close(self) -> None: ...

    # Sources
    def source_states(self) -> dict[str, SourceState]: ...
    def entries_per_day(
        self, sources: Iterable[str], since: datetime, until: datetime
    ) -> dict[str, dict[int, int]]: ...
    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int: ...
    def lease_holders(self, now: datetime) -> dict[str, str]: ...  # source -> fleet node leasing it

    # Feeds (what ``dashboard.data.published_listings`` reads) and posts
    def published_feeds(self) -> list[tuple[str, str, int, datetime | None]]: ...
    def first_post_categories(self, key: str) -> list[tuple[str, ...]]: ...
    def feed_post_counts(self) -> dict[str, int]: ...
    def newest_posts(self, limit: int) -> list[PostSummary]: ...
    def post_at(self, path: str) -> PostSummary | None: ...
    def post_feed_keys(self, source: str, entry_id: str) -> list[str]: ...
    def post_body(self, source: str, entry_id: str) -> str: ...


# Shared with the PostgreSQL reader, which turns its rows into summaries with ``summary_of_row``.
SUMMARY_COLUMNS = (
    "p.source, p.entry_id, p.path, p.title, p.link, p.author, p.date_ts, p.headimg, p.categories"
)


class DashboardReader(PublishedFeeds):
    """The index and the state database, read-only; one thread at a time (the caller's lock)."""

    def __init__(self, index_path: Path, state_path: Path) -> None:
        try:
            self.db = sqlite3.connect(
                f"{index_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5, check_same_thread=False
            )
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (f"{state_path.resolve().as_uri()}?mode=ro",))
            self.db.execute("PRAGMA query_only=ON")
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the index at {index_path}: {error}") from error

    def run(self, query: Callable[[DashboardIndex], T]) -> T:
        """``query(self)``, a database error as a StoreError (the caller may open a new reader)."""
        try:
            return query(self)
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the index: {error}") from error

    def close(self) -> None:
        self.db.close()

    # Sources ------------------------------------------------------------------------------

    def source_states(self) -> dict[str, SourceState]:
        """Every saved source state by name (a source never polled has none)."""
        rows = self.db.execute(f"SELECT state FROM {SCHEMA}.sources")
        states = (SourceState.from_json(json.loads(row[0])) for row in rows)
        return {state.name: state for state in states}

    def entries_per_day(
        self, sources: Iterable[str], since: datetime, until: datetime
    ) -> dict[str, dict[int, int]]:
        """Each source's posts dated in [since, until], counted per UTC day (days since the epoch).

        One query per source on the feed index (feed key, date): it covers the query, so no post
        row is read (a scan of the posts table read every body: half a second at 50,000 posts).
        """
        query = (
            "SELECT CAST(date_ts / 86400 AS INTEGER), COUNT(*) FROM post_feeds "
            "WHERE feed_key=? AND date_ts >= ? AND date_ts <= ? GROUP BY 1"
        )
        low, high = since.timestamp(), until.timestamp()
        return {
            source: {int(day): int(n) for day, n in self.db.execute(query, (source_key(source), low, high))}
            for source in sources
        }

    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int:
        """``schedule.EntryCounts``: the pace adaptive polling reads (as the store's index counts it)."""
        return recent_entry_count(self.db, source, since, until)

    def lease_holders(self, now: datetime) -> dict[str, str]:
        """None: one daemon polls every source (only a fleet, on PostgreSQL, has leases)."""
        return {}

    # Feeds and posts ------------------------------------------------------------------------

    def feed_post_counts(self) -> dict[str, int]:
        """Every post each feed key holds (a feed itself holds only the newest ``max_items``)."""
        return {
            key: int(n) for key, n in self.db.execute("SELECT feed_key, COUNT(*) FROM post_feeds GROUP BY 1")
        }

    def newest_posts(self, limit: int) -> list[PostSummary]:
        """The newest ``limit`` posts (through the ``all`` feed's date index: no sort of every post)."""
        rows = self.db.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM post_feeds f "
            "JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key='all' ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT ?",
            (limit,),
        )
        return [summary_of_row(row) for row in rows]

    def post_at(self, path: str) -> PostSummary | None:
        row = self.db.execute(f"SELECT {SUMMARY_COLUMNS} FROM posts p WHERE p.path=?", (path,)).fetchone()
        return summary_of_row(row) if row else None

    def post_feed_keys(self, source: str, entry_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT feed_key FROM post_feeds WHERE source=? AND entry_id=?", (source, entry_id)
        )
        return [row[0] for row in rows]

    def post_body(self, source: str, entry_id: str) -> str:
        """The body the index holds for a post (its file's, as last read or written)."""
        row = self.db.execute(
            "SELECT body FROM posts WHERE source=? AND entry_id=?", (source, entry_id)
        ).fetchone()
        return str(row[0]) if row else ""


def summary_of_row(row: Sequence[object]) -> PostSummary:
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
