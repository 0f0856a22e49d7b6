"""Several daemons sharing one PostgreSQL database: who polls what, and how politely.

- ``plan``: the pure decisions (node ids, lease and heartbeat timing, batch sizes);
- ``member``: ``FleetMember``, this process as one node, for the asyncio daemon: its pool,
  its heartbeat, its claims, host slots and the build lock.

The SQL is :mod:`aggregator.index.fleet`'s (nothing outside ``aggregator/index/`` runs SQL).
"""
