"""``python -m bench.pg_writes``: the PostgreSQL index's CPU a new post costs, the server's and ours.

    python -m bench.pg_writes --posts 20000 --repeats 2

The bench corpus's entries become posts (bodies of 1-8 KB, four feeds each, as in the cold
fetch) and are recorded in batches of 50, one transaction a batch, as the store records a
source's new posts. Three ways, each on a fresh database of a throw-away server
(tests/support/postgres.py):

- ``upserts, schema 3``: what the index did before schema 4 (``executemany`` upserts in one
  pipeline, bodies compressed with pglz, three B-trees on the feed rows);
- ``upserts, schema 4``: the same statements on today's schema (lz4, two B-trees);
- ``the index (binary COPY), schema 4``: ``PgIndex.record_posts`` as the program runs it.

The server's CPU is that of every backend (live ones from /proc, ended ones in the
postmaster's child times); ours is this process's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import psycopg

from aggregator.index import pg_schema
from aggregator.index.postgres.pgindex import PgIndex
from aggregator.index.postgres.posts import _UPSERT_POST, _UPSERT_POST_FEED
from aggregator.index.posts import PostRecord, _row
from aggregator.keys import feed_keys_for
from aggregator.model import Post
from bench.corpus import CorpusSpec, entry, feed_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.postgres import PostgresServer, start_server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 50  # a source's new posts in one cold fetch of the bench corpus


@dataclass(frozen=True)
class WriteCost:
    way: str
    posts: int
    server_us: float  # the server's CPU a post, microseconds
    client_us: float  # ours
    wall_us: float


def corpus_records(posts: int) -> list[PostRecord]:
    """``posts`` new posts from the bench corpus, 50 a source."""
    spec = CorpusSpec(feeds=(posts + BATCH - 1) // BATCH, entries=BATCH)
    records = []
    for i in range(spec.feeds):
        info = feed_info(i)
        for k in range(spec.entries):
            e = entry(spec, info, k)
            date = e.date.astimezone(UTC)
            post = Post(
                source=info.source, id=e.guid, title=e.title, link=e.link, categories=info.categories,
                author=e.author, comments=False, date=date, updated=None, headimg=None, tags=e.tags,
                enclosures=(), body=e.body, first_seen=date,
            )  # fmt: skip
            path = f"{info.source}/{e.guid}.md"
            records.append(PostRecord(post, path, "", None, 0, None, False, 1, len(e.body)))
    return records[:posts]


def server_cpu(postmaster: int) -> float:
    """Seconds of CPU of the postmaster, the backends it reaped and those still running."""
    total = _cpu(postmaster, with_children=True)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(postmaster):
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def _cpu(pid: int, *, with_children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    if with_children:
        used += int(fields[13]) + int(fields[14])
    return used / CLOCK_TICKS


def wait_for_no_backends(server: PostgresServer, url: str, timeout: float = 30) -> None:
    name = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.url(), autocommit=True) as admin:
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise SystemExit(f"backends of {name} still running after {timeout} s")
            time.sleep(0.05)


def batches(records: list[PostRecord]) -> Iterator[list[PostRecord]]:
    for start in range(0, len(records), BATCH):
        yield records[start : start + BATCH]


def by_upserts(url: str, records: list[PostRecord]) -> None:
    with psycopg.connect(url) as conn:
        for batch in batches(records):
            feed_rows = [
                (key, r.post.source, r.post.id, r.post.date.timestamp())
                for r in batch
                for key in feed_keys_for(r.post.source, r.post.categories)
            ]
            with conn.transaction(), conn.pipeline():
                cursor = conn.cursor()
                cursor.executemany(_UPSERT_POST, [_row(r) for r in batch])
                cursor.executemany(_UPSERT_POST_FEED, feed_rows)


def by_the_index(url: str, records: list[PostRecord]) -> None:
    index = PgIndex(url)
    try:
        for batch in batches(records):
            with index.transaction():
                index.record_posts(batch)
    finally:
        index.close()


def measure_way(
    server: PostgresServer, way: str, steps: int, write: Callable[[str, list[PostRecord]], None],
    records: list[PostRecord],
) -> WriteCost:  # fmt: skip
    url = server.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        pg_schema.migrate(conn, pg_schema.STEPS[:steps])
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    server0, client0, wall0 = server_cpu(postmaster), time.process_time(), time.perf_counter()
    write(url, records)
    wall, client = time.perf_counter() - wall0, time.process_time() - client0
    wait_for_no_backends(server, url)  # the writers' backends ended: their CPU is in the postmaster's
    used = server_cpu(postmaster) - server0
    server.drop_database(url)
    n = len(records)
    return WriteCost(way, n, used / n * 1e6, client / n * 1e6, wall / n * 1e6)


WAYS: tuple[tuple[str, int, Callable[[str, list[PostRecord]], None]], ...] = (
    ("upserts, schema 3", 3, by_upserts),
    ("upserts, schema 4", 4, by_upserts),
    ("the index (binary COPY), schema 4", 4, by_the_index),
)


def run(posts: int, repeats: int, server: PostgresServer | None = None) -> list[WriteCost]:
    """Each way ``repeats`` times, alternating, on ``server`` (else a throw-away one)."""
    records = corpus_records(posts)
    own = server is None
    server = server or start_server()
    try:
        return [
            measure_way(server, way, steps, write, records)
            for _ in range(repeats)
            for way, steps, write in WAYS
        ]
    finally:
        if own:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print("| way | posts | server CPU µs a post | our CPU µs a post | wall µs a post |")
    print("|---|---:|---:|---:|---:|")
    for cost in run(args.posts, args.repeats):
        cpu = f"{cost.server_us:.0f} | {cost.client_us:.0f}"
        print(f"| {cost.way} | {cost.posts} | {cpu} | {cost.wall_us:.0f} |")


if __name__ == "__main__":
    main()
