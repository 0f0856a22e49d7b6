"""The index: a cache of the post files, plus what no file holds, behind one interface.

- ``interface``: the ``Index`` Protocol, all the rest of the program may ask;
- ``sqlite``: ``SqliteIndex``, the embedded implementation, which mixes in:
  - ``posts``: a row per post, its feeds and merged copies; what the decider
    reads, recording and forgetting posts, retention's and verify's queries;
  - ``feeds``: what the feed builder reads (posts by feed, without their files),
    the published feeds' signatures, and the feeds owed a rebuild;
  - ``states``: the state database (source polling states and tombstones),
    ATTACHed to the index's connection;
  - ``status``: the source-health events the status feed is built from;
- ``schema`` and ``versions``: opening the index (WAL), its schema version and migrations;
- ``deferral``: source states written a group at a time during a batch of polls (both backends);
- ``postgres``: ``PgIndex``, the same Protocol on PostgreSQL (``index:`` in the config), its
  tables in ``pg_schema``'s numbered steps beside the fleet's (``fleet``);
- ``readers``: what a feed-building worker process opens to read posts (``ReaderSpec``);
- ``opening``: which index a config names.

Nothing outside this package runs SQL (``tests/test_import_cycles.py`` holds it).
"""
