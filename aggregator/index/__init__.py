"""The SQLite index and the state database, split by concern.

- ``schema``: opening the index (WAL), its schema version and migrations;
- ``states``: the state database (source polling states and tombstones),
  ATTACHed to the index's connection;
- ``status``: the source-health events the status feed is built from.

Posts, retention, file sync and published feeds are still in
``aggregator.store`` (``PostStore``), which sequences the files and the index.
"""
