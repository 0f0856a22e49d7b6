"""Turn a response's bytes into typed feed data.

feedparser reads RSS 0.9x/1.0/2.0 and Atom; JSON Feed 1.0/1.1 is read here.
feedparser never sees a URL or a path (it would fetch or open it itself): it
gets the bytes and the real response headers, so it decides the encoding as
the server declared it. Its own sanitizer and relative-URI pass are switched
off: they cost most of its time and the normalize stage does both jobs better.
Plain RSS/Atom documents take a faster lxml path first (``aggregator.fastparse``),
which gives feedparser's result for the fields read here or declines.

``parse_document`` is pure and picklable, so the daemon can run it in worker
processes (see ``aggregator.workers``).
"""

from __future__ import annotations

import calendar
import html
import io
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from aggregator.errors import NotAFeed, ParseError
from aggregator.model import Enclosure, EntryData, FeedData

# A DTD internal subset declaring entities is the vehicle of entity-expansion
# attacks ("billion laughs", or one big entity referenced many times, which
# feedparser's loose fallback parser expands); real feeds do not need one. The
# subset and every entity declaration are cut before parsing, wherever they
# are (comments may push the DOCTYPE far down the document).
_INTERNAL_SUBSET = re.compile(rb"<!DOCTYPE[^>\[]*\[.*?\]\s*>", re.DOTALL | re.IGNORECASE)
_ENTITY_DECLARATION = re.compile(rb"<!ENTITY\s(?:\"[^\"]*\"|'[^']*'|[^>\"'])*>", re.IGNORECASE)
_CHALLENGE_MARKERS = (
    "challenge-platform",
    "cf-challenge",
    "cf-browser-verification",
    "just a moment...",
    "attention required!",
    "captcha",
    "ddos-guard",
)
_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.I | re.S)
_FEED_LINK = re.compile(
    r"<link\b[^>]*\btype=[\"']?application/(?:rss|atom|feed)\+(?:xml|json)[^>]*>", re.IGNORECASE
)
_HREF = re.compile(r"\bhref=(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))", re.IGNORECASE)


def parse_document(body: bytes, headers: Mapping[str, str], url: str, *, fast_path: bool = True) -> FeedData:
    """Parse one fetched document; raise ``NotAFeed`` or ``ParseError`` when it is not a feed.

    ``fast_path=False`` reads every XML document with feedparser (the tests compare the two).
    """
    if not body.strip():
        raise NotAFeed("empty response body: not a feed")
    content_type = headers.get("content-type", "").lower()
    # The bytes decide the format; a content type is often wrong (RSS as text/html or JSON).
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"{" or (start != b"<" and "json" in content_type):
        return _parse_json_feed(body, url)
    if _HTML_START.match(body[:4096]):
        raise _not_a_feed_html(body, url)
    safe_body = body
    if re.search(rb"<!ENTITY", body, re.IGNORECASE):
        safe_body = _ENTITY_DECLARATION.sub(b"", _INTERNAL_SUBSET.sub(b"", body, count=1))
    # Imported here: the main process uses this module's types but parses only in workers,
    # which import both at start-up (aggregator.workers preloads them).
    import feedparser

    from aggregator import fastparse

    response_headers = {k.lower(): v for k, v in headers.items()}
    # The lxml fast path answers feedparser's result for plain RSS/Atom, or None.
    parsed = fastparse.parse(safe_body, response_headers) if fast_path else None
    if parsed is None:
        parsed = feedparser.parse(
            io.BytesIO(safe_body),
            response_headers=response_headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    version = parsed.get("version", "")
    if not version and not parsed.entries:
        if "html" in content_type:
            raise _not_a_feed_html(body, url)
        problem = parsed.get("bozo_exception")
        raise ParseError(f"not a readable feed: {problem or 'no feed elements found'}")
    feed = parsed.feed
    base = feed.get("link") or url
    # An Atom entry without an author inherits the feed's (RFC 4287 §4.2.1).
    feed_author = _text(feed.get("author"))
    entries = tuple(_entry(entry, base, feed_author) for entry in parsed.entries)
    warning = None
    if parsed.get("bozo") and not isinstance(
        parsed.get("bozo_exception"), feedparser.CharacterEncodingOverride
    ):
        warning = f"malformed feed, read leniently: {parsed.get('bozo_exception')}"
    ttl = _number(feed.get("ttl"))
    return FeedData(
        title=_text(feed.get("title")) or "",
        link=feed.get("link") or url,
        version=version or "unknown",
        entries=entries,
        ttl=ttl * 60 if ttl is not None else None,
        warning=warning,
    )


def _not_a_feed_html(body: bytes, url: str) -> NotAFeed:
    text = body[:262144].decode("utf-8", "replace")
    lowered = text.lower()
    if any(marker in lowered for marker in _CHALLENGE_MARKERS):
        return NotAFeed(
            "a bot-challenge page (the server or its CDN blocks automated clients), not a feed; "
            "ask the site to allow feed readers, or drop the source"
        )
    links = []
    for tag in _FEED_LINK.findall(text):
        if match := _HREF.search(tag):
            href = html.unescape(next(group for group in match.groups() if group is not None))
            links.append(urljoin(url, href))
    if links:
        return NotAFeed(
            "an HTML page, not a feed; it advertises: " + ", ".join(links), feed_links=tuple(links)
        )
    return NotAFeed("an HTML page, not a feed (it advertises no feed links)")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _date(struct: Any) -> datetime | None:
    if not struct:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(struct), UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def _entry(entry: Any, feed_base: str, feed_author: str | None = None) -> EntryData:
    content_html = None
    for content in entry.get("content") or ():
        if content.get("value"):
            content_html = _as_html(content.get("value"), content.get("type", "text/html"))
            if "html" in content.get("type", ""):
                break
    summary_detail = entry.get("summary_detail") or {}
    summary = entry.get("summary")
    if summary:
        summary = _as_html(summary, summary_detail.get("type", "text/html"))
    title_detail = entry.get("title_detail") or {}
    link = entry.get("link")
    enclosures = []
    for link_info in entry.get("links") or ():
        if link_info.get("rel") == "enclosure" and link_info.get("href"):
            enclosures.append(
                Enclosure(
                    url=link_info["href"],
                    type=link_info.get("type", "") or "",
                    length=_int(link_info.get("length")),
                )
            )
    images: list[str] = []
    for thumb in entry.get("media_thumbnail") or ():
        if thumb.get("url"):
            images.append(thumb["url"])
    for media in entry.get("media_content") or ():
        medium = media.get("medium", "") or ""
        kind = media.get("type", "") or ""
        if media.get("url") and (medium == "image" or kind.startswith("image/")):
            images.append(media["url"])
    base = (entry.get("content") or [{}])[0].get("base") or summary_detail.get("base") or link or feed_base
    published = _date(entry.get("published_parsed"))
    # dict.get: FeedParserDict would answer a missing updated_parsed with
    # published_parsed (and a DeprecationWarning); only a real update counts.
    updated = _date(dict.get(entry, "updated_parsed"))
    if updated == published:
        updated = None  # feedparser copies pubDate into updated; that is no update
    return EntryData(
        id=_text(entry.get("id")),
        link=_text(link),
        title=entry.get("title"),
        title_is_html="html" in title_detail.get("type", "text/html"),
        content=content_html,
        summary=summary,
        author=_text(entry.get("author")) or feed_author,
        published=published,
        updated=updated,
        tags=tuple(t["term"] for t in entry.get("tags") or () if _text(t.get("term"))),
        enclosures=tuple(enclosures),
        images=tuple(images),
        base=base or "",
    )


def _as_html(value: str, content_type: str) -> str:
    if "html" in content_type:
        return value
    return html.escape(value).replace("\n", "<br>\n")


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def _parse_json_feed(body: bytes, url: str) -> FeedData:
    """JSON Feed 1.0 and 1.1 (https://www.jsonfeed.org/version/1.1/)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ParseError(f"invalid JSON: {error}") from error
    if not isinstance(document, dict) or "jsonfeed.org/version/" not in str(document.get("version", "")):
        raise NotAFeed("JSON document that is not a JSON Feed (no jsonfeed.org version)")
    items = document.get("items")
    if not isinstance(items, list):
        raise ParseError("JSON Feed without an items list")
    feed_author = _json_author(document)
    base = document.get("home_page_url") or url
    entries = []
    for item in items:
        if not isinstance(item, dict):
            continue
        content_html = _text(item.get("content_html"))
        if content_html is None and _text(item.get("content_text")):
            content_html = _as_html(item["content_text"], "text/plain")
        summary = _text(item.get("summary"))
        images = tuple(str(item[key]) for key in ("image", "banner_image") if _text(item.get(key)))
        enclosures = tuple(
            Enclosure(
                url=str(attachment["url"]),
                type=str(attachment.get("mime_type", "")),
                length=_int(attachment.get("size_in_bytes")),
            )
            for attachment in item.get("attachments") or ()
            if isinstance(attachment, dict) and _text(attachment.get("url"))
        )
        link = _text(item.get("url")) or _text(item.get("external_url"))
        entries.append(
            EntryData(
                id=_text(str(item["id"])) if item.get("id") is not None else None,
                link=link,
                title=item.get("title") if isinstance(item.get("title"), str) else None,
                title_is_html=False,
                content=content_html,
                summary=html.escape(summary) if summary else None,
                author=_json_author(item) or feed_author,
                published=_iso_date(item.get("date_published")),
                updated=_iso_date(item.get("date_modified")),
                tags=tuple(str(tag) for tag in item.get("tags") or () if _text(str(tag))),
                enclosures=enclosures,
                images=images,
                base=link or base,
            )
        )
    return FeedData(
        title=_text(document.get("title")) or "",
        link=base,
        version="json" + str(document.get("version", "")).rsplit("/", 1)[-1].replace(".", ""),
        entries=tuple(entries),
    )


def _json_author(node: dict[str, Any]) -> str | None:
    authors = node.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return _text(authors[0].get("name"))
    author = node.get("author")
    if isinstance(author, dict):
        return _text(author.get("name"))
    return None


def _iso_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
