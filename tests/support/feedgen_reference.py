"""feedgen writing every item: the reference the fast item templates are held to.

The package renders each item once with templates (``aggregator.publish.formats``) and splices
the fragments into feedgen's skeleton (``aggregator.publish.skeleton``). This module renders the
same items through feedgen itself, and the JSON Feed items through ``json.dumps``, so the tests
can hold the two byte for byte equal. Only tests call it; it does not ship in the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from feedgen.ext.base import BaseEntryExtension
from feedgen.feed import FeedEntry, FeedGenerator
from lxml import etree

from aggregator.config import Config
from aggregator.errors import BuildError
from aggregator.index.feeds import IndexedPost
from aggregator.publish.formats import Fragments, dump_json, iso_utc, render_json_feed, summary_html
from aggregator.publish.items import FeedItem, ItemOptions, item_and_content
from aggregator.publish.skeleton import DC_NS, MEDIA_NS, FeedExtension, fill_channel
from aggregator.publish.specs import FeedSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# feedgen's pretty printer puts RSS items at depth 2 and Atom entries at depth 1.
_RSS_ITEM = "    <item>"
_RSS_END = "  </channel>"
_ATOM_ENTRY = "  <entry>"
_ATOM_END = "</feed>"


class _ItemExtension(BaseEntryExtension):  # type: ignore[misc]
    """What feedgen leaves out or gets wrong: dc:creator, media:thumbnail, Atom enclosures."""

    def __init__(self) -> None:
        self.creator: str | None = None
        self.thumbnail: str | None = None
        self.enclosures: Sequence[tuple[str, str, int]] = ()

    def extend_rss(self, entry: etree._Element) -> etree._Element:
        if self.creator:
            etree.SubElement(entry, f"{{{DC_NS}}}creator").text = self.creator
        self._thumbnail(entry)
        return entry

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        # feedgen drops rel/type/length from Atom entry links (lkiesow/python-feedgen#135).
        for url, kind, length in self.enclosures:
            link = etree.SubElement(entry, "link", rel="enclosure", href=url, type=kind)
            link.set("length", str(length))  # RFC 4287 4.2.7.6: a hint; 0 is "unknown"
        self._thumbnail(entry)
        return entry

    def _thumbnail(self, entry: etree._Element) -> None:
        if self.thumbnail:
            etree.SubElement(entry, f"{{{MEDIA_NS}}}thumbnail", url=self.thumbnail)


def _generator() -> FeedGenerator:
    fg = FeedGenerator()
    fg.register_extension("agg", FeedExtension, _ItemExtension, atom=True, rss=True)
    return fg


def _fill_rss(entry: FeedEntry, item: FeedItem) -> None:
    """Everything both formats share, plus RSS's guid and single enclosure."""
    entry.guid(item.id, permalink=item.permalink)
    entry.title(item.title)
    if item.link:
        entry.link(href=item.link, rel="alternate")
    entry.author({"name": item.author})
    entry.published(item.published)
    entry.updated(item.updated)
    entry.pubDate(item.published)
    # RSS 2.0 reads <description> as HTML: the plain-text summary is escaped as HTML first, so
    # "a < b" or "they <3 it" reach a reader as text (Atom's <summary> is text: see _switch_to_atom).
    entry.description(summary_html(item.summary), isSummary=True)  # isSummary: not Atom content
    if item.content is not None:
        # Escaped text, not CDATA: `]]>` in a body cannot end anything.
        entry.content(item.content, type="html")
    if item.terms:
        entry.category([{"term": term} for term in item.terms])
    extension = entry.agg
    extension.creator = item.author
    extension.thumbnail = item.image
    extension.enclosures = item.enclosures
    if item.enclosures:
        url, kind, length = item.enclosures[0]  # RSS allows one enclosure per item
        entry.enclosure(url, str(length), kind)


def _switch_to_atom(entry: FeedEntry, item: FeedItem) -> None:
    """Atom's id, and links without the enclosure feedgen would turn into a second alternate."""
    entry.id(item.atom_id)
    entry.summary(item.summary)  # text, not the HTML that description() left for RSS
    entry.link([{"href": item.link, "rel": "alternate"}] if item.link else [], replace=True)
    if item.content is None and not item.link:
        entry.content(item.summary, type="text")  # RFC 4287 4.1.2: content or an alternate link


def _json_item(item: FeedItem) -> dict[str, object]:
    entry: dict[str, object] = {"id": item.id}
    if item.link:
        entry["url"] = item.link
    entry["title"] = item.title
    if item.content is not None:
        entry["content_html"] = item.content
    else:
        entry["content_text"] = item.summary
    entry["summary"] = item.summary
    if item.image:
        entry["image"] = item.image
    entry["date_published"] = iso_utc(item.published)
    entry["date_modified"] = iso_utc(item.updated)
    entry["authors"] = [{"name": item.author}]
    if item.terms:
        entry["tags"] = list(item.terms)
    if item.enclosures:
        entry["attachments"] = [
            {"url": url, "mime_type": kind, **({"size_in_bytes": length} if length else {})}
            for url, kind, length in item.enclosures
        ]
    return entry


def render_fragments_with_feedgen(posts: Sequence[IndexedPost], options: ItemOptions) -> list[Fragments]:
    """The reference rendering: feedgen writes each item (one batch), split out of its output."""
    items = [item_and_content(post, options)[0] for post in posts]
    return _render_batch(items)


def _render_batch(items: Sequence[FeedItem]) -> list[Fragments]:
    if not items:
        return []
    fg = _generator()
    fg.id("urn:aggregator:batch")
    fg.title("batch")
    fg.link(href="urn:aggregator:batch")
    fg.description("batch")
    fg.updated(EPOCH)
    entries = []
    for item in items:
        entry = fg.add_entry(order="append")
        _fill_rss(entry, item)
        entries.append(entry)
    rss = _split(fg.rss_str(pretty=True).decode(), _RSS_ITEM, _RSS_END)
    for entry, item in zip(entries, items, strict=True):
        _switch_to_atom(entry, item)
    atom = _split(fg.atom_str(pretty=True).decode(), _ATOM_ENTRY, _ATOM_END)
    if not len(rss) == len(atom) == len(items):
        raise BuildError("feedgen output did not split into one fragment per item")
    texts = [dump_json(_json_item(item)).encode() for item in items]
    return [Fragments(r.encode(), a.encode(), j) for r, a, j in zip(rss, atom, texts, strict=True)]


def _split(document: str, start: str, end: str) -> list[str]:
    """The item fragments of a pretty-printed feed (all text is escaped, so tags are unambiguous)."""
    body = document[document.find(start) : document.rfind(end)] if start in document else ""
    return [start + part for part in body.split(start)[1:]]


def render_feed_directly(config: Config, spec: FeedSpec, fmt: str, posts: Sequence[IndexedPost]) -> bytes:
    """The whole feed rendered by feedgen in one piece, without fragments or their cache."""
    options = ItemOptions.of(config)
    items = [item_and_content(post, options)[0] for post in posts]
    stamps = [item.updated.timestamp() for item in items]
    newest = datetime.fromtimestamp(max(stamps), UTC) if stamps else EPOCH
    if fmt == "json":
        return render_json_feed(config, spec, [dump_json(_json_item(item)).encode() for item in items])
    fg = _generator()
    fill_channel(fg, config, spec, newest, fmt)
    for item in items:
        entry = fg.add_entry(order="append")
        _fill_rss(entry, item)
        if fmt == "atom":
            _switch_to_atom(entry, item)
    return bytes(fg.rss_str(pretty=True) if fmt == "rss" else fg.atom_str(pretty=True))
