"""The status feed: the sources' health events (``aggregator.status_feed``) published as a feed.

``feeds/_status/{rss,atom}.xml``, written by feedgen from the events alone, newest first.
Nothing depends on the time of the build, so with no new event the files are not rewritten.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from feedgen.feed import FeedGenerator

from aggregator import __version__
from aggregator.config import Config
from aggregator.files import write_atomic
from aggregator.status_feed import EPOCH, StatusEvent
from aggregator.text import clean_text

STATUS_DIR = "_status"


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
