"""The PostgreSQL index: the ``Index`` Protocol over one database a fleet of nodes shares.

- ``pgindex``: ``PgIndex``, which owns a psycopg connection pool, the schema migration on
  open (``aggregator.index.pg_schema``), transactions and the feed keys pending in them, and
  mixes in one module per concern, as ``SqliteIndex`` does:
  - ``posts``: a row per post, its feeds and merged copies;
  - ``feeds``: what the feed builder reads, published feeds and the feeds owed a rebuild;
  - ``states``: source states and tombstones (in the same database: one transaction covers
    a tombstone and the rows it replaces);
  - ``status``: the source-health events;
- ``reader``: ``PgIndexReader``, a feed-building worker's own read-only connection;
- ``copy``: ``aggregator migrate-index``'s copy of a SQLite index and state database.
"""
