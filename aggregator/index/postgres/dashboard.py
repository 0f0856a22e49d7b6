"""``PgDashboardReader``: what the web dashboard reads, from a PostgreSQL index.

As ``aggregator.index.dashboard.DashboardReader`` is SQLite's: the same ``DashboardIndex``
answers, in the same order and with the same ties (keys and paths are ``COLLATE "C"``, so
they sort byte by byte as SQLite's text does). One connection of its own, every transaction
read-only, so nothing here can write. The feed queries are the index's own
(``PgPublishedFeeds``), as are the pace and the source states; the rest are the
dashboard's. In a fleet, ``lease_holders`` also says which node polls each source now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import psycopg

from aggregator.dburl import redact
from aggregator.errors import StoreError
from aggregator.index import pg_schema
from aggregator.index.dashboard import SUMMARY_COLUMNS, DashboardIndex, PostSummary, summary_of_row
from aggregator.index.fleet.leases import Lease, held_by
from aggregator.index.fleet.nodes import fleet_exists, list_nodes
from aggregator.index.postgres.connection import Connection, read_only_connection, store_error
from aggregator.index.postgres.feeds import PgPublishedFeeds
from aggregator.index.postgres.posts import recent_entry_count
from aggregator.index.postgres.states import stored_states
from aggregator.keys import source_key
from aggregator.state import SourceState

T = TypeVar("T")


class PgDashboardReader(PgPublishedFeeds):
    """The PostgreSQL index, read-only, on one connection; one thread at a time (the caller's lock)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Connection = read_only_connection(url)
        try:
            version = pg_schema.schema_version(self.conn)
            pg_schema.pending_steps(version, pg_schema.STEPS)  # refuses a database newer than us
        except psycopg.Error as error:
            self.conn.close()
            raise store_error(url, error) from error
        except StoreError:
            self.conn.close()
            raise
        if version < pg_schema.INDEX_VERSION:
            self.conn.close()
            raise StoreError(
                f"PostgreSQL index at {redact(url)}: no index yet (the daemon may still be starting)"
            )

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The reader's own connection (the index's queries ask for one; there is no pool here)."""
        yield self.conn

    def run(self, query: Callable[[DashboardIndex], T]) -> T:
        """``query(self)``, a database error as a StoreError (the caller may open a new reader)."""
        try:
            return query(self)
        except psycopg.Error as error:
            raise store_error(self.url, error) from error

    def close(self) -> None:
        self.conn.close()

    # Sources ------------------------------------------------------------------------------

    def source_states(self) -> dict[str, SourceState]:
        """Every saved source state by name: shared by a fleet's nodes, so every node shows all."""
        return {state.name: state for state in stored_states(self.conn)}

    def entries_per_day(
        self, sources: Iterable[str], since: datetime, until: datetime
    ) -> dict[str, dict[int, int]]:
        """Each source's posts dated in [since, until], counted per UTC day (days since the epoch).

        One query for all sources (a round trip each would add up over a network), on the feed
        index (feed key, date). ``trunc`` rounds toward zero as SQLite's CAST does.
        """
        by_key = {source_key(source): source for source in sources}
        counts: dict[str, dict[int, int]] = {source: {} for source in by_key.values()}
        rows = self.conn.execute(
            "SELECT feed_key, trunc(date_ts / 86400)::bigint, COUNT(*) FROM post_feeds "
            "WHERE feed_key = ANY(%s) AND date_ts >= %s AND date_ts <= %s GROUP BY 1, 2",
            (list(by_key), since.timestamp(), until.timestamp()),
        )
        for key, day, n in rows:
            counts[by_key[key]][int(day)] = int(n)
        return counts

    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int:
        """``schedule.EntryCounts``: the pace adaptive polling reads (as the index counts it)."""
        return recent_entry_count(self.conn, source, since, until)

    def lease_holders(self, now: datetime) -> dict[str, str]:
        """Which fleet node holds each leased source now (none when no daemon ever joined a fleet)."""
        if not fleet_exists(self.conn):
            return {}
        return holders_at({node.node: held_by(self.conn, node.node) for node in list_nodes(self.conn)}, now)

    # Feeds and posts ------------------------------------------------------------------------

    def feed_post_counts(self) -> dict[str, int]:
        """Every post each feed key holds (a feed itself holds only the newest ``max_items``)."""
        rows = self.conn.execute("SELECT feed_key, COUNT(*) FROM post_feeds GROUP BY 1")
        return {key: int(n) for key, n in rows}

    def newest_posts(self, limit: int) -> list[PostSummary]:
        """The newest ``limit`` posts (through the ``all`` feed's date index), ties by source and id."""
        rows = self.conn.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM post_feeds f "
            "JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key='all' ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT %s",
            (limit,),
        )
        return [summary_of_row(row) for row in rows]

    def post_at(self, path: str) -> PostSummary | None:
        row = self.conn.execute(f"SELECT {SUMMARY_COLUMNS} FROM posts p WHERE p.path=%s", (path,)).fetchone()
        return summary_of_row(row) if row else None

    def post_feed_keys(self, source: str, entry_id: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT feed_key FROM post_feeds WHERE source=%s AND entry_id=%s ORDER BY feed_key",
            (source, entry_id),
        )
        return [row[0] for row in rows]

    def post_body(self, source: str, entry_id: str) -> str:
        """The body the index holds for a post (its file's, as last read or written)."""
        row = self.conn.execute(
            "SELECT body FROM posts WHERE source=%s AND entry_id=%s", (source, entry_id)
        ).fetchone()
        return str(row[0]) if row else ""


def holders_at(leases: Mapping[str, Sequence[Lease]], now: datetime) -> dict[str, str]:
    """Source -> the node whose lease on it runs past ``now`` (an expired lease is nobody's).

    Two nodes never hold one source at once; should the rows say so anyway (a lease expired
    and was taken while this was read), the later expiry wins.
    """
    holders: dict[str, tuple[datetime, str]] = {}
    for node, held in leases.items():
        for lease in held:
            if lease.until > now and (lease.source not in holders or lease.until > holders[lease.source][0]):
                holders[lease.source] = (lease.until, node)
    return {source: node for source, (_until, node) in holders.items()}
