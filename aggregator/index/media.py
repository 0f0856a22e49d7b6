"""The media archive's part of the index: each image URL's download state, and each post's images.

``media_urls``: one row an image URL: its archived copy (once downloaded), or how its
downloads failed and when to try again (a backoff). ``media_refs``: the images each post
uses, with the copy its file points at, or none while the download is pending. They mirror
the post files' ``media:`` maps (``reindex`` fills them from those), and a trigger drops a
post's rows when the post leaves the index (pruned, deleted by hand, reindexed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aggregator.index.feeds import chunks

# The schema step that adds these tables (``aggregator.index.schema``, step 7).
MIGRATION = """
CREATE TABLE IF NOT EXISTS media_urls (
    url TEXT PRIMARY KEY,
    local TEXT,
    source TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try_ts REAL,
    last_error TEXT,
    last_try_ts REAL
);
CREATE INDEX IF NOT EXISTS media_urls_local ON media_urls (local);
CREATE TABLE IF NOT EXISTS media_refs (
    source TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    url TEXT NOT NULL,
    local TEXT,
    PRIMARY KEY (source, entry_id, url)
);
CREATE INDEX IF NOT EXISTS media_refs_pending ON media_refs (source, local);
CREATE TRIGGER IF NOT EXISTS media_refs_of_forgotten_post AFTER DELETE ON posts BEGIN
    DELETE FROM media_refs WHERE source = OLD.source AND entry_id = OLD.entry_id;
END;
"""


@dataclass(frozen=True)
class MediaState:
    """What the index knows of one image URL."""

    url: str
    local: str | None  # its archived copy's address, once downloaded
    source: str = ""  # the source that last downloaded it, or tried to
    failures: int = 0
    next_try_ts: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class MediaFailures:
    """A source's images that could not be archived (yet), for ``status``."""

    source: str
    count: int
    last_error: str
    last_try: datetime | None


class MediaRows:
    """The media SQL of the SQLite index."""

    db: sqlite3.Connection

    def media_states(self, urls: Sequence[str]) -> dict[str, MediaState]:
        states: dict[str, MediaState] = {}
        for chunk in chunks(list(urls), 500):
            marks = ",".join("?" * len(chunk))
            for url, local, source, failures, next_try_ts, last_error in self.db.execute(
                "SELECT url, local, source, failures, next_try_ts, last_error FROM media_urls "
                f"WHERE url IN ({marks})",
                chunk,
            ):
                states[url] = MediaState(url, local, source, failures, next_try_ts, last_error)
        return states

    def record_media_download(self, url: str, source: str, local: str, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO media_urls (url, local, source, failures, next_try_ts, last_error, last_try_ts) "
            "VALUES (?,?,?,0,NULL,NULL,?) ON CONFLICT (url) DO UPDATE SET local=excluded.local, "
            "source=excluded.source, failures=0, next_try_ts=NULL, last_error=NULL, "
            "last_try_ts=excluded.last_try_ts",
            (url, local, source, now.timestamp()),
        )

    def record_media_failure(
        self, url: str, source: str, error: str, now: datetime, retry_at: datetime
    ) -> None:
        self.db.execute(
            "INSERT INTO media_urls (url, local, source, failures, next_try_ts, last_error, last_try_ts) "
            "VALUES (?,NULL,?,1,?,?,?) ON CONFLICT (url) DO UPDATE SET source=excluded.source, "
            "failures=failures+1, next_try_ts=excluded.next_try_ts, last_error=excluded.last_error, "
            "last_try_ts=excluded.last_try_ts",
            (url, source, retry_at.timestamp(), error, now.timestamp()),
        )

    def set_media_refs(self, source: str, entry_id: str, refs: Iterable[tuple[str, str | None]]) -> None:
        """The images a post uses now, (URL, local copy or None while pending). Inside ``transaction()``."""
        self.db.execute("DELETE FROM media_refs WHERE source=? AND entry_id=?", (source, entry_id))
        self.db.executemany(
            "INSERT OR REPLACE INTO media_refs VALUES (?,?,?,?)",
            [(source, entry_id, url, local) for url, local in refs],
        )

    def adopt_media(self, source: str, copies: Iterable[tuple[str, str]]) -> None:
        """URLs a post file says were archived (``reindex``): known as downloaded, unless known already."""
        self.db.executemany(
            "INSERT OR IGNORE INTO media_urls (url, local, source) VALUES (?,?,?)",
            [(url, local, source) for url, local in copies],
        )

    def media_due(self, source: str, now: datetime, limit: int = 200) -> list[tuple[str, str]]:
        """(entry id, URL) of ``source``'s pending images whose next try is due, oldest first."""
        rows = self.db.execute(
            "SELECT r.entry_id, r.url FROM media_refs r LEFT JOIN media_urls u ON u.url = r.url "
            "WHERE r.source=? AND r.local IS NULL AND (u.next_try_ts IS NULL OR u.next_try_ts <= ?) "
            "ORDER BY u.next_try_ts, r.entry_id, r.url LIMIT ?",
            (source, now.timestamp(), limit),
        )
        return [(entry_id, url) for entry_id, url in rows]

    def referenced_media(self) -> set[str]:
        """Every local copy a post file points at."""
        return {
            row[0] for row in self.db.execute("SELECT DISTINCT local FROM media_refs WHERE local IS NOT NULL")
        }

    def media_refs(self) -> list[tuple[str, str, str, str | None]]:
        """(source, entry id, URL, local copy or None) of every image every post uses."""
        return self.db.execute(
            "SELECT source, entry_id, url, local FROM media_refs ORDER BY source, entry_id, url"
        ).fetchall()

    def forget_media(self, locals_: Iterable[str]) -> None:
        """Copies removed from the archive: their URLs are downloaded again if a post wants them."""
        self.db.executemany("UPDATE media_urls SET local=NULL WHERE local=?", [(local,) for local in locals_])

    def media_failures(self) -> list[MediaFailures]:
        """Per source: its posts' images pending after a failed download (how many), and the last error."""
        rows = self.db.execute(
            "SELECT r.source, COUNT(DISTINCT r.url), MAX(u.last_try_ts) FROM media_refs r "
            "JOIN media_urls u ON u.url = r.url WHERE r.local IS NULL AND u.failures > 0 "
            "GROUP BY r.source ORDER BY r.source"
        ).fetchall()
        failures = []
        for source, count, last_ts in rows:
            error = self.db.execute(
                "SELECT u.last_error FROM media_refs r JOIN media_urls u ON u.url = r.url "
                "WHERE r.source=? AND r.local IS NULL AND u.failures > 0 ORDER BY u.last_try_ts DESC LIMIT 1",
                (source,),
            ).fetchone()
            when = datetime.fromtimestamp(last_ts, UTC) if last_ts is not None else None
            failures.append(MediaFailures(source, int(count), str(error[0] if error else ""), when))
        return failures
