"""The feed builder: valid feeds of every kind and format, byte-stable, incremental, atomic.

Posts go into a real store (post files and SQLite index) from fixed ``Post``
objects; feeds are built into a real directory and read back with feedparser,
lxml (Atom against the RFC 4287 RELAX NG schema) and json.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from support.feedgen_reference import render_feed_directly, render_fragments_with_feedgen

from aggregator.config import Config
from aggregator.index.feeds import IndexedPost
from aggregator.index.interface import Index
from aggregator.keys import ALL_KEY, category_key, source_key
from aggregator.model import Enclosure, Post
from aggregator.publish import formats, items
from aggregator.publish.builder import FeedBuilder
from aggregator.publish.formats import render_feed, render_fragments
from aggregator.publish.items import ItemOptions, truncate_html
from aggregator.publish.specs import spec_for
from aggregator.store import PostStore
from aggregator.text import clean_text

SCHEMAS = Path(__file__).resolve().parent / "schemas"
ATOM = "http://www.w3.org/2005/Atom"
NS = {"atom": ATOM, "media": "http://search.yahoo.com/mrss/", "dc": "http://purl.org/dc/elements/1.1/"}
BASE = "https://feeds.example.org/pub/"
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
RFC822 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                    r"\d{4} \d\d:\d\d:\d\d (\+0000|GMT)$")  # fmt: skip
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
FILES = {"rss": "rss.xml", "atom": "atom.xml", "json": "feed.json"}


def make_config(root: Path, sources: list[dict[str, Any]] | None = None, **build: Any) -> Config:
    return Config.model_validate(
        {
            "site": {"title": "Test site", "base_url": BASE, "language": "en", "author": "Site Author"},
            "paths": {"posts": str(root / "posts"), "feeds": str(root / "feeds"), "data": str(root / "data")},
            "defaults": {"fsync": "off"},
            "build": build,
            "sources": sources or [],
            "base_dir": root,
        }
    )


def make_post(source: str, number: int, categories: tuple[str, ...], **changes: Any) -> Post:
    fields: dict[str, Any] = {
        "source": source,
        "id": f"https://{source}.example.org/posts/{number}",
        "title": f"Post {number} from {source}",
        "link": f"https://{source}.example.org/posts/{number}",
        "categories": categories,
        "author": f"Writer {number % 3}",
        "comments": False,
        "date": START + timedelta(hours=number),
        "updated": None,
        "headimg": None,
        "tags": (),
        "enclosures": (),
        "body": f"<p>Body of post {number} from {source}.</p>",
    }
    fields.update(changes)
    return Post(**fields)


class Site:
    """A config, a store and a builder over one temporary directory."""

    def __init__(self, root: Path, index: Index | None = None, **build: Any) -> None:
        self.root = root
        self.config = make_config(root, **build)
        self.store = PostStore(self.config.posts_dir, self.config.index_path, fsync="off", index=index)
        self.builder = FeedBuilder(self.config, self.store)

    def add(self, *posts: Post) -> set[str]:
        results = self.store.save(list(posts), START)
        return {key for r in results for key in _keys(r.post)}

    def feed(self, key: str, fmt: str) -> Path:
        return self.config.feeds_dir / spec_for(key, self.config).relative_dir / FILES[fmt]

    def files(self) -> dict[str, bytes]:
        root = self.config.feeds_dir
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _keys(post: Post) -> list[str]:
    from aggregator.keys import feed_keys_for

    return feed_keys_for(post.source, post.categories)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    built = Site(tmp_path)
    yield built
    built.store.close()


def two_sources(site: Site) -> None:
    """Source a in [Tech, Python], source b in [Tech, Rust] and [Tech] itself holds both."""
    site.add(*(make_post("a", n, ("Tech", "Python")) for n in range(4)))
    site.add(*(make_post("b", n, ("Tech", "Rust")) for n in range(10, 13)))


KEYS = {
    ALL_KEY: 7,
    source_key("a"): 4,
    source_key("b"): 3,
    category_key(["Tech"]): 7,
    category_key(["Tech", "Python"]): 4,
    category_key(["Tech", "Rust"]): 3,
}


def parse_feed(path: Path) -> feedparser.FeedParserDict:
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, (path, parsed.get("bozo_exception"))
    return parsed


_RNG = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom.rng")))


def assert_valid_atom(data: bytes) -> None:
    """RFC 4287 appendix B: the RELAX NG grammar, and its Schematron rules (kept as annotations)."""
    document = etree.fromstring(data)
    assert _RNG.validate(document), _RNG.error_log
    schematron = {"s": "http://www.ascc.net/xml/schematron"}
    rules = etree.parse(str(SCHEMAS / "atom.rng")).getroot().iterfind(".//s:rule", schematron)
    for rule in rules:
        for check in rule.iterfind("s:assert", schematron):
            for node in document.xpath(f"//{rule.get('context')}", namespaces=NS) + (
                [document] if document.xpath(f"self::{rule.get('context')}", namespaces=NS) else []
            ):
                assert node.xpath(check.get("test"), namespaces=NS), check.text


def assert_valid_json_feed(data: bytes) -> dict[str, Any]:
    """Every field JSON Feed 1.1 requires, with the types it requires."""
    document = json.loads(data)
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(document["title"], str) and document["title"]
    assert isinstance(document["items"], list)
    for item in document["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert isinstance(item.get("content_html") or item.get("content_text"), str)
        for key in ("date_published", "date_modified"):
            assert RFC3339.match(item[key]), item[key]
        for attachment in item.get("attachments", []):
            assert attachment["url"] and attachment["mime_type"]
    ids = [item["id"] for item in document["items"]]
    assert len(ids) == len(set(ids))
    return dict(document)


# Validity -----------------------------------------------------------------------


def test_every_format_of_every_kind_of_feed_parses_and_holds_its_items(site: Site) -> None:
    two_sources(site)
    report = site.builder.build()
    assert set(report.rendered) == set(KEYS)
    for key, count in KEYS.items():
        for fmt in ("rss", "atom"):
            parsed = parse_feed(site.feed(key, fmt))
            assert len(parsed.entries) == count, (key, fmt)
            dates = [entry.published_parsed for entry in parsed.entries]
            assert dates == sorted(dates, reverse=True), "newest first"
        assert_valid_atom(site.feed(key, "atom").read_bytes())
        document = assert_valid_json_feed(site.feed(key, "json").read_bytes())
        assert len(document["items"]) == count
    # A parent category holds its children's posts.
    titles = {e.title for e in parse_feed(site.feed(category_key(["Tech"]), "rss")).entries}
    assert "Post 0 from a" in titles and "Post 12 from b" in titles


def test_required_elements_self_links_ids_dates_language_generator_authors(site: Site) -> None:
    site.add(make_post("a", 1, ("Tech",)), make_post("a", 2, ("Tech",), id="not a uri: 2", author=""))
    site.builder.build()
    key = category_key(["Tech"])
    url = {fmt: BASE + "category/tech/" + FILES[fmt] for fmt in FILES}

    rss = etree.parse(str(site.feed(key, "rss"))).getroot()
    channel = rss.find("channel")
    for name in ("title", "link", "description", "language", "generator", "lastBuildDate", "pubDate"):
        assert channel.findtext(name), name
    assert channel.findtext("language") == "en"
    assert channel.findtext("link") == BASE
    assert [(link.get("rel"), link.get("href")) for link in channel.iterfind("atom:link", NS)] == [
        ("self", url["rss"])
    ]
    assert RFC822.match(channel.findtext("lastBuildDate"))
    items = channel.findall("item")
    for item in items:
        assert RFC822.match(item.findtext("pubDate"))
        assert (
            item.findtext("title")
            and item.findtext("description")
            and item.findtext("dc:creator", namespaces=NS)
        )
    guids = {item.findtext("guid"): item.find("guid").get("isPermaLink") for item in items}
    assert guids == {"https://a.example.org/posts/1": "true", "not a uri: 2": "false"}
    # The newest item's date, not the build time: building again later changes nothing.
    assert channel.findtext("lastBuildDate") == "Sun, 01 Mar 2026 10:00:00 +0000"

    atom = etree.parse(str(site.feed(key, "atom"))).getroot()
    assert atom.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert atom.findtext("atom:id", namespaces=NS) == url["atom"]
    assert atom.find("atom:link[@rel='self']", NS).get("href") == url["atom"]
    assert atom.findtext("atom:generator", namespaces=NS) == "aggregator"
    assert RFC3339.match(atom.findtext("atom:updated", namespaces=NS))
    entries = atom.findall("atom:entry", NS)
    ids = [entry.findtext("atom:id", namespaces=NS) for entry in entries]
    assert ids[1] == "https://a.example.org/posts/1"
    # A non-URI id becomes a name-based UUID URN of ours (tests/test_feed_validity.py has the rules).
    assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", ids[0]), ids[0]
    for entry in entries:
        assert entry.findtext("atom:author/atom:name", namespaces=NS), "every entry has an author"
        for name in ("updated", "published"):
            assert RFC3339.match(entry.findtext(f"atom:{name}", namespaces=NS))
    # An entry without an author of its own is credited to its source.
    assert entries[0].findtext("atom:author/atom:name", namespaces=NS) == "a"

    document = json.loads(site.feed(key, "json").read_bytes())
    assert document["feed_url"] == url["json"]
    assert document["home_page_url"] == BASE
    assert document["language"] == "en"
    assert [item["id"] for item in document["items"]] == ["not a uri: 2", "https://a.example.org/posts/1"]
    assert all(item["authors"][0]["name"] for item in document["items"])


def test_lead_image_and_enclosures_are_the_same_in_all_three_formats(site: Site) -> None:
    image = "https://img.example.org/lead.png"
    audio = Enclosure("https://cdn.example.org/a.mp3", "audio/mpeg", 4321)
    site.add(
        make_post("a", 1, ("Tech",), headimg=image),
        make_post("a", 2, ("Tech",), headimg=image, enclosures=(audio,)),
    )
    site.builder.build()
    rss = parse_feed(site.feed(ALL_KEY, "rss")).entries
    atom = parse_feed(site.feed(ALL_KEY, "atom")).entries
    items = json.loads(site.feed(ALL_KEY, "json").read_bytes())["items"]
    # Newest first: post 2 (an audio enclosure and a lead image), then post 1 (the lead image only).
    assert [(e.href, e.type) for e in rss[0].enclosures] == [(audio.url, "audio/mpeg")]
    assert [(e.href, e.type) for e in atom[0].enclosures] == [(audio.url, "audio/mpeg")]
    assert [(a["url"], a["mime_type"]) for a in items[0]["attachments"]] == [(audio.url, "audio/mpeg")]
    for entries in (rss, atom):
        assert [(e.href, e.type) for e in entries[1].enclosures] == [(image, "image/png")]
        assert all(entry.media_thumbnail[0]["url"] == image for entry in entries)
    assert [(a["url"], a["mime_type"]) for a in items[1]["attachments"]] == [(image, "image/png")]
    assert items[0]["image"] == items[1]["image"] == image
    # The Atom enclosure is rel="enclosure", not a second alternate link (feedgen's bug).
    atom_doc = etree.parse(str(site.feed(ALL_KEY, "atom"))).getroot()
    first = atom_doc.find("atom:entry", NS)
    assert [(link.get("rel"), link.get("href")) for link in first.iterfind("atom:link", NS)] == [
        (None, "https://a.example.org/posts/2"),
        ("enclosure", audio.url),
    ]


def test_a_post_with_nul_cdata_end_and_a_1mb_body_does_not_break_its_feeds(site: Site) -> None:
    hostile = "<p>a\x00b ]]> c\x01d\ufffe</p>" + "<p>" + "x" * 1_000_000 + "</p>"
    site.add(
        make_post("a", 1, ("Tech",), title="NUL\x00 and ]]> title", body=hostile, tags=("bad\x0btag",)),
        make_post("a", 2, ("Tech",)),
    )
    site.builder.build()
    for key in (ALL_KEY, source_key("a"), category_key(["Tech"])):
        for fmt in ("rss", "atom"):
            parsed = parse_feed(site.feed(key, fmt))
            assert len(parsed.entries) == 2
            big = parsed.entries[1]
            assert big.title == "NUL and ]]> title"
            assert "ab ]]> cd" in big.content[0].value and len(big.content[0].value) > 1_000_000
        assert_valid_atom(site.feed(key, "atom").read_bytes())
        document = assert_valid_json_feed(site.feed(key, "json").read_bytes())
        assert "\x00" not in document["items"][1]["content_html"]
        assert document["items"][1]["tags"] == ["Tech", "badtag"]


def test_entries_with_one_id_from_two_sources_appear_once(site: Site) -> None:
    shared = "https://news.example.org/story"
    site.add(make_post("a", 1, ("Tech",), id=shared, link=shared))
    site.add(make_post("b", 2, ("Tech",), id=shared, link=shared), make_post("b", 3, ("Tech",)))
    site.builder.build()
    for fmt in ("rss", "atom"):
        ids = [entry.id for entry in parse_feed(site.feed(ALL_KEY, fmt)).entries]
        assert ids == ["https://b.example.org/posts/3", shared]
    json_ids = [item["id"] for item in json.loads(site.feed(ALL_KEY, "json").read_bytes())["items"]]
    assert json_ids == ["https://b.example.org/posts/3", shared]


# Feedgen stays the reference ------------------------------------------------------


def _indexed(post: Post) -> IndexedPost:
    from aggregator.text import plain_text

    return IndexedPost(
        source=post.source, id=post.id, path="", title=post.title, link=post.link, author=post.author,
        date=post.date, updated=post.updated, categories=post.categories, tags=post.tags,
        headimg=post.headimg, enclosures=post.enclosures, body=post.body,
        summary=plain_text(post.body, limit=280), content_hash=post.content_hash,
    )  # fmt: skip


def test_spliced_feeds_are_byte_for_byte_what_feedgen_writes_in_one_piece(tmp_path: Path) -> None:
    config = make_config(tmp_path, websub_hub="https://hub.example.org/")
    posts = [
        _indexed(make_post("a", 1, ("Tech",), headimg="https://img.example.org/1.jpg")),
        _indexed(make_post("a", 2, ("Tech",), id="urn:x:2", link="")),
        _indexed(
            make_post("a", 3, ("Tech",), enclosures=(Enclosure("https://c.example.org/v", "video/mp4"),))
        ),
    ]
    spec = spec_for(category_key(["Tech"]), config)
    fragments = render_fragments(posts, ItemOptions.of(config))
    newest = max(p.date for p in posts)
    for fmt in ("rss", "atom", "json"):
        assert render_feed(config, spec, fmt, fragments, newest) == render_feed_directly(
            config, spec, fmt, posts
        )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for fmt in ("rss", "atom", "json"):
        assert render_feed(config, spec, fmt, [], epoch) == render_feed_directly(config, spec, fmt, [])


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_url = st.one_of(st.just(""), st.builds(lambda s: "https://e.example.org/" + s, _text))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=_text,
    body=st.text(st.characters(codec="utf-8"), max_size=200),
    link=_url,
    entry_id=st.one_of(_text.filter(bool), _url.filter(bool)),
    author=_text,
    terms=st.lists(_text, max_size=3),
    image=st.one_of(st.none(), _url.filter(bool)),
    enclosures=st.lists(st.builds(Enclosure, _url.filter(bool), _text, st.integers(0, 10**9)), max_size=2),
    full_content=st.booleans(),
)
def test_item_templates_write_exactly_what_feedgen_writes(
    title: str, body: str, link: str, entry_id: str, author: str, terms: list[str],
    image: str | None, enclosures: list[Enclosure], full_content: bool,
) -> None:  # fmt: skip
    post = _indexed(
        make_post(
            "src",
            1,
            tuple(terms),
            title=title,
            body=body,
            link=link,
            id=entry_id,
            author=author,
            headimg=image,
            enclosures=tuple(enclosures),
        )
    )
    options = ItemOptions(full_content=full_content)
    assert render_fragments([post], options) == render_fragments_with_feedgen([post], options)


# Characters XML forbids or escapes, and ones that border them, mixed with any others (surrogates
# included). A list joined, not st.text: hypothesis merges a text's alphabets into one range of code
# points, where these few would almost never be drawn.
_HOSTILE_CHARS = "\x00\x08\x0b\x1f\x7f\t\n\r&<>\"'\\]\ufffd\ufffe\uffff\ud800\udfff\U0001f600中"
_HOSTILE = st.lists(
    st.one_of(st.sampled_from(_HOSTILE_CHARS), st.characters(), st.characters(categories=["Cs"])),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=_HOSTILE)
def test_fast_cleaning_and_escaping_match_the_plain_functions(text: str) -> None:
    clean = clean_text(text)
    assert items._clean(text) == clean
    assert items._clean_encoded(text) == (clean, clean.encode())
    xml = clean.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    assert formats._text(clean) == xml
    assert formats._text_bytes(clean.encode()) == xml.encode()
    assert formats._attr(clean) == xml.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    assert formats._json_string(clean) == json.dumps(clean, ensure_ascii=False)
    assert formats._json_bytes(clean.encode()) == json.dumps(clean, ensure_ascii=False).encode()


@settings(max_examples=100, deadline=None)
@given(moment=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])))
def test_iso_dates_are_utc_with_a_z(moment: datetime) -> None:
    expected = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert formats.iso_utc(moment) == formats.iso_utc(moment, moment.isoformat()) == expected


def _image_type_as_it_was(url: str) -> str:
    lowered = url.lower().split("?")[0]
    for suffix, kind in ((".png", "image/png"), (".gif", "image/gif"), (".webp", "image/webp"),
                         (".svg", "image/svg+xml"), (".avif", "image/avif")):  # fmt: skip
        if lowered.endswith(suffix):
            return kind
    return "image/jpeg"


@given(
    url=st.lists(
        st.one_of(
            st.sampled_from([".png", ".PNG", ".gif", ".webp", ".svg", ".avif", "?", ".", "png"]), _HOSTILE
        )
    ).map("".join)
)
def test_image_types_by_suffix(url: str) -> None:
    assert items._image_type(url) == _image_type_as_it_was(url)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(
        st.one_of(st.sampled_from(["<p>", "]]>", "&amp;", *_HOSTILE_CHARS]), st.characters()), max_size=150
    ).map("".join),
    title=_HOSTILE,
    terms=st.lists(_HOSTILE, max_size=3),
    cap=st.one_of(st.none(), st.integers(1, 200)),
    later=st.one_of(st.none(), st.timedeltas(timedelta(seconds=-5), timedelta(days=3))),
)
def test_hostile_items_still_render_as_feedgen_and_json_dumps_write_them(
    body: str, title: str, terms: list[str], cap: int | None, later: timedelta | None
) -> None:
    post = _indexed(make_post("src", 1, ()))
    updated = None if later is None else post.date + later
    post = replace(post, body=body, title=title, categories=tuple(terms), summary="", updated=updated)
    options = ItemOptions(full_content=True, max_content_chars=cap)
    assert render_fragments([post], options) == render_fragments_with_feedgen([post], options)


def test_index_rows_become_the_posts_the_constructor_makes(tmp_path: Path) -> None:
    site = Site(tmp_path)
    posts = [
        make_post("a", 1, ("Tech", "Python"), tags=("x",), updated=START + timedelta(days=2)),
        make_post(
            "a", 2, ("Tech", "Python"), tags=("x",), enclosures=(Enclosure("https://e.org/v", "video/mp4"),)
        ),
    ]
    site.add(*posts)
    found = site.store.index.indexed_posts([(p.source, p.id) for p in posts])
    for post in posts:
        got = found[(post.source, post.id)]
        expected = IndexedPost(
            **{**vars(got), "categories": tuple(post.categories), "tags": tuple(post.tags)}
        )
        assert got == expected and vars(got) == vars(expected) and hash(got) == hash(expected)
        assert (
            got.categories == post.categories and got.date == post.date and got.enclosures == post.enclosures
        )
        with pytest.raises(FrozenInstanceError):
            got.title = "changed"  # type: ignore[misc]
    assert found[("a", posts[1].id)].updated is None and found[
        ("a", posts[0].id)
    ].updated == START + timedelta(days=2)
    site.store.close()


# Options --------------------------------------------------------------------------


def test_items_per_feed_summary_only_content_cap_and_category_titles(tmp_path: Path) -> None:
    site = Site(
        tmp_path,
        max_items=2,
        full_content=False,
        categories=[{"path": ["Tech"], "title": "All about tech", "description": "Gadgets & code"}],
    )
    site.add(*(make_post("a", n, ("Tech", "Python"), body=f"<p>{'long text ' * 50}</p>") for n in range(5)))
    site.builder.build()
    rss = parse_feed(site.feed(category_key(["Tech"]), "rss"))
    assert [e.title for e in rss.entries] == ["Post 4 from a", "Post 3 from a"]
    assert rss.feed.title == "All about tech" and rss.feed.subtitle == "Gadgets & code"
    assert all("content" not in entry for entry in rss.entries), "summary only"
    assert rss.entries[0].summary.startswith("long text long text")
    child = parse_feed(site.feed(category_key(["Tech", "Python"]), "atom"))
    assert child.feed.title == "Test site: Tech › Python"
    document = json.loads(site.feed(category_key(["Tech"]), "json").read_bytes())
    assert document["title"] == "All about tech" and document["description"] == "Gadgets & code"
    assert "content_html" not in document["items"][0] and document["items"][0]["content_text"]
    site.store.close()

    capped = Site(tmp_path / "capped", max_content_chars=100)
    capped.add(make_post("a", 1, ("Tech",), body="<div><p>" + "word " * 100 + "</p><p>more</p></div>"))
    capped.builder.build()
    content = parse_feed(capped.feed(ALL_KEY, "atom")).entries[0].content[0].value
    assert len(content) < 130 and content.endswith("…</p></div>")
    capped.store.close()


def test_truncate_html_cuts_between_tags_and_closes_what_is_open() -> None:
    markup = (
        '<div class="x"><p>Hello <b>bold</b> <a href="https://e.org/">link text</a></p><br><p>tail</p></div>'
    )
    assert truncate_html(markup, 1000) == markup
    assert truncate_html(markup, 45) == '<div class="x"><p>Hello <b>bold</b>…</p></div>'
    assert truncate_html(markup, 20) == '<div class="x"><p>He…</p></div>'
    assert truncate_html("<p>a &amp; b</p>", 8) == "<p>a…</p>"
    assert truncate_html("<p>x<br>y<img src='i'/>zzzzzzzz</p>", 26) == "<p>x<br>y<img src='i'/>zzz…</p>"


# Stability, incremental builds, atomic publication ----------------------------------


def test_building_twice_gives_identical_bytes_even_from_a_new_process(site: Site) -> None:
    two_sources(site)
    site.builder.build()
    first = site.files()
    report = site.builder.build()
    assert report.rendered == [] and report.skipped == len(KEYS)
    assert site.files() == first
    # A fresh builder, empty cache, signatures forgotten: everything rendered again, same bytes.
    site.store.index.db.execute("DELETE FROM feeds")
    fresh = FeedBuilder(site.config, site.store)
    report = fresh.build()
    assert report.rendered == [] and report.written_urls == [], "rendered again, but no file had to change"
    assert site.files() == first


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_an_incremental_build_rewrites_exactly_the_feeds_whose_items_changed(site: Site) -> None:
    two_sources(site)
    site.builder.build()
    root = site.config.feeds_dir
    old = 1_000_000_000_000_000_000
    for path in root.rglob("*"):
        os.utime(path, ns=(old, old))
    keys = site.add(make_post("b", 20, ("Tech", "Rust")))
    report = site.builder.build(keys)
    assert sorted(report.rendered) == sorted(
        [ALL_KEY, source_key("b"), category_key(["Tech"]), category_key(["Tech", "Rust"])]
    )
    changed = {name for name, mtime in _mtimes(root).items() if mtime != old}
    expected = {"index.html"} | {  # index.opml lists the same feeds: unchanged
        f"{directory}/{name}"
        for directory in ("all", "source/b", "category/tech", "category/tech/rust")
        for name in FILES.values()
    }
    assert changed == expected
    # A changed post (same id, new title) rewrites its feeds too.
    for path in root.rglob("*"):
        os.utime(path, ns=(old, old))
    keys = site.add(make_post("a", 0, ("Tech", "Python"), title="Post 0, corrected"))
    site.builder.build(keys)
    changed = {name.rsplit("/", 1)[0] for name, mtime in _mtimes(root).items() if mtime != old}
    assert changed == {"all", "source/a", "category/tech", "category/tech/python"}  # same counts, dates
    assert "Post 0, corrected" in {e.title for e in parse_feed(site.feed(ALL_KEY, "rss")).entries}


def test_feeds_of_categories_and_sources_that_no_longer_exist_are_removed(site: Site) -> None:
    two_sources(site)
    site.builder.build()
    root = site.config.feeds_dir
    assert (root / "category/tech/rust/atom.xml").exists()
    for path in (site.config.posts_dir / "b").rglob("*.md"):
        path.unlink()
    touched = site.store.sync_with_files()
    report = site.builder.build(touched)
    assert sorted(report.removed) == sorted([source_key("b"), category_key(["Tech", "Rust"])])
    assert not (root / "category/tech/rust").exists() and not (root / "source/b").exists()
    assert (root / "category/tech/python/atom.xml").exists()
    assert "rust" not in (root / "index.opml").read_text().lower()
    # After a reindex the index no longer knows what was published: a full build sweeps leftovers.
    (root / "category/gone/deeper").mkdir(parents=True)
    (root / "category/gone/deeper/rss.xml").write_bytes(b"<rss/>")
    site.store.reindex()
    report = site.builder.build()
    assert report.swept == ["category/gone/deeper"]
    assert not (root / "category/gone").exists()
    assert sorted(p.name for p in (root / "category").iterdir()) == ["tech"]


def test_readers_never_see_a_partial_feed_while_it_is_rebuilt(site: Site) -> None:
    site.add(*(make_post("a", n, ("Tech",), body="<p>" + "y" * 20_000 + "</p>") for n in range(30)))
    site.builder.build()
    path = site.feed(ALL_KEY, "rss")
    stop = threading.Event()
    failures: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                etree.fromstring(path.read_bytes())
                reads += 1
            except (etree.XMLSyntaxError, OSError) as error:
                failures.append(repr(error))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(30, 45):
            site.builder.build(site.add(make_post("a", n, ("Tech",), body="<p>" + "z" * 20_000 + "</p>")))
    finally:
        stop.set()
        thread.join()
    assert failures == [] and reads > 0


# Discovery: index.html and index.opml ------------------------------------------------


def test_index_html_lists_every_feed_with_count_newest_date_and_format_links(site: Site) -> None:
    two_sources(site)
    site.builder.build()
    page = (site.config.feeds_dir / "index.html").read_text()
    document = etree.HTML(page)
    assert document.findtext(".//title") == "Test site"
    rows = {
        "".join(row.find("td").itertext()).strip("\xa0 "): [
            "".join(td.itertext()) for td in row.findall("td")[1:3]
        ]
        for row in document.iterfind(".//tbody/tr")
    }
    assert rows["Everything"] == ["7", "2026-03-01 20:00 UTC"]
    assert rows["Source: a"] == ["4", "2026-03-01 11:00 UTC"]
    assert rows["Rust"] == ["3", "2026-03-01 20:00 UTC"]
    assert len(rows) == len(KEYS)
    links = document.xpath("//tbody/tr[1]/td[4]/a/@href")
    assert links == ["all/rss.xml", "all/atom.xml", "all/feed.json"]
    alternates = document.xpath("//head/link[@rel='alternate']")
    assert {(a.get("type"), a.get("href")) for a in alternates} >= {
        ("application/rss+xml", BASE + "all/rss.xml"),
        ("application/atom+xml", BASE + "category/tech/atom.xml"),
        ("application/feed+json", BASE + "all/feed.json"),
    }


def test_index_opml_holds_every_feed_nested_by_category(site: Site) -> None:
    site.add(make_post("a", 1, ("Tech", "Python", "Web")), make_post("b", 2, ("Science",)))
    site.builder.build()
    opml = etree.parse(str(site.config.feeds_dir / "index.opml")).getroot()
    assert opml.tag == "opml" and opml.get("version") == "2.0"
    body = opml.find("body")

    def tree(node: etree._Element) -> list[Any]:
        return [
            (o.get("text"), o.get("xmlUrl")) if o.get("xmlUrl") else (o.get("text"), tree(o))
            for o in node.iterfind("outline")
        ]

    atom = BASE + "{}/atom.xml"
    assert tree(body) == [
        ("Science", [("Science (all)", atom.format("category/science"))]),
        ("Tech", [
            ("Tech (all)", atom.format("category/tech")),
            ("Python", [
                ("Python (all)", atom.format("category/tech/python")),
                ("Web", [("Web (all)", atom.format("category/tech/python/web"))]),
            ]),
        ]),
        ("Everything", atom.format("all")),
        ("Sources", [("a", atom.format("source/a")), ("b", atom.format("source/b"))]),
    ]  # fmt: skip
    feeds = [o for o in body.iter("outline") if o.get("xmlUrl")]
    assert all(o.get("type") == "rss" and o.get("title") for o in feeds)
    assert len(feeds) == 7


def test_switching_a_format_off_removes_its_files(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.add(make_post("a", 1, ("Tech",)))
    site.builder.build()
    assert site.feed(ALL_KEY, "json").exists()
    site.builder.config = make_config(tmp_path, formats=["rss", "atom"])
    site.builder.build()
    assert not site.feed(ALL_KEY, "json").exists() and site.feed(ALL_KEY, "rss").exists()
    assert "feed.json" not in (site.config.feeds_dir / "index.html").read_text()
    site.store.close()


def test_build_options_are_checked_in_the_config(tmp_path: Path) -> None:
    from aggregator.config import parse_config
    from aggregator.errors import ConfigError

    path = tmp_path / "aggregator.yaml"
    good = parse_config(
        "build:\n  max_content_chars: 5000\n  websub_hub: https://hub.example.org/\n"
        "  categories:\n    - path: [金融, 新浪财经]\n      title: 新浪\n",
        path,
    )
    assert good.build.max_content_chars == 5000
    assert good.build.categories[0].path == ("金融", "新浪财经")
    cases = {
        "build:\n  websub_hub: ftp://hub.example.org/\n": "build.websub_hub: not an http(s) URL",
        "build:\n  categories:\n    - path: News\n": "build.categories[0].path: path must be a list",
        "build:\n  max_content_chars: 0\n": "build.max_content_chars:",
        "build:\n  formats: []\n": "build.formats:",
        "build:\n  categories:\n    - path: [A]\n      titel: x\n": "build.categories[0].titel: unknown key",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(text, path)
        assert message in str(caught.value), (text, str(caught.value))
        assert str(caught.value).startswith(f"{path}:")


_html_pieces = st.sampled_from(
    ["<p>", "</p>", "<b>", "</b>", "<br>", " ", "\n", "&amp;", "&lt;b&gt;", "&#123;", "&eacute;", "word",
     "中文", "<!-- c -->", "<script>x()</script>", "<style>p{}</style>", "<a href='x'>", "</a>", "&", "<"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_html_pieces, max_size=400), st.integers(1, 300))
def test_summaries_from_the_start_of_a_body_equal_summaries_of_the_whole(
    pieces: list[str], limit: int
) -> None:
    from aggregator.text import plain_text, summary_of

    markup = "".join(pieces)
    assert summary_of(markup, limit) == plain_text(markup, limit=limit)
