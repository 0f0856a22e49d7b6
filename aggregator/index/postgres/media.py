"""The media archive's part of the PostgreSQL index (see ``aggregator.index.media``, its SQLite twin)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from aggregator.index.media import MediaFailures, MediaState
from aggregator.index.postgres.connection import PgConnections


class PgMediaRows(PgConnections):
    """The media SQL of the PostgreSQL index."""

    def media_states(self, urls: Sequence[str]) -> dict[str, MediaState]:
        rows = self._all(
            "SELECT url, local, source, failures, next_try_ts, last_error FROM media_urls "
            "WHERE url = ANY(%s)",
            (list(urls),),
        )
        return {url: MediaState(url, local, source, failures, next_try, error)
                for url, local, source, failures, next_try, error in rows}  # fmt: skip

    def record_media_download(self, url: str, source: str, local: str, now: datetime) -> None:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO media_urls (url, local, source, failures, next_try_ts, last_error, last_try_ts) "
                "VALUES (%s,%s,%s,0,NULL,NULL,%s) ON CONFLICT (url) DO UPDATE SET local=excluded.local, "
                "source=excluded.source, failures=0, next_try_ts=NULL, last_error=NULL, "
                "last_try_ts=excluded.last_try_ts",
                (url, local, source, now.timestamp()),
            )

    def record_media_failure(
        self, url: str, source: str, error: str, now: datetime, retry_at: datetime
    ) -> None:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO media_urls (url, local, source, failures, next_try_ts, last_error, last_try_ts) "
                "VALUES (%s,NULL,%s,1,%s,%s,%s) ON CONFLICT (url) DO UPDATE SET source=excluded.source, "
                "failures=media_urls.failures+1, next_try_ts=excluded.next_try_ts, "
                "last_error=excluded.last_error, last_try_ts=excluded.last_try_ts",
                (url, source, retry_at.timestamp(), error, now.timestamp()),
            )

    def set_media_refs(self, source: str, entry_id: str, refs: Iterable[tuple[str, str | None]]) -> None:
        """The images a post uses now, (URL, local copy or None while pending). Inside ``transaction()``."""
        with self._connection() as conn:
            conn.execute("DELETE FROM media_refs WHERE source=%s AND entry_id=%s", (source, entry_id))
            conn.cursor().executemany(
                "INSERT INTO media_refs VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (source, entry_id, url) DO UPDATE SET local=excluded.local",
                [(source, entry_id, url, local) for url, local in refs],
            )

    def adopt_media(self, source: str, copies: Iterable[tuple[str, str]]) -> None:
        """URLs a post file says were archived (``reindex``): known as downloaded, unless known already."""
        with self._connection() as conn:
            conn.cursor().executemany(
                "INSERT INTO media_urls (url, local, source) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                [(url, local, source) for url, local in copies],
            )

    def media_due(self, source: str, now: datetime, limit: int = 200) -> list[tuple[str, str]]:
        """(entry id, URL) of ``source``'s pending images whose next try is due, oldest first."""
        rows = self._all(
            "SELECT r.entry_id, r.url FROM media_refs r LEFT JOIN media_urls u ON u.url = r.url "
            "WHERE r.source=%s AND r.local IS NULL AND (u.next_try_ts IS NULL OR u.next_try_ts <= %s) "
            "ORDER BY u.next_try_ts NULLS FIRST, r.entry_id, r.url LIMIT %s",
            (source, now.timestamp(), limit),
        )
        return [(entry_id, url) for entry_id, url in rows]

    def referenced_media(self) -> set[str]:
        """Every local copy a post file points at."""
        return {row[0] for row in self._all("SELECT DISTINCT local FROM media_refs WHERE local IS NOT NULL")}

    def media_refs(self) -> list[tuple[str, str, str, str | None]]:
        """(source, entry id, URL, local copy or None) of every image every post uses."""
        rows = self._all("SELECT source, entry_id, url, local FROM media_refs ORDER BY source, entry_id, url")
        return [(source, entry_id, url, local) for source, entry_id, url, local in rows]

    def forget_media(self, locals_: Iterable[str]) -> None:
        """Copies removed from the archive: their URLs are downloaded again if a post wants them."""
        with self._connection() as conn:
            conn.execute("UPDATE media_urls SET local=NULL WHERE local = ANY(%s)", (list(locals_),))

    def media_failures(self) -> list[MediaFailures]:
        """Per source: its posts' images pending after a failed download (how many), and the last error."""
        rows = self._all(
            "SELECT r.source, COUNT(DISTINCT r.url), MAX(u.last_try_ts), "
            "(array_agg(u.last_error ORDER BY u.last_try_ts DESC NULLS LAST))[1] "
            "FROM media_refs r JOIN media_urls u ON u.url = r.url WHERE r.local IS NULL AND u.failures > 0 "
            "GROUP BY r.source ORDER BY r.source"
        )
        return [
            MediaFailures(source, int(count), str(error or ""),
                          datetime.fromtimestamp(last_ts, UTC) if last_ts is not None else None)
            for source, count, last_ts, error in rows
        ]  # fmt: skip
