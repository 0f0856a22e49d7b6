"""parse_document: formats, encodings from bytes + headers, and documents that are not feeds."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.faultserver import (
    CHALLENGE_PAGE,
    CHARSET_TITLE,
    CYRILLIC_TITLE,
    HTML_WITH_FEED_LINKS,
    SAMPLE_RSS,
    charset_feed,
)
from support.helpers import FIXTURES

from aggregator.errors import NotAFeed, ParseError
from aggregator.model import Enclosure
from aggregator.parse import parse_document

PARSE = FIXTURES / "parse"


def read(name: str) -> bytes:
    return (PARSE / name).read_bytes()


def test_json_feed_1_0() -> None:
    feed = parse_document(
        read("jsonfeed-1.0.json"), {"content-type": "application/feed+json"}, "http://127.0.0.1/"
    )
    assert feed.title == "JSON Feed 1.0 example" and feed.version == "json1"
    assert feed.link == "https://json10.example.org/"
    first, second = feed.entries
    assert first.id == "1" and first.link == "https://json10.example.org/posts/1"
    assert first.title == "First JSON post" and first.content == "<p>Hello <b>JSON</b></p>"
    assert first.author == "Feed Author"
    assert first.published == datetime(2026, 10, 5, 8, 0, tzinfo=UTC)
    assert first.updated == datetime(2026, 10, 6, 7, 30, tzinfo=UTC)
    assert first.tags == ("alpha", "beta")
    assert first.images == ("https://json10.example.org/img/1.png",)
    assert first.enclosures == (Enclosure("https://json10.example.org/a.mp3", "audio/mpeg", 1234),)
    assert second.id == "2" and second.link == "https://elsewhere.example.org/2"
    assert second.content == "Plain &lt;text&gt;<br>\nsecond line"
    assert second.author == "Item Author" and second.title is None


def test_json_feed_1_1_with_authors_and_unicode() -> None:
    # Served with a generic content type: the bytes decide.
    feed = parse_document(read("jsonfeed-1.1.json"), {"content-type": "text/plain"}, "http://127.0.0.1/")
    assert feed.version == "json11"
    (entry,) = feed.entries
    assert entry.title == "第一篇" and entry.author == "条目作者"
    assert entry.content == "<p>内容 {braces}</p>"
    assert entry.published == datetime(2026, 10, 5, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"version": "1.0", "items": []}', "not a JSON Feed"),
        (b"[1, 2, 3]", "not a JSON Feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": "nope"}', "without an items list"),
        (b'{"version": "https://jsonfeed.org/version/1.1", ', "invalid JSON"),
    ],
)
def test_bad_json_is_a_parse_error(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_document(body, {"content-type": "application/json"}, "http://127.0.0.1/")


@pytest.mark.parametrize("name", ["rss2.xml", "atom.xml", "rss1.xml"])
def test_xml_formats_are_parsed_whatever_the_content_type(name: str) -> None:
    body = (FIXTURES / "formats" / name).read_bytes()
    results = [
        parse_document(body, {"content-type": content_type}, "http://127.0.0.1/")
        for content_type in ("application/rss+xml", "text/html", "application/json", "")
    ]
    assert all(r.entries == results[0].entries for r in results) and results[0].entries


@pytest.mark.parametrize(
    ("body", "content_type", "title"),
    [
        (
            charset_feed(CHARSET_TITLE, "iso-8859-1", None),
            "application/xml; charset=iso-8859-1",
            CHARSET_TITLE,
        ),
        (charset_feed(CHARSET_TITLE, "windows-1252", "windows-1252"), "application/xml", CHARSET_TITLE),
        (
            charset_feed(CYRILLIC_TITLE, "koi8-r", "windows-1251"),
            "application/xml; charset=koi8-r",
            CYRILLIC_TITLE,
        ),
        (
            charset_feed(CYRILLIC_TITLE, "windows-1251", "windows-1251"),
            "text/xml; charset=windows-1251",
            CYRILLIC_TITLE,
        ),
        (charset_feed("中文标题", "gb18030", "gb2312"), "application/rss+xml", "中文标题"),
        (b"\xef\xbb\xbf" + charset_feed("BOM ✓", "utf-8", None), "application/xml", "BOM ✓"),
    ],
)
def test_encodings_decided_from_bytes_and_headers(body: bytes, content_type: str, title: str) -> None:
    feed = parse_document(body, {"Content-Type": content_type}, "http://127.0.0.1/")
    assert feed.title == title and feed.entries[0].title == title


def test_html_page_names_its_advertised_feeds() -> None:
    with pytest.raises(NotAFeed) as caught:
        parse_document(
            HTML_WITH_FEED_LINKS, {"content-type": "text/html"}, "http://127.0.0.1/blog/index.html"
        )
    assert caught.value.feed_links == ("http://127.0.0.1/feed.xml", "https://blog.example.org/atom.xml")
    assert "it advertises: http://127.0.0.1/feed.xml, https://blog.example.org/atom.xml" in str(caught.value)


def test_html_page_without_feed_links() -> None:
    with pytest.raises(NotAFeed, match="advertises no feed links"):
        parse_document(b"<html><body>hi</body></html>", {}, "http://127.0.0.1/")
    with pytest.raises(NotAFeed, match="HTML page"):
        parse_document(b"just some words, not markup", {"content-type": "text/html"}, "http://127.0.0.1/")


def test_challenge_page_is_named() -> None:
    with pytest.raises(NotAFeed, match="bot-challenge page"):
        parse_document(CHALLENGE_PAGE, {"content-type": "text/html"}, "http://127.0.0.1/")


@pytest.mark.parametrize("body", [b"", b"   \r\n\t  "])
def test_empty_body_is_not_an_empty_feed(body: bytes) -> None:
    with pytest.raises(NotAFeed, match="empty response body"):
        parse_document(body, {"content-type": "application/rss+xml"}, "http://127.0.0.1/")


def test_plain_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="not a readable feed"):
        parse_document(
            b"Service temporarily unavailable", {"content-type": "text/plain"}, "http://127.0.0.1/"
        )


def test_a_genuinely_empty_feed_is_fine() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>'
    feed = parse_document(body, {}, "http://127.0.0.1/")
    assert feed.title == "Quiet" and feed.entries == ()


def test_entity_expansion_is_defused_even_after_a_long_comment() -> None:
    """One 100 KB entity referenced 2,000 times would be 200 MB of text."""
    started = time.monotonic()
    feed = parse_document(read("entity-expansion.xml"), {}, "http://127.0.0.1/")
    assert time.monotonic() - started < 2
    (entry,) = feed.entries
    assert entry.title == "Harmless title"
    assert "AAAA" not in (entry.summary or "") and len(entry.summary or "") < 50_000


def test_rss_ttl_is_read_in_seconds() -> None:
    body = SAMPLE_RSS.replace(b"<description>d</description>", b"<ttl>90</ttl><description>d</description>")
    assert parse_document(body, {}, "http://127.0.0.1/").ttl == 90 * 60
    assert parse_document(SAMPLE_RSS, {}, "http://127.0.0.1/").ttl is None


def test_feedparser_never_gets_a_url_or_path(tmp_path: Path) -> None:
    """A body that looks like a path or URL is parsed as text, not opened or fetched."""
    secret = tmp_path / "secret.xml"
    secret.write_bytes(SAMPLE_RSS)
    for body in (str(secret).encode(), b"http://127.0.0.1:9/feed.xml"):
        with pytest.raises(ParseError):
            parse_document(body, {}, "http://127.0.0.1/")
