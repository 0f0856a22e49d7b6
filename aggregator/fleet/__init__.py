"""Several daemons sharing one PostgreSQL database: who polls what, and how politely.

- ``plan``: the pure decisions (node ids, lease and heartbeat timing, batch sizes);
- ``leases``: per-source leases (claim due sources with SKIP LOCKED, renew, complete, release);
- ``hosts``: the fleet-wide per-host request limit (leased slots) and per-host waits;
- ``nodes``: the nodes' rows (join, heartbeat, leave, list for ``aggregator status``);
- ``buildlock``: the advisory lock that lets one node at a time build the feeds;
- ``member``: ``FleetMember``, all of the above for the asyncio daemon, over a connection pool;
- ``db``: the connection type, the SQL clock and the autocommit rule they share.

The tables come from :mod:`aggregator.index.pg_schema` (``migrate``), shared with the
PostgreSQL index. Every function takes an autocommit psycopg connection (from the node's
pool) and commits its own work, and takes ``now`` (None: the database's clock, shared by all).
"""
