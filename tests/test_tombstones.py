"""A post deleted by hand stays deleted: it becomes a tombstone, listed and undone by the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.faultserver import FaultServer
from support.helpers import run_cli, write_config
from support.indexes import BACKENDS, open_test_store

from aggregator.model import Outcome, Post
from aggregator.postfile import read as read_post
from aggregator.store import PostStore, open_store


def rss(*items: tuple[str, str]) -> bytes:
    """Items as (guid, title); each title is also its body, so a new title is a change upstream."""
    body = "".join(
        f"<item><title>{title}</title><link>http://127.0.0.1/p/{guid}</link><guid>{guid}</guid>"
        f"<pubDate>Mon, 05 Oct 2026 08:00:00 GMT</pubDate><description>{title}</description></item>"
        for guid, title in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed</title>'
        f"<link>http://127.0.0.1/</link><description>d</description>{body}</channel></rss>"
    ).encode()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def _titles(posts: Path) -> list[str]:
    return sorted(read_post(path).title for path in posts.rglob("*.md"))


def test_a_post_deleted_by_hand_is_not_written_again_until_restored(
    tmp_path: Path, server: FaultServer
) -> None:
    server.feed("/feed.xml", rss(("a", "First"), ("b", "Second")), etag='"v1"')
    config = write_config(tmp_path, [{"name": "blog", "url": server.url("/feed.xml")}])
    posts = tmp_path / "posts"
    assert run_cli("fetch", config=config).returncode == 0
    (doomed,) = [p for p in posts.rglob("*.md") if read_post(p).id == "a"]
    doomed.unlink()

    # Upstream revises the deleted entry; the next fetch (no build in between) must not write it back.
    server.feed("/feed.xml", rss(("a", "First, revised"), ("b", "Second")), etag='"v2"')
    fetched = run_cli("fetch", config=config)
    assert fetched.returncode == 0, fetched.stderr
    assert _titles(posts) == ["Second"]
    listed = json.loads(run_cli("tombstones", "--json", config=config, check=True).stdout)
    assert [(t["source"], t["id"], t["title"], t["reason"]) for t in listed] == [
        ("blog", "a", "First", "deleted")
    ]
    assert listed[0]["removed"]
    text = run_cli("tombstones", config=config, check=True).stdout
    assert "blog" in text and "First" in text and "deleted" in text
    verify = run_cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout
    # Nor does a later fetch or build bring it back.
    server.feed("/feed.xml", rss(("a", "First, revised again"), ("b", "Second")), etag='"v3"')
    assert run_cli("fetch", config=config).returncode == 0
    assert run_cli("build", config=config).returncode == 0
    assert _titles(posts) == ["Second"]

    unknown = run_cli("tombstones", "restore", "blog", "nope", config=config)
    assert unknown.returncode == 2 and "no tombstone for blog/nope" in unknown.stderr
    restored = run_cli("tombstones", "restore", "blog", "a", config=config)
    assert restored.returncode == 0, restored.stderr
    assert "next fetch" in restored.stdout
    assert json.loads(run_cli("tombstones", "--json", config=config, check=True).stdout) == []
    # The feed did not change since the last fetch, yet the restored entry is written: the restore
    # cleared the source's validators, so the next fetch reads the whole feed.
    requests = server.count("/feed.xml")
    assert run_cli("fetch", config=config).returncode == 0
    assert server.count("/feed.xml") == requests + 1
    assert _titles(posts) == ["First, revised again", "Second"]
    assert run_cli("verify", config=config).returncode == 0


NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _post(entry_id: str, title: str = "Hello", body: str = "<p>Body</p>") -> Post:
    return Post(
        source="src",
        id=entry_id,
        title=title,
        link=f"https://example.org/{entry_id}",
        categories=("News",),
        author="Ann",
        comments=False,
        date=datetime(2026, 4, 1, 8, 0, 0, tzinfo=UTC),
        updated=None,
        headimg=None,
        tags=(),
        enclosures=(),
        body=body,
        first_seen=datetime(2026, 4, 2, 9, 0, 0, tzinfo=UTC),
    )


@pytest.fixture(params=BACKENDS)
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PostStore]:
    """A store on SQLite, then the same test on PostgreSQL."""
    with open_test_store(tmp_path, request.param, request, fsync="off") as opened:
        yield opened


def test_a_deletion_is_noticed_by_a_save_that_sees_the_entry_unchanged(store: PostStore) -> None:
    (saved,) = store.save([_post("x")], NOW)
    saved.path.unlink()
    (again,) = store.save([_post("x")], NOW + timedelta(hours=1))
    assert again.outcome is Outcome.DELETED and not saved.path.exists()
    assert store.verify() == []
    assert [(t.entry_id, t.reason) for t in store.index.tombstones()] == [("x", "deleted")]
    # A changed entry later, or a sync with the files, does not resurrect it.
    (later,) = store.save([_post("x", body="<p>New</p>")], NOW + timedelta(hours=2))
    assert later.outcome is Outcome.DELETED and not saved.path.exists()


def test_sync_and_reindex_record_hand_deletions(store: PostStore) -> None:
    first, second = store.save([_post("x", title="Ex"), _post("y", title="Why")], NOW)
    first.path.unlink()
    store.sync_with_files()
    second.path.unlink()
    assert store.reindex() == 0
    assert sorted((t.entry_id, t.title, t.reason) for t in store.index.tombstones()) == [
        ("x", "Ex", "deleted"),
        ("y", "Why", "deleted"),
    ]
    results = store.save([_post("x", title="Ex"), _post("y", title="Why")], NOW + timedelta(hours=1))
    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.DELETED]
    assert store.index.post_count() == 0 and store.verify() == []


def test_a_file_put_back_by_hand_lifts_its_tombstone(store: PostStore) -> None:
    (saved,) = store.save([_post("x")], NOW)
    content = saved.path.read_bytes()
    saved.path.unlink()
    store.sync_with_files()
    assert len(store.index.tombstones()) == 1
    saved.path.write_bytes(content)
    store.sync_with_files()
    assert store.index.tombstones() == [] and store.index.post_count() == 1
    (again,) = store.save([_post("x")], NOW + timedelta(hours=1))
    assert again.outcome is Outcome.UNCHANGED


def test_restore_lifts_the_tombstone_and_clears_the_validators(store: PostStore) -> None:
    from aggregator.state import SourceState

    (saved,) = store.save([_post("x")], NOW)
    store.index.save_source_state(
        SourceState(name="src", etag='"e"', last_modified="yesterday", error_streak=1)
    )
    saved.path.unlink()
    store.sync_with_files()
    (restored,) = store.index.restore_tombstones("src", ["x"])
    assert restored.entry_id == "x" and store.index.tombstones() == []
    state = store.index.source_state("src")
    assert (state.etag, state.last_modified, state.error_streak) == (None, None, 1)
    (again,) = store.save([_post("x")], NOW + timedelta(hours=1))
    assert again.outcome is Outcome.NEW and again.path.exists()


def test_an_update_that_notices_a_deletion_names_the_feeds_the_post_leaves(tmp_path: Path) -> None:
    """The daemon rebuilds only the feeds an update names: a post found deleted must leave them."""
    import asyncio

    from aggregator.config import load_config
    from aggregator.keys import category_key, source_key
    from aggregator.pipeline import Updater
    from aggregator.publish.builder import FeedBuilder
    from aggregator.verify import verify

    feed = tmp_path / "local.xml"
    feed.write_bytes(rss(("a", "First"), ("b", "Second")))
    source = {"name": "local", "url": "local.xml", "categories": ["Mine"]}
    config = load_config(write_config(tmp_path, [source]))

    async def scenario() -> frozenset[str]:
        with open_store(config) as store:
            updater = Updater(config, store)
            try:
                await updater.update(config.source_named("local"))
                FeedBuilder(config, store).build(None)
                (doomed,) = [p for p in config.posts_dir.rglob("*.md") if read_post(p).id == "a"]
                doomed.unlink()
                feed.write_bytes(rss(("a", "First, revised"), ("b", "Second")))
                result = await updater.update(config.source_named("local"))
                FeedBuilder(config, store).build(set(result.touched_keys))
                assert verify(config, store).problems == ()
                return result.touched_keys
            finally:
                await updater.aclose()

    touched = asyncio.run(scenario())
    assert {"all", source_key("local"), category_key(["Mine"])} <= touched
    assert _titles(config.posts_dir) == ["Second"]


def test_a_crash_between_tombstone_and_index_is_reported_and_settled(store: PostStore) -> None:
    """Tombstones commit before the index forgets the post; a crash in between leaves both."""
    kept, pruned = store.save([_post("kept"), _post("pruned")], NOW)
    store.index.bury([("src", "pruned")], "retention", NOW)  # as prune does, then "crash"
    assert store.verify() == ["src/pruned has a tombstone (retention) but the index lists it"]
    store.sync_with_files()
    assert store.verify() == [] and not pruned.path.exists() and kept.path.exists()
    assert [(t.entry_id, t.reason) for t in store.index.tombstones()] == [("pruned", "retention")]
