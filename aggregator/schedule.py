"""When each source is polled next.

One APScheduler job per source (``max_instances=1``: a source never runs twice
at once; ``coalesce``: missed runs collapse into one). A job's trigger parks it
when it fires (:class:`HeldTrigger`); after every run the daemon moves the job to
the time :func:`next_poll` decides from the state the run left behind, and
``aggregator status`` shows that same decision, so the two cannot disagree.

Polls are spread evenly over each interval: every source has a stable phase
(a fraction of its interval, from a hash of its name), and it is polled on the
instants that sit that far into an interval counted from the Unix epoch. A cold
start, a one-shot ``fetch`` of every source or a restart after downtime makes
every source due at once; each goes back to its own slot at the next poll (an
overdue one at once: its next slot after now), so the polls do not stay in a
burst. Backoff, ``Retry-After`` and a server's freshness hint only ever push a
poll later.

The decisions are pure functions of the state, the source's timing and
``now``; only :class:`SourceScheduler` touches APScheduler.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.config import Config, SourceConfig
from aggregator.state import SourceState, utcnow

# A source never polled (or whose config changed) runs within this many seconds.
START_SPREAD_SECONDS = 10.0
# Adaptive polling aims at about one new entry per poll, judged over this window.
ADAPTIVE_WINDOW_SECONDS = 7 * 86400.0
# Once a job fires it is parked this far ahead (``HeldTrigger``) until its run moves it,
# so a long run does not keep knocking on max_instances.
HOLD_SECONDS = 3600.0
# Two polls of a source on the same interval are at least this share of it apart:
# a first poll just before its slot does not poll again at the slot.
MIN_GAP_SHARE = 0.5
# The scheduler wakes on a grid of this step (``wake_at``): the polls due within one step start
# together and share the event loop's turns, as a batch fetch's do, rather than one wake-up each.
# A poll starts at most this late; its due time stays exactly on its phase.
WAKE_GRID_SECONDS = 0.25


@dataclass(frozen=True)
class Timing:
    """How a source wants to be polled, resolved against the defaults."""

    interval: float
    cron: str | None = None
    adaptive: bool = False
    min_interval: float = 300.0
    max_interval: float = 21600.0

    def trigger(self, phase: float = 0.0) -> BaseTrigger:
        """The fallback trigger; an interval one fires on the source's own slots."""
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone="UTC")
        start = datetime.fromtimestamp(phase * self.interval, UTC)
        return IntervalTrigger(seconds=self.interval, start_date=start, timezone="UTC")


@dataclass(frozen=True)
class NextPoll:
    """When a source is polled next, and why then; ``at=None``: not until its config changes."""

    at: datetime | None
    reason: str


class EntryCounts(Protocol):
    """What adaptive polling needs from the store (``PostStore`` is one)."""

    def recent_entry_count(self, source: str, since: datetime, until: datetime) -> int: ...


def timing_for(config: Config, source: SourceConfig) -> Timing:
    low, high = sorted((config.defaults.min_interval, config.defaults.max_interval))
    return Timing(
        interval=config.interval_of(source),
        cron=source.cron,
        adaptive=config.is_adaptive(source),
        min_interval=low,
        max_interval=high,
    )


@functools.lru_cache(maxsize=1 << 16)
def phase_of(name: str) -> float:
    """A stable fraction in [0, 1) per source: how far into each interval it is polled.

    sha1 rather than ``hash()``, which Python salts per process: the phase must
    survive a restart.
    """
    digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def next_slot(after: datetime, period: float, phase: float) -> datetime:
    """The first instant strictly after ``after`` that lies ``phase`` of the way into a period.

    Periods are counted from the Unix epoch, so the slots of a source depend on
    its name and interval alone, not on when the daemon started.
    """
    offset = phase * period
    count = math.floor((after.timestamp() - offset) / period) + 1
    return datetime.fromtimestamp(count * period + offset, UTC)


def wake_at(deadline: float, grid: float = WAKE_GRID_SECONDS) -> float:
    """The first instant on the grid at or after ``deadline`` (both on the event loop's clock)."""
    return math.ceil(deadline / grid) * grid if grid > 0 else deadline


def adaptive_interval(recent_entries: int, timing: Timing, window: float = ADAPTIVE_WINDOW_SECONDS) -> float:
    """About one new entry per poll: a source with ``n`` entries in ``window`` is polled every window/n."""
    if recent_entries <= 0:
        return timing.max_interval
    return min(timing.max_interval, max(timing.min_interval, window / recent_entries))


def format_seconds(seconds: float) -> str:
    """``1800`` as ``30m``, ``3024`` as ``50m24s``, ``90000`` as ``1d1h``: the config's own units."""
    left = max(1, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, left = divmod(left, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def _succeeded(state: SourceState) -> bool:
    return state.last_success is not None and state.last_success == state.last_attempt


def _adaptive_reason(recent_entries: int, interval: float, window: float = ADAPTIVE_WINDOW_SECONDS) -> str:
    every = format_seconds(interval)
    days = format_seconds(window)
    if recent_entries <= 0:
        return f"adaptive: no entries in {days}, every {every}"
    per_poll = recent_entries * interval / window
    return f"adaptive: ~{per_poll:.2g} entries/poll ({recent_entries} in {days}), every {every}"


def next_poll(
    timing: Timing,
    state: SourceState,
    now: datetime,
    *,
    recent_entries: int = 0,
    fresh: bool = False,
) -> NextPoll:
    """When to poll ``state.name`` next, and why; the one decision the daemon and ``status`` share.

    ``fresh`` says the persisted state belongs to another version of the
    source's config (or there is none): such a source runs soon, spread over
    the first seconds by its phase. Nothing is ever scheduled before the
    state's own ``next_due`` when that came from a backoff, a server's
    ``Retry-After`` or a freshness hint.
    """
    phase = phase_of(state.name)
    if fresh or state.last_attempt is None:
        spread = min(START_SPREAD_SECONDS, timing.interval / 10)
        why = "first poll" if state.last_attempt is None else "config changed: polled again soon"
        return NextPoll(now + timedelta(seconds=phase * spread), why)
    if state.gone:
        return NextPoll(None, "gone (HTTP 410): waits until its config changes")
    last = state.last_attempt
    period: float | None  # the interval whose slots an overdue poll moves to; None for cron
    if timing.cron is not None:
        period = None
        tick = CronTrigger.from_crontab(timing.cron, timezone="UTC").get_next_fire_time(
            None, last + timedelta(microseconds=1)
        )
        planned = tick if tick is not None else last + timedelta(seconds=timing.interval)
        why = f"cron {timing.cron} (UTC)"
        if not _succeeded(state) and state.next_due is not None and state.next_due > planned:
            planned, why = state.next_due, state.due_reason
    elif _succeeded(state):
        if timing.adaptive:
            period = adaptive_interval(recent_entries, timing)
            why = _adaptive_reason(recent_entries, period)
        else:
            period = timing.interval
            why = f"interval {format_seconds(period)}"
        planned = next_slot(last + timedelta(seconds=period * MIN_GAP_SHARE), period, phase)
        hinted = state.next_due is not None and state.due_reason != "interval" and not timing.adaptive
        if hinted and state.next_due is not None and state.next_due > planned:
            planned, why = state.next_due, state.due_reason  # a server's freshness hint
    else:
        period = timing.interval
        planned = state.next_due or last + timedelta(seconds=period)  # backoff or Retry-After
        why = state.due_reason
    if planned > now:
        return NextPoll(planned, why)
    # Missed while the daemon was down (or busy).
    if period is None:
        # A cron expression names its own times: one run for the missed ticks, soon.
        spread = min(START_SPREAD_SECONDS, timing.interval / 10)
        return NextPoll(now + timedelta(seconds=phase * spread), f"{why}: a tick was missed, polled soon")
    # Its next slot: overdue sources come back spread over one interval, not in a burst.
    return NextPoll(next_slot(now, period, phase), f"{why}: overdue, at its next slot")


def planned_poll(
    config: Config,
    source: SourceConfig,
    state: SourceState,
    now: datetime,
    *,
    fingerprint: str,
    entries: EntryCounts,
) -> NextPoll:
    """:func:`next_poll` for a configured source, with what it needs read from the store.

    ``fingerprint`` is the source's config fingerprint (``pipeline.source_fingerprint``):
    a state saved under another one is stale. The entry count behind adaptive
    polling is taken up to the last attempt, so it does not drift with ``now``.
    """
    timing = timing_for(config, source)
    recent = 0
    if timing.adaptive:
        until = state.last_attempt or now
        since = until - timedelta(seconds=ADAPTIVE_WINDOW_SECONDS)
        recent = entries.recent_entry_count(source.name, since, until)
    return next_poll(timing, state, now, recent_entries=recent, fresh=state.config_hash != fingerprint)


class HeldTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no types
    """A source's fallback trigger that parks its job for ``HOLD_SECONDS`` each time it fires.

    The run it starts moves the job to its next poll when it ends (``reschedule``).
    Parking the job in its trigger, as APScheduler computes the next fire time anyway,
    rather than by moving it once the run has started, spares every poll a job change
    and a wake-up of the scheduler. The fallback still gives the first fire time (a
    job resumed without a time of its own) and the trigger's description.
    """

    def __init__(self, fallback: BaseTrigger) -> None:
        self.fallback = fallback

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None:
            first: datetime | None = self.fallback.get_next_fire_time(None, now)
            return first
        return now + timedelta(seconds=HOLD_SECONDS)

    def __str__(self) -> str:
        return str(self.fallback)

    def __repr__(self) -> str:
        return f"<HeldTrigger ({self.fallback!r})>"


class GridScheduler(AsyncIOScheduler):  # type: ignore[misc]  # APScheduler ships no types
    """APScheduler's asyncio scheduler, woken on a grid and only when a wake-up changes anything.

    APScheduler wakes itself each time a job is added or moved, through the loop's self-pipe,
    and looks over the job store: after every poll, as the job moves to its next poll, though
    that is a minute off and the timer already fires sooner. Here a wake-up is skipped when
    the timer fires no later than the earliest due job would have it fire, and the timer calls
    the job processing itself. The timer's instants are rounded up to ``WAKE_GRID_SECONDS``.
    """

    def __init__(self, *args: Any, grid: float = WAKE_GRID_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grid = grid

    def wakeup(self) -> None:
        if not self._timer_is_soon_enough():
            super().wakeup()

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            loop = self._eventloop
            self._timeout = loop.call_at(wake_at(loop.time() + wait_seconds, self.grid), self._wake)

    def _wake(self) -> None:
        """``wakeup``'s work, on the loop already (no hop through ``call_soon_threadsafe``)."""
        self._stop_timer()
        self._start_timer(self._process_jobs())

    def _timer_is_soon_enough(self) -> bool:
        timer = self._timeout
        if timer is None or timer.cancelled() or self._eventloop is None:
            return False
        loop_now = self._eventloop.time()
        if timer.when() <= loop_now:
            return False  # firing now: the wake-up may come after it
        with self._jobstores_lock:
            dues = [store.get_next_run_time() for store in self._jobstores.values()]
        earliest = min((due for due in dues if due is not None), default=None)
        if earliest is None:
            return True  # nothing is due: the timer finds nothing either
        wanted = wake_at(loop_now + (earliest.timestamp() - time.time()), self.grid)
        return bool(timer.when() <= wanted)


class SourceScheduler:
    """One APScheduler job per source; jobs are moved, never run twice at once."""

    def __init__(self, run_source: Callable[[str], Awaitable[None]]) -> None:
        self.scheduler = GridScheduler(timezone="UTC")
        self.run_source = run_source

    def start(self) -> None:
        self.scheduler.start()

    def pause(self) -> None:
        """Start no more runs; the runs in flight carry on."""
        if self.scheduler.running:
            self.scheduler.pause()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def names(self) -> set[str]:
        return {job.id for job in self.scheduler.get_jobs()}

    def has(self, name: str) -> bool:
        """Whether ``name`` has a job: one lookup, where ``names()`` lists every job (0.5 ms at 5,000)."""
        return self.scheduler.get_job(name) is not None

    def due_times(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    def add(self, name: str, timing: Timing, first: datetime | None) -> None:
        """Add or replace a source's job; ``first=None`` adds it paused (a gone source)."""
        self.scheduler.add_job(
            self.run_source,
            HeldTrigger(timing.trigger(phase_of(name))),
            args=[name],
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            next_run_time=first,
        )

    def remove(self, name: str) -> None:
        if self.scheduler.get_job(name) is not None:
            self.scheduler.remove_job(name)

    def reschedule(self, name: str, due: datetime | None) -> None:
        """Move a job to ``due``; None pauses it (gone)."""
        job = self.scheduler.get_job(name)
        if job is None:
            return
        if due is None:
            job.pause()
        else:
            job.modify(next_run_time=max(due, utcnow()))
