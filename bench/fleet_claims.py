"""``python -m bench.fleet_claims``: how fast one node leases sources from PostgreSQL.

Starts a throw-away PostgreSQL server the way the tests do (tests/support/postgres.py),
registers ``--sources`` sources, all due, and times one node on one connection:

- the server's start (initdb + pg_ctl) and one empty database (CREATE DATABASE);
- claiming them all in batches of ``--batch`` (sources leased per second);
- completing each (one UPDATE per finished poll, as the daemon would);
- claiming them all again while skipping 100 declined sources (the ``skip`` filter).
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

from aggregator.index.fleet import leases
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
    finally:
        server.stop()


if __name__ == "__main__":
    main()
