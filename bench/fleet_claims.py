"""``python -m bench.fleet_claims``: how fast one node leases sources from PostgreSQL.

Starts a throw-away PostgreSQL server the way the tests do (tests/support/postgres.py),
registers ``--sources`` sources, all due, and times one node on one connection:

- the server's start (initdb + pg_ctl) and one empty database (CREATE DATABASE);
- claiming them all in batches of ``--batch`` (sources leased per second);
- completing each (one UPDATE per finished poll, as the daemon would);
- claiming them all again, then while skipping 100 declined sources (the ``skip`` filter);
- a fleet-wide host slot taken and given back around each of 2,000 requests.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.postgres import start_server

from aggregator.index.fleet import hosts, leases
from aggregator.index.pg_schema import migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sources", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    began = time.perf_counter()
    server = start_server()
    started = time.perf_counter() - began
    try:
        began = time.perf_counter()
        url = server.create_database()
        created = time.perf_counter() - began
        print(f"server start (initdb + pg_ctl): {started:.2f} s; one empty database: {created * 1000:.0f} ms")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            names = [f"source-{i:05d}" for i in range(args.sources)]
            t0 = datetime.now(UTC)
            leases.register_sources(conn, names, due=t0)
            lease = timedelta(minutes=2)
            for round_number, (label, skip) in enumerate(
                (("claim", []), ("claim again", []), ("claim skip", names[-100:])), start=1
            ):
                now = t0 + timedelta(hours=round_number)
                # What autovacuum does between rounds of a long-running fleet: each poll
                # leaves two dead row versions that the next claims would step over.
                conn.execute("VACUUM fleet_sources")
                claimed: list[leases.Lease] = []
                began = time.perf_counter()
                while batch := leases.claim(conn, "bench", args.batch, lease, now=now, skip=skip):
                    claimed += batch
                seconds = time.perf_counter() - began
                print(
                    f"{label:12} {len(claimed):6} sources in batches of {args.batch}: {seconds:.2f} s, "
                    f"{len(claimed) / seconds:,.0f} sources/s"
                )
                began = time.perf_counter()
                for held in claimed:
                    leases.complete(conn, "bench", held.source, now + timedelta(minutes=30), now=now)
                seconds = time.perf_counter() - began
                print(
                    f"{'complete':12} {len(claimed):6} sources one by one: {seconds:.2f} s, "
                    f"{len(claimed) / seconds:,.0f} sources/s"
                )
            requests = 2_000
            began = time.perf_counter()
            for number in range(requests):
                slot = hosts.take_slot(conn, f"host-{number % 100}", 2, "bench", lease)
                assert isinstance(slot, hosts.HostSlot)
                hosts.give_back(conn, slot)
            seconds = time.perf_counter() - began
            print(
                f"{'host slot':12} {requests:6} takes and give-backs: {seconds:.2f} s, "
                f"{seconds / requests * 1000:.2f} ms a request"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
