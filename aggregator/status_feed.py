"""The operator's feed: the health of the sources, as a feed of its own.

A source that starts failing, moves permanently, disappears (HTTP 410) or
recovers becomes one item under ``feeds/_status/`` (RSS 2.0 and Atom 1.0), so
the operator subscribes to the sources' health in the same reader as the
posts. Events come from comparing a source's state before and after a run
(:func:`events_between`, pure) and are kept in a small table of the index
(``aggregator.index.status``), so
they survive restarts; the feed is rendered from that table alone and is
byte-stable: with no new event the files are not rewritten.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from feedgen.feed import FeedGenerator

from aggregator import __version__
from aggregator.config import Config
from aggregator.files import write_atomic
from aggregator.normalize import clean_text
from aggregator.state import SourceState
from aggregator.uris import own_id

STATUS_DIR = "_status"
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


def render_status(config: Config, events: Sequence[StatusEvent], fmt: Literal["rss", "atom"]) -> bytes:
    """The feed, newest event first; nothing in it depends on the time of the build."""
    base = config.site.base_url + STATUS_DIR + "/"
    fg = FeedGenerator()
    fg.id(base + "atom.xml")
    fg.title(clean_text(f"{config.site.title}: source health"))
    description = "Sources that fail, move, disappear or recover"
    fg.subtitle(description)
    fg.description(description)
    fg.author({"name": config.site.author})
    fg.language(config.site.language)
    fg.generator("aggregator", version=__version__, uri="https://github.com/aggregator-project/aggregator")
    newest = max((e.at for e in events), default=EPOCH)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    fg.link(href=base + f"{fmt}.xml", rel="self")
    fg.link(href=config.site.base_url, rel="alternate")
    for event in reversed(events):  # feedgen prepends: add oldest first
        entry = fg.add_entry()
        if fmt == "rss":
            entry.guid(event.id, permalink=False)
        else:
            entry.id(event.id)
        entry.title(clean_text(event.title))
        entry.link(href=event.url or config.site.base_url, rel="alternate")
        entry.published(event.at)
        entry.updated(event.at)
        entry.pubDate(event.at)
        text = clean_text(f"{event.title}: {event.detail}")
        # RSS's <description> holds HTML: "<" in an error detail is text, not a tag.
        entry.description(html.escape(text, quote=False) if fmt == "rss" else text)
        entry.summary(text)
        entry.category(term=event.kind)
    data: bytes = fg.rss_str(pretty=True) if fmt == "rss" else fg.atom_str(pretty=True)
    return data


def publish_status(config: Config, events: Sequence[StatusEvent]) -> list[Path]:
    """Write ``_status/{rss,atom}.xml`` where their bytes changed; return what was written."""
    directory = config.feeds_dir / STATUS_DIR
    written = []
    for fmt in ("rss", "atom"):
        path = directory / f"{fmt}.xml"
        data = render_status(config, events, fmt)
        if not path.exists() or path.read_bytes() != data:
            write_atomic(path, data)
            written.append(path)
    return written
