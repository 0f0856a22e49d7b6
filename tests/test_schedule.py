"""When sources run: next_poll decisions (pure) and the APScheduler jobs behind them."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.helpers import write_config

from aggregator.config import load_config
from aggregator.errors import FetchError, RateLimited, SourceGone
from aggregator.schedule import (
    HOLD_SECONDS,
    START_SPREAD_SECONDS,
    WAKE_GRID_SECONDS,
    HeldTrigger,
    SourceScheduler,
    Timing,
    adaptive_interval,
    format_seconds,
    next_poll,
    next_slot,
    phase_of,
    timing_for,
    wake_at,
)
from aggregator.state import SourceState, after_failure, after_success

NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
HOUR = Timing(interval=3600.0)


def _ok(at: datetime, interval: float = 3600.0, name: str = "s") -> SourceState:
    return after_success(
        SourceState(name, config_hash="h"), now=at, interval=interval, http_status=200, new=1, updated=0,
        etag=None, last_modified=None, permanent_url=None,
    )  # fmt: skip


def _at(timing: Timing, state: SourceState, now: datetime, **kwargs: int | bool) -> datetime:
    due = next_poll(timing, state, now, **kwargs).at  # type: ignore[arg-type]
    assert due is not None
    return due


def _on_phase(due: datetime, period: float, name: str) -> bool:
    """Is ``due`` one of the source's own slots (``phase`` of the way into a period)?"""
    offset = (due.timestamp() - phase_of(name) * period) % period
    return min(offset, period - offset) < 1e-3


def test_phase_is_stable_and_spread() -> None:
    assert phase_of("新浪财经-国内") == phase_of("新浪财经-国内")  # not Python's per-process hash
    # sha1("a") starts 86f7e437faa5a7fc: the same in every process, on every machine.
    assert phase_of("a") == int("86f7e437faa5a7fc", 16) / 2**64
    phases = [phase_of(f"source-{i}") for i in range(10_000)]
    assert all(0 <= p < 1 for p in phases)
    per_tenth = Counter(int(p * 10) for p in phases)
    assert min(per_tenth.values()) > 900 and max(per_tenth.values()) < 1100


def test_next_slot_is_strictly_after_and_on_the_phase() -> None:
    slot = next_slot(NOW, 60.0, 0.25)
    assert slot == NOW + timedelta(seconds=15)  # NOW is on a whole minute
    assert next_slot(slot, 60.0, 0.25) == slot + timedelta(seconds=60)
    assert next_slot(slot - timedelta(microseconds=1), 60.0, 0.25) == slot


def test_a_source_never_polled_runs_soon_but_spread() -> None:
    times = [_at(HOUR, SourceState(f"s{i}"), NOW) for i in range(200)]
    assert all(NOW <= t <= NOW + timedelta(seconds=START_SPREAD_SECONDS) for t in times)
    assert len(set(times)) > 150  # spread, not a burst in one instant
    assert next_poll(HOUR, SourceState("s0"), NOW).reason == "first poll"


def test_after_a_restart_the_persisted_due_time_holds() -> None:
    polled = NOW - timedelta(minutes=20)
    state = _ok(polled)
    right_after = _at(HOUR, state, polled + timedelta(seconds=1))  # what the daemon decided then
    assert _at(HOUR, state, NOW) == right_after  # what a restarted daemon decides now
    assert right_after > NOW and _on_phase(right_after, 3600, "s")
    assert timedelta(minutes=30) < right_after - polled <= timedelta(minutes=90)


def test_missed_runs_coalesce_into_one_at_the_next_slot() -> None:
    state = _ok(NOW - timedelta(days=3))  # down for three days: 72 missed runs
    plan = next_poll(HOUR, state, NOW)
    assert plan.at is not None and NOW < plan.at <= NOW + timedelta(hours=1)
    assert _on_phase(plan.at, 3600, "s")
    assert plan.reason == "interval 1h: overdue, at its next slot"


def test_sources_with_the_same_interval_keep_their_own_phase() -> None:
    names = [f"s{i}" for i in range(50)]
    dues = {name: _at(HOUR, _ok(NOW, name=name), NOW) for name in names}
    assert len(set(dues.values())) == 50
    for name, due in dues.items():
        assert NOW + timedelta(minutes=30) < due <= NOW + timedelta(minutes=90)
        assert _on_phase(due, 3600, name)
        # Polled on its slot (a little late, as runs are), it comes back exactly one interval on.
        again = _at(HOUR, _ok(due + timedelta(seconds=2), name=name), due + timedelta(seconds=3))
        assert again == due + timedelta(hours=1)


def test_backoff_is_respected() -> None:
    failed = after_failure(
        _ok(NOW - timedelta(hours=2)), FetchError("boom"), now=NOW, interval=60, backoff_cap=86400,
        rng=random.Random(5),
    )  # fmt: skip
    fast = Timing(interval=60.0)
    for _streak in range(1, 8):
        plan = next_poll(fast, failed, NOW)
        assert plan.at is not None and failed.next_due is not None
        assert plan.at >= failed.next_due
        assert plan.reason == failed.due_reason
        due = plan.at
        failed = after_failure(failed, FetchError("boom"), now=due, interval=60, backoff_cap=86400)
    assert failed.error_streak == 8 and failed.due_reason == "backoff after 8 failures"
    assert failed.next_due is not None and failed.next_due - due >= timedelta(seconds=60 * 2**6)


def test_retry_after_is_respected_even_for_cron_and_adaptive() -> None:
    limited = after_failure(
        _ok(NOW - timedelta(minutes=1)), RateLimited("slow down", status=429, retry_after=7200), now=NOW,
        interval=60, backoff_cap=86400,
    )  # fmt: skip
    for timing in (Timing(60.0), Timing(60.0, cron="* * * * *"), Timing(60.0, adaptive=True, min_interval=1)):
        plan = next_poll(timing, limited, NOW, recent_entries=10_000)
        assert plan.at is not None and plan.at >= NOW + timedelta(hours=2)
        assert plan.reason == "HTTP 429 Retry-After 7200s"


def test_a_freshness_hint_only_lengthens_the_wait() -> None:
    hinted = after_success(
        SourceState("s"), now=NOW, interval=60, http_status=200, new=0, updated=0, etag=None,
        last_modified=None, permanent_url=None, fresh_for=7200, respect_cache=True,
    )  # fmt: skip
    plan = next_poll(Timing(60.0), hinted, NOW + timedelta(seconds=1))
    assert plan.at == NOW + timedelta(hours=2)
    assert plan.reason == "interval lengthened by Cache-Control/Expires"


def test_a_gone_source_waits_for_a_config_change() -> None:
    gone = after_failure(_ok(NOW), SourceGone("gone", status=410), now=NOW, interval=60, backoff_cap=60)
    plan = next_poll(HOUR, gone, NOW)
    assert plan.at is None and plan.reason.startswith("gone")
    # Its config changed (fresh): it is polled again, soon.
    due = _at(HOUR, gone, NOW, fresh=True)
    assert due <= NOW + timedelta(seconds=START_SPREAD_SECONDS)


def test_cron_runs_at_the_next_tick() -> None:
    timing = Timing(interval=1800.0, cron="0 */6 * * *")
    state = _ok(NOW + timedelta(minutes=1))  # polled at 12:01
    plan = next_poll(timing, state, NOW + timedelta(minutes=2))
    assert plan.at == NOW.replace(hour=18) and plan.reason == "cron 0 */6 * * * (UTC)"
    # A tick missed while down (18:00 passed since the last poll): one run, soon.
    late = NOW.replace(hour=19)
    due = _at(timing, state, late)
    assert late <= due <= late + timedelta(seconds=START_SPREAD_SECONDS)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [(0, 21600.0), (1, 21600.0), (7 * 24, 3600.0), (7 * 24 * 60, 300.0), (10**9, 300.0)],
)
def test_adaptive_interval_follows_the_entry_rate_within_bounds(entries: int, expected: float) -> None:
    timing = Timing(interval=1800.0, adaptive=True, min_interval=300.0, max_interval=21600.0)
    assert adaptive_interval(entries, timing) == pytest.approx(expected)


def _steady_gap(timing: Timing, recent_entries: int) -> tuple[timedelta, str]:
    """Polled on one of its slots, how long until the next poll, and why."""
    first = _at(timing, _ok(NOW), NOW, recent_entries=recent_entries)
    plan = next_poll(timing, _ok(first), first, recent_entries=recent_entries)
    assert plan.at is not None
    return plan.at - first, plan.reason


def test_adaptive_sources_poll_busy_ones_more_often() -> None:
    timing = Timing(interval=1800.0, adaptive=True, min_interval=300.0, max_interval=21600.0)
    busy, why = _steady_gap(timing, 7 * 24 * 12)  # 12 an hour
    assert busy == timedelta(minutes=5) and why == "adaptive: ~1 entries/poll (2016 in 7d), every 5m"
    quiet, why = _steady_gap(timing, 0)
    assert quiet == timedelta(hours=6) and why == "adaptive: no entries in 7d, every 6h"
    # Not opted in: the plain interval whatever the rate.
    plain, why = _steady_gap(replace(timing, adaptive=False), 10**6)
    assert plain == timedelta(minutes=30) and why == "interval 30m"


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (1800, "30m"), (3024, "50m24s"), (90000, "1d1h"), (0.2, "1s")]
)
def test_durations_are_written_in_the_configs_units(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_the_fallback_trigger_fires_on_the_sources_slots() -> None:
    phase = phase_of("s")
    trigger = Timing(interval=60.0).trigger(phase)
    fire = trigger.get_next_fire_time(None, NOW)
    assert fire is not None and _on_phase(fire, 60, "s") and NOW <= fire < NOW + timedelta(minutes=1)


# Issue 15, defect 12: polls spread evenly over the interval, and kept spread ----------------------

SOURCES = 5_000
INTERVAL = 60.0


def _polls_per_second(first: dict[str, datetime], until: datetime, rng: random.Random) -> Counter[int]:
    """Run every source from its first poll on, as the daemon does: poll, then ask next_poll.

    Each poll starts a little late (0-2 s, a queue) and the state it leaves is
    fed back; returns how many polls started in each whole second.
    """
    timing = Timing(interval=INTERVAL)
    per_second: Counter[int] = Counter()
    for name, due in first.items():
        while due < until:
            started = due + timedelta(seconds=rng.random() * 2)
            per_second[int(started.timestamp())] += 1
            state = _ok(started, INTERVAL, name)
            due = _at(timing, state, started + timedelta(seconds=0.3))
    return per_second


def _spread(per_second: Counter[int], start: datetime, seconds: int) -> tuple[float, int, int]:
    base = int(start.timestamp())
    counts = [per_second.get(base + i, 0) for i in range(seconds)]
    return sum(counts) / seconds, max(counts), min(counts)


def test_a_cold_start_of_5000_sources_spreads_out_after_the_first_interval() -> None:
    timing = Timing(interval=INTERVAL)
    names = [f"feed-{i:05d}" for i in range(SOURCES)]
    first = {name: _at(timing, SourceState(name), NOW) for name in names}  # never polled: all due now
    per_second = _polls_per_second(first, NOW + timedelta(minutes=6), random.Random(12))
    mean, most, fewest = _spread(per_second, NOW + timedelta(minutes=2), 3 * 60)
    assert mean == pytest.approx(SOURCES / INTERVAL, rel=0.05)
    assert most <= 3 * mean, f"a burst: {most} polls in one second, mean {mean:.0f}"
    assert fewest >= mean / 3, f"an idle second: {fewest} polls, mean {mean:.0f}"


def test_a_restart_with_every_source_overdue_stays_spread() -> None:
    timing = Timing(interval=INTERVAL)
    names = [f"feed-{i:05d}" for i in range(SOURCES)]
    # A one-shot fetch polled all 5,000 within 12 s, and the daemon starts ten minutes later:
    # every source is overdue.
    rng = random.Random(13)
    fetched = {name: _ok(NOW + timedelta(seconds=rng.random() * 12), INTERVAL, name) for name in names}
    restart = NOW + timedelta(minutes=10)
    first = {name: _at(timing, state, restart) for name, state in fetched.items()}
    assert all(restart < due <= restart + timedelta(seconds=INTERVAL) for due in first.values())
    per_second = _polls_per_second(first, restart + timedelta(minutes=5), rng)
    mean, most, fewest = _spread(per_second, restart + timedelta(seconds=2), 4 * 60)  # from the start
    assert most <= 3 * mean and fewest >= mean / 3, (mean, most, fewest)
    # The daemon started right after the fetch instead: nobody overdue, and still no burst.
    first = {name: _at(timing, state, NOW + timedelta(seconds=13)) for name, state in fetched.items()}
    per_second = _polls_per_second(first, NOW + timedelta(minutes=5), rng)
    mean, most, fewest = _spread(per_second, NOW + timedelta(seconds=90), 3 * 60)
    assert most <= 3 * mean and fewest >= mean / 3, (mean, most, fewest)


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

        scheduler = SourceScheduler(run_source)
        scheduler.add("s", Timing(interval=0.05), datetime.now(UTC))
        scheduler.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while started == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            # The job made due every 50 ms for half a second: all refused.
            for _ in range(10):
                scheduler.reschedule("s", datetime.now(UTC))
                await asyncio.sleep(0.05)
            during = started
            release.set()
            while active and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            scheduler.reschedule("s", datetime.now(UTC))  # as the daemon does when a run ends
            while started < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            scheduler.shutdown()
        return during, started, most

    during, started, most = asyncio.run(scenario())
    assert during == 1
    assert started >= 2  # and it does run again once the first run is over
    assert most == 1


def test_a_job_that_fires_is_parked_until_its_run_moves_it() -> None:
    """The trigger holds a fired job (no job change a poll); its first fire time is the fallback's."""
    trigger = HeldTrigger(Timing(interval=60.0).trigger(phase_of("s")))
    first = trigger.get_next_fire_time(None, NOW)
    assert first is not None and _on_phase(first, 60, "s") and NOW <= first < NOW + timedelta(minutes=1)
    assert trigger.get_next_fire_time(first, first) == first + timedelta(seconds=HOLD_SECONDS)
    assert str(trigger) == str(Timing(interval=60.0).trigger(phase_of("s")))

    async def scenario() -> tuple[int, datetime | None, datetime]:
        runs = 0

        async def run_source(_name: str) -> None:
            nonlocal runs
            runs += 1

        scheduler = SourceScheduler(run_source)
        scheduler.start()
        try:
            fired = datetime.now(UTC)
            scheduler.add("s", Timing(interval=0.05), fired)
            deadline = asyncio.get_running_loop().time() + 10
            while runs == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            return runs, scheduler.due_times()["s"], fired
        finally:
            scheduler.shutdown()

    runs, due, fired = asyncio.run(scenario())
    assert runs == 1
    # Parked an hour on, not at the fallback's next slot 50 ms later.
    assert due is not None and due >= fired + timedelta(seconds=HOLD_SECONDS - 60)


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


def test_wake_ups_land_on_the_grid_never_before_the_deadline() -> None:
    assert wake_at(10.01, 0.25) == 10.25
    assert wake_at(10.25, 0.25) == 10.25
    assert wake_at(9.999, 0.25) == 10.0
    assert wake_at(3.3, 0.0) == 3.3  # no grid: the deadline itself


def test_polls_due_within_one_grid_step_start_together_and_none_early() -> None:
    """Three jobs 40 ms apart start in one wake-up, on the grid; each at or after its due time."""

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        loop = asyncio.get_running_loop()
        started: dict[str, float] = {}

        async def run_source(name: str) -> None:
            started[name] = loop.time()

        scheduler = SourceScheduler(run_source)
        scheduler.start()
        try:
            # The next grid instant at least half a second away, and three jobs just after it.
            step = WAKE_GRID_SECONDS
            grid = wake_at(loop.time() + 0.5, step)
            dues = {name: grid + 0.01 + 0.04 * i for i, name in enumerate(("a", "b", "c"))}
            for name, due in dues.items():
                scheduler.add(name, HOUR, datetime.now(UTC) + timedelta(seconds=due - loop.time()))
            deadline = loop.time() + 10
            while len(started) < 3:
                assert loop.time() < deadline, f"only {started} ran"
                await asyncio.sleep(0.01)
            return dues, started
        finally:
            scheduler.shutdown()

    dues, started = asyncio.run(scenario())
    assert all(started[name] >= dues[name] - 0.002 for name in dues), (dues, started)
    # One wake-up started all three (one apart by 40 ms each would be 80 ms apart).
    assert max(started.values()) - min(started.values()) < 0.03, started
    assert all(started[name] - dues[name] < WAKE_GRID_SECONDS + 0.2 for name in dues)


def test_moving_a_job_later_than_the_next_wake_up_does_not_wake_the_scheduler() -> None:
    """A run's end moves its job a whole interval on: APScheduler woke and looked over every job for it."""

    async def scenario() -> tuple[int, int, float, float]:
        loop = asyncio.get_running_loop()
        ran: dict[str, float] = {}

        async def run_source(name: str) -> None:
            ran[name] = loop.time()

        scheduler = SourceScheduler(run_source)
        looked = 0
        process_jobs = scheduler.scheduler._process_jobs

        def counted() -> float | None:
            nonlocal looked
            looked += 1
            return process_jobs()  # type: ignore[no-any-return]

        scheduler.scheduler._process_jobs = counted
        scheduler.start()
        try:
            soon = datetime.now(UTC) + timedelta(seconds=1)
            scheduler.add("soon", HOUR, soon)
            scheduler.add("later", HOUR, soon + timedelta(minutes=5))
            deadline = loop.time() + 10
            while not looked:  # the start's own look
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            before = looked
            for minutes in range(10, 60):  # as 50 runs ending would move their jobs
                scheduler.reschedule("later", soon + timedelta(minutes=minutes))
            await asyncio.sleep(0)  # a wake-up asked for would run in this turn
            await asyncio.sleep(0)
            moved = looked - before
            # A move earlier than the next wake-up does wake it: "later" runs first, now.
            asked = loop.time()
            scheduler.reschedule("later", datetime.now(UTC))
            while len(ran) < 2:
                assert loop.time() < deadline, f"only {ran} ran"
                await asyncio.sleep(0.01)
            return moved, looked, ran["later"] - asked, ran["soon"] - ran["later"]
        finally:
            scheduler.shutdown()

    moved, _looked, later_after, soon_after = asyncio.run(scenario())
    assert moved == 0  # before: one look over the jobs per move (50)
    assert later_after < WAKE_GRID_SECONDS + 0.2
    assert soon_after > 0  # and "soon" still ran, at its own time, after it
