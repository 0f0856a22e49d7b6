"""OPML in and out, so users move between readers and this config without losing folders.

Import: every outline with an ``xmlUrl`` is a feed; the outlines around it
(folders) become its categories, outermost first. Out: one writer,
``render_opml``, for the two documents: ``export-opml`` (``write_opml``: the
*subscribed* sources, nested by their categories, in config order) and the
published ``index.opml`` (``index_opml``: the *generated* feeds).
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from lxml import etree

from aggregator.config import Config, SourceConfig
from aggregator.errors import ParseError
from aggregator.keys import category_slugs
from aggregator.publish.specs import FeedSpec, feed_url


@dataclass(frozen=True)
class OpmlFeed:
    title: str
    url: str
    categories: tuple[str, ...]
    html_url: str | None = None


def read_opml(data: bytes) -> list[OpmlFeed]:
    """The feeds of an OPML document, each with its folder path."""
    # No DTD, no entities, no network: an OPML file is only outlines.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as error:
        raise ParseError(f"not an OPML file: {error}") from error
    if not isinstance(root.tag, str) or etree.QName(root).localname.lower() != "opml":
        raise ParseError("not an OPML file: the root element is not <opml>")
    body = next((child for child in root if _local(child) == "body"), None)
    if body is None:
        raise ParseError("not an OPML file: no <body>")
    return list(_walk(body, ()))


def _local(element: Any) -> str:
    return etree.QName(element).localname.lower() if isinstance(element.tag, str) else ""


def _attribute(element: Any, name: str) -> str:
    """Attributes by case-insensitive name: readers write xmlUrl, xmlurl and XMLURL."""
    for key, value in element.attrib.items():
        if str(key).lower() == name.lower():
            return str(value).strip()
    return ""


def _walk(parent: Any, path: tuple[str, ...]) -> Iterator[OpmlFeed]:
    for outline in parent:
        if _local(outline) != "outline":
            continue
        label = _attribute(outline, "text") or _attribute(outline, "title")
        url = _attribute(outline, "xmlUrl")
        if url:
            title = label or urlsplit(url).netloc or url
            yield OpmlFeed(
                title=title, url=url, categories=path, html_url=_attribute(outline, "htmlUrl") or None
            )
        yield from _walk(outline, (*path, label) if label and not url else path)


def import_entries(
    feeds: Sequence[OpmlFeed],
    taken_names: Sequence[str],
    taken_urls: Sequence[str],
    prefix: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[OpmlFeed]]:
    """Config entries for the feeds not yet configured (by URL), with unique names; and the skipped."""
    names = {name.casefold() for name in taken_names}
    urls = set(taken_urls)
    entries: list[dict[str, Any]] = []
    skipped: list[OpmlFeed] = []
    for feed in feeds:
        if feed.url in urls:
            skipped.append(feed)
            continue
        urls.add(feed.url)
        name, number = feed.title, 2
        while name.casefold() in names:
            name, number = f"{feed.title} ({number})", number + 1
        names.add(name.casefold())
        entry: dict[str, Any] = {"name": name, "url": feed.url}
        categories = [*prefix, *feed.categories]
        if categories:
            entry["categories"] = categories
        entries.append(entry)
    return entries, skipped


@dataclass(frozen=True)
class Outline:
    """One outline to write: a folder (``xml_url`` None, ``children``) or a feed."""

    text: str
    title: str | None = None
    xml_url: str | None = None
    html_url: str | None = None
    children: tuple[Outline, ...] = ()


def render_opml(title: str, outlines: Sequence[Outline], created: datetime | None = None) -> bytes:
    """The one OPML writer (``index.opml`` and ``export-opml``): OPML 2.0, two spaces a level.

    Byte-stable: the same outlines give the same bytes (``created`` is written only when given).
    """
    head = f"<head><title>{html.escape(title)}</title>"
    if created is not None:
        head += f"<dateCreated>{format_datetime(created, usegmt=True)}</dateCreated>"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<opml version="2.0">', head + "</head>", "<body>"]
    _write_outlines(outlines, 1, lines)
    lines += ["</body>", "</opml>", ""]
    return "\n".join(lines).encode()


def _write_outlines(outlines: Sequence[Outline], depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    for outline in outlines:
        attributes = f"text={quoteattr(outline.text)}"
        if outline.xml_url is not None:
            attributes = 'type="rss" ' + attributes
        if outline.title is not None:
            attributes += f" title={quoteattr(outline.title)}"
        if outline.xml_url is not None:
            attributes += f" xmlUrl={quoteattr(outline.xml_url)}"
        if outline.html_url is not None:
            attributes += f" htmlUrl={quoteattr(outline.html_url)}"
        if not outline.children:
            lines.append(f"{indent}<outline {attributes}/>")
            continue
        lines.append(f"{indent}<outline {attributes}>")
        _write_outlines(outline.children, depth + 1, lines)
        lines.append(f"{indent}</outline>")


def write_opml(sources: Sequence[SourceConfig], title: str, now: datetime | None = None) -> bytes:
    """The configured sources (``export-opml``), nested by category, in config order.

    Spellings of a category that make one folder are one folder, named as first written.
    """
    # Each folder's contents in order: feeds, and the slugs of the folders inside it.
    contents: dict[tuple[str, ...], list[Outline | tuple[str, ...]]] = {(): []}
    names: dict[tuple[str, ...], str] = {}
    for source in sources:
        slugs = category_slugs(source.categories)
        for depth in range(1, len(source.categories) + 1):
            key = slugs[:depth]
            if key not in contents:
                contents[key], names[key] = [], source.categories[depth - 1]
                contents[slugs[: depth - 1]].append(key)
        contents[slugs].append(Outline(source.name, source.name, source.url))

    def outlines(key: tuple[str, ...]) -> tuple[Outline, ...]:
        return tuple(
            Outline(names[item], names[item], children=outlines(item)) if isinstance(item, tuple) else item
            for item in contents[key]
        )

    return render_opml(title, outlines(()), now or datetime.now(UTC))


def index_opml(config: Config, feeds: Sequence[tuple[FeedSpec, int, datetime | None]]) -> bytes:
    """Every published feed (``index.opml``), nested by category, for a one-step import into a reader.

    ``feeds`` in the builder's order (kind, then levels): each category is a folder holding its
    own feed ("<name> (all)") and then its subcategories' folders.
    """
    fmt = "atom" if "atom" in config.build.formats else config.build.formats[0]

    def feed(spec: FeedSpec, text: str) -> Outline:
        return Outline(text, spec.title, feed_url(config, spec, fmt), config.site.base_url)

    top: list[Outline] = []
    open_folders: list[tuple[str, list[Outline]]] = []  # the folders being filled, outermost first

    def close() -> None:
        name, children = open_folders.pop()
        (open_folders[-1][1] if open_folders else top).append(Outline(name, children=tuple(children)))

    for spec, _count, _newest in feeds:
        if spec.kind != "category":
            continue
        # Close folders that this category is not inside of.
        while open_folders and spec.parts[: len(open_folders)] != tuple(n for n, _ in open_folders):
            close()
        # A category whose parent has no feed of its own still nests under it.
        open_folders += [(missing, []) for missing in spec.parts[len(open_folders) : -1]]
        open_folders.append((spec.parts[-1], [feed(spec, spec.parts[-1] + " (all)")]))
    while open_folders:
        close()
    top += [feed(spec, "Everything") for spec, _count, _newest in feeds if spec.kind == "all"]
    sources = tuple(feed(spec, spec.parts[-1]) for spec, _count, _newest in feeds if spec.kind == "source")
    if sources:
        top.append(Outline("Sources", children=sources))
    return render_opml(config.site.title, top)
