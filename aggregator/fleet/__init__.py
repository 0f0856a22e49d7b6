"""Several daemons sharing one PostgreSQL database: who polls what, and how politely.

- ``plan``: the pure decisions (node ids, lease and heartbeat timing, batch sizes);
- ``leases``: per-source leases (claim due sources with SKIP LOCKED, renew, complete, release);
- ``hosts``: the fleet-wide per-host request limit (leased slots) and per-host waits;
- ``nodes``: the nodes' rows (join, heartbeat, leave, list for ``aggregator status``);
- ``buildlock``: the advisory lock that lets one node at a time build the feeds.

The tables come from :mod:`aggregator.index.pg_schema` (``migrate``), shared with the
PostgreSQL index. Every function takes a psycopg connection (from the node's pool) and
commits its own work.
"""
