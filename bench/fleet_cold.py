"""The cold cycle on PostgreSQL with two fleet nodes: two ``aggregator run`` against one fresh database.

``aggregator fetch`` does not take part in the fleet (it polls every source itself), so the
fleet's cold cycle is its daemons': two nodes on the SQLite run's corpus and config (the index
in a new database, each node on its own port), started together on an empty store. The step
ends once every source is saved once (its lease completed, ``fleet_sources.last_polled``) and
no feed key is left pending (the feeds are built); the nodes are then stopped with SIGTERM.

Wall: from starting the nodes to that moment. CPU: each node's (it and its children, from
``/proc``, read at that moment, before the stop), and the PostgreSQL server's (the postmaster,
its live backends and those it reaped). Peak RSS: the largest node, sampled. The corpus server
counts requests per feed: a feed requested more than once was polled twice, which the fleet must
never do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import measure
from bench.daemon_polls import AGGREGATOR, REPO, tree_cpu
from bench.postgres_cold import config_with_index, postgres_database, postmaster_pid

# How often the driver asks the database whether the cold cycle is done.
DONE_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class FleetCold:
    """Two nodes' cold cycle: how long, what each cost, and who was polled how often."""

    wall: float
    node_cpu: tuple[float, ...]  # seconds of CPU, one per node (it and its children)
    server_cpu: float  # the PostgreSQL server's, over the step
    sources: int
    saved: int  # sources whose poll completed
    posts: int  # rows in the index's posts table
    requests: dict[str, int]  # feed file -> requests the corpus server answered for it
    peak_rss_mb: float = 0.0  # the largest node process, sampled
    peak_tree_mb: float = 0.0  # the largest node with its children, sampled

    @property
    def cpu(self) -> float:
        return sum(self.node_cpu)

    @property
    def polled_twice(self) -> list[str]:
        return sorted(name for name, count in self.requests.items() if count > 1)

    def measurement(self) -> measure.Measurement:
        """The nodes together as one step of the benchmark's table."""
        return measure.Measurement(
            argv=("aggregator", "run", f"x{len(self.node_cpu)}"),
            returncode=0,
            wall=self.wall,
            cpu=self.cpu,
            peak_rss_mb=self.peak_rss_mb,
            peak_tree_mb=self.peak_tree_mb,
            stdout="",
            stderr="",
        )

    @property
    def never_polled(self) -> int:
        return self.sources - len(self.requests)


def progress(url: str) -> tuple[int, int, int, int]:
    """(sources known, sources saved once, feed keys pending, posts) in the fleet's database."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM fleet_sources), "
            "(SELECT count(*) FROM fleet_sources WHERE last_polled IS NOT NULL), "
            "(SELECT count(*) FROM pending_feeds), (SELECT count(*) FROM posts)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def cold_done(sources: int, known: int, saved: int, pending: int) -> bool:
    """Every configured source saved once and no feed key left to build."""
    return known >= sources and saved >= sources and pending == 0


def start_node(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [AGGREGATOR, "-c", str(config), "--log-level", "warning", "run", "--port", str(port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop_nodes(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fleet_cold_on_new_database(
    config: Path,
    run_dir: Path,
    sources: int,
    feed_requests: Callable[[], dict[str, int]],
    free_port: Callable[[], int],
    keep: list[int],
    *,
    nodes: int = 2,
) -> FleetCold:
    """:func:`fleet_cold` on a throw-away PostgreSQL server started for it (as the tests start theirs)."""
    with postgres_database(keep) as (server, url):
        return fleet_cold(
            config, run_dir, url, postmaster_pid(server), sources, feed_requests, free_port, keep, nodes=nodes
        )


def fleet_cold(
    config: Path,
    run_dir: Path,
    url: str,
    postmaster: int,
    sources: int,
    feed_requests: Callable[[], dict[str, int]],
    free_port: Callable[[], int],
    keep: list[int],
    *,
    nodes: int = 2,
    timeout: float = 900,
) -> FleetCold:
    """``nodes`` daemons on ``config`` with the empty database ``url`` as index, until the cold cycle is done.

    ``postmaster``: the database server's pid (its CPU is read). ``feed_requests`` reads the
    corpus server's requests per feed (and resets them) before the nodes start and once they are done.
    """
    pg_config = config_with_index(config, run_dir, url)
    os.sync()  # the previous step's writes on disk first, as measure.run does
    feed_requests()
    cpu_before = tree_cpu(postmaster)
    keep = [*keep, *measure.children()]  # only what the nodes leave behind is reaped
    logs = [run_dir / f"node-{number}.log" for number in range(1, nodes + 1)]
    started = time.perf_counter()
    procs = [start_node(pg_config, free_port(), log) for log in logs]
    peak_process = peak_tree = 0.0
    try:
        deadline = time.monotonic() + timeout
        while True:
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"a fleet node exited early ({proc.returncode}):\n{tail}")
                peak_process = max(peak_process, measure.rss_mb(proc.pid))
                peak_tree = max(peak_tree, measure.tree_rss_mb(proc.pid))
            try:
                known, saved, pending, posts = progress(url)
            except psycopg.Error:  # the schema is not there yet: the nodes are starting
                known = saved = pending = posts = 0
            if cold_done(sources, known, saved, pending):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the fleet's cold cycle did not end in {timeout:.0f} s ({saved} saved)")
            time.sleep(DONE_POLL_SECONDS)  # polling a database for a condition, with a deadline
        wall = time.perf_counter() - started
        node_cpu = tuple(tree_cpu(proc.pid) for proc in procs)
        # The backends still serving the nodes are live children: counted by tree_cpu.
        server_seconds = tree_cpu(postmaster) - cpu_before
        requests = feed_requests()
    finally:
        stop_nodes(procs)
        measure._reap_orphans(set(keep))  # the nodes' parser workers, re-parented to us
    return FleetCold(
        wall=wall,
        node_cpu=node_cpu,
        server_cpu=server_seconds,
        sources=sources,
        saved=saved,
        posts=posts,
        requests=requests,
        peak_rss_mb=peak_process,
        peak_tree_mb=peak_tree,
    )
