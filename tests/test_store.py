"""The store: exact post files, stable identity, updates in place, a rebuildable versioned index."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.indexes import BACKENDS, open_test_store, persisted_rows
from support.posts import make_post

from aggregator.decide import FREE_REWRITES, REWRITE_MIN_GAP
from aggregator.errors import StoreError
from aggregator.files import TEMP_SUFFIX, sweep_temp_files
from aggregator.index.deferral import STATE_BATCH
from aggregator.index.schema import MIGRATIONS as _MIGRATIONS
from aggregator.index.schema import SCHEMA_VERSION
from aggregator.keys import category_key, slugify
from aggregator.model import Enclosure, EntryData, Outcome, SourceRules
from aggregator.normalize import normalize
from aggregator.postfile import read as read_post
from aggregator.postfile import relpath as post_relpath
from aggregator.postfile import render as render_post
from aggregator.retention import Limits, RetentionPolicy
from aggregator.state import SourceState
from aggregator.store import PostStore
from aggregator.text import clean_text, plain_text, summary_of

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PostStore]:
    """A store on SQLite, then the same test on PostgreSQL."""
    with open_test_store(tmp_path, request.param, request, fsync="off") as opened:
        yield opened


def only_file(store: PostStore) -> Path:
    (path,) = store.posts_dir.rglob("*.md")
    return path


# Files ----------------------------------------------------------------------


def test_a_post_file_reads_back_exactly(tmp_path: Path) -> None:
    post = make_post(
        title="yes",
        id="0123",
        categories=("金融", "null"),
        author="no",
        headimg="https://i.example.org/a.jpg",
        tags=("2021-01-01", "!!python/object"),
        updated=datetime(2026, 4, 3, tzinfo=UTC),
        enclosures=(Enclosure("https://e.org/a.mp3", "audio/mpeg", 123),),
        body="\n  <p>x</p>\r\n\n---\n",
    )
    path = tmp_path / "p.md"
    path.write_bytes(render_post(post))
    assert read_post(path) == post
    assert read_post(path).content_hash == post.content_hash


def test_the_reference_keys_come_first_in_the_reference_format(tmp_path: Path) -> None:
    text = render_post(make_post(headimg="https://i.example.org/a.jpg")).decode()
    keys = [
        line.split(":")[0] for line in text.split("---\n")[1].splitlines() if not line.startswith((" ", "-"))
    ]
    assert keys[:7] == ["title", "categories", "headimg", "author", "comments", "date", "thumbnail"]
    assert "date: Wed, 01 Apr 2026 08:00:00 GMT" in text
    assert "first_seen: Thu, 02 Apr 2026 09:00:00 GMT" in text
    assert "thumbnail: https://i.example.org/a.jpg" in text
    assert "headimg" not in render_post(make_post()).decode()


def test_a_hand_written_post_with_iso_dates_is_read(tmp_path: Path) -> None:
    path = tmp_path / "hand.md"
    path.write_text("---\ntitle: Mine\nsource: s\nid: 7\ndate: 2024-02-03\n---\nText\n", encoding="utf-8")
    post = read_post(path)
    assert (post.title, post.id, post.date, post.body) == (
        "Mine",
        "7",
        datetime(2024, 2, 3, tzinfo=UTC),
        "Text",
    )
    path.write_text("no front matter", encoding="utf-8")
    with pytest.raises(StoreError):
        read_post(path)


@pytest.mark.parametrize(
    "name",
    ["..", ".", "/", "../../etc", "CON", "nul", "Com1", "LPT9", "a/b\\c", "\x00\x1f", "", "   ", "-_-"],
)
def test_slugs_are_safe_path_components(name: str) -> None:
    slug = slugify(name)
    assert slug and slug not in (".", "..")
    assert "/" not in slug and "\\" not in slug and "\x00" not in slug
    assert slug.lower() not in ("con", "nul", "com1", "lpt9")


def test_slugs_fold_case_and_keep_other_scripts() -> None:
    assert slugify("Hello World") == slugify("HELLO world") == "hello-world"
    assert slugify("海关总署：加强关企合作") == "海关总署-加强关企合作"
    assert len(slugify("海" * 500).encode()) <= 80


_text = st.text(st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=_text, body=_text, link=_text, entry_id=_text, source=st.text(min_size=1, max_size=40))
def test_any_post_round_trips_and_its_file_stays_inside_the_root(
    tmp_path: Path, title: str, body: str, link: str, entry_id: str, source: str
) -> None:
    rules = SourceRules(name=clean_text(source) or "s", categories=("A",))
    entry = EntryData(
        id=entry_id, link=link, title=title, title_is_html=False, content=body, summary=None,
        author=None, published=None, updated=None, tags=(), enclosures=(), images=(), base="",
    )  # fmt: skip
    post = normalize(entry, rules, NOW)
    relpath = post_relpath(post)
    root = (tmp_path / "root").resolve()
    target = (root / relpath).resolve()
    assert target.is_relative_to(root)
    assert Path(relpath).as_posix() == relpath, "four plain parts"
    assert len(relpath.split("/")) == 4
    assert all(0 < len(part.encode()) <= 255 for part in relpath.split("/"))
    assert not any(ch < " " for ch in relpath)
    assert relpath == post_relpath(post), "deterministic"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(render_post(post))
    assert read_post(target) == post


# Saving ---------------------------------------------------------------------


def test_save_new_then_unchanged_writes_nothing(store: PostStore) -> None:
    (result,) = store.save([make_post()], NOW)
    assert result.outcome is Outcome.NEW
    path = only_file(store)
    before = path.stat().st_mtime_ns
    (again,) = store.save([make_post()], NOW + timedelta(hours=1))
    assert again.outcome is Outcome.UNCHANGED
    assert path.stat().st_mtime_ns == before
    assert store.verify() == []


def test_a_changed_entry_is_rewritten_in_place_with_first_seen_kept(store: PostStore) -> None:
    store.save([make_post()], NOW)
    path = only_file(store)
    later = NOW + timedelta(days=40)
    changed = make_post(
        title="Hello, revised",
        body="<p>New</p>",
        date=datetime(2026, 6, 1, tzinfo=UTC),  # a new month: the file still stays put
        first_seen=later,
    )
    (result,) = store.save([changed], later)
    assert result.outcome is Outcome.UPDATED
    assert only_file(store) == path
    post = read_post(path)
    assert post.title == "Hello, revised" and post.body == "<p>New</p>"
    assert post.first_seen == datetime(2026, 4, 2, 9, 0, 0, tzinfo=UTC)
    assert post.updated == later
    assert store.index.post_count() == 1


def test_duplicate_ids_in_one_batch_first_wins(store: PostStore) -> None:
    results = store.save([make_post(title="First"), make_post(title="Second")], NOW)
    assert [r.outcome for r in results] == [Outcome.NEW]
    assert read_post(only_file(store)).title == "First"


def test_same_title_different_ids_get_different_files(store: PostStore) -> None:
    store.save([make_post(id="a"), make_post(id="b"), make_post(id="A")], NOW)
    names = sorted(p.name for p in store.posts_dir.rglob("*.md"))
    assert len(names) == 3 and len({n.casefold() for n in names}) == 3


def test_rewrite_cap_for_entries_that_change_on_every_fetch(store: PostStore) -> None:
    store.save([make_post(body="0")], NOW)
    moment = NOW
    outcomes = []
    for n in range(1, FREE_REWRITES + 3):
        moment += timedelta(minutes=30)
        (result,) = store.save([make_post(body=str(n))], moment)
        outcomes.append(result.outcome)
    assert outcomes == [Outcome.UPDATED] * FREE_REWRITES + [Outcome.CAPPED, Outcome.CAPPED]
    assert read_post(only_file(store)).body == str(FREE_REWRITES)
    # After the gap one more rewrite goes through, then the cap holds again.
    moment += REWRITE_MIN_GAP
    (late,) = store.save([make_post(body="late")], moment)
    assert late.outcome is Outcome.UPDATED
    (soon,) = store.save([make_post(body="soon")], moment + timedelta(minutes=1))
    assert soon.outcome is Outcome.CAPPED
    # A real revision (the entry's own updated date moves) is never held back, and resets the count.
    revised = make_post(body="revised", updated=moment + timedelta(minutes=2))
    (real,) = store.save([revised], moment + timedelta(minutes=2))
    assert real.outcome is Outcome.UPDATED
    (next_change,) = store.save([replace(revised, body="again")], moment + timedelta(minutes=3))
    assert next_change.outcome is Outcome.UPDATED


def test_a_file_written_before_a_crash_is_adopted_not_duplicated(store: PostStore) -> None:
    post = make_post()
    target = store.posts_dir / post_relpath(post)
    target.parent.mkdir(parents=True)
    target.write_bytes(render_post(post))  # the file landed, the index commit did not
    (result,) = store.save([post], NOW)
    assert result.outcome is Outcome.NEW and result.path == target
    assert list(store.posts_dir.rglob("*.md")) == [target]
    assert store.verify() == []


# Keeping the index a cache of the files ---------------------------------------


def test_first_seen_survives_reindex(store: PostStore) -> None:
    rules = SourceRules(name="src", categories=("A",))
    undated = EntryData(
        id="u1", link=None, title="Undated", title_is_html=False, content="<p>x</p>", summary=None,
        author=None, published=None, updated=None, tags=(), enclosures=(), images=(), base="",
    )  # fmt: skip
    seen = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    store.save([normalize(undated, rules, seen)], seen)
    assert store.reindex() == 1
    remembered = store.index.first_seen("src", ["u1"])["u1"]
    assert remembered == seen.replace(microsecond=0)
    (result,) = store.save([normalize(undated, rules, remembered)], seen + timedelta(days=3))
    assert result.outcome is Outcome.UNCHANGED
    assert read_post(only_file(store)).date == seen.replace(microsecond=0)


def test_reindex_restores_the_index_from_files(store: PostStore) -> None:
    store.save([make_post(id=str(n), title=f"T{n}") for n in range(5)], NOW)
    persisted_rows(store, "DELETE FROM posts")
    persisted_rows(store, "DELETE FROM post_feeds")
    assert store.verify() != []
    assert store.reindex() == 5
    assert store.verify() == []
    assert {p.title for p in store.index.feed_items("all", 10)} == {f"T{n}" for n in range(5)}
    # Nothing changed upstream: nothing is rewritten after a reindex.
    results = store.save([make_post(id=str(n), title=f"T{n}") for n in range(5)], NOW)
    assert {r.outcome for r in results} == {Outcome.UNCHANGED}


def test_reindex_keeps_one_file_per_entry(store: PostStore) -> None:
    store.save([make_post()], NOW)
    original = only_file(store)
    copy = original.with_name("copy-of-it.md")
    copy.write_bytes(original.read_bytes())
    os.utime(copy, ns=(original.stat().st_mtime_ns - 10**9,) * 2)
    assert store.reindex() == 1
    assert list(store.posts_dir.rglob("*.md")) == [original]


def test_hand_edits_and_deletions_are_picked_up_and_kept(store: PostStore) -> None:
    store.save([make_post(id="keep"), make_post(id="gone", title="Gone")], NOW)
    ((keep_path,),) = persisted_rows(store, "SELECT path FROM posts WHERE entry_id='keep'")
    ((gone_path,),) = persisted_rows(store, "SELECT path FROM posts WHERE entry_id='gone'")
    keep, gone = store.posts_dir / keep_path, store.posts_dir / gone_path
    keep.write_bytes(keep.read_bytes().replace(b"title: Hello", b"title: Edited by hand"))
    gone.unlink()
    touched = store.sync_with_files()
    assert "all" in touched
    assert [p.title for p in store.index.feed_items("all", 10)] == ["Edited by hand"]
    # The entry did not change upstream: the hand edit stays.
    (result,) = store.save([make_post(id="keep")], NOW + timedelta(hours=1))
    assert result.outcome is Outcome.UNCHANGED
    assert read_post(keep).title == "Edited by hand"
    assert store.verify() == []


def test_temporary_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    folder = tmp_path / "posts" / "s"
    folder.mkdir(parents=True)
    stale = folder / f".a.md.{int(dead.stdout)}.abcd1234{TEMP_SUFFIX}"
    live = folder / f".b.md.{os.getpid()}.abcd1234{TEMP_SUFFIX}"
    stale.write_text("half")
    live.write_text("half")
    assert sweep_temp_files(tmp_path / "posts") == 1
    assert not stale.exists() and live.exists()


# Schema versions ------------------------------------------------------------


def test_a_newer_index_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    index = tmp_path / "index.sqlite3"
    PostStore(tmp_path / "posts", index).close()
    with sqlite3.connect(index) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError) as raised:
        PostStore(tmp_path / "posts", index)
    message = str(raised.value)
    assert "schema version 99 is newer" in message and f"({SCHEMA_VERSION})" in message
    assert "upgrade aggregator" in message and "reindex" in message


def test_a_version_1_index_is_migrated_in_place(tmp_path: Path) -> None:
    index = tmp_path / "index.sqlite3"
    with sqlite3.connect(index) as db:
        db.executescript(_MIGRATIONS[1])
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute(
            "INSERT INTO posts (source, entry_id, path, title, link, author, date_ts, first_seen_ts, "
            "categories, tags, enclosures, body, summary, content_hash) "
            "VALUES ('s', 'e', 's/2026/01/x.md', 't', '', 'a', 0, 0, '[]', '[]', '[]', '', '', 'h1')"
        )
    with PostStore(tmp_path / "posts", index) as store:
        assert store.index.schema_version() == SCHEMA_VERSION
        assert store.index.db.execute("SELECT upstream_hash FROM posts").fetchone() == ("h1",)
        assert store.index.tombstones() == []


def test_a_version_4_index_with_spelt_category_keys_is_migrated_and_its_feeds_rebuilt(tmp_path: Path) -> None:
    """Up to schema 4 a category's key was its path as spelt: two spellings, one folder,
    the last one built won. The migration makes them one key, owed a rebuild."""
    from support.helpers import run_cli, write_config

    ascii_path, wide_path = ["Programming", "Vector - Latest"], ["programming", "Vector－Latest"]
    _local_feed(tmp_path / "a.xml", 2)
    (tmp_path / "b.xml").write_text(
        (tmp_path / "a.xml").read_text(encoding="utf-8").replace("local.example.org", "b.example.org"),
        encoding="utf-8",
    )
    config = write_config(
        tmp_path,
        [
            {"name": "a", "url": "a.xml", "categories": ascii_path},
            {"name": "b", "url": "b.xml", "categories": wide_path},
        ],
    )
    assert run_cli("fetch", config=config).returncode == 0
    folder = tmp_path / "feeds" / "category" / "programming" / "vector-latest"
    index = tmp_path / "data" / "index.sqlite3"
    # Turn the index back into what version 4 wrote, and the feeds into what it published.
    with sqlite3.connect(index) as db:
        rows = db.execute("SELECT source, entry_id, date_ts, categories FROM posts").fetchall()
        db.execute("DELETE FROM post_feeds WHERE feed_key LIKE 'category%'")
        db.execute("DELETE FROM feeds WHERE key LIKE 'category%'")
        for source, entry_id, date_ts, categories in rows:
            path = json.loads(categories)
            for depth in range(1, len(path) + 1):
                key = "\x1f".join(["category", *path[:depth]])
                db.execute("INSERT INTO post_feeds VALUES (?,?,?,?)", (key, source, entry_id, date_ts))
                db.execute("INSERT OR REPLACE INTO feeds VALUES (?, 'old', ?, 2, NULL)", (key, key))
        # A category whose posts are gone (they were deleted by hand), its feed still published.
        db.execute("INSERT INTO feeds VALUES (?, 'old', 'Gone', 1, NULL)", ("category\x1fGone",))
        db.execute("DELETE FROM pending_feeds")
        db.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    gone = tmp_path / "feeds" / "category" / "gone"
    gone.mkdir()
    for name in ("rss.xml", "atom.xml", "feed.json"):  # b was built last
        (folder / name).write_bytes((tmp_path / "feeds" / "source" / "b" / name).read_bytes())
        (gone / name).write_bytes((tmp_path / "feeds" / "source" / "b" / name).read_bytes())

    with PostStore(tmp_path / "posts", index) as store:
        assert store.index.schema_version() == SCHEMA_VERSION
        keys = set(store.index.feed_keys())
        assert {category_key(ascii_path), category_key(ascii_path[:1])} <= keys
        assert not [k for k in keys if k.startswith("category") and k != category_key(k.split("\x1f")[1:])]
        assert {category_key(ascii_path), category_key(ascii_path[:1])} <= store.index.pending_feed_keys()
        # The feed records are renamed too, so a category left without posts is removed as usual.
        published = [k for k, *_ in store.index.published_feeds() if k.startswith("category")]
        assert sorted(published) == sorted(category_key(p) for p in (["Gone"], wide_path[:1], wide_path))
        assert {store.index.feed_signature(key) for key in published} == {""}
        assert len(store.index.feed_items(category_key(wide_path), 10)) == 4
    stale = run_cli("verify", config=config)
    assert (
        stale.returncode == 1 and "category/programming/vector-latest/rss.xml is out of date" in stale.stdout
    )

    # The next fetch (nothing new upstream) builds what the migration left owed.
    assert run_cli("fetch", config=config).returncode == 0
    checked = run_cli("verify", config=config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(_rss_titles(folder / "rss.xml")) == 4
    assert not gone.exists()


# Retention ------------------------------------------------------------------


def test_retention_by_count_and_age_prunes_files_and_index(store: PostStore) -> None:
    days = [datetime(2026, 4, d, tzinfo=UTC) for d in range(1, 11)]
    store.save([make_post(id=f"a{n}", date=d) for n, d in enumerate(days)], NOW)
    store.save([make_post(source="other", id=f"b{n}", date=d) for n, d in enumerate(days)], NOW)
    policy = RetentionPolicy(
        overall=Limits(max_age=NOW - datetime(2026, 4, 3, tzinfo=UTC)),
        per_source={"src": Limits(max_posts=4)},
    )
    result = store.prune(policy, NOW)
    assert result.removed == 6 + 2  # src keeps its 4 newest; other loses its 2 oldest
    assert "all" in result.touched_keys and "source\x1fsrc" in result.touched_keys
    assert [p.id for p in store.index.feed_items("source\x1fsrc", 50)] == ["a9", "a8", "a7", "a6"]
    assert len(store.index.feed_items("source\x1fother", 50)) == 8
    assert len(list(store.posts_dir.rglob("*.md"))) == 12
    assert store.verify() == []
    # A pruned entry still upstream is not brought back.
    (again,) = store.save([make_post(id="a0", date=days[0])], NOW)
    assert again.outcome is Outcome.PRUNED
    assert store.index.post_count() == 12
    assert store.prune(RetentionPolicy(), NOW).removed == 0


def test_a_pruned_file_left_by_a_crash_is_removed_on_sync(store: PostStore) -> None:
    store.save([make_post()], NOW)
    path = only_file(store)
    saved = path.read_bytes()
    store.prune(RetentionPolicy(overall=Limits(max_posts=1)), NOW)
    assert path.exists()
    store.prune(RetentionPolicy(overall=Limits(max_age=timedelta(days=1))), NOW)
    assert not path.exists()
    path.write_bytes(saved)  # as if the process died between the index commit and the unlink
    store.sync_with_files()
    assert not path.exists() and store.index.post_count() == 0


# Through the command line, with a local file source ----------------------------


def _local_feed(path: Path, count: int) -> None:
    items = "".join(
        f"<item><guid>https://local.example.org/{n}</guid><title>Local post {n}</title>"
        f"<link>https://local.example.org/{n}</link><description>&lt;p&gt;Body {n}&lt;/p&gt;</description>"
        f"<pubDate>Mon, {n + 1:02d} Mar 2026 10:00:00 GMT</pubDate></item>"
        for n in range(count)
    )
    path.write_text(
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Local</title>"
        f"<link>https://local.example.org/</link><description>d</description>{items}</channel></rss>",
        encoding="utf-8",
    )


def _rss_titles(path: Path) -> list[str]:
    import feedparser

    return [entry.title for entry in feedparser.parse(path.read_bytes()).entries]


def test_hand_edited_and_deleted_posts_show_in_the_next_build(tmp_path: Path) -> None:
    from support.helpers import run_cli, write_config

    _local_feed(tmp_path / "local.xml", 3)
    config = write_config(tmp_path, [{"name": "local", "url": "local.xml", "categories": ["Mine"]}])
    assert run_cli("fetch", config=config).returncode == 0
    by_title = {read_post(p).title: p for p in (tmp_path / "posts").rglob("*.md")}
    edited = by_title["Local post 1"]
    edited.write_text(edited.read_text(encoding="utf-8").replace("Local post 1", "Renamed by hand"), "utf-8")
    by_title["Local post 0"].unlink()

    build = run_cli("build", config=config)
    assert build.returncode == 0, build.stderr
    for feed in ("all", "source/local", "category/mine"):
        assert _rss_titles(tmp_path / "feeds" / feed / "rss.xml") == ["Local post 2", "Renamed by hand"]
    verify = run_cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout
    # Entries that disappear upstream keep their posts; the hand edit survives a fetch.
    _local_feed(tmp_path / "local.xml", 1)
    assert run_cli("fetch", config=config).returncode == 0
    assert sorted(read_post(p).title for p in (tmp_path / "posts").rglob("*.md")) == [
        # "Local post 0" was deleted by hand: still upstream, but a tombstone keeps it out
        "Local post 2",
        "Renamed by hand",
    ]


def test_a_newer_index_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    from support.helpers import run_cli, write_config

    config = write_config(tmp_path, [])
    PostStore(tmp_path / "posts", tmp_path / "data" / "index.sqlite3").close()
    with sqlite3.connect(tmp_path / "data" / "index.sqlite3") as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    for command in ("fetch", "build", "reindex", "verify"):
        result = run_cli(command, config=config)
        assert result.returncode == 2, command
        assert (
            f"index schema version {SCHEMA_VERSION + 1} is newer than this program understands"
            in result.stderr
        )
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_retention_limits_prune_posts_and_feeds_through_the_cli(tmp_path: Path) -> None:
    from support.helpers import run_cli, write_config

    _local_feed(tmp_path / "local.xml", 6)
    config = write_config(
        tmp_path,
        [{"name": "local", "url": "local.xml", "categories": ["Mine"], "retention": {"max_posts": 4}}],
        retention={"max_posts": 3},
    )
    assert run_cli("fetch", config=config).returncode == 0
    assert len(list((tmp_path / "posts").rglob("*.md"))) == 3
    expected = ["Local post 5", "Local post 4", "Local post 3"]
    assert _rss_titles(tmp_path / "feeds" / "all" / "rss.xml") == expected
    # The pruned entries are still upstream; a touch of the file makes the next fetch read it.
    (tmp_path / "local.xml").write_text((tmp_path / "local.xml").read_text() + " ", encoding="utf-8")
    again = run_cli("fetch", "--json", config=config)
    assert '"new": 0' in again.stdout
    assert len(list((tmp_path / "posts").rglob("*.md"))) == 3
    assert run_cli("verify", config=config).returncode == 0
    # Age limits apply on build too (2026-03 posts are older than 1 day by now).
    config = write_config(
        tmp_path, [{"name": "local", "url": "local.xml", "categories": ["Mine"]}], retention={"max_age": "1d"}
    )
    assert run_cli("build", config=config).returncode == 0
    assert list((tmp_path / "posts").rglob("*.md")) == []
    assert not (tmp_path / "feeds" / "all" / "rss.xml").exists()


def test_feeds_an_interrupted_run_never_built_are_built_by_the_next_fetch(tmp_path: Path) -> None:
    from support.helpers import run_cli, write_config

    _local_feed(tmp_path / "local.xml", 2)
    config = write_config(tmp_path, [{"name": "local", "url": "local.xml", "categories": ["Mine"]}])
    assert run_cli("fetch", config=config).returncode == 0
    # As if a run died after its index commit and before its build.
    with PostStore(tmp_path / "posts", tmp_path / "data" / "index.sqlite3", fsync="off") as store:
        store.save([make_post(source="local", categories=("Mine",), title="Saved, never built")], NOW)
        assert {"all", "source\x1flocal", category_key(["Mine"])} <= store.index.pending_feed_keys()
    assert run_cli("fetch", config=config).returncode == 0  # the source itself is unchanged
    for feed in ("all", "source/local", "category/mine"):
        assert _rss_titles(tmp_path / "feeds" / feed / "rss.xml")[0] == "Saved, never built"
    with PostStore(tmp_path / "posts", tmp_path / "data" / "index.sqlite3", fsync="off") as store:
        assert store.index.pending_feed_keys() == set()
    assert run_cli("verify", config=config).returncode == 0


# Cross-source merging (off by default) ------------------------------------------


def test_canonical_links_ignore_tracking_and_spelling() -> None:
    from aggregator.normalize import canonical_link

    same = [
        "https://News.example.org/a/b?id=7&utm_source=rss&utm_medium=feed",
        "http://news.example.org:80/a/b?fbclid=x&id=7#comments",
        "https://news.example.org/a/b?id=7&gclid=1",
    ]
    assert len({canonical_link(url) for url in same}) == 1
    assert canonical_link("https://news.example.org/a/b?id=8") != canonical_link(same[0])
    assert canonical_link("javascript:alert(1)") == canonical_link("") == ""


def test_without_merging_two_sources_keep_two_posts(store: PostStore) -> None:
    store.save([make_post(source="a", link="https://e.org/x")], NOW)
    (result,) = store.save([make_post(source="b", link="https://e.org/x?utm_source=b")], NOW)
    assert result.outcome is Outcome.NEW
    assert store.index.post_count() == 2


def test_merging_folds_the_same_article_into_one_post(store: PostStore) -> None:
    import frontmatter

    first = make_post(source="a", id="a1", categories=("Tech",), link="https://e.org/x?utm_source=a")
    store.save([first], NOW)
    copy = make_post(source="b", id="b1", categories=("News", "World"), link="http://E.org/x#top")
    (result,) = store.save([copy], NOW, merge_by_link=True)
    assert result.outcome is Outcome.MERGED
    path = only_file(store)
    post = read_post(path)
    assert (post.source, post.id, post.categories) == ("a", "a1", ("Tech",))
    assert [(m.source, m.id, m.categories) for m in post.merged] == [("b", "b1", ("News", "World"))]
    assert frontmatter.load(path)["categories"] == [["Tech"], ["News", "World"]]  # Hexo's several hierarchies
    news, world, tech = category_key(["News"]), category_key(["News", "World"]), category_key(["Tech"])
    for key in ("source\x1fb", news, world, tech, "all"):
        assert [(p.source, p.id) for p in store.index.feed_items(key, 10)] == [("a", "a1")], key
    assert store.index.feed_items("all", 10)[0].categories == ("Tech", "News", "World")
    # The copy stays folded in: not written again, not duplicated.
    (again,) = store.save([copy], NOW + timedelta(hours=1), merge_by_link=True)
    assert again.outcome is Outcome.UNCHANGED
    # The target changes upstream: rewritten in place, the merge kept.
    (updated,) = store.save([replace(first, body="<p>new</p>")], NOW + timedelta(hours=2))
    assert updated.outcome is Outcome.UPDATED
    assert read_post(path).merged == post.merged and read_post(path).body == "<p>new</p>"
    # The index rebuilt from files knows the merge, and nothing is rewritten afterwards.
    assert store.reindex() == 1 and store.verify() == []
    (after,) = store.save([copy], NOW + timedelta(hours=3), merge_by_link=True)
    assert after.outcome is Outcome.UNCHANGED
    (target,) = store.save([replace(first, body="<p>new</p>")], NOW + timedelta(hours=3))
    assert target.outcome is Outcome.UNCHANGED
    assert [p.id for p in store.index.feed_items("source\x1fb", 10)] == ["a1"]
    # Retention prunes the post and its merged copies together.
    assert store.prune(RetentionPolicy(overall=Limits(max_age=timedelta(days=1))), NOW).removed == 1
    (gone,) = store.save([copy], NOW + timedelta(hours=4), merge_by_link=True)
    assert gone.outcome is Outcome.PRUNED
    assert store.index.post_count() == 0 and not path.exists()


def test_merging_through_the_cli(tmp_path: Path) -> None:
    from support.helpers import run_cli, write_config

    _local_feed(tmp_path / "one.xml", 2)
    _local_feed(tmp_path / "two.xml", 3)
    config = write_config(
        tmp_path,
        [
            {"name": "one", "url": "one.xml", "categories": ["First"]},
            {"name": "two", "url": "two.xml", "categories": ["Second"]},
        ],
        defaults={"merge_by_link": True},
    )
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr
    # The feeds share the links of posts 0 and 1; whichever source came first holds them.
    assert len(list((tmp_path / "posts").rglob("*.md"))) == 3
    for feed in ("all", "category/first", "category/second"):
        titles = _rss_titles(tmp_path / "feeds" / feed / "rss.xml")
        assert len(titles) == len(set(titles)), feed
    assert _rss_titles(tmp_path / "feeds" / "category" / "first" / "rss.xml") == [
        "Local post 1",
        "Local post 0",
    ]
    assert len(_rss_titles(tmp_path / "feeds" / "category" / "second" / "rss.xml")) == 3
    assert run_cli("verify", config=config).returncode == 0


@pytest.mark.parametrize("policy", ["file", "batch", "off"])
def test_every_fsync_policy_writes_the_same_posts(tmp_path: Path, policy: str) -> None:
    with PostStore(tmp_path / "posts", tmp_path / "index.sqlite3", fsync=policy) as store:
        results = store.save([make_post(id=str(n)) for n in range(3)], NOW)
        assert [r.outcome for r in results] == [Outcome.NEW] * 3
        assert all(read_post(r.path) == r.post for r in results)
        assert store.verify() == []


# Source states --------------------------------------------------------------


def _persisted_states(store: PostStore) -> dict[str, str]:
    """What another process reading the index would see."""
    return dict(
        persisted_rows(
            store, "SELECT name, state FROM state.sources", "SELECT name, state FROM source_states"
        )
    )


def test_deferred_states_are_read_back_at_once_and_written_in_groups(store: PostStore) -> None:
    with store.index.deferred_states():
        for i in range(STATE_BATCH - 1):
            store.index.save_source_state(SourceState(name=f"s{i}", etag=f'"{i}"'))
        assert _persisted_states(store) == {}, "nothing written yet: one group at the end"
        assert store.index.source_state("s7").etag == '"7"'
        assert len(store.index.all_source_states()) == STATE_BATCH - 1
        store.index.save_source_state(SourceState(name="last"))
        assert len(_persisted_states(store)) == STATE_BATCH, "a full group is written at once"
        assert store.index.source_state("s7").etag == '"7"', "read back from the index after the group"
        store.index.save_source_state(SourceState(name="s7", etag='"newer"'))
    assert len(_persisted_states(store)) == STATE_BATCH
    assert store.index.source_state("s7").etag == '"newer"'


def test_deferred_states_are_written_even_when_the_batch_fails(store: PostStore) -> None:
    with pytest.raises(RuntimeError), store.index.deferred_states():
        store.index.save_source_state(SourceState(name="kept", etag='"k"'))
        raise RuntimeError("a poll went wrong")
    assert set(_persisted_states(store)) == {"kept"}
    store.index.save_source_state(SourceState(name="direct"))
    assert set(_persisted_states(store)) == {"kept", "direct"}, "outside a batch: written at once"


def test_the_summary_is_stored_with_the_post(store: PostStore) -> None:
    """Made once beside the parse, so a build reads it instead of converting every body."""
    body = "<p>" + "word " * 200 + "</p>"
    store.save([make_post(body=body)], NOW)
    ((summary,),) = persisted_rows(store, "SELECT summary FROM posts")
    assert summary == summary_of(body) == plain_text(body, limit=280)
    assert summary.endswith("…") and len(summary) == 280


def test_a_state_written_during_a_batch_is_read_back_new(store: PostStore) -> None:
    store.index.save_source_state(SourceState(name="pre", etag='"old"'))
    with store.index.deferred_states():
        assert store.index.source_state("pre").etag == '"old"'
        store.index.save_source_state(SourceState(name="pre", etag='"new"'))
        for i in range(STATE_BATCH):  # the group with "pre" in it is written
            store.index.save_source_state(SourceState(name=f"s{i}"))
        assert store.index.source_state("pre").etag == '"new"'
    assert store.index.source_state("pre").etag == '"new"'
