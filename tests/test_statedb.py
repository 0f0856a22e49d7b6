"""Source states and tombstones live in the state database, so losing the index loses neither.

The index is a cache of the post files; deleting it and running ``reindex`` must leave every
source's polling state (validators, backoff, gone, a learned permanent redirect) and every
tombstone as they were. An index made before the state database existed hands its states over.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.faultserver import FaultServer, status
from support.helpers import run_cli, write_config

from aggregator.config import load_config
from aggregator.index.schema import MIGRATIONS as _MIGRATIONS
from aggregator.model import Post
from aggregator.retention import Limits, RetentionPolicy
from aggregator.state import SourceState
from aggregator.store import PostStore

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def rss(*guids: str) -> bytes:
    items = "".join(
        f"<item><title>Post {g}</title><link>http://127.0.0.1/p/{g}</link><guid>{g}</guid>"
        f"<pubDate>Mon, 05 Oct 2026 08:00:00 GMT</pubDate><description>Body {g}</description></item>"
        for g in guids
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed</title>'
        f"<link>http://127.0.0.1/</link><description>d</description>{items}</channel></rss>"
    ).encode()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def _status(config: Path) -> dict[str, dict[str, object]]:
    result = run_cli("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def test_deleting_the_index_and_reindexing_keeps_every_source_state(
    tmp_path: Path, server: FaultServer
) -> None:
    server.feed("/new.xml", rss("m1", "m2"), etag='"v1"')
    server.redirect("/old.xml", server.url("/new.xml"), status=301)
    server.feed("/gone.xml", rss("g1"))
    server.add("/down.xml", status(500))
    config = write_config(
        tmp_path,
        [
            {"name": "moved", "url": server.url("/old.xml")},
            {"name": "gone", "url": server.url("/gone.xml")},
            {"name": "down", "url": server.url("/down.xml")},
        ],
    )
    assert run_cli("fetch", config=config).returncode == 0
    server.add("/gone.xml", status(410))
    # --force: "down" is in backoff, which a plain fetch of every source honours.
    assert run_cli("fetch", "--force", config=config).returncode == 0
    before = _status(config)
    assert before["gone"]["gone"] is True
    assert before["moved"]["permanent_url"] == server.url("/new.xml")
    assert before["moved"]["etag"] == '"v1"'
    assert before["down"]["error_streak"] == 2 and before["down"]["next_due"]
    # A post deleted by hand is a tombstone; it must survive too.
    (victim,) = [p for p in (tmp_path / "posts").rglob("*.md") if "post-m1" in p.name]
    victim.unlink()
    assert run_cli("build", config=config).returncode == 0
    tombstones_before = run_cli("tombstones", "--json", config=config, check=True).stdout

    index = load_config(config).index_path
    for path in index.parent.glob(index.name + "*"):  # the index and its WAL files
        path.unlink()
    reindex = run_cli("reindex", config=config)
    assert reindex.returncode == 0, reindex.stderr
    assert reindex.stdout.strip() == "indexed 2 posts"  # m2 and g1; m1 was deleted

    assert _status(config) == before
    assert run_cli("tombstones", "--json", config=config, check=True).stdout == tombstones_before
    old, gone, new = server.count("/old.xml"), server.count("/gone.xml"), server.count("/new.xml")
    again = run_cli("fetch", "--json", config=config)
    report = {s["name"]: s for s in json.loads(again.stdout)["sources"]}
    assert report["gone"]["outcome"] == "skipped"
    assert server.count("/gone.xml") == gone, "a gone source stays gone: not polled"
    assert server.count("/old.xml") == old, "the learned permanent redirect is still used"
    assert server.count("/new.xml") == new + 1
    assert server.last_headers("/new.xml")["if-none-match"] == '"v1"'
    assert report["moved"]["outcome"] == "not-modified"
    assert report["down"]["outcome"] == "skipped", "the backoff is remembered: not polled before it ends"
    assert _status(config)["down"]["error_streak"] == 2
    assert not victim.exists()
    assert run_cli("verify", config=config).returncode == 0


def _post(entry_id: str, day: int) -> Post:
    return Post(
        source="src",
        id=entry_id,
        title=f"Title {entry_id}",
        link=f"https://example.org/{entry_id}",
        categories=("News",),
        author="Ann",
        comments=False,
        date=datetime(2026, 4, day, 8, 0, 0, tzinfo=UTC),
        updated=None,
        headimg=None,
        tags=(),
        enclosures=(),
        body="<p>Body</p>",
        first_seen=datetime(2026, 4, day, 9, 0, 0, tzinfo=UTC),
    )


def test_retention_tombstones_survive_a_lost_index(tmp_path: Path) -> None:
    posts, index = tmp_path / "posts", tmp_path / "data" / "index.sqlite3"
    with PostStore(posts, index, fsync="off") as store:
        store.save([_post("old", 1), _post("new", 20)], NOW)
        policy = RetentionPolicy(overall=Limits(max_posts=1))
        assert store.prune(policy, NOW).removed == 1
    index.unlink()
    with PostStore(posts, index, fsync="off") as store:
        assert store.index.post_count() == 1  # rebuilt from the files on open
        assert [(t.entry_id, t.reason, t.title) for t in store.index.tombstones()] == [
            ("old", "retention", "Title old")
        ]
        (result,) = store.save([_post("old", 1)], NOW + timedelta(hours=1))
        assert result.outcome.value == "pruned"
        assert store.index.post_count() == 1


def test_an_index_from_before_the_state_database_hands_its_states_over(tmp_path: Path) -> None:
    """An install upgraded from schema 4 keeps its validators, redirects, gone flags and tombstones."""
    index = tmp_path / "data" / "index.sqlite3"
    index.parent.mkdir()
    old_state = SourceState(
        name="feed",
        etag='"e1"',
        last_modified="Mon, 05 Oct 2026 08:00:00 GMT",
        permanent_url="http://127.0.0.1/moved.xml",
        error_streak=2,
        gone=True,
    )
    with sqlite3.connect(index) as db:
        db.executescript("".join(_MIGRATIONS[step] for step in (1, 2, 3, 4)))
        db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
        db.execute("INSERT INTO sources VALUES (?, ?)", ("feed", json.dumps(old_state.to_json())))
        db.execute("INSERT INTO pruned VALUES ('feed', 'urn:pruned', ?)", (NOW.timestamp(),))
    with PostStore(tmp_path / "posts", index) as store:
        assert store.index.source_state("feed") == old_state
        (tombstone,) = store.index.tombstones()
        assert (tombstone.source, tombstone.entry_id, tombstone.reason) == ("feed", "urn:pruned", "retention")
        assert tombstone.removed == NOW
    # The index no longer holds them; the state database does, and a second open changes nothing.
    with sqlite3.connect(index) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not tables & {"sources", "pruned"}
    with PostStore(tmp_path / "posts", index) as store:
        assert store.index.source_state("feed") == old_state
        assert len(store.index.tombstones()) == 1
    # Losing the index now loses nothing.
    index.unlink()
    with PostStore(tmp_path / "posts", index) as store:
        assert store.index.source_state("feed") == old_state
        assert len(store.index.tombstones()) == 1


def test_a_newer_state_database_is_refused(tmp_path: Path) -> None:
    from aggregator.errors import StoreError

    index = tmp_path / "data" / "index.sqlite3"
    PostStore(tmp_path / "posts", index).close()
    with sqlite3.connect(index.with_name("state.sqlite3")) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="state database schema version 99 is newer"):
        PostStore(tmp_path / "posts", index)
