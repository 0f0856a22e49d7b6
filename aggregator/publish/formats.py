"""The three formats: each item's RSS 2.0, Atom 1.0 and JSON Feed 1.1 fragment, and whole feeds.

A post sits in several feeds (everything, its source, each category level), so each item is
rendered once into ``Fragments`` and reused in every feed that holds it. The fragments come
from templates that write what feedgen writes for the item (RSS, Atom) and what ``json.dumps``
writes (JSON Feed), in about a tenth of feedgen's time; feedgen stays the reference, and
tests/test_build.py holds the two byte for byte equal on arbitrary items (the feedgen path
lives in tests/support/feedgen_reference.py). A whole RSS or Atom feed is feedgen's skeleton
with the fragments spliced in (``aggregator.publish.skeleton``); a JSON Feed is written here.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aggregator.config import Config
from aggregator.index.feeds import IndexedPost
from aggregator.publish.items import FeedItem, ItemOptions, item_and_content
from aggregator.publish.skeleton import spliced_feed
from aggregator.publish.specs import GENERATOR, FeedSpec, feed_url
from aggregator.text import clean_text

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"


@dataclass(frozen=True)
class Fragments:
    """One item rendered in each format (UTF-8), ready to splice into any feed that holds it."""

    rss: bytes
    atom: bytes
    json: bytes

    @property
    def size(self) -> int:
        return len(self.rss) + len(self.atom) + len(self.json)


def render_fragments(posts: Sequence[IndexedPost], options: ItemOptions) -> list[Fragments]:
    """Each post's RSS item, Atom entry and JSON Feed item, as feedgen would write them.

    feedgen costs about 0.4 ms an item (three quarters of a full build); these
    templates write the same bytes in a tenth of that. feedgen stays the
    reference: tests/support/feedgen_reference.py renders through it, and the
    tests hold the two byte for byte equal on arbitrary items.
    """
    fragments = []
    for post in posts:
        item, data = item_and_content(post, options)
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
    """The item as ``json.dumps(ensure_ascii=False)`` writes its JSON Feed object, written directly
    (json.dumps was a tenth of a build; the test reference still calls it).

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
    parts.append(f'"date_published": "{iso_utc(item.published, item.published_iso)}"')
    parts.append(f'"date_modified": "{iso_utc(item.updated, item.updated_iso)}"')
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
    (item_and_content cleans every field): no control character is left but tab, newline and carriage
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


def summary_html(summary: str) -> str:
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
    lines.append(f"      <description>{_text(summary_html(item.summary))}</description>")
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


def dump_json(value: object) -> str:
    """``json.dumps(value, ensure_ascii=False)``: one encoder for all (dumps builds one per call)."""
    return _JSON.encode(value)


_JSON = json.JSONEncoder(ensure_ascii=False)


def iso_utc(moment: datetime, isoformat: str | None = None) -> str:
    """The moment in UTC, ISO 8601 with a Z; ``isoformat``: ``moment.isoformat()``, when known."""
    if moment.tzinfo is UTC:  # every stored date: the isoformat ends in "+00:00"
        return (isoformat or moment.isoformat())[:-6] + "Z"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render_feed(
    config: Config,
    spec: FeedSpec,
    fmt: str,
    fragments: Sequence[Fragments],
    newest: datetime,
) -> bytes:
    """A whole feed: feedgen's skeleton with the items' fragments spliced in (JSON Feed: written here)."""
    if fmt == "json":
        return render_json_feed(config, spec, [f.json for f in fragments])
    return spliced_feed(config, spec, fmt, [f.rss if fmt == "rss" else f.atom for f in fragments], newest)


def render_json_feed(config: Config, spec: FeedSpec, items: Sequence[bytes]) -> bytes:
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
    lines = [f" {dump_json(key)}: {dump_json(value)}," for key, value in head.items()]
    top = ("{\n" + "\n".join(lines) + "\n").encode()
    items = [item for item in items if item]
    if not items:
        return top + b' "items": []\n}\n'
    joined = [top + b' "items": [\n  ', items[0]]
    for item in items[1:]:  # one join: the items are most of a feed's bytes
        joined += (b",\n  ", item)
    joined.append(b"\n ]\n}\n")
    return b"".join(joined)
