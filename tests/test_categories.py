"""Categories that make the same folder are one category (issue 15, defect 1).

Two spellings of a category (``The Pioneer Vector - Latest`` and ``The Pioneer
Vector－Latest``, with a fullwidth hyphen) slug alike: their posts share one
feed, titled by the first spelling seen, and ``check`` warns. Each post file
keeps its categories as its source wrote them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import frontmatter
from lxml import etree
from support.helpers import run_cli, write_config
from support.servers import AppServer

from aggregator.categories import display_path, first_spellings, spelling_clashes, spelling_in
from aggregator.config import load_config
from aggregator.keys import category_key, category_slugs, feed_keys_for
from aggregator.model import Post
from aggregator.publish.builder import FeedBuilder
from aggregator.publish.opml import read_opml, write_opml
from aggregator.publish.specs import spec_for
from aggregator.store import PostStore
from aggregator.verify import verify

ASCII = "The Pioneer Vector - Latest"
FULLWIDTH = "The Pioneer Vector－Latest"  # U+FF0D FULLWIDTH HYPHEN-MINUS
FOLDER = "category/programming/the-pioneer-vector-latest"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _rss(name: str, count: int, day: int) -> str:
    items = "".join(
        f"<item><guid>https://{name}.example.org/{n}</guid><title>{name} post {n}</title>"
        f"<link>https://{name}.example.org/{n}</link><description>&lt;p&gt;Body {n}&lt;/p&gt;</description>"
        f"<pubDate>Mon, {day + n:02d} Mar 2026 10:00:00 GMT</pubDate></item>"
        for n in range(count)
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>{name}</title>"
        f"<link>https://{name}.example.org/</link><description>d</description>{items}</channel></rss>"
    )


def _titles(path: Path) -> list[str]:
    return [entry.title for entry in feedparser.parse(path.read_bytes()).entries]


def _two_spellings(tmp_path: Path, feed_dir: Path, feed_server: AppServer, **sections: Any) -> Path:
    (feed_dir / "ascii.xml").write_text(_rss("ascii", 2, 1), encoding="utf-8")
    (feed_dir / "wide.xml").write_text(_rss("wide", 3, 5), encoding="utf-8")
    return write_config(
        tmp_path,
        [
            {"name": "ascii", "url": feed_server.url("ascii.xml"), "categories": ["Programming", ASCII]},
            {"name": "wide", "url": feed_server.url("wide.xml"), "categories": ["programming", FULLWIDTH]},
        ],
        **sections,
    )


def test_two_spellings_publish_one_feed_that_verify_accepts(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    config_path = _two_spellings(tmp_path, feed_dir, feed_server)
    fetched = run_cli("fetch", config=config_path)
    assert fetched.returncode == 0, fetched.stderr
    checked = run_cli("verify", config=config_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    feeds = tmp_path / "feeds"
    titles = _titles(feeds / FOLDER / "rss.xml")
    assert sorted(titles) == sorted(
        [f"ascii post {n}" for n in range(2)] + [f"wide post {n}" for n in range(3)]
    )
    assert [p.name for p in (feeds / "category").iterdir()] == ["programming"]
    assert sorted(p.name for p in (feeds / "category" / "programming").iterdir()) == [
        "atom.xml",
        "feed.json",
        "rss.xml",
        "the-pioneer-vector-latest",
    ]
    # Titled by the first spelling in config order, at every level.
    channel = feedparser.parse((feeds / FOLDER / "rss.xml").read_bytes()).feed
    assert channel.title == f"Test site: Programming › {ASCII}"
    assert json.loads((feeds / FOLDER / "feed.json").read_bytes())["title"] == channel.title
    assert feedparser.parse((feeds / "category/programming/atom.xml").read_bytes()).feed.title == (
        "Test site: Programming"
    )

    # The OPML and the index page list the category once, under its parent.
    opml = etree.fromstring((feeds / "index.opml").read_bytes())
    urls = [o.get("xmlUrl") for o in opml.iter("outline") if o.get("xmlUrl")]
    assert len(urls) == len(set(urls))
    folders = [o.get("text") for o in opml.iter("outline") if not o.get("xmlUrl")]
    assert folders.count("Programming") == 1 and folders.count(ASCII) == 1 and FULLWIDTH not in folders
    nested = opml.find(f".//outline[@text='Programming']/outline[@text='{ASCII}']")
    assert nested is not None
    page = (feeds / "index.html").read_text(encoding="utf-8")
    assert page.count(f'href="{FOLDER}/rss.xml"') == 1
    assert FULLWIDTH not in page

    # Each post file keeps its categories as its source wrote them.
    written = {
        frontmatter.load(path)["source"]: frontmatter.load(path)["categories"]
        for path in (tmp_path / "posts").rglob("*.md")
    }
    assert written == {"ascii": ["Programming", ASCII], "wide": ["programming", FULLWIDTH]}

    # A second fetch with nothing new changes no feed file.
    before = {p: p.read_bytes() for p in feeds.rglob("*") if p.is_file()}
    assert run_cli("fetch", config=config_path).returncode == 0
    assert {p: p.read_bytes() for p in feeds.rglob("*") if p.is_file()} == before


# The rule, as pure functions ------------------------------------------------------


def test_spellings_that_make_one_folder_are_one_feed_key() -> None:
    assert category_slugs(["Programming", ASCII]) == ("programming", "the-pioneer-vector-latest")
    assert category_key(["Programming", ASCII]) == category_key(["programming", FULLWIDTH])
    assert category_key(["金融", "新浪财经－国內"]) == category_key(["金融", "新浪财经-国內"])
    assert category_key(["Programming", "Latest"]) != category_key(["Programming", "Latest news"])
    ascii_keys = feed_keys_for("ascii", ["Programming", ASCII])
    wide_keys = feed_keys_for("wide", ["programming", FULLWIDTH])
    assert ascii_keys[2:] == wide_keys[2:] and ascii_keys[:2] != wide_keys[:2]


def test_each_level_is_named_by_its_first_spelling_and_children_by_their_parents() -> None:
    paths = [("programming", FULLWIDTH), ("Programming", ASCII), ("Programming", "Rust")]
    names = first_spellings(paths)
    assert names == {
        ("programming",): "programming",
        ("programming", "the-pioneer-vector-latest"): FULLWIDTH,
        ("programming", "rust"): "Rust",
    }
    # "Rust" was first written under "Programming", but it nests under its parent's name.
    assert display_path(("programming", "rust"), names.get) == ("programming", "Rust")
    # A level nobody spelt keeps its slug.
    assert display_path(("programming", "go"), names.get) == ("programming", "go")


def test_a_posts_spelling_is_found_in_its_own_path_or_a_merged_copys() -> None:
    slugs = ("programming", "the-pioneer-vector-latest")
    assert spelling_in(slugs, [("programming", FULLWIDTH, "Deeper")]) == ("programming", FULLWIDTH)
    # A merged post's own path comes first; the copy's path is searched after it.
    assert spelling_in(slugs, [("Tech", "Programming"), ("Programming", ASCII)]) == ("Programming", ASCII)
    assert spelling_in(slugs, [("Programming",)]) is None


def test_clashes_name_the_later_place_and_the_first() -> None:
    paths = [
        (("Programming", ASCII), ["a0", "a1"]),
        (("Programming", ASCII), ["b0", "b1"]),  # the same spelling: no warning
        (("programming", FULLWIDTH), ["c0", "c1"]),
        (("Programming", ASCII, "x"), [None, None, "r0"]),  # a rule's levels above its own
    ]
    clashes = spelling_clashes(paths)
    assert [(c.place, c.spelling, c.first_place, c.first_spelling) for c in clashes] == [
        ("c0", "programming", "a0", "Programming"),
        ("c1", FULLWIDTH, "a1", ASCII),
    ]
    assert clashes[1].folder == FOLDER


# Titles at run time, and the index ---------------------------------------------------

START = datetime(2026, 3, 1, tzinfo=UTC)


def _post(source: str, number: int, categories: tuple[str, ...]) -> Post:
    return Post(
        source=source,
        id=f"https://{source}.example.org/{number}",
        title=f"{source} {number}",
        link=f"https://{source}.example.org/{number}",
        categories=categories,
        author="someone",
        comments=False,
        date=START + timedelta(hours=number),
        updated=None,
        headimg=None,
        tags=(),
        enclosures=(),
        body=f"<p>{number}</p>",
    )


def test_a_category_nobody_configured_is_titled_by_its_earliest_post(tmp_path: Path) -> None:
    """Posts of sources no longer in the config: no config spelling to go by."""
    config = load_config(write_config(tmp_path, []))
    feeds, child, parent = (
        config.feeds_dir,
        config.feeds_dir / FOLDER,
        config.feeds_dir / "category/programming",
    )

    def title(folder: Path) -> str:
        return str(feedparser.parse((folder / "rss.xml").read_bytes()).feed.title)

    def remove(source: str) -> set[str]:
        (path,) = [p for p in config.posts_dir.rglob("*.md") if p.parts[-4] == source]
        path.unlink()
        return store.sync_with_files()

    with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
        store.save(
            [
                _post("wide", 5, ("programming", FULLWIDTH)),
                _post("ascii", 3, ("Programming", ASCII)),
                _post("go", 1, ("programming", "Go")),
            ],
            NOW,
        )
        builder = FeedBuilder(config, store, processes=0)
        builder.build()
        assert verify(config, store).consistent
        assert title(parent) == "Test site: programming"  # the go post is the earliest
        assert title(child) == f"Test site: programming › {ASCII}"  # the ascii post is its earliest
        assert sorted(_titles(child / "rss.xml")) == ["ascii 3", "wide 5"]

        # The go post goes: its feeds are rebuilt, and the child's title follows its parent's new
        # name though none of its posts changed.
        touched = remove("go")
        assert category_key(["Programming", ASCII]) not in touched
        report = builder.build(touched)
        assert category_key(["Programming", ASCII]) in report.rendered
        assert verify(config, store).consistent
        assert (title(parent), title(child)) == (
            "Test site: Programming",
            f"Test site: Programming › {ASCII}",
        )

        builder.build(remove("ascii"))
        assert verify(config, store).consistent
        assert (title(parent), title(child)) == (
            "Test site: programming",
            f"Test site: programming › {FULLWIDTH}",
        )
        page = (feeds / "index.html").read_text(encoding="utf-8")
        assert FULLWIDTH in page and ASCII not in page

        # A full build of the same posts writes the same bytes.
        before = {p: p.read_bytes() for p in feeds.rglob("*") if p.is_file()}
        FeedBuilder(config, store, processes=0).build()
        assert {p: p.read_bytes() for p in feeds.rglob("*") if p.is_file()} == before


def test_reordered_sources_retitle_the_category_at_the_next_build(tmp_path: Path) -> None:
    """The daemon swaps in a reloaded config; its next build, whatever it was asked, retitles."""
    first = {"name": "a", "url": "https://a.example.org/feed", "categories": ["Programming", ASCII]}
    second = {"name": "b", "url": "https://b.example.org/feed", "categories": ["programming", FULLWIDTH]}
    config = load_config(write_config(tmp_path, [first, second]))
    with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
        store.save([_post("a", 1, ("Programming", ASCII)), _post("b", 2, ("programming", FULLWIDTH))], NOW)
        builder = FeedBuilder(config, store, processes=0)
        builder.build()
        assert feedparser.parse((config.feeds_dir / FOLDER / "rss.xml").read_bytes()).feed.title == (
            f"Test site: Programming › {ASCII}"
        )
        builder.config = load_config(write_config(tmp_path, [second, first]))
        report = builder.build(set())
        assert sorted(report.rendered) == sorted(
            [category_key(["programming"]), category_key(["programming", FULLWIDTH])]
        )
        assert feedparser.parse((config.feeds_dir / FOLDER / "rss.xml").read_bytes()).feed.title == (
            f"Test site: programming › {FULLWIDTH}"
        )
        assert verify(builder.config, store).consistent


def test_a_custom_title_given_under_another_spelling_applies(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            [{"name": "a", "url": "https://a.example.org/feed", "categories": ["Programming", ASCII]}],
            build={
                "categories": [{"path": ["programming", FULLWIDTH], "title": "Vector", "description": "V"}]
            },
        )
    )
    spec = spec_for(category_key(["Programming", ASCII]), config, ("Programming", ASCII))
    assert (spec.title, spec.description, str(spec.relative_dir)) == ("Vector", "V", FOLDER)


def test_a_category_rule_filing_under_another_spelling_shares_the_feed(tmp_path: Path) -> None:
    """Categories made at run time: a global rule adds a level the other source spells otherwise."""
    (tmp_path / "a.xml").write_text(_rss("a", 2, 1), encoding="utf-8")
    (tmp_path / "b.xml").write_text(_rss("b", 2, 5), encoding="utf-8")
    config_path = write_config(
        tmp_path,
        [
            {"name": "a", "url": "a.xml", "categories": ["Tech", "Releases"]},
            {"name": "b", "url": "b.xml", "categories": ["tech"]},
        ],
        rules=[{"title": "^b post 1$", "category": "RELEASES"}],
    )
    assert run_cli("fetch", config=config_path).returncode == 0
    checked = run_cli("verify", config=config_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    feed = tmp_path / "feeds" / "category" / "tech" / "releases" / "rss.xml"
    assert sorted(_titles(feed)) == ["a post 0", "a post 1", "b post 1"]
    assert feedparser.parse(feed.read_bytes()).feed.title == "Test site: Tech › Releases"
    assert sorted(p.name for p in (tmp_path / "feeds" / "category").iterdir()) == ["tech"]


# check, category_defaults and the subscription OPML -----------------------------------


def test_check_warns_of_two_spellings_naming_both_places(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    config_path = _two_spellings(
        tmp_path,
        feed_dir,
        feed_server,
        category_defaults=[{"path": ["PROGRAMMING"], "interval": "1h"}],
        build={"categories": [{"path": ["Programming", ASCII], "title": "Vector"}]},
    )
    result = run_cli("check", config=config_path)
    assert result.returncode == 0, result.stderr
    assert "ok, 2 sources" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    lines = config_path.read_text(encoding="utf-8").splitlines()
    first = next(n for n, line in enumerate(lines, 1) if line.strip() == "- Programming")
    later = next(n for n, line in enumerate(lines, 1) if line.strip() == f"- {FULLWIDTH}")
    assert any(
        w.startswith(f"warning: {config_path}:{later}: sources[1].categories[1]: {FULLWIDTH!r}")
        and f"sources[0].categories[1] at {config_path}:{first + 1}" in w
        and f"both make the folder {FOLDER}" in w
        for w in warnings
    ), warnings
    assert any(w.split(": ")[2] == "sources[1].categories[0]" for w in warnings), warnings
    assert any("category_defaults[0].path[0]: 'PROGRAMMING'" in w for w in warnings), warnings
    # build.categories spells it as the first source does: nothing to say about it.
    assert not any("build.categories" in w for w in warnings), warnings
    assert len(warnings) == 3, warnings

    # One spelling: no warning.
    alone = write_config(
        tmp_path / "alone",
        [{"name": "a", "url": "https://a.example.org/feed", "categories": ["Programming", ASCII]}],
    )
    quiet = run_cli("check", config=alone)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_category_defaults_apply_to_every_spelling_of_their_category(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            [
                {"name": "a", "url": "https://a.example.org/feed", "categories": ["Programming", ASCII]},
                {"name": "b", "url": "https://b.example.org/feed", "categories": ["programming", FULLWIDTH]},
            ],
            category_defaults=[{"path": ["Programming", FULLWIDTH], "interval": "1h"}],
        )
    )
    assert [config.interval_of(source) for source in config.sources] == [3600.0, 3600.0]


def test_exported_opml_has_one_folder_per_category(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            [
                {"name": "a", "url": "https://a.example.org/feed", "categories": ["Programming", ASCII]},
                {"name": "b", "url": "https://b.example.org/feed", "categories": ["programming", FULLWIDTH]},
            ],
        )
    )
    document = write_opml(config.sources, "Mine", NOW)
    assert sorted((f.categories, f.title) for f in read_opml(document)) == [
        (("Programming", ASCII), "a"),
        (("Programming", ASCII), "b"),
    ]


def test_verify_reports_a_feed_listed_twice_in_the_opml(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    config_path = _two_spellings(tmp_path, feed_dir, feed_server)
    assert run_cli("fetch", config=config_path).returncode == 0
    opml = tmp_path / "feeds" / "index.opml"
    text = opml.read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if f"{FOLDER}/atom.xml" in line)
    opml.write_text(text.replace(line, line + "\n" + line), encoding="utf-8")
    checked = run_cli("verify", config=config_path)
    assert checked.returncode == 1
    assert f"index.opml lists http://127.0.0.1:8080/{FOLDER}/atom.xml 2 times" in checked.stdout
