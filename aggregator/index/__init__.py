"""The SQLite index and the state database, split by concern.

- ``schema``: opening the index (WAL), its schema version and migrations;
- ``states``: the state database (source polling states and tombstones),
  ATTACHed to the index's connection;
- ``feeds``: what the feed builder reads (posts by feed, without their files),
  the published feeds' signatures, and the feeds owed a rebuild;
- ``status``: the source-health events the status feed is built from.

Posts, retention and file sync/reindex are still SQL in ``aggregator.store``
(``PostStore``, which sequences the files and the index).
"""
