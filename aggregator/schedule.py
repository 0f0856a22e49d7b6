"""When each source is polled next.

One APScheduler job per source (``max_instances=1``: a source never runs twice
at once; ``coalesce``: missed runs collapse into one). The job's own trigger
(an interval, or a crontab expression) is only the fallback: after every run
the daemon moves the job to the time :func:`next_run` decides from the state
the run left behind, so backoff and ``Retry-After`` are respected, and after a
restart the same function, fed the persisted state, gives each source its due
time back (overdue sources spread over a short window rather than all firing
in the same second; a source never polled runs soon).

The decisions are pure functions of the state, the source's timing and
``now``; only :class:`SourceScheduler` touches APScheduler.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.config import Config, SourceConfig
from aggregator.state import SourceState, utcnow

START_SPREAD_SECONDS = 10.0
# Adaptive polling aims at about one new entry per poll, judged over this window.
ADAPTIVE_WINDOW_SECONDS = 7 * 86400.0
# While a run is in flight its job is parked this far ahead, so the fallback
# trigger does not keep knocking on max_instances.
HOLD_SECONDS = 3600.0


@dataclass(frozen=True)
class Timing:
    """How a source wants to be polled, resolved against the defaults."""

    interval: float
    cron: str | None = None
    adaptive: bool = False
    min_interval: float = 300.0
    max_interval: float = 21600.0

    def trigger(self) -> BaseTrigger:
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone="UTC")
        return IntervalTrigger(seconds=self.interval, jitter=jitter_for(self.interval), timezone="UTC")


def timing_for(config: Config, source: SourceConfig) -> Timing:
    low, high = sorted((config.defaults.min_interval, config.defaults.max_interval))
    return Timing(
        interval=config.interval_of(source),
        cron=source.cron,
        adaptive=config.is_adaptive(source),
        min_interval=low,
        max_interval=high,
    )


def jitter_for(interval: float) -> float:
    """Sources with the same interval drift apart by up to 5% of it (at most 5 minutes)."""
    return min(interval * 0.05, 300.0)


def adaptive_interval(recent_entries: int, timing: Timing, window: float = ADAPTIVE_WINDOW_SECONDS) -> float:
    """About one new entry per poll: a source with ``n`` entries in ``window`` is polled every window/n."""
    if recent_entries <= 0:
        return timing.max_interval
    return min(timing.max_interval, max(timing.min_interval, window / recent_entries))


def _succeeded(state: SourceState) -> bool:
    return state.last_success is not None and state.last_success == state.last_attempt


def next_run(
    timing: Timing,
    state: SourceState,
    now: datetime,
    rng: random.Random,
    *,
    recent_entries: int = 0,
    fresh: bool = False,
) -> datetime | None:
    """When to poll next; ``None`` for a gone source (it waits for a config change).

    ``fresh`` says the persisted state belongs to another version of the
    source's config (or there is none): such a source runs soon. Nothing is
    ever scheduled before the state's own ``next_due`` when that came from a
    backoff or a server's ``Retry-After``.
    """
    if fresh or state.last_attempt is None:
        return _soon(timing, now, rng)
    if state.gone:
        return None
    last = state.last_attempt
    planned: datetime
    if timing.cron is not None:
        tick = CronTrigger.from_crontab(timing.cron, timezone="UTC").get_next_fire_time(
            None, last + timedelta(microseconds=1)
        )
        planned = tick if tick is not None else last + timedelta(seconds=timing.interval)
    elif _succeeded(state):
        interval = adaptive_interval(recent_entries, timing) if timing.adaptive else timing.interval
        planned = last + timedelta(seconds=interval + rng.random() * jitter_for(interval))
    else:
        planned = state.next_due or last + timedelta(seconds=timing.interval)
    if state.next_due is not None and not _succeeded(state):
        planned = max(planned, state.next_due)  # backoff or Retry-After
    elif state.next_due is not None and state.due_reason != "interval" and not timing.adaptive:
        planned = max(planned, state.next_due)  # a server's freshness hint lengthens the wait
    if planned <= now:
        # Missed while we were down (or busy): one run, soon, spread out.
        return _soon(timing, now, rng)
    return planned


def _soon(timing: Timing, now: datetime, rng: random.Random) -> datetime:
    spread = min(START_SPREAD_SECONDS, timing.interval / 10)
    return now + timedelta(seconds=rng.random() * spread)


class SourceScheduler:
    """One APScheduler job per source; jobs are moved, never run twice at once."""

    def __init__(
        self, run_source: Callable[[str], Awaitable[None]], rng: random.Random | None = None
    ) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.run_source = run_source
        self.rng = rng or random.Random()

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

    def due_times(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    def add(self, name: str, timing: Timing, first: datetime | None) -> None:
        """Add or replace a source's job; ``first=None`` adds it paused (a gone source)."""
        self.scheduler.add_job(
            self.run_source,
            timing.trigger(),
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

    def hold(self, name: str) -> None:
        """Park a running source's job while its run is in flight."""
        self.reschedule(name, utcnow() + timedelta(seconds=HOLD_SECONDS))

    def reschedule(self, name: str, due: datetime | None) -> None:
        """Move a job to ``due``; None pauses it (gone)."""
        job = self.scheduler.get_job(name)
        if job is None:
            return
        if due is None:
            job.pause()
        else:
            job.modify(next_run_time=max(due, utcnow()))
