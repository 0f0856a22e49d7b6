"""Republish the posts as RSS 2.0, Atom 1.0 and JSON Feed 1.1, plus an index.

One feed of each format for everything, for each source, and for every level
of every category hierarchy (a parent holds its children's posts). Feeds are
built from the index alone, never from the post files.

    feed keys to build | newest refs per key (no bodies) | signature unchanged? skip
      | render missing items once (feedgen) | splice into the feed's skeleton (feedgen)
      | write the files whose bytes differ (atomically) | index.html, index.opml

Speed: a post sits in several feeds (everything, its source, each category
level), so each item's XML/JSON fragment is rendered once, by feedgen, and
reused in every feed that holds it. The feed's own elements come from feedgen
too; the item fragments are spliced in where feedgen would have put them, and
the result is byte for byte what feedgen gives for the whole feed (a test
holds this).

Output is byte-stable: nothing depends on the build time (``lastBuildDate`` and
``updated`` come from the newest item), so an unchanged feed keeps its ETag.
A feed whose items and settings have not changed since it was last written is
not rendered at all, and a rendered feed is only written when its bytes differ.

Layout under the feeds directory::

    index.html  index.opml
    all/{rss.xml,atom.xml,feed.json}
    source/<source>/{rss.xml,atom.xml,feed.json}
    category/<level1>/<level2>/.../{rss.xml,atom.xml,feed.json}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedEntry, FeedGenerator
from lxml import etree

import aggregator.uris as uris
from aggregator import __version__
from aggregator.categories import display_path, first_spellings, spelling_in
from aggregator.config import Config, category_paths
from aggregator.errors import BuildError
from aggregator.files import write_atomic
from aggregator.index.feeds import FeedRef, IndexedPost, IndexReader
from aggregator.keys import ALL_KEY, CATEGORY_PREFIX, category_slugs, slugify, split_key
from aggregator.normalize import clean_text, summary_of
from aggregator.store import PostStore

log = logging.getLogger("aggregator.build")

FORMAT_FILES = {"rss": "rss.xml", "atom": "atom.xml", "json": "feed.json"}
MEDIA_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
FEED_KINDS = ("all", "source", "category")
GENERATOR = "aggregator"
GENERATOR_URI = "https://github.com/aggregator-project/aggregator"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
# Rendered item fragments kept between feeds (and between builds in the daemon).
FRAGMENT_CACHE_BYTES = 128 * 1024 * 1024
# A build rendering at least this many feeds shares them with worker processes (a few at most;
# each holds its own fragment cache). Incremental builds stay in the calling process.
PARALLEL_MIN_FEEDS = 64
MAX_WORKER_PROCESSES = 3
WORKER_CACHE_BYTES = 16 * 1024 * 1024
# Runs of feeds per process: enough that the processes end together, few enough to keep items local.
RUNS_PER_PROCESS = 8
PARENT_CHECK_SECONDS = 0.05
# Extra refs read per feed so that entries repeated across sources can be dropped.
_DUPLICATE_MARGIN = 10
_ATOM_NS = "http://www.w3.org/2005/Atom"
_MEDIA_NS = "http://search.yahoo.com/mrss/"
_DC_NS = "http://purl.org/dc/elements/1.1/"
# feedgen's pretty printer puts RSS items at depth 2 and Atom entries at depth 1.
_RSS_ITEM = "    <item>"
_RSS_END = "  </channel>"
_ATOM_ENTRY = "  <entry>"
_ATOM_END = "</feed>"


@dataclass(frozen=True)
class FeedSpec:
    """One published feed: which posts, where, and under what name."""

    key: str
    kind: str  # all | source | category
    parts: tuple[str, ...]  # the source's name, or the category's levels as titled
    title: str
    description: str

    @functools.cached_property
    def relative_path(self) -> str:
        """``all``, ``source/<slug>`` or ``category/<slug>/<slug>...`` (a category key holds its slugs)."""
        if self.kind == "all":
            return "all"
        if self.kind == "category":
            return "/".join((self.kind, *split_key(self.key)[1]))
        return "/".join((self.kind, *(slugify(part) for part in self.parts)))

    @property
    def relative_dir(self) -> PurePosixPath:
        return PurePosixPath(self.relative_path)

    @functools.cached_property
    def url_path(self) -> str:
        return quote(self.relative_path)


@dataclass
class BuildReport:
    rendered: list[str] = field(default_factory=list)  # feed keys with at least one file written
    skipped: int = 0
    removed: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)  # directories of stale feed files no key wants
    written_urls: list[str] = field(default_factory=list)  # public URLs of the feed files written

    @property
    def changed(self) -> list[str]:
        return self.rendered + self.removed + self.swept


def spec_for(key: str, config: Config, names: Sequence[str] | None = None) -> FeedSpec:
    """A feed's place and titles. ``names``: a category's levels as titled (the builder
    picks the first spelling seen, see ``aggregator.categories``); its slugs when not given."""
    kind, parts = split_key(key)
    site = config.site.title
    if kind == ALL_KEY:
        return FeedSpec(key, "all", (), site, config.site.description)
    if kind == "source":
        label = " › ".join(parts)
        return FeedSpec(key, kind, parts, f"{site}: {label}", f"Posts from the source {label}")
    slugs, parts = parts, tuple(names) if names is not None else parts
    label = " › ".join(parts)
    title, description = f"{site}: {label}", f"Posts in the category {label}"
    for custom in config.build.categories:
        if category_slugs(custom.path) == slugs:
            title = custom.title or title
            description = custom.description if custom.description is not None else description
    return FeedSpec(key, kind, parts, title, description)


def feed_url(config: Config, spec: FeedSpec, fmt: str) -> str:
    return f"{config.site.base_url}{spec.url_path}/{FORMAT_FILES[fmt]}"


# Items --------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemOptions:
    """The settings an item's rendering depends on (and nothing feed-specific)."""

    full_content: bool = True
    max_content_chars: int | None = None

    @classmethod
    def of(cls, config: Config) -> ItemOptions:
        return cls(config.build.full_content, config.build.max_content_chars)


@dataclass(frozen=True)
class FeedItem:
    """A post cleaned for publishing: no XML-forbidden characters, content capped, ids chosen."""

    id: str
    atom_id: str
    permalink: bool
    title: str
    link: str
    author: str
    published: datetime
    updated: datetime
    summary: str
    content: str | None  # HTML, or None for summary-only feeds
    terms: tuple[str, ...]
    image: str | None
    enclosures: tuple[tuple[str, str, int], ...]  # (url, media type, length)
    # The dates' isoformat(), as Atom writes them, made once for Atom and JSON (a twentieth of an item).
    published_iso: str = field(default="", compare=False, repr=False)
    updated_iso: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        """Made here when constructed (``_item_and_content`` sets every field itself)."""
        object.__setattr__(self, "published_iso", self.published.isoformat())
        object.__setattr__(self, "updated_iso", self.updated.isoformat())

    @classmethod
    def of(cls, post: IndexedPost, options: ItemOptions) -> FeedItem:
        return _item_and_content(post, options)[0]


def _item_and_content(post: IndexedPost, options: ItemOptions) -> tuple[FeedItem, bytes | None]:
    """``FeedItem.of(post, options)``, and its content in UTF-8 (made on the way, for the templates)."""
    # Links as URIs (spaces, non-ASCII paths): RSS and JSON Feed want URLs, and so do strict readers.
    link = _url(post.link)
    item_id = _clean(post.id) or uris.own_id(post.source, post.id)
    content = data = None
    if options.full_content and post.body:
        content, data = _clean_encoded(post.body)
        if not content:
            content = data = None
        elif options.max_content_chars is not None and len(content) > options.max_content_chars:
            content = truncate_html(content, options.max_content_chars)
            data = content.encode()
    image = _url(post.headimg) if post.headimg else None
    title = _clean(post.title) or "(untitled)"
    enclosures = tuple(
        (_url(e.url), _clean(e.type) or "application/octet-stream", e.length) for e in post.enclosures
    )
    if not enclosures and image:
        enclosures = ((image, _image_type(image), 0),)
    published = post.date
    updated = post.updated if post.updated and post.updated > published else published
    published_iso = published.isoformat()
    # FeedItem(...), set in one __dict__ update: the frozen dataclass's __init__ sets each field with
    # object.__setattr__, a twentieth of an item's rendering.
    item: FeedItem = object.__new__(FeedItem)
    item.__dict__.update(
        id=item_id,
        atom_id=uris.atom_id(post.source, post.id),
        # A guid that is a permalink must be a URL as it stands (the link is one).
        permalink=item_id == link and item_id.startswith(("http://", "https://")),
        title=title,
        link=link,
        author=_clean(post.author) or _clean(post.source),
        published=published,
        updated=updated,
        summary=(_clean(post.summary) if post.summary else summary_of(post.body)) or title,
        content=content,
        terms=_item_terms(post.categories, post.tags),
        image=image,
        enclosures=enclosures,
        published_iso=published_iso,
        updated_iso=published_iso if updated is published else updated.isoformat(),
    )
    return item, data


def _url(value: str) -> str:
    """A link cleaned and mapped to a URI; almost every link is one already (``uri_from_iri``'s fast exit)."""
    return uris.uri_from_iri(_clean(value))


def _clean(value: str) -> str:
    """``clean_text(value)``, skipping its regular expression when there is nothing to remove.

    Every character XML forbids (C0 controls but tab/newline/CR, DEL, surrogates, U+FFFE/U+FFFF)
    is unprintable, so a printable string is already clean; ``str.isprintable`` is a C loop
    several times cheaper than the regex on the short fields of an item (a property test holds
    the two equal).
    """
    return value if value.isprintable() else clean_text(value)


# The bytes that are XML-forbidden characters in UTF-8 (no ASCII byte occurs inside a multi-byte
# sequence, so these mean the same characters there).
_FORBIDDEN_BYTES = bytes((*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))


def _clean_encoded(text: str) -> tuple[str, bytes]:
    """``clean_text(text)`` and its UTF-8 encoding, for bodies (kilobytes each).

    The regex costs about 4 ns a character on non-Latin-1 text; almost every body is clean,
    and that is answered for a fraction of it: the UTF-8 encoding (needed anyway) fails on
    a lone surrogate, ``bytes.translate`` deletes the forbidden control bytes (a length
    change tells), and U+FFFE/U+FFFF are found with ``in`` (a memchr search).
    """
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        pass
    else:
        if (
            len(data.translate(None, _FORBIDDEN_BYTES)) == len(data)
            and "\ufffe" not in text
            and "\uffff" not in text
        ):
            return text, data
    text = clean_text(text)
    return text, text.encode()


# Terms of posts already seen, by their (categories, tags): the lists repeat across posts.
@functools.lru_cache(maxsize=4096)
def _item_terms(categories: tuple[str, ...], tags: tuple[str, ...]) -> tuple[str, ...]:
    """The categories, then the tags, cleaned, without blank ones or repeats (first kept)."""
    cleaned = (_clean(term) for term in (*categories, *tags))
    return tuple(dict.fromkeys(term for term in cleaned if term.strip()))


@dataclass(frozen=True)
class Fragments:
    """One item rendered in each format (UTF-8), ready to splice into any feed that holds it."""

    rss: bytes
    atom: bytes
    json: bytes

    @property
    def size(self) -> int:
        return len(self.rss) + len(self.atom) + len(self.json)


class _ItemExtension(BaseEntryExtension):  # type: ignore[misc]
    """What feedgen leaves out or gets wrong: dc:creator, media:thumbnail, Atom enclosures."""

    def __init__(self) -> None:
        self.creator: str | None = None
        self.thumbnail: str | None = None
        self.enclosures: Sequence[tuple[str, str, int]] = ()

    def extend_rss(self, entry: etree._Element) -> etree._Element:
        if self.creator:
            etree.SubElement(entry, f"{{{_DC_NS}}}creator").text = self.creator
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
            etree.SubElement(entry, f"{{{_MEDIA_NS}}}thumbnail", url=self.thumbnail)


class _FeedExtension(BaseExtension):  # type: ignore[misc]
    """Namespaces, and the WebSub hub link RSS has no element for."""

    def __init__(self) -> None:
        self.hub: str | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"dc": _DC_NS, "media": _MEDIA_NS}

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        if self.hub:
            channel = rss.find("channel")
            etree.SubElement(channel, f"{{{_ATOM_NS}}}link", href=self.hub, rel="hub")
        return rss


def _generator() -> FeedGenerator:
    fg = FeedGenerator()
    fg.register_extension("agg", _FeedExtension, _ItemExtension, atom=True, rss=True)
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
    entry.description(_summary_html(item.summary), isSummary=True)  # isSummary: not Atom content
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
    entry["date_published"] = _iso(item.published)
    entry["date_modified"] = _iso(item.updated)
    entry["authors"] = [{"name": item.author}]
    if item.terms:
        entry["tags"] = list(item.terms)
    if item.enclosures:
        entry["attachments"] = [
            {"url": url, "mime_type": kind, **({"size_in_bytes": length} if length else {})}
            for url, kind, length in item.enclosures
        ]
    return entry


def render_fragments(posts: Sequence[IndexedPost], options: ItemOptions) -> list[Fragments]:
    """Each post's RSS item, Atom entry and JSON Feed item, as feedgen would write them.

    feedgen costs about 0.4 ms an item (three quarters of a full build); these
    templates write the same bytes in a tenth of that. feedgen stays the
    reference: ``render_fragments_with_feedgen`` renders through it, and the
    tests hold the two byte for byte equal on arbitrary items.
    """
    fragments = []
    for post in posts:
        item, data = _item_and_content(post, options)
        # The content is most of an item's bytes: escaped once for both XML formats, once for JSON,
        # each on its UTF-8 bytes.
        if data is None:
            xml = json_string = None
        else:
            xml, json_string = _text_bytes(data), _json_bytes(data)
        fragments.append(
            Fragments(_rss_item(item, xml), _atom_entry(item, xml), _json_text(item, json_string))
        )
    return fragments


def _json_text(item: FeedItem, content: bytes | None = None) -> bytes:
    """``_dump_json(_json_item(item)).encode()``, written directly (json.dumps was a tenth of a build).

    ``content``: ``_json_bytes`` of the item's content in UTF-8, when the caller has it.
    """
    string = _json_string
    head = [f'{{"id": {string(item.id)}']
    if item.link:
        head.append(f'"url": {string(item.link)}')
    head.append(f'"title": {string(item.title)}')
    if item.content is not None:
        head.append('"content_html": ')
        parts = []
    else:
        parts = [f'"content_text": {string(item.summary)}']
    parts.append(f'"summary": {string(item.summary)}')
    if item.image:
        parts.append(f'"image": {string(item.image)}')
    parts.append(f'"date_published": "{_iso(item.published, item.published_iso)}"')
    parts.append(f'"date_modified": "{_iso(item.updated, item.updated_iso)}"')
    parts.append(f'"authors": [{{"name": {string(item.author)}}}]')
    if item.terms:
        parts.append(_json_tags(item.terms))
    if item.enclosures:
        attachments = [
            f'{{"url": {string(url)}, "mime_type": {string(kind)}'
            + (f', "size_in_bytes": {int(length)}}}' if length else "}")
            for url, kind, length in item.enclosures
        ]
        parts.append(f'"attachments": [{", ".join(attachments)}]')
    if item.content is None:
        return (", ".join(head + parts) + "}").encode()
    if content is None:
        content = _json_bytes(item.content.encode())
    return b"".join((", ".join(head).encode(), content, (", " + ", ".join(parts) + "}").encode()))


def _json_bytes(data: bytes) -> bytes:
    """``_json_string(text).encode()`` for ``data = text.encode()`` (text clean_text has passed).

    The same replacements on the UTF-8 bytes give the same result (no ASCII byte occurs inside a
    multi-byte sequence), and ``bytes.replace`` finds a byte with memchr: for a body, a third of
    the time of the ``str`` replacements plus the encoding.
    """
    escaped = (
        data.replace(b"\\", b"\\\\")
        .replace(b'"', b'\\"')
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
        .replace(b"\t", b"\\t")
    )
    return b"".join((b'"', escaped, b'"'))


def _json_string(value: str) -> str:
    """A JSON string as ``json.dumps(ensure_ascii=False)`` writes it, for text clean_text has passed
    (FeedItem.of cleans every field): no control character is left but tab, newline and carriage
    return, so five replacements (fast substring searches) do the encoder's per-character work."""
    if "\\" in value or '"' in value or "\n" in value or "\r" in value or "\t" in value:  # as in _text
        value = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
    return f'"{value}"'


def _summary_html(summary: str) -> str:
    """The plain-text summary as the HTML that RSS's <description> holds (RSS 2.0: entity-encoded HTML)."""
    if "&" in summary or "<" in summary or ">" in summary:  # as in _text: most summaries need nothing
        return html.escape(summary, quote=False)
    return summary


def _text(value: str) -> str:
    """Character data escaped as libxml2 writes it.

    Most values need nothing: four ``in`` tests (memchr) tell so in a tenth of the time of one
    regex search, and a ``replace`` that finds nothing still costs a search of its own.
    """
    if "&" in value or "<" in value or ">" in value or "\r" in value:
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return value


def _text_bytes(data: bytes) -> bytes:
    """``_text(text).encode()`` for ``data = text.encode()``, by the same reasoning as ``_json_bytes``."""
    return data.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;").replace(b"\r", b"&#13;")


def _attr(value: str) -> str:
    """An attribute value escaped as libxml2 writes it."""
    value = _text(value)
    if '"' in value or "\n" in value or "\t" in value:
        return value.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    return value


def _rss_item(item: FeedItem, content: bytes | None) -> bytes:
    lines = ["    <item>", f"      <title>{_text(item.title)}</title>"]
    if item.link:
        lines.append(f"      <link>{_text(item.link)}</link>")
    lines.append(f"      <description>{_text(_summary_html(item.summary))}</description>")
    head = ""
    if content is not None:  # spliced in as bytes below
        lines.append("      <content:encoded>")
        head, lines = "\n".join(lines), ["</content:encoded>"]
    permalink = "true" if item.permalink else "false"
    lines.append(f'      <guid isPermaLink="{permalink}">{_text(item.id)}</guid>')
    if item.terms:
        lines.append(_rss_categories(item.terms))
    if item.enclosures:
        url, kind, length = item.enclosures[0]
        lines.append(f'      <enclosure url="{_attr(url)}" length="{length}" type="{_attr(kind)}"/>')
    lines.append(f"      <pubDate>{_rfc822(item.published)}</pubDate>")
    lines.append(f"      <dc:creator>{_text(item.author)}</dc:creator>")
    if item.image:
        lines.append(f'      <media:thumbnail url="{_attr(item.image)}"/>')
    lines.append("    </item>\n")
    return _spliced(head, content, "\n".join(lines))


def _spliced(head: str, content: bytes | None, tail: str) -> bytes:
    """``head + content + tail`` in UTF-8, the content already encoded."""
    if content is None:
        return tail.encode()
    return b"".join((head.encode(), content, tail.encode()))


def _atom_entry(item: FeedItem, content: bytes | None) -> bytes:
    lines = [
        "  <entry>",
        f"    <id>{_text(item.atom_id)}</id>",
        f"    <title>{_text(item.title)}</title>",
        f"    <updated>{item.updated_iso}</updated>",
        "    <author>",
        f"      <name>{_text(item.author)}</name>",
        "    </author>",
    ]
    head = ""
    if content is not None:  # spliced in as bytes below
        lines.append('    <content type="html">')
        head, lines = "\n".join(lines), ["</content>"]
    elif not item.link:
        lines.append(f'    <content type="text">{_text(item.summary)}</content>')
    if item.link:
        lines.append(f'    <link href="{_attr(item.link)}"/>')
    lines.append(f"    <summary>{_text(item.summary)}</summary>")
    if item.terms:
        lines.append(_atom_categories(item.terms))
    lines.append(f"    <published>{item.published_iso}</published>")
    lines += [
        f'    <link rel="enclosure" href="{_attr(url)}" type="{_attr(kind)}" length="{length}"/>'
        for url, kind, length in item.enclosures
    ]
    if item.image:
        lines.append(f'    <media:thumbnail url="{_attr(item.image)}"/>')
    lines.append("  </entry>\n")
    return _spliced(head, content, "\n".join(lines))


# An item's terms in each format, rendered once per list (the lists repeat across posts).


@functools.lru_cache(maxsize=4096)
def _rss_categories(terms: tuple[str, ...]) -> str:
    return "\n".join(f"      <category>{_text(term)}</category>" for term in terms)


@functools.lru_cache(maxsize=4096)
def _atom_categories(terms: tuple[str, ...]) -> str:
    return "\n".join(f'    <category term="{_attr(term)}"/>' for term in terms)


@functools.lru_cache(maxsize=4096)
def _json_tags(terms: tuple[str, ...]) -> str:
    return f'"tags": [{", ".join(map(_json_string, terms))}]'


def _rfc822(moment: datetime) -> str:
    """RFC 822 as feedgen writes it (English names whatever the locale)."""
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[
        moment.month - 1
    ]
    # strftime is a fifth of this function's time; every stored date is in UTC.
    zone = "+0000" if moment.tzinfo is UTC else moment.strftime("%z")
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {zone}"
    return f"{day}, {moment.day:02d} {month} {moment.year:04d} {clock}"


def render_fragments_with_feedgen(posts: Sequence[IndexedPost], options: ItemOptions) -> list[Fragments]:
    """The reference rendering: feedgen writes each item (one batch), split out of its output."""
    items = [FeedItem.of(post, options) for post in posts]
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
    texts = [_dump_json(_json_item(item)).encode() for item in items]
    return [Fragments(r.encode(), a.encode(), j) for r, a, j in zip(rss, atom, texts, strict=True)]


def _split(document: str, start: str, end: str) -> list[str]:
    """The item fragments of a pretty-printed feed (all text is escaped, so tags are unambiguous)."""
    body = document[document.find(start) : document.rfind(end)] if start in document else ""
    return [start + part for part in body.split(start)[1:]]


def _dump_json(value: object) -> str:
    """``json.dumps(value, ensure_ascii=False)``: one encoder for all (dumps builds one per call)."""
    return _JSON.encode(value)


_JSON = json.JSONEncoder(ensure_ascii=False)


def truncate_html(markup: str, limit: int) -> str:
    """At most about ``limit`` characters of HTML, cut between tags, open elements closed."""
    if len(markup) <= limit:
        return markup
    cut = limit
    if markup.rfind("<", 0, cut) > markup.rfind(">", 0, cut):
        cut = markup.rfind("<", 0, cut)  # not inside a tag
    amp = markup.rfind("&", 0, cut)
    if amp > markup.rfind(";", 0, cut) and cut - amp <= 10:
        cut = amp  # not inside an entity
    head = markup[:cut]
    open_tags: list[str] = []
    for match in _TAG.finditer(head):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if self_closing or name in _VOID:
            continue
        if not closing:
            open_tags.append(name)
        elif name in open_tags:
            del open_tags[len(open_tags) - 1 - open_tags[::-1].index(name) :]
    return head.rstrip() + "…" + "".join(f"</{name}>" for name in reversed(open_tags))


_TAG = re.compile(r"<(/?)([A-Za-z][\w:-]*)(?:\s[^>]*?)?(/?)>")
_VOID = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()  # noqa: SIM905
)


def _image_type(url: str) -> str:
    """The media type its name's suffix says (every suffix known holds just its leading dot)."""
    lowered = url.lower().partition("?")[0]
    return _IMAGE_TYPES.get(lowered[lowered.rfind(".") :], "image/jpeg")


_IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".svg": "image/svg+xml",
                ".avif": "image/avif"}  # fmt: skip


def _iso(moment: datetime, isoformat: str | None = None) -> str:
    """The moment in UTC, ISO 8601 with a Z; ``isoformat``: ``moment.isoformat()``, when known."""
    if moment.tzinfo is UTC:  # every stored date: the isoformat ends in "+00:00"
        return (isoformat or moment.isoformat())[:-6] + "Z"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Feeds --------------------------------------------------------------------------


def _skeleton(config: Config, spec: FeedSpec, newest: datetime, fmt: str) -> FeedGenerator:
    """The feed without its items: every channel element, from feedgen."""
    fg = _generator()
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
    return fg


def _newest(items: Sequence[FeedItem] | Sequence[FeedRef]) -> datetime:
    stamps = [
        max(ref.date_ts, ref.updated_ts or 0.0) if isinstance(ref, FeedRef) else ref.updated.timestamp()
        for ref in items
    ]
    return datetime.fromtimestamp(max(stamps), UTC) if stamps else EPOCH


def render_feed(
    config: Config,
    spec: FeedSpec,
    fmt: str,
    fragments: Sequence[Fragments],
    newest: datetime,
) -> bytes:
    """A whole feed: feedgen's skeleton with the items' fragments spliced in."""
    if fmt == "json":
        return _render_json(config, spec, [f.json for f in fragments])
    fg = _skeleton(config, spec, newest, fmt)
    if fmt == "rss":
        skeleton, end, parts = bytes(fg.rss_str(pretty=True)), _RSS_END, [f.rss for f in fragments]
    else:
        skeleton, end, parts = bytes(fg.atom_str(pretty=True)), _ATOM_END, [f.atom for f in fragments]
    at = skeleton.rfind(end.encode())
    return b"".join((skeleton[:at], *parts, skeleton[at:]))


def render_feed_directly(config: Config, spec: FeedSpec, fmt: str, posts: Sequence[IndexedPost]) -> bytes:
    """The same feed rendered by feedgen in one piece, without the fragment cache (for tests)."""
    options = ItemOptions.of(config)
    items = [FeedItem.of(post, options) for post in posts]
    newest = _newest(items)
    if fmt == "json":
        return _render_json(config, spec, [_dump_json(_json_item(item)).encode() for item in items])
    fg = _skeleton(config, spec, newest, fmt)
    for item in items:
        entry = fg.add_entry(order="append")
        _fill_rss(entry, item)
        if fmt == "atom":
            _switch_to_atom(entry, item)
    return bytes(fg.rss_str(pretty=True) if fmt == "rss" else fg.atom_str(pretty=True))


def _render_json(config: Config, spec: FeedSpec, items: Sequence[bytes]) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/): one line per top-level key and item."""
    head: dict[str, object] = {
        "version": JSON_FEED_VERSION,
        "title": clean_text(spec.title),
        "home_page_url": config.site.base_url,
        "feed_url": feed_url(config, spec, "json"),
        "description": clean_text(spec.description),
        "language": config.site.language,
        "authors": [{"name": clean_text(config.site.author) or GENERATOR}],
    }
    if config.build.websub_hub:
        head["hubs"] = [{"type": "WebSub", "url": config.build.websub_hub}]
    lines = [f" {_dump_json(key)}: {_dump_json(value)}," for key, value in head.items()]
    top = ("{\n" + "\n".join(lines) + "\n").encode()
    items = [item for item in items if item]
    if not items:
        return top + b' "items": []\n}\n'
    joined = [top + b' "items": [\n  ', items[0]]
    for item in items[1:]:  # one join: the items are most of a feed's bytes
        joined += (b",\n  ", item)
    joined.append(b"\n ]\n}\n")
    return b"".join(joined)


class FragmentCache:
    """Rendered items by (source, id, content hash), least recently used dropped past a byte budget."""

    def __init__(self, budget: int = FRAGMENT_CACHE_BYTES) -> None:
        self.budget = budget
        self.size = 0
        self.options: ItemOptions | None = None
        self._items: OrderedDict[tuple[str, str, str], Fragments] = OrderedDict()

    def reset_if_changed(self, options: ItemOptions) -> None:
        if options != self.options:
            self._items.clear()
            self.size = 0
            self.options = options

    def get(self, key: tuple[str, str, str]) -> Fragments | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, str], fragments: Fragments) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old.size
        self._items[key] = fragments
        self.size += fragments.size
        while self.size > self.budget and len(self._items) > 1:
            _key, dropped = self._items.popitem(last=False)
            self.size -= dropped.size


def _settings_signature(config: Config) -> str:
    """What every feed's bytes depend on besides its own title, description and items."""
    build = config.build.model_dump(mode="json", exclude={"categories"})
    return json.dumps([__version__, config.site.model_dump(mode="json"), build], ensure_ascii=False)


def _signature(settings: str, spec: FeedSpec, refs: Sequence[FeedRef]) -> str:
    material = json.dumps(
        [settings, spec.title, spec.description, [(r.source, r.entry_id, r.content_hash) for r in refs]],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _unique(refs: Sequence[FeedRef], limit: int) -> list[FeedRef]:
    """One item per entry id: the same entry from two sources is one item (unique guids)."""
    seen: set[str] = set()
    kept = []
    for ref in refs:
        if ref.entry_id not in seen:
            seen.add(ref.entry_id)
            kept.append(ref)
    return kept[:limit]


class FeedBuilder:
    """Builds feeds from the index and publishes them atomically.

    A build plans in this process (each feed's newest refs and signature, so an
    unchanged feed costs one query and no rendering), then renders the feeds
    that changed. Past ``parallel_min_feeds`` of them (a full build, a settings
    change) worker processes render a share each: see ``_render_in_parallel``.
    """

    def __init__(
        self,
        config: Config,
        store: PostStore,
        *,
        cache_bytes: int = FRAGMENT_CACHE_BYTES,
        processes: int | None = None,
        parallel_min_feeds: int = PARALLEL_MIN_FEEDS,
    ) -> None:
        self.config = config
        self.store = store
        self.cache = FragmentCache(cache_bytes)
        # Worker processes besides this one: one per further core, a few at most.
        self.processes = _spare_cores() if processes is None else processes
        self.parallel_min_feeds = parallel_min_feeds
        self._source_categories: dict[str, tuple[str, ...]] = {}
        self._specs: dict[str, FeedSpec] = {}
        self._specs_config: Config | None = None
        # How each category level is titled: as first spelt in the config, else by the
        # earliest post of its feed (asked once per build: posts come and go).
        self._config_names: dict[tuple[str, ...], str] = {}
        self._config_keys: set[str] = set()
        self._post_names: dict[tuple[str, ...], str | None] = {}
        self._titles_config: Config | None = None  # the config the published titles were checked against

    @property
    def root(self) -> Path:
        return self.config.feeds_dir

    def build(self, keys: Iterable[str] | None = None) -> BuildReport:
        """Rebuild ``keys`` (all feeds when None) and the index pages when anything changed."""
        report = BuildReport()
        self.cache.reset_if_changed(ItemOptions.of(self.config))
        settings = _settings_signature(self.config)
        self._post_names = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            titles = {key: title for key, title, *_ in self.store.published_feeds()}
            published = set(titles)
            if keys is None:
                wanted = set(self.store.feed_keys())
                gone = published - wanted
            else:
                asked = set(keys) | self._retitled(published - set(keys), titles)
                wanted = self.store.feed_keys_present(asked)
                gone = (asked - wanted) & published
            self._source_categories = self._categories_of_sources(wanted)
            built = self._plan_and_render(sorted(wanted, key=self._locality), settings, report)
            for done in built:
                if done.written:
                    report.rendered.append(done.key)
                    report.written_urls += done.urls
                else:
                    report.skipped += 1
            # Only now that every file is on disk: a failed write leaves its feed to be built again.
            self.store.record_feeds((d.key, d.signature, d.title, d.count, d.newest) for d in built)
            for key in sorted(gone):
                self._remove(self._spec(key))
                report.removed.append(key)
            if keys is None:
                report.swept += self._sweep({self._spec(key).relative_dir for key in wanted})
            if report.changed or keys is None or not (self.root / "index.html").exists():
                self._write_indexes()
        except OSError as error:
            raise BuildError(f"cannot write feeds under {self.root}: {error}") from error
        return report

    def _spec(self, key: str) -> FeedSpec:
        """spec_for, remembered while the config stays the same (the daemon swaps it on reload)
        and, for a category, while its levels keep their names."""
        if self._specs_config is not self.config:
            self._specs, self._specs_config = {}, self.config
            self._config_names = first_spellings(category_paths(self.config))
            # Categories whose every level the config names (their titles change only with it).
            self._config_keys = {CATEGORY_PREFIX + "\x1f".join(slugs) for slugs in self._config_names}
        names = display_path(split_key(key)[1], self._level_name) if key.startswith(CATEGORY_PREFIX) else None
        spec = self._specs.get(key)
        if spec is None or (names is not None and spec.parts != names):
            spec = self._specs[key] = spec_for(key, self.config, names)
        return spec

    def _retitled(self, others: set[str], titles: dict[str, str]) -> set[str]:
        """Published feeds not asked for whose title changed: the config's (checked once per
        config: a reload may reorder spellings or retitle the site), or a category's named by
        a post (its first spelling's post is gone, or an earlier one came, which renames the
        feeds below it too though their posts did not change)."""
        if self._titles_config is not self.config:
            self._titles_config = self.config
        else:
            self._spec(ALL_KEY)  # the config's names, for the set below
            others = {k for k in others if k.startswith(CATEGORY_PREFIX) and k not in self._config_keys}
        return {key for key in others if self._spec(key).title != titles[key]}

    def _level_name(self, slugs: tuple[str, ...]) -> str | None:
        """How a category level is titled: its first spelling in the config, else in its earliest post."""
        name = self._config_names.get(slugs)
        if name is None:
            if slugs not in self._post_names:
                paths = self.store.first_post_categories(CATEGORY_PREFIX + "\x1f".join(slugs))
                spelt = spelling_in(slugs, paths)
                self._post_names[slugs] = spelt[-1] if spelt else None
            name = self._post_names[slugs]
        return name

    def _categories_of_sources(self, keys: set[str]) -> dict[str, tuple[str, ...]]:
        """Each source's category path: from the config, else from its newest post."""
        found = {source.name: source.categories for source in self.config.sources}
        for key in keys:
            kind, parts = split_key(key)
            if kind == "source" and parts[0] not in found and (refs := self.store.feed_refs(key, 1)):
                posts = self.store.indexed_posts([(refs[0].source, refs[0].entry_id)])
                found[parts[0]] = next(iter(posts.values())).categories if posts else ()
        return found

    def _locality(self, key: str) -> tuple[tuple[int, str], ...]:
        """Children before parents, each source beside its categories: rendered items are reused soon."""
        kind, parts = split_key(key)
        if kind == "category":
            return (*((0, part) for part in parts), (2, ""))
        if kind == "source":
            categories = category_slugs(self._source_categories.get(parts[0], ()))
            return (*((0, part) for part in categories), (1, parts[0]))
        return ((3, key),)

    def _plan(self, spec: FeedSpec, settings: str, root: Path) -> _Job | None:
        """The feed's newest items and signature; None when its files already hold exactly those."""
        refs = self._newest_unique(spec.key, self.config.build.max_items)
        signature = _signature(settings, spec, refs)
        if self.store.feed_signature(spec.key) == signature and all(
            (root / spec.relative_dir / FORMAT_FILES[fmt]).exists() for fmt in self.config.build.formats
        ):
            return None
        return _Job(spec, tuple(refs), signature)

    def _newest_unique(self, key: str, limit: int) -> list[FeedRef]:
        """The newest ``limit`` distinct entries; the window grows while duplicates fill it."""
        window = limit + _DUPLICATE_MARGIN
        while True:
            refs = self.store.feed_refs(key, window)
            unique = _unique(refs, limit)
            if len(unique) >= limit or len(refs) < window:
                return unique
            window *= 4

    def _plan_and_render(self, keys: Sequence[str], settings: str, report: BuildReport) -> list[_Built]:
        """Plan each feed; render the changed ones here, or with worker processes once there are many.

        Workers start as soon as the plan holds ``parallel_min_feeds`` changed
        feeds and render runs of them while the plan goes on, so their start-up
        overlaps the planning; this process joins in once the plan is done.
        """
        here = _Renderer(self.config, self.store.indexed_posts, self.cache)
        jobs: list[_Job] = []
        dispatch: _Dispatch | None = None
        try:
            for key in keys:
                job = self._plan(self._spec(key), settings, here.root)
                if job is None:
                    report.skipped += 1
                    continue
                jobs.append(job)
                if dispatch is not None:
                    dispatch.add(job)
                elif self.processes > 0 and len(jobs) >= max(self.parallel_min_feeds, 1):
                    runs = (self.processes + 1) * RUNS_PER_PROCESS
                    run_items = len(keys) * self.config.build.max_items / runs
                    # Each process keeps a small cache of its own: runs are local, and the tree's
                    # memory stays about what one process with the full cache took.
                    here = _Renderer(self.config, self.store.indexed_posts, FragmentCache(WORKER_CACHE_BYTES))
                    dispatch = _Dispatch(here, self._worker_setup(), self.processes, run_items)
                    for earlier in jobs:
                        dispatch.add(earlier)
            return dispatch.finish() if dispatch is not None else here.render(jobs)
        finally:
            if dispatch is not None:
                dispatch.close()

    def _worker_setup(self) -> _WorkerSetup:
        # The workers need the site and build settings, not the (possibly thousands of) sources.
        config = self.config.model_copy(update={"sources": ()})
        return _WorkerSetup(config, self.store.index_path, WORKER_CACHE_BYTES, os.getpid())

    def _remove(self, spec: FeedSpec) -> None:
        self._remove_dir(self.root / spec.relative_dir)
        self.store.forget_feed(spec.key)

    def _remove_dir(self, directory: Path) -> None:
        for name in FORMAT_FILES.values():
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        # Remove now-empty directories up to the kind's folder, never beyond.
        with contextlib.suppress(OSError):
            while directory != self.root and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent

    def _sweep(self, wanted: set[PurePosixPath]) -> list[str]:
        """Feed files no key wants (left by a rebuilt index or a renamed category); their paths."""
        stale = []
        for kind in FEED_KINDS:
            for dirpath, _dirs, filenames in os.walk(self.root / kind):
                relative = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
                if relative not in wanted and set(filenames) & set(FORMAT_FILES.values()):
                    stale.append(str(relative))
        for path in stale:
            self._remove_dir(self.root / path)
        return stale

    def _write_indexes(self) -> None:
        feeds = [(self._spec(key), count, newest)
                 for key, _title, count, newest in self.store.published_feeds()]  # fmt: skip
        feeds.sort(key=lambda f: (FEED_KINDS.index(f[0].kind), f[0].parts))
        index_html = render_index_html(self.config, feeds)
        opml = render_opml(self.config, feeds)
        for name, data in (("index.html", index_html), ("index.opml", opml)):
            path = self.root / name
            if _differs(path, data):
                write_atomic(path, data)


@dataclass(frozen=True)
class _Job:
    """A feed to render: planned by the builder, rendered by it or by a worker process."""

    spec: FeedSpec
    refs: tuple[FeedRef, ...]
    signature: str


@dataclass(frozen=True)
class _Built:
    """A feed rendered in this build, recorded in the index once its files are written."""

    key: str
    signature: str
    title: str
    count: int
    newest: datetime | None
    written: bool
    urls: tuple[str, ...]  # public URLs of the files written


class _Renderer:
    """Renders planned feeds and writes the files whose bytes changed (no index writes)."""

    def __init__(
        self,
        config: Config,
        posts: Callable[[Iterable[tuple[str, str]]], dict[tuple[str, str], IndexedPost]],
        cache: FragmentCache,
    ) -> None:
        self.config = config
        self.posts = posts
        self.cache = cache
        self.options = ItemOptions.of(config)
        self.root = config.feeds_dir  # resolved once, not per feed

    def render(self, jobs: Iterable[_Job]) -> list[_Built]:
        with _Writer() as writer:
            return [self._render_one(job, writer) for job in jobs]

    def _render_one(self, job: _Job, writer: _Writer) -> _Built:
        spec, refs = job.spec, job.refs
        directory = self.root / spec.relative_dir
        fragments = self._fragments(refs)
        newest = _newest(refs)
        urls = []
        for fmt in self.config.build.formats:
            path = directory / FORMAT_FILES[fmt]
            data = render_feed(self.config, spec, fmt, fragments, newest)
            if _differs(path, data):
                writer.write(path, data)
                urls.append(feed_url(self.config, spec, fmt))
        for other, name in FORMAT_FILES.items():
            if other not in self.config.build.formats:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
        newest_post = datetime.fromtimestamp(refs[0].date_ts, UTC) if refs else None
        return _Built(spec.key, job.signature, spec.title, len(refs), newest_post, bool(urls), tuple(urls))

    def _fragments(self, refs: Sequence[FeedRef]) -> list[Fragments]:
        """Each ref's rendered item, from the cache or rendered now (one batch per feed)."""
        keys = [(r.source, r.entry_id, r.content_hash) for r in refs]
        found = {key: hit for key in keys if (hit := self.cache.get(key)) is not None}
        missing = [key for key in keys if key not in found]
        if missing:
            posts = self.posts((source, entry_id) for source, entry_id, _hash in missing)
            batch = [posts[(s, e)] for s, e, _h in missing if (s, e) in posts]
            for post, fragments in zip(batch, render_fragments(batch, self.options), strict=True):
                key = (post.source, post.id, post.content_hash)
                found[key] = fragments
                self.cache.put(key, fragments)
        return [found[key] for key in keys if key in found]


class _Writer:
    """Atomic writes on a few threads, so the disk works while the next feed renders."""

    def __init__(self, threads: int = 4) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="feed-writer")
        self.pending: list[Future[object]] = []

    def write(self, path: Path, data: bytes) -> None:
        self.pending.append(self.pool.submit(write_atomic, path, data))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_: object) -> None:
        self.pool.shutdown(wait=True)
        for future in self.pending:
            future.result()  # the first failed write raises here (OSError -> BuildError)


# Rendering with worker processes --------------------------------------------------


def _spare_cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKER_PROCESSES))


@dataclass(frozen=True)
class _WorkerSetup:
    """What a worker process needs to render: settings, the index to read, its parent to outlive not."""

    config: Config
    index_path: Path
    cache_bytes: int
    parent_pid: int


class _Dispatch:
    """Planned feeds handed out in runs to worker processes and to this process.

    The feeds come in locality order and are cut into runs of about
    ``run_items`` items, so most items are rendered once, by whichever process
    holds their source's run. Workers take runs from the front as soon as they
    exist; this process takes them from the back once the plan is done, until
    none is left, so a slow or late worker simply takes fewer. Workers are
    spawned (never forked: the daemon runs threads), read the index on their
    own connection and write their feeds' files; the builder records every
    feed afterwards. A run whose worker died is rendered here instead.
    """

    def __init__(self, here: _Renderer, setup: _WorkerSetup, processes: int, run_items: float) -> None:
        self.here = here
        self.run_items = max(run_items, 1.0)
        self.runs: deque[tuple[_Job, ...]] = deque()
        self.order: dict[str, int] = {}
        self.results: list[_Built] = []
        self.failures: list[BaseException] = []
        self._current: list[_Job] = []
        self._weight = 0
        self._planned = False
        self._stop = False
        self._ready = threading.Condition()
        self.pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(setup,),
        )
        self.feeders = [
            threading.Thread(target=self._feed, name="feed-build-feeder", daemon=True)
            for _ in range(processes)
        ]
        for feeder in self.feeders:
            feeder.start()

    def add(self, job: _Job) -> None:
        self.order[job.spec.key] = len(self.order)
        self._current.append(job)
        self._weight += len(job.refs)
        if self._weight >= self.run_items:
            self._push()

    def finish(self) -> list[_Built]:
        """The plan is done: render runs here until none is left; every feed's outcome, in plan order."""
        self._push()
        with self._ready:
            self._planned = True
            self._ready.notify_all()
        while (run := self._take(front=False)) is not None:
            self._done(self.here.render(run))
        self.close()
        if self.failures:
            raise self.failures[0]
        for run in self.runs:  # left by a worker that died after this process ran out of runs
            self._done(self.here.render(run))
        return sorted(self.results, key=lambda done: self.order[done.key])

    def close(self) -> None:
        """Stop handing out runs, wait for the workers' current ones, end the processes."""
        with self._ready:
            self._stop = True
            self._ready.notify_all()
        for feeder in self.feeders:
            feeder.join()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _push(self) -> None:
        if self._current:
            with self._ready:
                self.runs.append(tuple(self._current))
                self._ready.notify()
            self._current, self._weight = [], 0

    def _take(self, *, front: bool) -> tuple[_Job, ...] | None:
        with self._ready:
            while front and not self.runs and not self._planned and not self._stop:
                self._ready.wait()
            if self._stop or not self.runs:
                return None
            return self.runs.popleft() if front else self.runs.pop()

    def _done(self, built: list[_Built]) -> None:
        with self._ready:
            self.results += built

    def _feed(self) -> None:
        """One feeder thread per worker process: one run in flight at a time."""
        while (run := self._take(front=True)) is not None:
            try:
                future = self.pool.submit(_worker_render, run)  # starts the process the first time
            except (BrokenProcessPool, OSError) as error:
                self._give_back(run, error)  # no process could be started
                return
            try:
                built = future.result()
            except BrokenProcessPool as error:
                self._give_back(run, error)  # the process died
                return
            except BaseException as error:  # the worker's own failure, e.g. a file it could not write
                self._fail(error)
                return
            self._done(built)

    def _give_back(self, run: tuple[_Job, ...], error: BaseException) -> None:
        log.warning("a feed-building process failed (%s); the builder renders its share", error)
        with self._ready:
            self.runs.appendleft(run)

    def _fail(self, error: BaseException) -> None:
        """Stop the build; the builder's thread raises ``error`` in finish()."""
        with self._ready:
            self.failures.append(error)
            self._stop = True


# The worker process's own renderer, made once by _worker_start.
_worker_renderer: _Renderer | None = None


def _worker_start(setup: _WorkerSetup) -> None:
    """In a worker process: read the index on its own connection; die with the parent."""
    global _worker_renderer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    threading.Thread(target=_exit_with_parent, args=(setup.parent_pid,), daemon=True).start()
    reader = IndexReader(setup.index_path)
    _worker_renderer = _Renderer(setup.config, reader.indexed_posts, FragmentCache(setup.cache_bytes))


def _exit_with_parent(parent_pid: int) -> None:
    """A killed parent must not leave a worker writing feeds behind the next build's back."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _worker_render(run: tuple[_Job, ...]) -> list[_Built]:
    if _worker_renderer is None:
        raise BuildError("the feed-building process was not started")
    return _worker_renderer.render(run)


def _differs(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return True
        return path.read_bytes() != data
    except FileNotFoundError:
        return True


# Discovery ----------------------------------------------------------------------


def render_index_html(config: Config, feeds: Sequence[tuple[FeedSpec, int, datetime | None]]) -> bytes:
    escape = html.escape
    head = [
        "<!DOCTYPE html>",
        f'<html lang="{escape(config.site.language)}">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(config.site.title)}</title>",
    ]
    for spec, _count, _newest in feeds:
        if spec.kind == "all" or (spec.kind == "category" and len(spec.parts) == 1):
            for fmt in config.build.formats:
                head.append(
                    f'<link rel="alternate" type="{MEDIA_TYPES[fmt]}" '
                    f'title="{escape(spec.title)} ({fmt})" href="{escape(feed_url(config, spec, fmt))}">'
                )
    head.append('<link rel="alternate" type="text/x-opml" title="All feeds (OPML)" href="index.opml">')
    body = [
        "</head>",
        "<body>",
        f"<h1>{escape(config.site.title)}</h1>",
        f"<p>{escape(config.site.description)}</p>",
        '<p><a href="index.opml">Import every feed into your reader (OPML)</a></p>',
        "<table>",
        "<thead><tr><th>Feed</th><th>Items</th><th>Newest item</th><th>Formats</th></tr></thead>",
        "<tbody>",
    ]
    for spec, count, newest in feeds:
        indent = "&#160;&#160;" * max(len(spec.parts) - 1, 0) if spec.kind == "category" else ""
        label = {"all": "Everything", "source": "Source: ", "category": ""}[spec.kind]
        name = label + (spec.parts[-1] if spec.parts else "")
        links = " ".join(
            f'<a href="{escape(spec.url_path)}/{FORMAT_FILES[fmt]}">{fmt.upper()}</a>'
            for fmt in config.build.formats
        )
        when = newest.strftime("%Y-%m-%d %H:%M UTC") if newest else "—"
        body.append(
            f"<tr><td>{indent}{escape(name)}</td><td>{count}</td><td>{when}</td><td>{links}</td></tr>"
        )
    body += ["</tbody>", "</table>", "</body>", "</html>", ""]
    return "\n".join(head + body).encode()


def render_opml(config: Config, feeds: Sequence[tuple[FeedSpec, int, datetime | None]]) -> bytes:
    """Every published feed, nested by category, for a one-step import into a reader."""
    fmt = "atom" if "atom" in config.build.formats else config.build.formats[0]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"<head><title>{html.escape(config.site.title)}</title></head>",
        "<body>",
    ]

    def outline(spec: FeedSpec, text: str) -> str:
        return (
            f'<outline type="rss" text={quoteattr(text)} title={quoteattr(spec.title)} '
            f"xmlUrl={quoteattr(feed_url(config, spec, fmt))} htmlUrl={quoteattr(config.site.base_url)}"
        )

    categories = [f for f in feeds if f[0].kind == "category"]
    open_path: list[str] = []
    for spec, _count, _newest in categories:
        # Close folders that this category is not inside of.
        while open_path and list(spec.parts[: len(open_path)]) != open_path:
            lines.append("  " * len(open_path) + "</outline>")
            open_path.pop()
        # A category whose parent has no feed of its own still nests under it.
        for missing in spec.parts[len(open_path) : -1]:
            lines.append("  " * (len(open_path) + 1) + f"<outline text={quoteattr(missing)}>")
            open_path.append(missing)
        indent = "  " * (len(open_path) + 1)
        lines.append(f"{indent}<outline text={quoteattr(spec.parts[-1])}>")
        lines.append(f"{indent}  {outline(spec, spec.parts[-1] + ' (all)')}/>")
        open_path.append(spec.parts[-1])
    while open_path:
        lines.append("  " * len(open_path) + "</outline>")
        open_path.pop()
    for spec, _count, _newest in feeds:
        if spec.kind == "all":
            lines.append(f"  {outline(spec, 'Everything')}/>")
    sources = [f for f in feeds if f[0].kind == "source"]
    if sources:
        lines.append('  <outline text="Sources">')
        for spec, _count, _newest in sources:
            lines.append(f"    {outline(spec, spec.parts[-1])}/>")
        lines.append("  </outline>")
    lines += ["</body>", "</opml>", ""]
    return "\n".join(lines).encode()
