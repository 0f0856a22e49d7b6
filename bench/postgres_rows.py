"""The cold cycle again with the index in PostgreSQL: one ``aggregator fetch``, then two fleet nodes."""

from __future__ import annotations

from pathlib import Path

from bench.driver import Row, Server, aggregator, fetch_summary, free_port, fresh_store, log


def postgres_cold_row(
    run_dir: Path, config: Path, server: Server, cold: Row, total: int, keep: list[int]
) -> Row:
    """The cold fetch again, the index in PostgreSQL (``bench.postgres_cold``), beside SQLite's."""
    from bench.postgres_cold import cold_fetch

    log("cold fetch, PostgreSQL index")
    fresh_store(run_dir)
    pg = cold_fetch(config, run_dir, lambda cfg: aggregator(cfg, "fetch", "--json", keep=keep), keep)
    s, served = fetch_summary(pg.m), server.stats()
    ratio = pg.m.wall / cold.m.wall  # type: ignore[union-attr]
    return Row("aggregator cold fetch, PostgreSQL index (one node)", pg.m, cold.sources, s["new"],
               "<= 1.25x SQLite's cold wall", ratio <= 1.25 and s["new"] == total,
               note=f"{ratio:.2f}x SQLite's wall; PostgreSQL server CPU {pg.server_cpu:.1f} s (not in "
               f"the CPU column); {s['new']} new posts, {s['feeds_built']} feeds built; "
               f"{served['requests']} requests")  # fmt: skip


def fleet_cold_row(
    run_dir: Path, config: Path, server: Server, cold: Row, pg_one: Row, total: int, keep: list[int]
) -> Row:
    """The cold cycle by two fleet nodes on a new database (``bench.fleet_cold``), beside the others."""
    from bench.fleet_cold import fleet_cold_on_new_database

    assert cold.m is not None and pg_one.m is not None
    log("cold cycle, PostgreSQL index, two fleet nodes")
    fresh_store(run_dir)
    run = fleet_cold_on_new_database(config, run_dir, cold.sources, server.feed_requests, free_port, keep)
    server.stats()
    twice = run.polled_twice
    once = not twice and run.never_polled == 0 and run.saved == cold.sources and run.posts == total
    cpus = " + ".join(f"{cpu:.1f}" for cpu in run.node_cpu)
    note = (
        f"{run.wall / cold.m.wall:.2f}x SQLite's wall, {run.wall / pg_one.m.wall:.2f}x one PostgreSQL "
        f"node's; CPU of the nodes {cpus} s; PostgreSQL server CPU {run.server_cpu:.1f} s (not in the "
        f"CPU column); {run.saved} sources saved, {run.posts} posts; {len(run.requests)} feeds "
        f"requested, {len(twice)} twice ({', '.join(twice[:5]) or 'none'}); until every source is "
        "saved once and no feed is pending"
    )
    step = "aggregator cold cycle, PostgreSQL index, two fleet nodes (`aggregator run`)"
    return Row(step, run.measurement(), cold.sources, run.posts, "no source polled twice", once, note=note)
