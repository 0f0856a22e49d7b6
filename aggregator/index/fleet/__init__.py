"""The fleet's tables in PostgreSQL: source leases, host slots and waits, nodes, the build lock.

- ``leases``: per-source leases (claim due sources with SKIP LOCKED, renew, complete, release);
- ``hosts``: the fleet-wide per-host request limit (leased slots) and per-host waits;
- ``nodes``: the nodes' rows (join, heartbeat, leave, list for ``aggregator status``);
- ``buildlock``: the advisory lock that lets one node at a time build the feeds;
- ``db``: the connection type, the SQL clock and the autocommit rule they share.

The tables come from :mod:`aggregator.index.pg_schema` (``migrate``), shared with the
PostgreSQL index. Every function takes an autocommit psycopg connection (from the node's
pool), commits its own work, and takes ``now`` (None: the database's clock, shared by all).
What to decide (how many to claim, how long a lease lasts) is :mod:`aggregator.fleet.plan`'s.
"""
