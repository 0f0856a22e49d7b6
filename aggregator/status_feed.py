"""The operator's feed: the health of the sources, as events.

A source that starts failing, moves permanently, disappears (HTTP 410) or
recovers becomes one event, and one item of the status feed under
``feeds/_status/`` (RSS 2.0 and Atom 1.0; rendered by ``aggregator.publish.status``),
so the operator subscribes to the sources' health in the same reader as the
posts. Events come from comparing a source's state before and after a run
(:func:`events_between`, pure) and are kept in a small table of the index
(``aggregator.index.status``), so
they survive restarts; the feed is rendered from that table alone and is
byte-stable: with no new event the files are not rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aggregator.state import SourceState
from aggregator.uris import own_id

FEED_ITEMS = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EventKind = Literal["failing", "recovered", "moved", "gone"]


@dataclass(frozen=True)
class StatusEvent:
    source: str
    kind: EventKind
    at: datetime
    detail: str
    url: str = ""

    @property
    def id(self) -> str:
        # A urn:uuid (RFC 4122), which strict validators know; "urn:aggregator:" is no registered namespace.
        return own_id(f"status\x00{self.source}", f"{self.kind}\x00{self.at.isoformat()}")

    @property
    def title(self) -> str:
        verb = {
            "failing": "is failing",
            "recovered": "has recovered",
            "moved": "moved permanently",
            "gone": "is gone (HTTP 410)",
        }[self.kind]
        return f"{self.source} {verb}"


def events_between(old: SourceState, new: SourceState, url: str = "") -> list[StatusEvent]:
    """What changed in a source's health between two states (no I/O)."""
    at = new.last_attempt or EPOCH
    events: list[StatusEvent] = []
    succeeded = new.last_success is not None and new.last_success == new.last_attempt
    if new.gone and not old.gone:
        events.append(StatusEvent(new.name, "gone", at, new.last_error or "HTTP 410 Gone", url))
    elif new.error_streak > 0 and old.error_streak == 0:
        events.append(StatusEvent(new.name, "failing", at, new.last_error or "failed", url))
    elif succeeded and (old.error_streak > 0 or old.gone):
        was = "gone" if old.gone else f"{old.error_streak} failed attempt{'s' * (old.error_streak > 1)}"
        detail = f"polled successfully again (HTTP {new.http_status}) after {was}"
        events.append(StatusEvent(new.name, "recovered", at, detail, url))
    if new.permanent_url and new.permanent_url != old.permanent_url:
        detail = f"now at {new.permanent_url}; update the url in the config"
        events.append(StatusEvent(new.name, "moved", at, detail, new.permanent_url))
    return events
