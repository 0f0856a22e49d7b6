"""When sources run: next_run decisions (pure) and the APScheduler jobs behind them."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.helpers import write_config

from aggregator.config import load_config
from aggregator.errors import FetchError, RateLimited, SourceGone
from aggregator.schedule import (
    START_SPREAD_SECONDS,
    SourceScheduler,
    Timing,
    adaptive_interval,
    jitter_for,
    next_run,
    timing_for,
)
from aggregator.state import SourceState, after_failure, after_success

NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
HOUR = Timing(interval=3600.0)


def _ok(at: datetime, interval: float = 3600.0) -> SourceState:
    return after_success(
        SourceState("s"), now=at, interval=interval, http_status=200, new=1, updated=0,
        etag=None, last_modified=None, permanent_url=None,
    )  # fmt: skip


def test_a_source_never_polled_runs_soon_but_spread() -> None:
    rng = random.Random(1)
    times = [next_run(HOUR, SourceState("s"), NOW, rng) for _ in range(200)]
    assert all(t is not None and NOW <= t <= NOW + timedelta(seconds=START_SPREAD_SECONDS) for t in times)
    assert len({t for t in times}) > 150  # spread, not a burst in one instant


def test_after_a_restart_the_persisted_due_time_holds() -> None:
    state = _ok(NOW - timedelta(minutes=20))
    due = next_run(HOUR, state, NOW, random.Random(2))
    assert due is not None
    earliest = NOW + timedelta(minutes=40)
    assert earliest <= due <= earliest + timedelta(seconds=jitter_for(3600))


def test_missed_runs_coalesce_into_one_soon() -> None:
    state = _ok(NOW - timedelta(days=3))  # down for three days: 72 missed runs
    due = next_run(HOUR, state, NOW, random.Random(3))
    assert due is not None and NOW <= due <= NOW + timedelta(seconds=START_SPREAD_SECONDS)


def test_jitter_spreads_sources_with_the_same_interval() -> None:
    rng = random.Random(4)
    dues = {next_run(HOUR, _ok(NOW), NOW, rng) for _ in range(50)}
    assert len(dues) == 50
    assert all(d is not None and NOW + timedelta(hours=1) <= d <= NOW + timedelta(minutes=63) for d in dues)


def test_backoff_is_respected() -> None:
    failed = after_failure(
        _ok(NOW - timedelta(hours=2)), FetchError("boom"), now=NOW, interval=60, backoff_cap=86400,
        rng=random.Random(5),
    )  # fmt: skip
    fast = Timing(interval=60.0)
    for streak in range(1, 8):
        due = next_run(fast, failed, NOW, random.Random(streak))
        assert due is not None and failed.next_due is not None
        assert due >= failed.next_due
        failed = after_failure(failed, FetchError("boom"), now=due, interval=60, backoff_cap=86400)
    assert failed.error_streak == 8
    assert failed.next_due is not None and failed.next_due - due >= timedelta(seconds=60 * 2**6)


def test_retry_after_is_respected_even_for_cron_and_adaptive() -> None:
    limited = after_failure(
        _ok(NOW - timedelta(minutes=1)), RateLimited("slow down", status=429, retry_after=7200), now=NOW,
        interval=60, backoff_cap=86400,
    )  # fmt: skip
    for timing in (Timing(60.0), Timing(60.0, cron="* * * * *"), Timing(60.0, adaptive=True, min_interval=1)):
        due = next_run(timing, limited, NOW, random.Random(6), recent_entries=10_000)
        assert due is not None and due >= NOW + timedelta(hours=2)


def test_a_gone_source_waits_for_a_config_change() -> None:
    gone = after_failure(_ok(NOW), SourceGone("gone", status=410), now=NOW, interval=60, backoff_cap=60)
    assert next_run(HOUR, gone, NOW, random.Random(7)) is None
    # Its config changed (fresh): it is polled again, soon.
    due = next_run(HOUR, gone, NOW, random.Random(7), fresh=True)
    assert due is not None and due <= NOW + timedelta(seconds=START_SPREAD_SECONDS)


def test_cron_runs_at_the_next_tick() -> None:
    timing = Timing(interval=1800.0, cron="0 */6 * * *")
    state = _ok(NOW + timedelta(minutes=1))  # polled at 12:01
    assert next_run(timing, state, NOW + timedelta(minutes=2), random.Random(8)) == NOW.replace(hour=18)
    # A tick missed while down (18:00 passed since the last poll): one run, soon.
    late = NOW.replace(hour=19)
    due = next_run(timing, state, late, random.Random(8))
    assert due is not None and late <= due <= late + timedelta(seconds=START_SPREAD_SECONDS)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [(0, 21600.0), (1, 21600.0), (7 * 24, 3600.0), (7 * 24 * 60, 300.0), (10**9, 300.0)],
)
def test_adaptive_interval_follows_the_entry_rate_within_bounds(entries: int, expected: float) -> None:
    timing = Timing(interval=1800.0, adaptive=True, min_interval=300.0, max_interval=21600.0)
    assert adaptive_interval(entries, timing) == pytest.approx(expected)


def test_adaptive_sources_poll_busy_ones_more_often() -> None:
    timing = Timing(interval=1800.0, adaptive=True, min_interval=300.0, max_interval=21600.0)
    state = _ok(NOW)
    busy = next_run(timing, state, NOW, random.Random(9), recent_entries=7 * 24 * 12)  # 12 an hour
    quiet = next_run(timing, state, NOW, random.Random(9), recent_entries=0)
    assert busy is not None and quiet is not None
    assert busy - NOW < timedelta(minutes=6)
    assert quiet - NOW >= timedelta(hours=6)
    # Not opted in: the plain interval whatever the rate.
    plain = next_run(replace(timing, adaptive=False), state, NOW, random.Random(9), recent_entries=10**6)
    assert plain is not None and plain - NOW >= timedelta(minutes=30)


def test_timing_from_the_config(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        [
            {"name": "a", "url": "https://a.example.org/feed"},
            {"name": "b", "url": "https://b.example.org/feed", "interval": "5m", "adaptive": "false"},
            {"name": "c", "url": "https://c.example.org/feed", "cron": "*/10 * * * *"},
        ],
        defaults={"interval": "30m", "adaptive": "true", "min_interval": "2m", "max_interval": "2h"},
    )
    config = load_config(path)
    a, b, c = (timing_for(config, s) for s in config.sources)
    assert (a.interval, a.adaptive, a.min_interval, a.max_interval) == (1800, True, 120, 7200)
    assert (b.interval, b.adaptive) == (300, False)
    assert (c.cron, c.adaptive) == ("*/10 * * * *", False)


def test_scheduler_never_runs_one_source_twice_at_once() -> None:
    """A job kept due while its run is in flight does not start a second run."""

    async def scenario() -> tuple[int, int, int]:
        started = 0
        active = 0
        most = 0
        release = asyncio.Event()

        async def run_source(_name: str) -> None:
            nonlocal started, active, most
            started += 1
            active += 1
            most = max(most, active)
            await release.wait()
            active -= 1

        scheduler = SourceScheduler(run_source, rng=random.Random(10))
        scheduler.add("s", Timing(interval=0.05), datetime.now(UTC))
        scheduler.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while started == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            # The fallback trigger fires every 50 ms for half a second: all refused.
            for _ in range(10):
                scheduler.reschedule("s", datetime.now(UTC))
                await asyncio.sleep(0.05)
            during = started
            release.set()
            while started < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            scheduler.shutdown()
        return during, started, most

    during, started, most = asyncio.run(scenario())
    assert during == 1
    assert started >= 2  # and it does run again once the first run is over
    assert most == 1


def test_scheduler_moves_pauses_and_removes_jobs() -> None:
    async def scenario() -> None:
        async def run_source(_name: str) -> None:
            return None

        scheduler = SourceScheduler(run_source)
        scheduler.start()
        try:
            later = datetime.now(UTC) + timedelta(hours=1)
            scheduler.add("a", HOUR, later)
            scheduler.add("b", HOUR, later)
            assert scheduler.names() == {"a", "b"}
            assert scheduler.due_times()["a"] == later
            scheduler.reschedule("a", later + timedelta(hours=1))
            assert scheduler.due_times()["a"] == later + timedelta(hours=1)
            scheduler.reschedule("b", None)
            assert scheduler.due_times()["b"] is None  # paused
            scheduler.remove("a")
            assert scheduler.names() == {"b"}
        finally:
            scheduler.shutdown()

    asyncio.run(scenario())
