"""A feed's own elements, written by feedgen, with the rendered items spliced in.

feedgen stays the renderer of record: every channel element (ids, titles, links, dates,
generator, the WebSub hub) comes from it. The items, rendered once each by
``aggregator.publish.formats``, are spliced in where feedgen's pretty printer would have put
them; the result is byte for byte what feedgen writes for the whole feed (tests/test_build.py
holds this, with feedgen writing the items too, in tests/support/feedgen_reference.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from aggregator import __version__
from aggregator.config import Config
from aggregator.publish.specs import GENERATOR, GENERATOR_URI, MEDIA_TYPES, FeedSpec, feed_url
from aggregator.text import clean_text

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_NS = "http://search.yahoo.com/mrss/"
DC_NS = "http://purl.org/dc/elements/1.1/"
# Where items go: feedgen's pretty printer ends RSS items at depth 2 and Atom entries at depth 1.
RSS_END = b"  </channel>"
ATOM_END = b"</feed>"


class FeedExtension(BaseExtension):  # type: ignore[misc]
    """Namespaces, and the WebSub hub link RSS has no element for."""

    def __init__(self) -> None:
        self.hub: str | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"dc": DC_NS, "media": MEDIA_NS}

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        if self.hub:
            channel = rss.find("channel")
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", href=self.hub, rel="hub")
        return rss


def fill_channel(fg: FeedGenerator, config: Config, spec: FeedSpec, newest: datetime, fmt: str) -> None:
    """Every channel element of the feed, on a generator that has ``FeedExtension`` as ``agg``."""
    fg.agg.hub = config.build.websub_hub
    fg.id(feed_url(config, spec, "atom"))
    fg.title(clean_text(spec.title))
    description = clean_text(spec.description) or clean_text(spec.title)
    fg.subtitle(description)
    fg.description(description)
    fg.author({"name": clean_text(config.site.author) or GENERATOR})
    fg.language(config.site.language)
    fg.generator(GENERATOR, version=__version__, uri=GENERATOR_URI)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    fg.pubDate(newest)
    if fmt == "atom":
        fg.link(href=config.site.base_url, rel="alternate", type="text/html")
        fg.link(href=feed_url(config, spec, "atom"), rel="self", type=MEDIA_TYPES["atom"])
        if config.build.websub_hub:
            fg.link(href=config.build.websub_hub, rel="hub")
    else:
        fg.link(href=feed_url(config, spec, "rss"), rel="self", type=MEDIA_TYPES["rss"])
        fg.link(href=config.site.base_url, rel="alternate")  # RSS <link> is the last link set


def spliced_feed(config: Config, spec: FeedSpec, fmt: str, items: Sequence[bytes], newest: datetime) -> bytes:
    """An RSS or Atom feed: feedgen's skeleton (no items) with ``items``, rendered, spliced in."""
    fg = FeedGenerator()
    fg.register_extension("agg", FeedExtension, atom=True, rss=True)  # no items: no item extension
    fill_channel(fg, config, spec, newest, fmt)
    if fmt == "rss":
        skeleton, end = bytes(fg.rss_str(pretty=True)), RSS_END
    else:
        skeleton, end = bytes(fg.atom_str(pretty=True)), ATOM_END
    at = skeleton.rfind(end)
    return b"".join((skeleton[:at], *items, skeleton[at:]))
