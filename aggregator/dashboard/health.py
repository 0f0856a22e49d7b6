"""What /status shows of each source: its health, its order, the summary line, its sparkline,
and which rows a page holds (a filter and pages: a fleet has tens of thousands of sources).

Pure functions of a source's state, its planned poll, its daily entry counts and
``now``; the page and ``/status.json`` are made from these values only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aggregator.dashboard.paging import paging
from aggregator.schedule import NextPoll
from aggregator.state import SourceState

SPARK_DAYS = 30
# The health words, in the order the summary line names them.
HEALTHS = ("ok", "failing", "backing off", "gone", "new")
# ?health=attention: the failing and the gone, what the summary's "need attention" counts.
ATTENTION = "attention"
# Rows on one page of /status: at 20,000 sources the whole table was 17 MB and took 7.5 s to
# load in Chromium (bench/dashboard_probe.py); a page of 200 is about 170 KB.
PAGE_ROWS = 200


def health_of(state: SourceState) -> str:
    """ok, failing, backing off, gone or new.

    "backing off" is a server asking us to wait (a 429 or 503 with Retry-After): not a
    failure of the source, the CLI's "waiting". A failing source also waits out a backoff;
    its next poll says so.
    """
    if state.gone:
        return "gone"
    if state.error_streak:
        return "failing"
    if state.last_error:
        return "backing off"
    return "ok" if state.last_success else "new"


@dataclass(frozen=True)
class SourceRow:
    """One source as /status shows it."""

    name: str
    url: str  # credentials stripped
    health: str
    last_attempt: datetime | None
    last_success: datetime | None
    last_error: str | None
    error_streak: int
    http_status: int | None
    next_poll: datetime | None
    next_reason: str
    moved_to: str | None  # a permanent redirect learned: the config should say it
    per_day: tuple[int, ...]  # entries dated each day, oldest first, today last
    polled_by: str | None = None  # in a fleet: the node whose lease on the source runs now


def source_row(
    state: SourceState, plan: NextPoll, per_day: Sequence[int], *, url: str, polled_by: str | None = None
) -> SourceRow:
    return SourceRow(
        name=state.name,
        url=url,
        health=health_of(state),
        last_attempt=state.last_attempt,
        last_success=state.last_success,
        last_error=state.last_error,
        error_streak=state.error_streak,
        http_status=state.http_status,
        next_poll=plan.at,
        next_reason=plan.reason,
        moved_to=state.permanent_url,
        per_day=tuple(per_day),
        polled_by=polled_by,
    )


def ordered(rows: Iterable[SourceRow]) -> list[SourceRow]:
    """Failing first (gone, then the longest streaks), then the waiting and new, then the healthy.

    The order of ``aggregator status``.
    """
    return sorted(
        rows,
        key=lambda r: (
            r.health not in ("failing", "gone"),
            r.health != "gone",
            -r.error_streak,
            r.health == "ok",
            r.name,
        ),
    )


@dataclass(frozen=True)
class Summary:
    total: int
    by_health: tuple[tuple[str, int], ...]  # every health word, in HEALTHS order

    @property
    def failing(self) -> int:
        return dict(self.by_health)["failing"] + dict(self.by_health)["gone"]

    def line(self) -> str:
        """``12 sources: 9 ok, 2 failing, 1 backing off`` (healths no source has are left out)."""
        parts = [f"{count} {health}" for health, count in self.by_health if count]
        noun = "source" if self.total == 1 else "sources"
        return f"{self.total} {noun}" + (": " + ", ".join(parts) if parts else "")


def summarize(rows: Iterable[SourceRow]) -> Summary:
    counts = Counter(row.health for row in rows)
    return Summary(sum(counts.values()), tuple((health, counts[health]) for health in HEALTHS))


def day_number(moment: datetime) -> int:
    """Days since the Unix epoch (UTC): the sparkline's buckets."""
    return int(moment.timestamp() // 86400)


def daily_counts(counts: Mapping[int, int], today: int, days: int = SPARK_DAYS) -> tuple[int, ...]:
    """Entries per day for the ``days`` days up to ``today`` (day numbers), oldest first."""
    return tuple(counts.get(day, 0) for day in range(today - days + 1, today + 1))


@dataclass(frozen=True)
class Sparkline:
    """A small inline SVG's geometry: a polyline over the days, scaled to the busiest one."""

    width: int
    height: int
    points: str
    peak: int
    total: int

    @property
    def label(self) -> str:
        return f"{self.total} entries in {SPARK_DAYS} days, at most {self.peak} a day"


def sparkline(per_day: Sequence[int], step: int = 3, height: int = 18) -> Sparkline:
    """``per_day`` as whole-pixel points, ``step`` apart, ``height`` high (y grows downwards; 1px margin)."""
    peak = max(per_day, default=0)
    usable = height - 2
    points = " ".join(
        f"{i * step},{height - 1 - (round(count * usable / peak) if peak else 0)}"
        for i, count in enumerate(per_day)
    )
    return Sparkline(max(len(per_day) - 1, 1) * step, height, points, peak, sum(per_day))


def relative(moment: datetime | None, now: datetime) -> str:
    """``in 12m``, ``3h ago``, ``now``: how far a time is from ``now``, in the config's units."""
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    span = _span(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = int(seconds // size)
            rest = int((seconds - amount * size) // (size // (24 if unit == "d" else 60)))
            smaller = {"d": "h", "h": "m", "m": "s"}[unit]
            return f"{amount}{unit}{rest}{smaller}" if rest and amount < 10 else f"{amount}{unit}"
    return f"{int(seconds)}s"


def window_start(now: datetime, days: int = SPARK_DAYS) -> datetime:
    """The first instant the sparkline counts: the start (UTC) of its oldest day."""
    return datetime.fromtimestamp((day_number(now) - days + 1) * 86400, UTC)


@dataclass(frozen=True)
class StatusView:
    """Which rows /status shows: one health (or ``attention``), words its name or address holds, a page.

    ``page`` None: every matching row, what ``/status.json`` gives when no page is asked for.
    """

    health: str | None = None
    words: tuple[str, ...] = ()
    page: int | None = None

    def query(self) -> dict[str, str]:
        """The view as query parameters (page 1 and an empty filter are left out)."""
        asked = {"health": self.health or "", "q": " ".join(self.words)}
        if self.page is not None and self.page > 1:
            asked["page"] = str(self.page)
        return {key: value for key, value in asked.items() if value}


EVERY_SOURCE = StatusView()  # no filter, no pages


def status_view(params: Mapping[str, str], *, paged: bool) -> StatusView:
    """The view a request asks for; what it cannot mean (an unknown health, page "x") is left out."""
    health = params.get("health", "").strip().lower() or None
    if health not in (*HEALTHS, ATTENTION):
        health = None
    words = tuple(params.get("q", "").lower().split())
    page = page_number(params.get("page")) if paged or "page" in params else None
    return StatusView(health, words, page)


def page_number(asked: str | None) -> int:
    """A ``?page=``-like parameter: a whole number from 1, else 1."""
    try:
        return max(int(asked or "1"), 1)
    except ValueError:
        return 1


def matches(row: SourceRow, view: StatusView) -> bool:
    if view.health == ATTENTION:
        if row.health not in ("failing", "gone"):
            return False
    elif view.health is not None and row.health != view.health:
        return False
    text = f"{row.name} {row.url}".lower()
    return all(word in text for word in view.words)


@dataclass(frozen=True)
class RowPage:
    """The rows one page shows, and where they sit among the rows the view matches."""

    rows: list[SourceRow]
    number: int  # 1-based, at most ``pages``
    pages: int
    matched: int
    first: int  # the first row's place among the matched (1-based; 0 when none)
    view: StatusView = field(default_factory=StatusView)

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def page_of(rows: Sequence[SourceRow], view: StatusView, size: int = PAGE_ROWS) -> RowPage:
    """The rows of ``view``'s page, in the order given; a page past the last shows the last."""
    matched = [row for row in rows if matches(row, view)]
    if view.page is None:
        return RowPage(matched, 1, 1, len(matched), 1 if matched else 0, view)
    page = paging(len(matched), view.page, size)
    return RowPage(matched[page.start : page.stop], page.number, page.pages, len(matched), page.first, view)
