"""The fleet's pure decisions: names, timings and batch sizes, from data and ``now``.

Nothing here talks to the database; :mod:`aggregator.fleet.leases`, ``hosts`` and ``nodes``
carry these decisions out in SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_LEASE_SECONDS = 120.0
# A node renews its leases this many times per lease, so one late heartbeat loses nothing.
HEARTBEATS_PER_LEASE = 4
# A lease or host slot outlives a request's total deadline by this much before another node may take it.
SLOT_MARGIN_SECONDS = 10.0
# Asking again for a busy host's slot: a short pause that doubles up to a second.
SLOT_RETRY_FIRST = 0.05
SLOT_RETRY_MAX = 1.0
# How often a node looks for feed keys another node left pending (it stopped or died while
# this one held the build lock) and builds them: one short query when there are none.
PENDING_CHECK_SECONDS = 5.0

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class FleetTiming:
    """How long a source lease lasts and how often a node renews it (both in seconds)."""

    lease: float = DEFAULT_LEASE_SECONDS
    heartbeat: float = DEFAULT_LEASE_SECONDS / HEARTBEATS_PER_LEASE

    @property
    def lease_delta(self) -> timedelta:
        return timedelta(seconds=self.lease)


def fleet_timing(lease: float, heartbeat: float | None, deadline: float = 0.0) -> FleetTiming:
    """The configured lease, and a heartbeat that renews it well before it runs out.

    The lease outlasts one poll's total ``deadline`` (and a margin), so even a node whose
    heartbeats stall cannot have a poll still running when another node takes the source.
    Without a configured heartbeat, a quarter of the lease; a configured one is kept below
    half of it, so a single missed heartbeat never lets a live node's leases expire.
    """
    if lease <= 0:
        raise ValueError("a lease must be positive")
    lease = max(lease, deadline + SLOT_MARGIN_SECONDS) if deadline > 0 else lease
    every = lease / HEARTBEATS_PER_LEASE if heartbeat is None else min(heartbeat, lease / 2)
    return FleetTiming(lease=lease, heartbeat=every)


def node_id(hostname: str, pid: int, token: str) -> str:
    """``host-pid-token``: unique across machines and restarts, readable in ``aggregator status``."""
    host = _UNSAFE.sub("-", hostname).strip("-") or "node"
    return f"{host}-{pid}-{token}"


def node_alive(heartbeat: datetime, now: datetime, lease: float) -> bool:
    """A node whose last heartbeat is older than a lease has lost its leases: count it gone."""
    return now - heartbeat < timedelta(seconds=lease)


def claim_size(capacity: int, in_flight: int, batch: int) -> int:
    """How many sources to claim now: free places in the node's pool, at most ``batch`` at once.

    Claiming more than the node can start would hold sources other nodes could poll.
    """
    return max(0, min(capacity - in_flight, batch))


def slot_lease_seconds(deadline: float) -> float:
    """A host slot's lease: the request's total deadline and a margin (a crashed node's slot frees)."""
    return deadline + SLOT_MARGIN_SECONDS


def slot_retry_delay(attempt: int, remaining: float) -> float | None:
    """How long to wait before asking again for a slot of a host whose slots were all taken.

    None when the wait would outlast the ``remaining`` time the request may still take: it
    is then put off (the source comes back at its next poll), rather than held past its deadline.
    """
    delay = min(SLOT_RETRY_FIRST * 2 ** max(attempt, 0), SLOT_RETRY_MAX)
    return delay if delay < remaining else None
