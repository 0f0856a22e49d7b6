"""Which index a config names: PostgreSQL for an ``index:`` URL, else the SQLite files; and the
dashboard's reader of the same."""

from __future__ import annotations

from aggregator.config import Config
from aggregator.index.dashboard import DashboardIndex, DashboardReader
from aggregator.index.interface import Index


def open_index(config: Config) -> Index | None:
    """The PostgreSQL index when the config names one (``index:``); None: the SQLite files
    (``PostStore`` opens them under ``paths.data``)."""
    if config.index is None:
        return None
    from aggregator.index.postgres.pgindex import PgIndex  # psycopg is imported only for it

    return PgIndex(config.index)


def open_dashboard_reader(config: Config) -> DashboardIndex:
    """What the web dashboard reads, from the index the config names: a read-only reader of its own.

    A StoreError (password hidden) when it cannot be opened yet; the dashboard tries again at
    its next request.
    """
    if config.index is None:
        return DashboardReader(config.index_path, config.state_path)
    from aggregator.index.postgres.dashboard import PgDashboardReader  # psycopg only where it is used

    return PgDashboardReader(config.index)
