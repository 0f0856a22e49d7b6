"""The daemon's work per poll does not grow with the number of sources it schedules.

At 5,000 sources polled every minute the daemon spent about 2.4 ms of CPU per
not-modified poll, against 0.66 ms per source in ``aggregator fetch`` (issue 17):
each poll scanned the config for its source twice and listed every job once.
``bench/daemon_polls.py`` measures the whole daemon; these tests hold the parts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from support.helpers import write_config

from aggregator.config import load_config
from aggregator.daemon import Daemon
from aggregator.pipeline import Updater
from aggregator.schedule import timing_for
from aggregator.workers import ParserPool
from aggregator.writebehind import FlushBound

POLLED = 20
ROUNDS = 10


def _rss(name: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://127.0.0.1/{name}</link><description>d</description>"
        f"<item><title>{name} 1</title><link>http://127.0.0.1/{name}/1</link><guid>{name}-1</guid>"
        "<description>one</description></item></channel></rss>"
    ).encode()


def _cpu_per_poll(site: Path, feeds: Path, configured: int) -> float:
    """CPU seconds of one not-modified poll through ``Daemon._run_source`` among ``configured`` sources.

    The polled sources are the last ones of the config (a scan of it meets them last).
    Every job is added paused: the scheduler fires none, it holds the due times ``_run_source`` moves.
    """
    names = [f"s{i}" for i in range(configured)]
    polled = names[-POLLED:]
    feeds.mkdir(parents=True, exist_ok=True)
    for name in polled:
        (feeds / f"{name}.xml").write_bytes(_rss(name))
    # The others are never polled: a loopback URL nobody listens on is never fetched.
    sources = [
        {"name": n, "url": str(feeds / f"{n}.xml") if n in polled else f"http://127.0.0.1:9/{n}"}
        for n in names
    ]
    config_path = write_config(site, sources, defaults={"interval": "1m"})
    config = load_config(config_path)

    async def scenario() -> float:
        daemon = Daemon(config_path, config)
        daemon.open()
        daemon.updater = Updater(config, daemon.store, parser=ParserPool(processes=0))
        try:
            daemon.scheduler.start()
            for source in config.sources:  # paused: only _run_source moves them
                daemon.scheduler.add(source.name, timing_for(config, source), None)
            for name in polled:  # the first poll fetches the feed and keeps its validators
                await daemon._run_source(name)
            assert all(daemon.store.index.source_state(n).etag for n in polled)
            started = time.process_time()
            for _ in range(ROUNDS):
                for name in polled:
                    await daemon._run_source(name)
            spent = time.process_time() - started
            assert daemon._tally.not_modified == ROUNDS * POLLED
            return spent / (ROUNDS * POLLED)
        finally:
            daemon.scheduler.shutdown()
            await daemon.close()

    return asyncio.run(scenario())


def test_a_polls_cpu_does_not_grow_with_the_sources_scheduled(tmp_path: Path) -> None:
    few = _cpu_per_poll(tmp_path / "few", tmp_path / "few-feeds", 50)
    many = _cpu_per_poll(tmp_path / "many", tmp_path / "many-feeds", 10_000)
    # Before: 10,000 sources added about 2 ms to every poll (two scans of the config, a list
    # of every job), several times a not-modified poll of a local file.
    assert many < 1.5 * few + 0.0002, f"{many * 1000:.3f} ms a poll among 10,000, {few * 1000:.3f} among 50"


def test_not_modified_polls_write_their_states_in_one_transaction(tmp_path: Path) -> None:
    """A poll's state is held (``aggregator.writebehind``): one commit for many polls, not one each."""
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    names = [f"s{i}" for i in range(POLLED)]
    for name in names:
        (feeds / f"{name}.xml").write_bytes(_rss(name))
    config_path = write_config(
        tmp_path / "site", [{"name": n, "url": str(feeds / f"{n}.xml")} for n in names]
    )
    config = load_config(config_path)

    async def scenario() -> tuple[int, int]:
        daemon = Daemon(config_path, config)
        daemon.open()
        daemon.states.bound = FlushBound(seconds=3600, states=10_000)  # only a flush writes them
        daemon.updater = Updater(config, daemon.store, parser=ParserPool(processes=0), states=daemon.states)
        statements: list[str] = []
        try:
            daemon.scheduler.start()
            for source in config.sources:
                daemon.scheduler.add(source.name, timing_for(config, source), None)
            for name in names:  # the first polls fetch the feeds
                await daemon._run_source(name)
            daemon.flush_states()
            daemon.store.index.db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
            for name in names:
                await daemon._run_source(name)
            assert daemon._tally.not_modified == POLLED
            during = statements.count("COMMIT")
            # Read back through the buffer: each poll found the validators the last one left.
            assert all(daemon.states.source_state(n).http_status == 304 for n in names)
            daemon.flush_states()
            return during, statements.count("COMMIT") - during
        finally:
            daemon.scheduler.shutdown()
            await daemon.close()

    during, at_flush = asyncio.run(scenario())
    # Before: one commit of the state per poll (20 here), a twelfth of the daemon's CPU per poll.
    assert (during, at_flush) == (0, 1)
