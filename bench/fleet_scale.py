"""One fleet node at scale: 20,000 small sources, mostly 304, on ``aggregator run`` with a PostgreSQL index.

    python -m bench.fleet_scale --sources 20000 --interval 2m --minutes 2

The parts are ``bench.daemon_polls``'s (its loopback server of tiny feeds, its config, its
steady-state window), with the index in a throw-away PostgreSQL database (``bench.postgres_cold``):

1. a cold ``aggregator fetch`` into the new database (every source 200, validators stored; not
   timed), so the daemon's polls are 304s from its first one;
2. ``aggregator run``: it registers every source in the fleet's table (all due at once), polls
   each once (the warm-up), and from then on the node is in its steady state. The interval asks
   for ``sources / interval`` polls a second; over a ``--minutes`` window the row reads the polls
   the server answered (sustained polls a second), the node's CPU and the PostgreSQL server's
   per poll, the node's resident memory at the window's end, and each feed's requests: a feed
   asked twice less than half an interval apart was polled twice (the goal: none).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.config import parse_duration
from bench import measure
from bench.daemon_polls import DaemonWindow, FeedServer, daemon_window, fetch, write_config, write_feeds
from bench.driver import free_port
from bench.postgres_cold import postgres_database, postmaster_pid

ROOT = Path(__file__).resolve().parent


def double_polls(paths: dict[str, list[Any]], interval: float) -> int:
    """Feeds requested twice less than half an interval apart (a due source polled once more)."""
    return sum(1 for _count, gap in paths.values() if gap is not None and gap < interval / 2)


@dataclass(frozen=True)
class ScaleRun:
    sources: int
    interval: float  # seconds
    window: DaemonWindow

    @property
    def asked_per_second(self) -> float:
        return self.sources / self.interval

    @property
    def polls_per_second(self) -> float:
        return self.window.requests / max(self.window.seconds, 1e-9)

    @property
    def ms_cpu_per_poll(self) -> float:
        return 1000 * self.window.cpu / max(self.window.requests, 1)

    @property
    def ms_server_cpu_per_poll(self) -> float:
        return 1000 * self.window.other_cpu / max(self.window.requests, 1)

    @property
    def double_polls(self) -> int:
        return double_polls(self.window.paths, self.interval)

    @property
    def not_modified_share(self) -> float:
        return self.window.polls / max(self.window.requests, 1)


def scale_run(
    sources: int,
    interval: float,
    minutes: float,
    work: Path,
    keep: list[int],
    *,
    database: tuple[str, int] | None = None,
) -> ScaleRun:
    """The whole row: feeds, server, database, cold fetch, then the node's steady-state window.

    ``database``: an empty database's URL and its server's pid; by default a throw-away server.
    """
    corpus, override, run_dir = work / f"feeds-{sources}", work / "override", work / "run"
    write_feeds(corpus, sources)
    override.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    server = FeedServer(corpus, override)
    keep = [*keep, server.proc.pid]
    try:
        if database is not None:
            window = _node_window(server, sources, interval, minutes, run_dir, keep, *database)
            return ScaleRun(sources, interval, window)
        with postgres_database(keep) as (pg, url):
            window = _node_window(server, sources, interval, minutes, run_dir, keep, url, postmaster_pid(pg))
            return ScaleRun(sources, interval, window)
    finally:
        server.stop()


def _node_window(
    server: FeedServer,
    sources: int,
    interval: float,
    minutes: float,
    run_dir: Path,
    keep: list[int],
    url: str,
    postmaster: int,
) -> DaemonWindow:
    port = free_port()
    config = write_config(
        run_dir / "aggregator.yaml", server, sources, port, interval=f"{interval:g}s", index=url
    )
    _log(f"cold fetch of {sources} sources into PostgreSQL")
    fetch(config, keep)
    _log(f"one node, {sources} sources at {interval:g} s: warm-up, then a {minutes:g} min window")
    return daemon_window(
        config,
        server,
        sources,
        port,
        minutes,
        keep,
        # The warm-up polls every source once: at a tenth of the asked rate at worst.
        steady_timeout=max(300.0, 10 * interval),
        other_cpu=postmaster,
        paths=True,
    )


def summary(run: ScaleRun) -> str:
    w = run.window
    return (
        f"{run.polls_per_second:.1f} polls/s sustained ({run.asked_per_second:.1f} asked; "
        f"{w.requests} polls, {run.not_modified_share:.0%} 304, in {w.seconds:.0f} s); "
        f"node {run.ms_cpu_per_poll:.2f} ms CPU a poll ({w.cpu:.1f} s), "
        f"PostgreSQL {run.ms_server_cpu_per_poll:.2f} ms ({w.other_cpu:.1f} s); "
        f"RSS {w.rss_mb:.0f} MB; {run.double_polls} double polls; warm-up {w.warmup:.0f} s"
    )


def _log(message: str) -> None:
    print(f"[fleet_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, default=20_000)
    parser.add_argument("--interval", default="2m", help="each source's (asks sources / interval a second)")
    parser.add_argument("--minutes", type=float, default=2.0, help="the measured window")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "fleet-scale")
    args = parser.parse_args()
    measure.become_subreaper()
    run = scale_run(args.sources, parse_duration(args.interval), args.minutes, args.work, [])
    print(summary(run))


if __name__ == "__main__":
    main()
