"""End to end: sources served over real HTTP become post files and per-category feeds."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
import frontmatter
import pytest
from support.helpers import FIXTURES, run_cli, wait_for, write_config
from support.servers import AppServer

from aggregator.store import open_store

# The project's copy of the reference post that fixes the post format (a user's clone has nothing beside it).
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference" / "seed-post.md"


def _posts(root: Path) -> dict[str, frontmatter.Post]:
    return {str(p.relative_to(root)): frontmatter.load(p) for p in sorted(root.rglob("*.md"))}


def _feed(path: Path) -> feedparser.FeedParserDict:
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, (path, parsed.get("bozo_exception"))
    return parsed


@pytest.fixture
def three_formats(tmp_path: Path, feed_dir: Path, feed_server: AppServer) -> Path:
    for name in ("rss2.xml", "atom.xml", "rss1.xml"):
        shutil.copy(FIXTURES / "formats" / name, feed_dir / name)
    return write_config(
        tmp_path / "site",
        [
            {"name": "rss2", "url": feed_server.url("rss2.xml"), "categories": ["Tech", "Blogs"]},
            {"name": "atom", "url": feed_server.url("atom.xml"), "categories": ["Tech", "Journals"]},
            {"name": "rdf", "url": feed_server.url("rss1.xml"), "categories": ["Science"]},
        ],
    )


def test_three_formats_round_trip_into_posts_and_feeds(three_formats: Path) -> None:
    result = run_cli("fetch", config=three_formats)
    assert result.returncode == 0, result.stderr
    site = three_formats.parent
    posts = _posts(site / "posts")
    assert len(posts) == 6
    by_title = {post["title"]: post for post in posts.values()}
    assert set(by_title) == {
        "First RSS post", "Second RSS post & more", "Atom entry one", "Atom entry two",
        "RDF item A", "RDF item B",
    }  # fmt: skip
    first = by_title["First RSS post"]
    assert first["categories"] == ["Tech", "Blogs"]
    assert first["author"] == "Alice"
    assert first["date"] == "Mon, 05 Oct 2026 08:00:00 GMT"
    assert first["link"] == "https://rss2.example.org/posts/first"
    assert first["id"] == "https://rss2.example.org/posts/first"
    assert first["source"] == "rss2"
    assert first["comments"] is False
    # Relative URLs resolved against the entry; the image is the lead image.
    assert 'href="https://rss2.example.org/relative/link"' in first.content
    assert first["headimg"] == first["thumbnail"] == "https://rss2.example.org/posts/images/one.png"
    second = by_title["Second RSS post & more"]
    assert "<script" not in second.content and "alert" not in second.content
    assert "&#123; y(); &#125;" in second.content
    assert second["date"] == "Tue, 06 Oct 2026 07:30:00 GMT"
    assert second["enclosures"] == [
        {"url": "https://rss2.example.org/audio/second.mp3", "type": "audio/mpeg", "length": 12345}
    ]
    atom_one = by_title["Atom entry one"]
    assert "javascript" not in atom_one.content
    assert atom_one["headimg"] == "https://atom.example.org/thumbs/one.jpg"
    assert atom_one["author"] == "Bob"
    assert by_title["Atom entry two"]["author"] == "Atom Feed Author"
    assert by_title["RDF item A"]["author"] == "Carol"

    feeds = site / "feeds"
    expected = {
        "all": 6,
        "category/tech": 4,
        "category/tech/blogs": 2,
        "category/tech/journals": 2,
        "category/science": 2,
        "source/rss2": 2,
        "source/atom": 2,
        "source/rdf": 2,
    }
    for folder, count in expected.items():
        for name in ("rss.xml", "atom.xml"):
            parsed = _feed(feeds / folder / name)
            assert len(parsed.entries) == count, (folder, name)
        document = json.loads((feeds / folder / "feed.json").read_text(encoding="utf-8"))
        assert len(document["items"]) == count
    newest_first = [e.title for e in _feed(feeds / "all" / "atom.xml").entries]
    assert newest_first[0] == "Atom entry two"
    assert newest_first[-1] == "RDF item A"
    rss = _feed(feeds / "category" / "tech" / "blogs" / "rss.xml")
    assert rss.feed.links[-1].href if rss.feed.get("links") else True
    item = rss.entries[0]
    assert item.link and item.id and item.title and item.get("content") and item.get("summary")
    assert {t.term for t in item.tags} >= {"Tech", "Blogs"}
    assert (feeds / "index.html").exists() and (feeds / "index.opml").exists()


def test_second_run_writes_nothing_and_a_changed_entry_updates_in_place(
    three_formats: Path, feed_dir: Path
) -> None:
    assert run_cli("fetch", config=three_formats).returncode == 0
    site = three_formats.parent
    before = {p: p.stat().st_mtime_ns for p in (site / "posts").rglob("*.md")}
    feeds_before = {p: p.stat().st_mtime_ns for p in (site / "feeds").rglob("*") if p.is_file()}

    assert run_cli("fetch", config=three_formats).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in (site / "posts").rglob("*.md")} == before
    assert {p: p.stat().st_mtime_ns for p in (site / "feeds").rglob("*") if p.is_file()} == feeds_before

    rss2 = feed_dir / "rss2.xml"
    rss2.write_text(rss2.read_text().replace("The <b>first</b> post", "The <b>revised</b> post"))
    assert run_cli("fetch", config=three_formats).returncode == 0
    after = {p: p.stat().st_mtime_ns for p in (site / "posts").rglob("*.md")}
    assert after.keys() == before.keys(), "a changed entry keeps its file; no duplicate"
    changed = [p for p in after if after[p] != before[p]]
    assert len(changed) == 1
    post = frontmatter.load(changed[0])
    assert "revised" in post.content
    assert post["date"] == "Mon, 05 Oct 2026 08:00:00 GMT"
    assert "revised" in (site / "feeds" / "all" / "rss.xml").read_text()


def _undated_feed(*guids: str) -> str:
    items = "".join(
        f"<item><title>{g}</title><guid>{g}</guid><description>{g} body</description></item>" for g in guids
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>U</title>{items}</channel></rss>'


def test_an_undated_entry_keeps_its_first_seen_date_when_fetched_again(tmp_path: Path) -> None:
    """Posts are made in parser workers with 'now' as the date fallback; the store's first sight wins."""
    feed = tmp_path / "undated.xml"
    feed.write_text(_undated_feed("u1"))
    config = write_config(tmp_path, [{"name": "undated", "url": "undated.xml"}])
    assert run_cli("fetch", config=config).returncode == 0
    (first_path,) = (tmp_path / "posts").rglob("*.md")
    first = frontmatter.load(first_path)
    first_date = parsedate_to_datetime(first["date"])
    assert first["first_seen"] == first["date"]
    mtime = first_path.stat().st_mtime_ns
    # The next fetch must happen in a later second than the first sight, or this proves nothing.
    wait_for(lambda: datetime.now(UTC).replace(microsecond=0) > first_date, timeout=3, what="a new second")

    feed.write_text(_undated_feed("u1", "u2"))  # changed: fetched and parsed again
    assert run_cli("fetch", config=config).returncode == 0
    posts = {post["id"]: (path, post) for path, post in _posts(tmp_path / "posts").items()}
    assert set(posts) == {"u1", "u2"}
    assert posts["u1"][1]["date"] == first["date"], "the first sight is kept"
    assert (tmp_path / "posts" / posts["u1"][0]).stat().st_mtime_ns == mtime, "and the file not rewritten"
    assert parsedate_to_datetime(posts["u2"][1]["date"]) > first_date


def test_reference_post_is_reproduced(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "reference" / "sina-finance.xml", tmp_path / "sina-finance.xml")
    config = write_config(
        tmp_path,
        [
            {
                "name": "新浪财经-国内",
                "url": "sina-finance.xml",
                "categories": ["金融", "新浪财经", "新浪财经－国內"],
                "author": "新浪财经",
                "trusted": True,
            }
        ],
    )
    assert run_cli("fetch", config=config).returncode == 0
    (path,) = (tmp_path / "posts").rglob("*.md")
    ours = frontmatter.load(path)
    reference = frontmatter.load(REFERENCE)
    for key, value in reference.metadata.items():
        assert ours[key] == value, key
    assert ours.content == reference.content
    assert ours["link"] and ours["id"] == "doc-ikqcfnca6911111" and ours["source"] == "新浪财经-国内"
    # Chinese category names stay readable in the feed paths.
    assert (tmp_path / "feeds" / "category" / "金融" / "新浪财经" / "新浪财经-国內" / "rss.xml").exists()


def test_a_dead_source_does_not_stop_the_others(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    shutil.copy(FIXTURES / "formats" / "rss2.xml", feed_dir / "ok.xml")
    config = write_config(
        tmp_path / "site",
        [
            {"name": "dead", "url": "http://127.0.0.1:9/feed.xml"},
            {"name": "missing", "url": feed_server.url("missing.xml")},
            {"name": "ok", "url": feed_server.url("ok.xml"), "categories": ["A"]},
        ],
    )
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr
    assert "source=dead outcome=error" in result.stderr and "cannot connect" in result.stderr
    assert "source=missing outcome=error status=404" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "site" / "posts").rglob("*.md"))) == 2


def test_retention_follows_a_reloaded_config(tmp_path: Path) -> None:
    """The updater makes the retention policy once per config, and a reload's limits apply at once."""
    import asyncio

    from aggregator.config import load_config
    from aggregator.pipeline import Updater

    def local_feed(count: int) -> None:
        items = "".join(
            f"<item><guid>https://local.example.org/{n}</guid><title>Post {n}</title>"
            f"<pubDate>Mon, {n + 1:02d} Mar 2026 10:00:00 GMT</pubDate></item>"
            for n in range(count)
        )
        feed = f"<rss version='2.0'><channel><title>L</title>{items}</channel></rss>"
        (tmp_path / "local.xml").write_text(feed)

    def configured(max_posts: int) -> Path:
        source = {"name": "local", "url": "local.xml", "retention": {"max_posts": max_posts}}
        return write_config(tmp_path, [source, {"name": "other", "url": "file:///nonexistent/other.xml"}])

    async def fetch_twice() -> None:
        local_feed(5)
        config = load_config(configured(3))
        with open_store(config) as store:
            updater = Updater(config, store)
            try:
                await updater.update(config.source_named("local"))
                assert len(list((tmp_path / "posts").rglob("*.md"))) == 3
                updater.reconfigure(load_config(configured(2)))
                local_feed(6)  # changed, so it is parsed and saved again
                await updater.update(updater.config.source_named("local"))
                assert sorted(p.name.split("-")[1] for p in (tmp_path / "posts").rglob("*.md")) == ["4", "5"]
            finally:
                await updater.aclose()

    asyncio.run(fetch_twice())
