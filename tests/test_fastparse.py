"""The lxml fast path against feedparser: the same FeedData, or it declines.

feedparser is the oracle: every document here goes through ``parse_document``
twice, with the fast path and without it, and the outcomes (the FeedData, or
the error) must be equal whenever the fast path answered. Other tests make
sure it does answer for the benchmark corpus and the common fixture feeds, so
a fast path that silently declined everything would fail.
"""

from __future__ import annotations

import html
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.helpers import FIXTURES

from aggregator import fastparse
from aggregator.model import FeedData
from aggregator.parse import parse_document

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package, as test_bench does

from bench.corpus import FORMATS, MEDIA_TYPES, CorpusSpec, feed_info, render_feed

TESTS = Path(__file__).resolve().parent
URL = "http://127.0.0.1/feed"
FEED_FILES = sorted(
    path
    for pattern in ("fixtures/**/*.xml", "golden/**/*.xml", "reliability/fixtures/*.xml")
    for path in TESTS.glob(pattern)
)
# Feeds the fast path must read itself (the others may decline: xhtml, DTDs, hostile documents).
COMMON = [
    "fixtures/formats/rss2.xml",
    "fixtures/formats/atom.xml",
    "fixtures/formats/rss1.xml",
    "fixtures/reference/sina-finance.xml",
    "fixtures/sources/filters.xml",
    "fixtures/fastparse/wordpress.xml",
    "fixtures/fastparse/blogger-atom.xml",
    "fixtures/fastparse/podcast.xml",
    "fixtures/fastparse/latin1.xml",
    "fixtures/fastparse/youtube-atom.xml",
    "fixtures/fastparse/podcast-itunes.xml",
    "golden/feeds/all/rss.xml",
    "golden/feeds/all/atom.xml",
]
HEADER_SETS: list[dict[str, str]] = [
    {"content-type": "application/rss+xml"},
    {"content-type": "application/atom+xml; charset=utf-8"},
    {"content-type": "text/xml"},
    {"content-type": "text/html; charset=UTF-8"},
    {"content-type": "application/xml; charset=iso-8859-1"},
    {"content-type": ""},
    {"content-location": "https://moved.example.net/feeds/"},
    {},
]


def outcome(body: bytes, headers: dict[str, str], fast: bool) -> FeedData | tuple[str, str]:
    try:
        return parse_document(body, headers, URL, fast_path=fast)
    except Exception as error:  # the error is part of the outcome to compare
        return (type(error).__name__, str(error))


def assert_same(body: bytes, headers: dict[str, str]) -> bool:
    """The two paths agree; answers whether the fast path read the document."""
    taken = fastparse.parse(body, {k.lower(): v for k, v in headers.items()}) is not None
    if taken:
        fast, slow = outcome(body, headers, True), outcome(body, headers, False)
        if isinstance(fast, FeedData) and isinstance(slow, FeedData):
            assert fast.entries == slow.entries
        assert fast == slow
    return taken


@pytest.mark.parametrize("path", FEED_FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_every_fixture_feed_reads_as_feedparser_reads_it(path: Path) -> None:
    body = path.read_bytes()
    for headers in HEADER_SETS:
        assert_same(body, headers)


@pytest.mark.parametrize("name", COMMON)
def test_common_feeds_take_the_fast_path(name: str) -> None:
    body = (TESTS / name).read_bytes()
    for headers in HEADER_SETS:
        assert assert_same(body, headers), f"{name} declined with {headers}"


def test_the_fixture_feeds_are_found() -> None:
    assert FIXTURES == TESTS / "fixtures" and len(FEED_FILES) >= 20


@pytest.mark.parametrize("index", range(0, 60, 3))
def test_benchmark_corpus_takes_the_fast_path(index: int) -> None:
    info = feed_info(index)
    body = render_feed(CorpusSpec(feeds=60, entries=6), info, extra=index % 2)
    headers = {"content-type": f"{MEDIA_TYPES[info.format]}; charset=utf-8"}
    assert assert_same(body, headers), info.format


def test_the_corpus_sample_covers_every_flavour() -> None:
    assert {feed_info(index).format for index in range(0, 60, 3)} == set(FORMATS)


# -- declines -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<rss version='2.0'><channel><title>x</title><item><title>a</item></channel></rss>", "malformed"),
        (b"<!DOCTYPE rss><rss version='2.0'><channel><title>x</title></channel></rss>", "doctype"),
        (b"<rss version='2.0'><channel><item><title>&nbsp;</title></item></channel></rss>", "entity"),
        (b"<html><body>not a feed</body></html>", "root"),
        (b"<opml version='2.0'><body/></opml>", "root"),
        (
            b"<rss version='2.0' xmlns:itunes='http://www.itunes.com/dtds/podcast-1.0.dtd'><channel>"
            b"<item><itunes:keywords>a, b</itunes:keywords></item></channel></rss>",
            "itunes:keywords are read as tags",
        ),
        (
            b"<rss version='2.0'><channel><item><title>a <b>b</b></title></item></channel></rss>",
            "markup in a title",
        ),
        (
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><content type='image/png'>AAAA</content>"
            b"</entry></feed>",
            "base64 content",
        ),
        (b"<rss version='2.0'><channel><item><links>x</links></item></channel></rss>", "stored as links"),
        (b"<x:rss xmlns:x='urn:x'><channel/></x:rss>", "unknown namespace"),
        (b"\xff\xfe<\x00r\x00", "bytes that are no XML"),
    ],
)
def test_declines_what_it_does_not_read_exactly(body: bytes, why: str) -> None:
    assert fastparse.parse(body, {"content-type": "application/rss+xml"}) is None, why
    assert_same(body, {"content-type": "application/rss+xml"})


RSS_ITEM = "<rss version='2.0' {ns}><channel><title>t</title><item>{item}</item></channel></rss>"
EDGE_CASES = {
    "a namespace bound to two prefixes": (
        "xmlns:media='urn:x' xmlns:y='urn:x'",
        "<title>a</title><y:content url='http://a.example/b.jpg' medium='image'/>",
        False,
    ),
    "media under a wrong namespace URI": (
        "xmlns:media='http://video.search.yahoo.com/mrss'",
        "<media:content url='http://a.example/b.jpg' medium='image'/>",
        True,
    ),
    "a title inside an unknown wrapper": ("xmlns:x='urn:x'", "<x:wrap><title>deep</title></x:wrap>", True),
    "a later title at the same depth": ("", "<title>first</title><title>second</title>", True),
    "an empty title, then one": ("", "<title> </title><title>second</title>", True),
    "xml:base that leaks to the next sibling": (
        "",
        "<link xml:base='http://b.example/dir/'>rel</link><guid>g</guid><comments>c</comments>",
        True,
    ),
    "a guid before the link": ("", "<guid>http://g.example/1</guid><link>http://l.example/1</link>", True),
    "content before the description": (
        "xmlns:content='http://purl.org/rss/1.0/modules/content/'",
        "<content:encoded>&lt;p&gt;c&lt;/p&gt;</content:encoded><description>d</description>",
        True,
    ),
    "categories with and without domain": (
        "",
        "<category domain='d'>a</category><category domain='d'>a</category><category>a</category>"
        "<category domain='d'></category><category>b</category>",
        True,
    ),
    "an author email without a name": ("", "<author>someone@example.com</author>", True),
    "media:title is read as the title": (
        "xmlns:media='http://search.yahoo.com/mrss/'",
        "<media:group><media:title>m</media:title></media:group><title>t</title>",
        True,
    ),
    "a second description is read as content": (
        "",
        "<description>a</description><description>b</description>",
        True,
    ),
    "itunes:summary after a description": (
        "xmlns:itunes='http://www.itunes.com/dtds/podcast-1.0.dtd'",
        "<description>&lt;p&gt;d&lt;/p&gt;</description><itunes:summary>s &amp;amp; t</itunes:summary>",
        True,
    ),
    "XML 1.1": ("", "<title>a\u2028b\x85c</title>", True),
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases_read_as_feedparser_reads_them(case: str) -> None:
    namespaces, item, taken = EDGE_CASES[case]
    body = RSS_ITEM.format(ns=namespaces, item=item).encode()
    if case == "XML 1.1":
        body = b"<?xml version='1.1' encoding='utf-8'?>\n" + body
    assert assert_same(body, {"content-type": "application/rss+xml"}) == taken


def test_a_non_xml_content_type_warns_as_feedparser_does() -> None:
    body = (FIXTURES / "formats" / "rss2.xml").read_bytes()
    fast = parse_document(body, {"content-type": "text/html"}, URL)
    assert fast.warning is not None and "not an XML media type" in fast.warning
    assert fast == parse_document(body, {"content-type": "text/html"}, URL, fast_path=False)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        # charset in the header differs from the declaration: the header wins for application/*
        (
            '<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>Zoë</title>'
            "</channel></rss>".encode(),
            {"content-type": "application/rss+xml; charset=utf-8"},
        ),
        # text/xml without charset is us-ascii: feedparser overrides it with the declaration
        (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>中文</title>'
            "</channel></rss>".encode(),
            {"content-type": "text/xml"},
        ),
        # a UTF-8 byte order mark and no declaration
        (
            "\ufeff<rss version='2.0'><channel><title>Ünï</title></channel></rss>".encode(),
            {"content-type": "application/rss+xml"},
        ),
        # windows-1252 declared: decoded by feedparser's own rules, then read by lxml
        (
            (
                '<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel>'
                "<title>\u201cquoted\u201d \u20ac</title><item><title>caf\xe9</title></item></channel></rss>"
            ).encode("cp1252"),
            {"content-type": "application/rss+xml"},
        ),
        # UTF-16 with its byte order mark: decoded by feedparser's rules, then read by lxml
        (
            "<rss version='2.0'><channel><title>é 中文</title></channel></rss>".encode("utf-16"),
            {"content-type": "application/rss+xml"},
        ),
        # Latin-1 bytes though the header says UTF-8: feedparser falls back to the declaration
        (
            '<?xml version="1.0" encoding="iso-8859-1"?>\n<rss version="2.0"><channel><title>Zo\xeb</title>'
            "</channel></rss>".encode("latin-1"),
            {"content-type": "application/rss+xml; charset=utf-8"},
        ),
        # UTF-8 that was read as Latin-1 and encoded again (feedparser repairs it)
        (
            "<rss version='2.0'><channel><item><title>CafÃ© Ã\xa0 Paris</title>"
            "<description>\x93smart\x94</description></item></channel></rss>".encode(),
            {"content-type": "application/rss+xml"},
        ),
    ],
)
def test_encodings_are_decided_as_feedparser_decides(body: bytes, headers: dict[str, str]) -> None:
    assert assert_same(body, headers)


# -- generated documents ---------------------------------------------------------

ODD_CHARACTERS = [
    "中文",
    "測試",
    "\u3000",
    "\xa0",
    "é",
    "Ã©",
    "\x85",
    "\x93",
    "\u2028",
    "ü",
    "😀",
    " & ",
    "&amp;",
]
TEXT_ALPHABET = st.sampled_from([*"abcXYZ019 \t\n.,;:!?-_/#()[]{}'\"<>&=", *ODD_CHARACTERS])
MARKUP = st.sampled_from(
    [
        "<b>bold</b>",
        "<p>para</p>",
        "<br/>",
        "<foo>x</foo>",
        "&amp;",
        "&copy;",
        "&bogus;",
        "&#233;",
        "<a href='/x'>",
    ]
)


@st.composite
def raw_text(draw: Any) -> str:
    parts = draw(st.lists(st.one_of(TEXT_ALPHABET, MARKUP), max_size=8))
    text = "".join(parts)
    if draw(st.booleans()):
        text = (
            draw(st.sampled_from(["", " ", "\n  ", "\t"]))
            + text
            + draw(st.sampled_from(["", "  \n", "\u3000"]))
        )
    return text


@st.composite
def xml_text(draw: Any) -> str:
    """Text as a feed writes it: escaped, in CDATA, or with character references."""
    text = draw(raw_text())
    style = draw(st.sampled_from(["escape", "cdata", "charrefs", "mixed"]))
    if style == "cdata" and "]]>" not in text:
        return f"<![CDATA[{text}]]>"
    escaped = html.escape(text, quote=False)
    if style == "charrefs":
        return "".join(c if c.isascii() and c not in "<>&" else f"&#{ord(c)};" for c in text)
    if style == "mixed" and "]]>" not in text:
        half = len(text) // 2
        return html.escape(text[:half], quote=False) + f"<![CDATA[{text[half:]}]]>"
    return escaped


def attr(value: str) -> str:
    return html.escape(value, quote=True)


DATES = st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2037, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@st.composite
def date_text(draw: Any) -> str:
    moment = draw(DATES)
    offset = timedelta(minutes=draw(st.sampled_from([0, 60, -300, 330, 600])))
    local = moment.astimezone(__import__("datetime").timezone(offset))
    return draw(
        st.sampled_from(
            [
                format_datetime(moment, usegmt=True),
                format_datetime(local),
                local.strftime("%d %b %Y %H:%M:%S %z"),
                local.strftime("%a, %d %b %y %H:%M %Z"),
                moment.strftime("%a, %d %b %Y %H:%M:%S EST"),
                local.isoformat(),
                moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                moment.strftime("%Y-%m-%d"),
                moment.strftime("%Y-%m-%d %H:%M:%S"),
                moment.strftime("%a %b %d %H:%M:%S %Y"),
                moment.strftime("%Y年%m月%d日"),
                "yesterday",
                "",
                "  " + format_datetime(moment, usegmt=True) + "\n",
            ]
        )
    )


URLS = st.sampled_from(
    [
        "https://site.example.com/a/b.html",
        "https://site.example.com/a?x=1&y=2",
        "https://site.example.com/a?x=1&amp;y=2",
        "/relative/path",
        "relative.html",
        "../up/one",
        "",
        "  https://site.example.com/spaced  ",
        "javascript:alert(1)",
        "mailto:someone@example.com",
        "HTTPS://Site.Example.COM/Case",
        "https://site.example.com/中文",
        "tag:site.example.com,2026:entry-1",
        "urn:uuid:0f1e2d3c-0000-4000-8000-000000000001",
    ]
)
BASES = st.sampled_from(["", "https://base.example.org/dir/", "/rooted/", "sub/", "javascript:x"])


def maybe_base(draw: Any) -> str:
    base = draw(st.one_of(st.none(), BASES))
    return "" if base is None else f' xml:base="{attr(base)}"'


@st.composite
def rss_item(draw: Any, version: str) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 9))):
        kind = draw(
            st.sampled_from(
                [
                    "title", "title", "link", "guid", "description", "content", "pubdate", "dcdate",
                    "creator", "author", "category", "enclosure", "thumbnail", "mediacontent", "comments",
                    "source", "unknown", "atomlink", "empty", "itunes", "mediatext", "dc",
                ]
            )
        )  # fmt: skip
        if kind == "title":
            parts.append(f"<title{maybe_base(draw)}>{draw(xml_text())}</title>")
        elif kind == "link":
            parts.append(f"<link{maybe_base(draw)}>{html.escape(draw(URLS))}</link>")
        elif kind == "guid":
            permalink = draw(
                st.sampled_from(["", ' isPermaLink="false"', ' isPermaLink="true"', ' isPermaLink="True"'])
            )
            parts.append(f"<guid{permalink}>{html.escape(draw(URLS))}</guid>")
        elif kind == "description":
            parts.append(f"<description>{draw(xml_text())}</description>")
        elif kind == "content":
            parts.append(f"<content:encoded>{draw(xml_text())}</content:encoded>")
        elif kind == "pubdate":
            parts.append(f"<pubDate>{html.escape(draw(date_text()))}</pubDate>")
        elif kind == "dcdate":
            parts.append(f"<dc:date>{html.escape(draw(date_text()))}</dc:date>")
        elif kind == "creator":
            parts.append(f"<dc:creator>{draw(xml_text())}</dc:creator>")
        elif kind == "author":
            who = draw(st.sampled_from(["a@example.com (Alice)", "Bob <bob@example.com>", "just a name", ""]))
            parts.append(f"<author>{html.escape(who)}</author>")
        elif kind == "category":
            domain = draw(st.sampled_from(["", ' domain="https://tags.example.com/"']))
            parts.append(f"<category{domain}>{draw(xml_text())}</category>")
        elif kind == "enclosure":
            url = attr(draw(URLS))
            length = draw(st.sampled_from(["", ' length="123"', ' length="x"', ' length="-5"']))
            kind_attr = draw(st.sampled_from(["", ' type="audio/mpeg"', ' type="Video/MP4"']))
            parts.append(f'<enclosure url="{url}"{length}{kind_attr}/>')
        elif kind == "thumbnail":
            if draw(st.booleans()):
                parts.append(f'<media:thumbnail url="{attr(draw(URLS))}"/>')
            else:
                parts.append(f"<media:thumbnail>{html.escape(draw(URLS))}</media:thumbnail>")
        elif kind == "mediacontent":
            medium = draw(st.sampled_from(["", ' medium="image"', ' type="image/jpeg"', ' type="video/mp4"']))
            inner = draw(st.sampled_from(["", f'<media:thumbnail url="{attr(draw(URLS))}"/>']))
            element = f'<media:content url="{attr(draw(URLS))}"{medium}>{inner}</media:content>'
            parts.append(f"<media:group>{element}</media:group>" if draw(st.booleans()) else element)
        elif kind == "comments":
            parts.append(f"<comments>{html.escape(draw(URLS))}</comments>")
        elif kind == "source":
            parts.append(f'<source url="https://src.example.com/">{draw(xml_text())}</source>')
        elif kind == "unknown":
            parts.append(f"<x:thing>{draw(xml_text())}</x:thing>")
        elif kind == "itunes":
            choice = draw(st.sampled_from(["summary", "category", "owner"]))
            if choice == "summary":
                parts.append(f"<itunes:summary>{draw(xml_text())}</itunes:summary>")
            elif choice == "category":
                inner = f'<itunes:category text="{attr(draw(raw_text()))}"/>' if draw(st.booleans()) else ""
                parts.append(f'<itunes:category text="{attr(draw(raw_text()))}">{inner}</itunes:category>')
            else:
                parts.append(
                    f"<itunes:owner><itunes:name>{draw(xml_text())}</itunes:name>"
                    "<itunes:email>o@example.com</itunes:email></itunes:owner>"
                )
        elif kind == "dc":
            element = draw(st.sampled_from(["dc:title", "dc:description", "dc:subject"]))
            parts.append(f"<{element}>{draw(xml_text())}</{element}>")
        elif kind == "mediatext":
            element = draw(st.sampled_from(["media:title", "media:description"]))
            inner = f"<{element}>{draw(xml_text())}</{element}>"
            parts.append(f"<media:group>{inner}</media:group>" if draw(st.booleans()) else inner)
        elif kind == "atomlink":
            rel = draw(st.sampled_from(["self", "alternate", "enclosure"]))
            parts.append(f'<atom:link rel="{rel}" href="{attr(draw(URLS))}"/>')
        else:
            parts.append(draw(st.sampled_from(["<title/>", "<link></link>", "<description> </description>"])))
    about = f' rdf:about="{attr(draw(URLS))}"' if version == "rss1" and draw(st.booleans()) else ""
    return f"<item{about}{maybe_base(draw)}>" + "\n".join(parts) + "</item>"


NAMESPACES = (
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:media="http://search.yahoo.com/mrss/" '
    'xmlns:atom="http://www.w3.org/2005/Atom" xmlns:x="urn:example:x" '
    'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"'
)


@st.composite
def rss_document(draw: Any) -> str:
    version = draw(st.sampled_from(["rss2", "rss1"]))
    channel: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["title", "link", "description", "ttl", "editor", "selflink", "date"]))
        if kind == "title":
            channel.append(f"<title>{draw(xml_text())}</title>")
        elif kind == "link":
            channel.append(f"<link>{html.escape(draw(URLS))}</link>")
        elif kind == "description":
            channel.append(f"<description>{draw(xml_text())}</description>")
        elif kind == "ttl":
            channel.append(f"<ttl>{draw(st.sampled_from(['60', ' 15 ', '0', 'x', '-3', '1.5']))}</ttl>")
        elif kind == "editor":
            channel.append(f"<managingEditor>{draw(xml_text())}</managingEditor>")
        elif kind == "selflink":
            channel.append(f'<atom:link rel="self" href="{attr(draw(URLS))}"/>')
        else:
            channel.append(f"<lastBuildDate>{html.escape(draw(date_text()))}</lastBuildDate>")
    items = draw(st.lists(rss_item(version), max_size=4))
    base = maybe_base(draw)
    if version == "rss1":
        return (
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            f'xmlns="http://purl.org/rss/1.0/" {NAMESPACES}{base}>'
            f'<channel rdf:about="https://site.example.com/">{"".join(channel)}</channel>'
            + "\n".join(items)
            + "</rdf:RDF>"
        )
    rss_version = draw(st.sampled_from(["2.0", "0.92", "2.0.1", ""]))
    return (
        f'<rss version="{rss_version}" {NAMESPACES}><channel{base}>'
        + "\n".join(channel + items)
        + "</channel></rss>"
    )


@st.composite
def atom_text(draw: Any, name: str) -> str:
    kind = draw(st.sampled_from(["", ' type="text"', ' type="html"', ' type="text/html"', ' type="TEXT"']))
    return f"<{name}{kind}{maybe_base(draw)}>{draw(xml_text())}</{name}>"


@st.composite
def atom_person(draw: Any, name: str) -> str:
    inner = []
    for part in draw(st.lists(st.sampled_from(["name", "email", "uri"]), max_size=3)):
        value = {"name": draw(xml_text()), "email": "p@example.com", "uri": html.escape(draw(URLS))}[part]
        inner.append(f"<{part}>{value}</{part}>")
    return f"<{name}>{''.join(inner)}</{name}>"


@st.composite
def atom_entry(draw: Any) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 9))):
        kind = draw(
            st.sampled_from(
                [
                    "title", "link", "id", "summary", "content", "published", "updated", "author",
                    "contributor", "category", "thumbnail",
                ]
            )
        )  # fmt: skip
        if kind in ("title", "summary", "content"):
            parts.append(draw(atom_text(kind)))
        elif kind == "link":
            rel = draw(
                st.sampled_from(["", ' rel="alternate"', ' rel="self"', ' rel="enclosure"', ' rel="related"'])
            )
            kind_attr = draw(
                st.sampled_from(["", ' type="text/html"', ' type="application/pdf"', ' type="Audio/MPEG"'])
            )
            parts.append(f'<link{rel}{kind_attr} href="{attr(draw(URLS))}"{maybe_base(draw)}/>')
        elif kind == "id":
            parts.append(f"<id>{html.escape(draw(URLS))}</id>")
        elif kind in ("published", "updated"):
            parts.append(f"<{kind}>{html.escape(draw(date_text()))}</{kind}>")
        elif kind in ("author", "contributor"):
            parts.append(draw(atom_person(kind)))
        elif kind == "category":
            label = draw(st.sampled_from(["", ' label="Label"']))
            parts.append(f'<category term="{attr(draw(raw_text()))}"{label}/>')
        elif draw(st.booleans()):
            parts.append(f'<media:thumbnail url="{attr(draw(URLS))}"/>')
        else:
            title, description = draw(xml_text()), draw(xml_text())
            parts.append(
                f"<media:group><media:title>{title}</media:title>"
                f"<media:description>{description}</media:description></media:group>"
            )
    return f"<entry{maybe_base(draw)}>" + "\n".join(parts) + "</entry>"


@st.composite
def atom_document(draw: Any) -> str:
    head: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["title", "link", "id", "author", "subtitle", "updated"]))
        if kind in ("title", "subtitle"):
            head.append(draw(atom_text(kind)))
        elif kind == "link":
            rel = draw(st.sampled_from(["", ' rel="alternate"', ' rel="self"']))
            head.append(f'<link{rel} href="{attr(draw(URLS))}"/>')
        elif kind == "id":
            head.append(f"<id>{html.escape(draw(URLS))}</id>")
        elif kind == "author":
            head.append(draw(atom_person("author")))
        else:
            head.append(f"<updated>{html.escape(draw(date_text()))}</updated>")
    entries = draw(st.lists(atom_entry(), max_size=4))
    return (
        f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"{maybe_base(draw)}>'
        + "\n".join(head + entries)
        + "</feed>"
    )


@st.composite
def document(draw: Any) -> tuple[bytes, dict[str, str]]:
    text = draw(st.one_of(rss_document(), atom_document()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "UTF-8", "none", "bom", "iso-8859-1", "windows-1252"]))
    if encoding == "none":
        body = text.encode()
    elif encoding == "bom":
        body = b"\xef\xbb\xbf" + text.encode()
    else:
        declaration = f'<?xml version="1.0" encoding="{encoding}"?>\n'
        body = (declaration + text).encode(encoding if encoding != "UTF-8" else "utf-8", "xmlcharrefreplace")
    headers = draw(st.sampled_from(HEADER_SETS))
    return body, headers


FAST_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@FAST_SETTINGS
@given(document())
@example(
    (
        b'<rss version="2.0"><channel><item><title>a &amp;lt;b&amp;gt; &#233;</title>'
        b"<guid>x</guid><link>https://a.example/?a=1&amp;amp;b=2</link></item></channel></rss>",
        {"content-type": "application/rss+xml"},
    )
)
def test_generated_documents_read_as_feedparser_reads_them(doc: tuple[bytes, dict[str, str]]) -> None:
    body, headers = doc
    assert_same(body, headers)


def test_generated_documents_mostly_take_the_fast_path() -> None:
    """The generator is not so odd that the differential test above only ever sees declines."""
    taken = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(document())
    def count(doc: tuple[bytes, dict[str, str]]) -> None:
        body, headers = doc
        taken.append(fastparse.parse(body, {k.lower(): v for k, v in headers.items()}) is not None)

    count()
    assert sum(taken) >= len(taken) // 3, f"{sum(taken)} of {len(taken)} generated documents taken"


# -- the shortcuts inside the fast path ------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.from_regex(fastparse._PLAIN_URL, fullmatch=True), BASES)
def test_plain_urls_are_what_urljoin_gives_back(url: str, base: str) -> None:
    from feedparser.urls import _urljoin

    assert fastparse._join(base, url) == _urljoin(base, url) == url


@settings(max_examples=300, deadline=None)
@given(st.text(), BASES)
def test_joining_any_text_matches_feedparser(uri: str, base: str) -> None:
    from feedparser.urls import _urljoin

    assert fastparse._join(base, uri) == _urljoin(base, uri)


@pytest.mark.parametrize("code", [0x41, 0x7F, 0x80, 0x9F, 0xA0, 0xFF, 0x100, 0x4E2D])
def test_high_character_references_are_noticed(code: int) -> None:
    for form in (f"&#{code};", f"&#x{code:x};", f"&#X{code:04X};", f"&#000{code};"):
        document = f"<rss><channel><title>{form}</title></channel></rss>".encode()
        assert fastparse._may_have_latin1(document) == (code >= 0x80)
