"""Hostile and awkward entries, served over real HTTP, each become a post that reads back faithfully.

One JSON Feed (it can carry NUL and control characters, which XML cannot) and one
RSS 2.0 file hold the table; ``aggregator fetch`` ingests them; every post file is
read back both by our reader and by a plain YAML front-matter reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import frontmatter
import pytest
from support.helpers import run_cli, write_config
from support.servers import AppServer

from aggregator.postfile import read as read_post

LONG_TITLE = ("长标题 long title " * 7000)[:100_000]
# (id, JSON Feed item fields, the title the post must have)
TABLE: list[tuple[str, dict[str, Any], str]] = [
    (
        "chinese",
        {"title": "海关总署：加强关企合作", "date_published": "2021-07-15T13:48:14Z"},
        "海关总署：加强关企合作",
    ),
    ("emoji", {"title": "Launch 🚀🔥 день 👩‍👩‍👧"}, "Launch 🚀🔥 день 👩‍👩‍👧"),
    ("rtl", {"title": "مرحبا بالعالم \u202eabc"}, "مرحبا بالعالم \u202eabc"),
    ("dashes", {"title": "---"}, "---"),
    ("dots", {"title": "..."}, "..."),
    ("colon", {"title": "key: value: more"}, "key: value: more"),
    ("quotes", {"title": "'single' \"double\" `back`"}, "'single' \"double\" `back`"),
    ("newlines", {"title": "line one\nline two\r\n---\nthree"}, "line one line two --- three"),
    ("python-tag", {"title": "!!python/object:os.system"}, "!!python/object:os.system"),
    ("yes", {"title": "yes"}, "yes"),
    ("no", {"title": "no"}, "no"),
    ("null", {"title": "null"}, "null"),
    ("tilde", {"title": "~"}, "~"),
    ("octal", {"title": "0123"}, "0123"),
    ("float", {"title": "1e3"}, "1e3"),
    ("date-string", {"title": "2021-07-15"}, "2021-07-15"),
    ("datetime-string", {"title": "2021-07-15 13:48:14"}, "2021-07-15 13:48:14"),
    ("yaml-syntax", {"title": "- [a, {b: c}] # &x *x | > %"}, "- [a, {b: c}] # &x *x | > %"),
    ("long", {"title": LONG_TITLE}, LONG_TITLE.strip()),
    ("nul-control", {"title": "nul\x00bell\x07esc\x1b del\x7f end"}, "nulbellesc del end"),
    ("no-title", {"content_html": "<p>Only <b>text</b> here</p>"}, "Only text here"),
    (
        "no-title-no-text",
        {"url": "https://hostile.example.org/bare", "content_html": ""},
        "https://hostile.example.org/bare",
    ),
    ("far-future", {"title": "Future", "date_published": "9999-12-31T23:59:59Z"}, "Future"),
    ("epoch", {"title": "Epoch", "date_published": "1970-01-01T00:00:00Z"}, "Epoch"),
    ("../../../etc/passwd", {"title": "Traversal id"}, "Traversal id"),
    ("/absolute/id", {"title": "Slash id"}, "Slash id"),
    ("dup", {"title": "First of the duplicates"}, "First of the duplicates"),
]


def _items() -> list[dict[str, Any]]:
    items = []
    for ident, fields, _title in TABLE:
        item = {"id": ident, "content_html": f"<p>{ident}</p>", **fields}
        items.append(item)
    items.append({"id": "dup", "title": "Second of the duplicates", "content_html": "<p>2</p>"})
    # No guid and no link: identity from title and content.
    items.append({"title": "Anonymous one", "content_html": "<p>a</p>"})
    items.append({"title": "Anonymous two", "content_html": "<p>b</p>"})
    return items


RSS_TITLES = ["---", "yes", "no", "null", "0123", "2021-07-15", "a: b", "!!python/object", "'\"", "~"]


def _rss() -> str:
    items = "".join(
        f"<item><guid isPermaLink='false'>rss-{n}</guid><title>{escape(title)}</title>"
        f"<description>&lt;p&gt;{n}&lt;/p&gt;</description>"
        f"<pubDate>Thu, 01 Jan 1970 00:00:{n:02d} GMT</pubDate></item>"
        for n, title in enumerate(RSS_TITLES)
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Hostile RSS</title>"
        f"<link>https://hostile-rss.example.org/</link><description>d</description>{items}</channel></rss>"
    )


@pytest.fixture
def site(tmp_path: Path, feed_dir: Path, feed_server: AppServer) -> Path:
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Hostile", "items": _items()}
    (feed_dir / "hostile.json").write_text(json.dumps(feed, ensure_ascii=False), encoding="utf-8")
    (feed_dir / "hostile.xml").write_text(_rss(), encoding="utf-8")
    return write_config(
        tmp_path / "site",
        [
            {"name": "hostile", "url": feed_server.url("hostile.json"), "categories": ["Odd", "Ends"]},
            {"name": "hostile-rss", "url": feed_server.url("hostile.xml"), "categories": ["Odd"]},
        ],
    )


def _by_id(posts_dir: Path) -> dict[tuple[str, str], Path]:
    found: dict[tuple[str, str], Path] = {}
    for path in posts_dir.rglob("*.md"):
        post = read_post(path)
        assert (post.source, post.id) not in found, f"duplicate post for {post.id!r}"
        found[(post.source, post.id)] = path
    return found


def _assert_valid_filename(posts_dir: Path, path: Path) -> None:
    relative = path.relative_to(posts_dir)
    assert path.resolve().is_relative_to(posts_dir.resolve())
    assert all(0 < len(part.encode()) <= 255 for part in relative.parts)
    assert not any(ord(ch) < 32 or ch in '\\:*?"<>|' for ch in str(relative))
    assert path.name.endswith(".md") and not path.name.startswith(".")


def test_hostile_entries_become_faithful_posts(site: Path) -> None:
    first = run_cli("fetch", "--json", config=site)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    posts_dir = site.parent / "posts"
    posts = _by_id(posts_dir)
    assert len(posts) == len(TABLE) + 2 + len(RSS_TITLES)
    for ident, _fields, title in TABLE:
        path = posts[("hostile", ident)]
        _assert_valid_filename(posts_dir, path)
        ours = read_post(path)
        assert ours.title == title, ident
        # A plain YAML front-matter reader (what a static site uses) sees the same values.
        generic = frontmatter.load(path)
        assert generic["title"] == title and generic["id"] == ident, ident
        assert generic["categories"] == ["Odd", "Ends"]
        assert isinstance(generic["date"], str) and generic["date"].endswith(" GMT")
    assert "Second of the duplicates" not in {read_post(p).title for p in posts.values()}
    anonymous = {read_post(p).title for (src, i), p in posts.items() if i.startswith("urn:sha256:")}
    assert anonymous == {"Anonymous one", "Anonymous two"}
    assert read_post(posts[("hostile", "far-future")]).date.year == 9999
    assert frontmatter.load(posts[("hostile", "epoch")])["date"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert posts[("hostile", "far-future")].parent.parent.name == "9999"
    for n, title in enumerate(RSS_TITLES):
        path = posts[("hostile-rss", f"rss-{n}")]
        _assert_valid_filename(posts_dir, path)
        assert read_post(path).title == title
        assert frontmatter.load(path)["title"] == title
    undated = read_post(posts[("hostile", "yes")])
    assert undated.date == undated.first_seen

    # A second run writes nothing: undated entries keep their first-seen date.
    mtimes = {p: p.stat().st_mtime_ns for p in posts.values()}
    second = run_cli("fetch", "--json", config=site)
    report = json.loads(second.stdout)
    assert [(s["new"], s["updated"]) for s in report["sources"]] == [(0, 0), (0, 0)]
    assert {p: p.stat().st_mtime_ns for p in posts_dir.rglob("*.md")} == mtimes

    # The index is a cache of these files.
    assert run_cli("reindex", config=site).stdout.strip() == f"indexed {len(posts)} posts"
    verify = run_cli("verify", config=site)
    assert verify.returncode == 0 and verify.stdout.startswith("consistent"), verify.stdout
    third = json.loads(run_cli("fetch", "--json", config=site).stdout)
    assert [(s["new"], s["updated"]) for s in third["sources"]] == [(0, 0), (0, 0)]
    assert {p: p.stat().st_mtime_ns for p in posts_dir.rglob("*.md")} == mtimes

    # The built feeds carry the hostile titles intact.
    feed = json.loads((site.parent / "feeds" / "all" / "feed.json").read_text(encoding="utf-8"))
    titles = {item.get("title") for item in feed["items"]}
    assert "!!python/object:os.system" in titles and "---" in titles
