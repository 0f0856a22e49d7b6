"""When each source is polled next.

One APScheduler job per source (``max_instances=1``: a source never runs twice
at once; ``coalesce``: missed runs collapse into one). After every run the job
is moved to the due time the pipeline decided (interval, backoff, Retry-After),
and after a restart due times come from the persisted state, spread a little
so that overdue sources do not all fire in the same second.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.config import Config, SourceConfig
from aggregator.state import SourceState, utcnow

START_SPREAD_SECONDS = 10.0


def first_run_time(state: SourceState, interval: float, now: datetime, rng: random.Random) -> datetime | None:
    """Persisted due time if still ahead; otherwise soon, spread over a short window."""
    if state.gone:
        return None
    if state.next_due is not None and state.next_due > now:
        return state.next_due
    spread = min(START_SPREAD_SECONDS, interval / 10)
    return now + timedelta(seconds=rng.random() * spread)


def jitter_for(interval: float) -> float:
    """Sources with the same interval drift apart by up to 5% of it (at most 5 minutes)."""
    return min(interval * 0.05, 300.0)


class SourceScheduler:
    def __init__(
        self, run_source: Callable[[str], Awaitable[None]], rng: random.Random | None = None
    ) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.run_source = run_source
        self.rng = rng or random.Random()

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def names(self) -> set[str]:
        return {job.id for job in self.scheduler.get_jobs()}

    def add(self, config: Config, source: SourceConfig, state: SourceState) -> None:
        interval = config.interval_of(source)
        self.scheduler.add_job(
            self.run_source,
            IntervalTrigger(seconds=interval, jitter=jitter_for(interval), timezone="UTC"),
            args=[source.name],
            id=source.name,
            name=source.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            next_run_time=first_run_time(state, interval, utcnow(), self.rng),
        )

    def remove(self, name: str) -> None:
        if self.scheduler.get_job(name) is not None:
            self.scheduler.remove_job(name)

    def reschedule(self, name: str, due: datetime | None) -> None:
        """Move a job to the due time the pipeline decided; None pauses it (gone)."""
        job = self.scheduler.get_job(name)
        if job is None:
            return
        if due is None:
            job.pause()
        else:
            job.modify(next_run_time=max(due, utcnow()))
