"""Republish the posts as RSS 2.0, Atom 1.0 and JSON Feed 1.1, plus an index.

One feed of each format for everything, for each source, and for every level
of every category hierarchy (a parent holds its children's posts). Feeds are
built from the index alone, never from the post files.

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
import hashlib
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedEntry, FeedGenerator
from lxml import etree

from aggregator import __version__
from aggregator.config import Config
from aggregator.errors import BuildError
from aggregator.files import write_atomic
from aggregator.normalize import clean_text
from aggregator.store import ALL_KEY, IndexedPost, PostStore, slugify, split_key

FORMAT_FILES = {"rss": "rss.xml", "atom": "atom.xml", "json": "feed.json"}
MEDIA_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
GENERATOR = "aggregator"
GENERATOR_URI = "https://github.com/aggregator-project/aggregator"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MEDIA_NS = "http://search.yahoo.com/mrss/"
_DC_NS = "http://purl.org/dc/elements/1.1/"


@dataclass(frozen=True)
class FeedSpec:
    """One published feed: which posts, where, and under what name."""

    key: str
    kind: str  # all | source | category
    parts: tuple[str, ...]
    title: str
    description: str

    @property
    def relative_dir(self) -> PurePosixPath:
        if self.kind == "all":
            return PurePosixPath("all")
        return PurePosixPath(self.kind, *(slugify(part) for part in self.parts))


@dataclass
class BuildReport:
    rendered: list[str] = field(default_factory=list)  # feed keys whose files were written
    skipped: int = 0
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        return self.rendered + self.removed


def spec_for(key: str, config: Config) -> FeedSpec:
    kind, parts = split_key(key)
    site = config.site.title
    if kind == ALL_KEY:
        return FeedSpec(key, "all", (), site, config.site.description)
    label = " › ".join(parts)
    if kind == "source":
        return FeedSpec(key, kind, parts, f"{site}: {label}", f"Posts from the source {label}")
    return FeedSpec(key, kind, parts, f"{site}: {label}", f"Posts in the category {label}")


def feed_url(config: Config, spec: FeedSpec, fmt: str) -> str:
    path = spec.relative_dir / FORMAT_FILES[fmt]
    return config.site.base_url + quote(str(path))


class _ItemExtension(BaseEntryExtension):  # type: ignore[misc]
    """What feedgen leaves out or gets wrong: dc:creator, media:thumbnail, Atom enclosures."""

    def __init__(self) -> None:
        self.creator: str | None = None
        self.thumbnail: str | None = None
        self.enclosures: list[tuple[str, str, int]] = []

    def extend_rss(self, entry: etree._Element) -> etree._Element:
        if self.creator:
            etree.SubElement(entry, f"{{{_DC_NS}}}creator").text = self.creator
        self._thumbnail(entry)
        return entry

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        # feedgen drops rel/type/length from Atom links (lkiesow/python-feedgen#135).
        for url, kind, length in self.enclosures:
            link = etree.SubElement(entry, "link", rel="enclosure", href=url)
            if kind:
                link.set("type", kind)
            if length:
                link.set("length", str(length))
        self._thumbnail(entry)
        return entry

    def _thumbnail(self, entry: etree._Element) -> None:
        if self.thumbnail:
            etree.SubElement(entry, f"{{{_MEDIA_NS}}}thumbnail", url=self.thumbnail)


class _FeedExtension(BaseExtension):  # type: ignore[misc]
    def extend_ns(self) -> dict[str, str]:
        return {"dc": _DC_NS, "media": _MEDIA_NS}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _xml_safe(text: str) -> str:
    return clean_text(text)


def _feed_generator(
    config: Config, spec: FeedSpec, items: Sequence[IndexedPost], fmt: str
) -> FeedGenerator:
    fg = FeedGenerator()
    fg.register_extension("agg", _FeedExtension, _ItemExtension, atom=True, rss=True)
    newest = max((item.updated or item.date for item in items), default=EPOCH)
    home = config.site.base_url
    fg.id(feed_url(config, spec, "atom"))
    fg.title(_xml_safe(spec.title))
    fg.subtitle(_xml_safe(spec.description) or spec.title)
    fg.description(_xml_safe(spec.description) or spec.title)
    fg.author({"name": config.site.author})
    fg.language(config.site.language)
    fg.generator(GENERATOR, version=__version__, uri=GENERATOR_URI)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    for item in reversed(items):  # feedgen prepends: add oldest first
        _add_entry(fg.add_entry(), item, config.build.full_content, fmt)
    fg.link(href=home, rel="alternate")
    return fg


def _add_entry(entry: FeedEntry, item: IndexedPost, full_content: bool, fmt: str) -> None:
    # feedgen keeps one field for the RSS guid and the Atom id; each format gets its own.
    if fmt == "rss":
        permalink = item.id == item.link and item.id.startswith(("http://", "https://"))
        entry.guid(item.id, permalink=permalink)
    else:
        entry.id(item.id if _is_uri(item.id) else _tag_uri(item))
    entry.title(_xml_safe(item.title) or "(untitled)")
    if item.link:
        entry.link(href=item.link, rel="alternate")
    entry.author({"name": _xml_safe(item.author) or "unknown"})
    entry.published(item.date)
    entry.updated(item.updated if item.updated and item.updated > item.date else item.date)
    entry.pubDate(item.date)
    summary = _xml_safe(item.summary) or _xml_safe(item.title)
    entry.description(summary)
    entry.summary(summary)
    if full_content and item.body:
        body = _xml_safe(item.body)
        if fmt == "rss":
            entry.content(body.replace("]]>", "]]]]><![CDATA[>"), type="CDATA")
        else:
            entry.content(body, type="html")
    for term in dict.fromkeys((*item.categories, *item.tags)):
        entry.category(term=_xml_safe(term))
    extension = entry.agg
    extension.creator = _xml_safe(item.author)
    extension.thumbnail = item.headimg
    enclosures = [(e.url, e.type or "application/octet-stream", e.length) for e in item.enclosures]
    if not enclosures and item.headimg:
        enclosures = [(item.headimg, _image_type(item.headimg), 0)]
    if fmt == "rss" and enclosures:
        url, kind, length = enclosures[0]  # RSS allows one enclosure per item
        entry.enclosure(url, str(length), kind)
    else:
        extension.enclosures = enclosures


def _image_type(url: str) -> str:
    lowered = url.lower().split("?")[0]
    for suffix, kind in ((".png", "image/png"), (".gif", "image/gif"), (".webp", "image/webp"),
                         (".svg", "image/svg+xml")):  # fmt: skip
        if lowered.endswith(suffix):
            return kind
    return "image/jpeg"


def _is_uri(value: str) -> bool:
    scheme, sep, _rest = value.partition(":")
    return bool(sep) and scheme.isascii() and scheme.isalpha() and " " not in value


def _tag_uri(item: IndexedPost) -> str:
    digest = hashlib.sha256(f"{item.source}\x00{item.id}".encode()).hexdigest()[:32]
    return f"urn:aggregator:{digest}"


def render_rss(config: Config, spec: FeedSpec, items: Sequence[IndexedPost]) -> bytes:
    fg = _feed_generator(config, spec, items, "rss")
    fg.link(href=feed_url(config, spec, "rss"), rel="self", type=MEDIA_TYPES["rss"])
    fg.link(href=config.site.base_url, rel="alternate")  # RSS <link> is the last link set
    return bytes(fg.rss_str(pretty=True))


def render_atom(config: Config, spec: FeedSpec, items: Sequence[IndexedPost]) -> bytes:
    fg = _feed_generator(config, spec, items, "atom")
    fg.link(href=feed_url(config, spec, "atom"), rel="self", type=MEDIA_TYPES["atom"])
    return bytes(fg.atom_str(pretty=True))


def render_json(config: Config, spec: FeedSpec, items: Sequence[IndexedPost]) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/)."""
    document: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": spec.title,
        "home_page_url": config.site.base_url,
        "feed_url": feed_url(config, spec, "json"),
        "description": spec.description,
        "language": config.site.language,
        "authors": [{"name": config.site.author}],
        "items": [_json_item(item, config.build.full_content) for item in items],
    }
    return (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode()


def _json_item(item: IndexedPost, full_content: bool) -> dict[str, object]:
    entry: dict[str, object] = {"id": item.id}
    if item.link:
        entry["url"] = item.link
    entry["title"] = item.title
    if full_content and item.body:
        entry["content_html"] = item.body
    else:
        entry["content_text"] = item.summary
    entry["summary"] = item.summary
    if item.headimg:
        entry["image"] = item.headimg
    entry["date_published"] = _iso(item.date)
    entry["date_modified"] = _iso(item.updated if item.updated and item.updated > item.date else item.date)
    entry["authors"] = [{"name": item.author}]
    tags = list(dict.fromkeys((*item.categories, *item.tags)))
    if tags:
        entry["tags"] = tags
    if item.enclosures:
        entry["attachments"] = [
            {
                "url": e.url,
                "mime_type": e.type or "application/octet-stream",
                **({"size_in_bytes": e.length} if e.length else {}),
            }
            for e in item.enclosures
        ]
    return entry


RENDERERS = {"rss": render_rss, "atom": render_atom, "json": render_json}


def _signature(config: Config, spec: FeedSpec, items: Sequence[IndexedPost]) -> str:
    material = json.dumps(
        [
            __version__,
            config.site.model_dump(mode="json"),
            config.build.model_dump(mode="json"),
            spec.title,
            spec.description,
            [(i.source, i.id, i.content_hash) for i in items],
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class FeedBuilder:
    """Builds feeds from the index and publishes them atomically."""

    def __init__(self, config: Config, store: PostStore) -> None:
        self.config = config
        self.store = store
        self.root = config.feeds_dir

    def build(self, keys: Iterable[str] | None = None) -> BuildReport:
        """Rebuild ``keys`` (all feeds when None) and the index pages when anything changed."""
        report = BuildReport()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            existing = set(self.store.feed_keys())
            wanted = existing if keys is None else set(keys) & existing
            for key in sorted(wanted):
                if self._build_one(spec_for(key, self.config)):
                    report.rendered.append(key)
                else:
                    report.skipped += 1
            published = {key for key, *_ in self.store.published_feeds()}
            for key in sorted(published - existing):
                self._remove(spec_for(key, self.config))
                report.removed.append(key)
            if report.changed or keys is None or not (self.root / "index.html").exists():
                self._write_indexes()
        except OSError as error:
            raise BuildError(f"cannot write feeds under {self.root}: {error}") from error
        return report

    def _build_one(self, spec: FeedSpec) -> bool:
        items = self.store.feed_items(spec.key, self.config.build.max_items)
        signature = _signature(self.config, spec, items)
        directory = self.root / spec.relative_dir
        files = {fmt: directory / FORMAT_FILES[fmt] for fmt in self.config.build.formats}
        if self.store.feed_signature(spec.key) == signature and all(p.exists() for p in files.values()):
            return False
        for fmt, path in files.items():
            data = RENDERERS[fmt](self.config, spec, items)
            if not path.exists() or path.read_bytes() != data:
                write_atomic(path, data)
        for other, name in FORMAT_FILES.items():
            if other not in files:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
        newest = max((item.date for item in items), default=None)
        self.store.record_feed(spec.key, signature, spec.title, len(items), newest)
        return True

    def _remove(self, spec: FeedSpec) -> None:
        directory = self.root / spec.relative_dir
        for name in FORMAT_FILES.values():
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        # Remove now-empty directories up to the kind's folder, never beyond.
        with contextlib.suppress(OSError):
            while directory != self.root and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent
        self.store.forget_feed(spec.key)

    def _write_indexes(self) -> None:
        feeds = [(spec_for(key, self.config), count, newest)
                 for key, _title, count, newest in self.store.published_feeds()]  # fmt: skip
        feeds.sort(key=lambda f: (["all", "category", "source"].index(f[0].kind), f[0].parts))
        index_html = render_index_html(self.config, feeds)
        opml = render_opml(self.config, feeds)
        for name, data in (("index.html", index_html), ("index.opml", opml)):
            path = self.root / name
            if not path.exists() or path.read_bytes() != data:
                write_atomic(path, data)


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
            f'<a href="{escape(str(spec.relative_dir / FORMAT_FILES[fmt]))}">{fmt.upper()}</a>'
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
