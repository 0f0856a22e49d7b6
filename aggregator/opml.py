"""OPML in and out, so users move between readers and this config without losing folders.

Import: every outline with an ``xmlUrl`` is a feed; the outlines around it
(folders) become its categories, outermost first. Export: the configured
sources, nested by their categories, in config order. (The daemon's own
``index.opml`` lists the *generated* feeds; this is the *subscribed* ones.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from aggregator.config import SourceConfig
from aggregator.errors import ParseError
from aggregator.keys import category_slugs


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


def write_opml(sources: Sequence[SourceConfig], title: str, now: datetime | None = None) -> bytes:
    """The sources as OPML 2.0, nested by category.

    Spellings of a category that make one folder are one folder, named as first written.
    """
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = title
    etree.SubElement(head, "dateCreated").text = format_datetime(now or datetime.now(UTC), usegmt=True)
    body = etree.SubElement(root, "body")
    folders: dict[tuple[str, ...], Any] = {(): body}
    for source in sources:
        parent = body
        slugs = category_slugs(source.categories)
        for depth in range(1, len(source.categories) + 1):
            key, name = slugs[:depth], source.categories[depth - 1]
            if key not in folders:
                folders[key] = etree.SubElement(parent, "outline", text=name, title=name)
            parent = folders[key]
        etree.SubElement(
            parent, "outline", type="rss", text=source.name, title=source.name, xmlUrl=source.url
        )
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data
