"""Which index a config names: PostgreSQL for an ``index:`` URL, else the SQLite files."""

from __future__ import annotations

from aggregator.config import Config
from aggregator.index.interface import Index


def open_index(config: Config) -> Index | None:
    """The PostgreSQL index when the config names one (``index:``); None: the SQLite files
    (``PostStore`` opens them under ``paths.data``)."""
    if config.index is None:
        return None
    from aggregator.index.postgres.pgindex import PgIndex  # psycopg is imported only for it

    return PgIndex(config.index)
