"""The index's own contract, on SQLite and on PostgreSQL: every ``Index`` method, the same answers.

Each test runs twice (``[sqlite]``, ``[postgres]``) on a fresh index: ordering and ties, the
feed keys a transaction makes pending in its own commit, tombstones committed before the posts
are forgotten, source states deferred in groups. The PostgreSQL runs skip, saying why, where
no server can be started (tests/support/postgres.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from support.helpers import write_config
from support.indexes import BACKENDS, open_test_index
from support.posts import make_post

from aggregator.config import load_config
from aggregator.errors import StoreError
from aggregator.index import pg_schema
from aggregator.index.deferral import STATE_BATCH
from aggregator.index.interface import Index
from aggregator.index.postgres.pgindex import PgIndex
from aggregator.index.posts import _ROW_COLUMNS, PostRecord
from aggregator.index.readers import open_reader
from aggregator.index.sqlite import SqliteIndex
from aggregator.index.status import KEEP_EVENTS
from aggregator.keys import ALL_KEY, category_key, source_key
from aggregator.model import Enclosure, MergedEntry, Post
from aggregator.state import SourceState
from aggregator.status_feed import StatusEvent
from aggregator.store import PostStore, open_store

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(params=BACKENDS)
def index(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Index]:
    opened = open_test_index(tmp_path, request.param, request)
    try:
        yield opened
    finally:
        opened.close()


def record(post: Post, *, path: str | None = None, replacing: bool = False, **fields: object) -> PostRecord:
    values: dict[str, object] = {
        "upstream_hash": "up-" + post.id,
        "upstream_updated_ts": None,
        "rewrites": 0,
        "last_rewrite_ts": None,
        "replacing": replacing,
        "file_mtime_ns": 1_000,
        "file_size": 10,
    }
    values.update(fields)
    return PostRecord(post, path or f"{post.source}/{post.id}.md", **values)  # type: ignore[arg-type]


def save(index: Index, *posts: Post, replacing: bool = False) -> None:
    with index.transaction():
        index.record_posts([record(p, replacing=replacing) for p in posts])


def test_a_new_index_says_so_and_knows_its_version(index: Index) -> None:
    assert index.found_version == 0
    assert index.schema_version() > 0
    assert index.post_count() == 0 and index.pending_feed_keys() == set() and index.feed_keys() == []


def test_recorded_posts_and_their_pending_feeds_commit_together(index: Index) -> None:
    post = make_post(id="a", categories=("News",))
    save(index, post)
    assert index.post_count() == 1
    assert index.pending_feed_keys() == {ALL_KEY, source_key("src"), category_key(["News"])}
    assert sorted(index.feed_keys()) == sorted(index.pending_feed_keys())
    index.clear_pending_feed_keys([ALL_KEY])
    assert index.pending_feed_keys() == {source_key("src"), category_key(["News"])}
    index.clear_pending_feed_keys()
    assert index.pending_feed_keys() == set()


def test_a_failed_transaction_leaves_neither_rows_nor_pending_keys(index: Index) -> None:
    with pytest.raises(RuntimeError), index.transaction():
        index.record_posts([record(make_post(id="a"))])
        raise RuntimeError("the files were not flushed")
    assert index.post_count() == 0 and index.pending_feed_keys() == set()
    save(index, make_post(id="b", categories=()))
    assert index.pending_feed_keys() == {ALL_KEY, source_key("src")}, "no key of the failed one"


def test_what_the_decider_reads(index: Index) -> None:
    first = make_post(id="a", first_seen=NOW - DAY)
    save(index, first, make_post(id="b"))
    entries = index.known_entries("src", ["a", "b", "c"])
    assert set(entries.known) == {"a", "b"}
    known = entries.known["a"]
    assert (known.path, known.upstream_hash, known.rewrites, known.first_seen_ts) == (
        "src/a.md",
        "up-a",
        0,
        (NOW - DAY).timestamp(),
    )
    assert entries.buried == {} and entries.aliased == {}
    assert index.path_owner("src/a.md") == ("src", "a")
    assert index.path_owner("src/none.md") is None
    assert index.path_owners(["src/a.md", "src/none.md", "src/b.md"]) == {
        "src/a.md": ("src", "a"),
        "src/b.md": ("src", "b"),
    }
    assert index.path_owners([]) == {}
    assert index.first_seen("src", ["a", "zz"]) == {"a": NOW - DAY}
    assert index.known_entries("other", ["a"]).known == {}


def test_a_source_pace_counts_posts_dated_after_since_up_to_until(index: Index) -> None:
    save(index, *(make_post(id=str(n), date=NOW - n * DAY) for n in range(5)))
    assert index.recent_entry_count("src", NOW - 3 * DAY, NOW - DAY) == 2  # days 1 and 2, not 3
    assert index.recent_entry_count("src", NOW - 10 * DAY, NOW) == 5
    assert index.recent_entry_count("other", NOW - 10 * DAY, NOW) == 0


def test_the_merge_candidate_is_the_earliest_other_source_post_ties_by_source_then_id(index: Index) -> None:
    link = "https://example.org/same"
    save(
        index,
        make_post(source="own", id="0", link=link, date=NOW - 9 * DAY),
        make_post(source="b", id="2", link=link, date=NOW),
        make_post(source="b", id="1", link=link, date=NOW),
        make_post(source="c", id="0", link=link, date=NOW),
        make_post(source="a", id="9", link=link, date=NOW + DAY),
    )
    candidate = index.merge_candidate(link, "own")
    assert candidate is not None and candidate.path == "b/1.md"
    assert index.merge_candidate("https://example.org/other", "own") is None


def test_a_merged_post_records_its_copies_and_their_feeds(index: Index) -> None:
    merged = make_post(source="a", id="1", categories=("News",), merged=(MergedEntry("b", "7", ("Tech",)),))
    save(index, merged)
    assert category_key(["Tech"]) in index.pending_feed_keys()
    assert source_key("b") in index.pending_feed_keys()
    entries = index.known_entries("b", ["7"])
    assert entries.aliased["7"].path == "a/1.md" and entries.known == {}
    assert index.known_entries("a", ["1"]).known["1"].merged == (MergedEntry("b", "7", ("Tech",)),)
    assert index.first_post_categories(category_key(["Tech"])) == [("News", "Tech"), ("Tech",)]
    # Re-recorded without the copy: its alias and its feeds go.
    save(index, replace(merged, merged=()), replacing=True)
    assert index.known_entries("b", ["7"]).aliased == {}
    assert category_key(["Tech"]) not in index.feed_keys()


def test_replacing_a_post_moves_it_between_feeds(index: Index) -> None:
    post = make_post(id="a", categories=("Old",))
    save(index, post)
    index.clear_pending_feed_keys()
    save(index, replace(post, categories=("New",), title="Renamed"), replacing=True)
    assert index.pending_feed_keys() == {
        ALL_KEY,
        source_key("src"),
        category_key(["Old"]),
        category_key(["New"]),
    }
    assert index.feed_keys_present([category_key(["Old"]), category_key(["New"]), "nothing"]) == {
        category_key(["New"])
    }
    assert [p.title for p in index.feed_items(ALL_KEY, 10)] == ["Renamed"]
    assert index.post_count() == 1


def test_a_post_recorded_as_new_again_replaces_its_row_and_keeps_the_batch(index: Index) -> None:
    """A row thought new may be indexed by then (a fleet node that stalled): the batch goes in whole.

    On PostgreSQL, new rows go by COPY, which fails on the key; they are then upserted.
    """
    save(index, make_post(id="a", title="First"))
    tricky = "tab\there\nnew line \\ backslash \\N not null"
    save(index, make_post(id="a", title="Again", body=tricky), make_post(id="b", title="Other"))
    assert index.post_count() == 2
    found = index.indexed_posts([("src", "a"), ("src", "b")])
    assert (found[("src", "a")].title, found[("src", "a")].body) == ("Again", tricky)
    assert found[("src", "b")].title == "Other"
    assert sorted(p.id for p in index.feed_items(ALL_KEY, 10)) == ["a", "b"]


def test_text_with_tabs_newlines_and_backslashes_reads_back_as_written(index: Index) -> None:
    tricky = "tab\there\r\nnew line \\ backslash \\N end"
    save(index, make_post(id="t", title=tricky, body=tricky, author=tricky, tags=(tricky,)))
    got = index.indexed_posts([("src", "t")])[("src", "t")]
    assert (got.title, got.body, got.tags) == (tricky, tricky, (tricky,))


def test_forget_returns_the_feeds_left_and_makes_them_pending(index: Index) -> None:
    save(index, make_post(id="a", categories=("News",)), make_post(id="b", categories=()))
    index.clear_pending_feed_keys()
    with index.transaction():
        left = index.forget("src", "a")
    assert left == {ALL_KEY, source_key("src"), category_key(["News"])}
    assert index.pending_feed_keys() == left
    assert index.post_count() == 1 and index.feed_keys_present([category_key(["News"])]) == set()
    assert [row[1] for row in index.iter_paths()] == ["b"]


def test_bury_commits_tombstones_with_titles_before_the_posts_are_forgotten(index: Index) -> None:
    save(
        index,
        make_post(id="a", title="Kept title", merged=(MergedEntry("b", "copy", ()),)),
        make_post(id="other"),
    )
    index.bury([("src", "a")], "retention", NOW)
    with pytest.raises(RuntimeError), index.transaction():
        index.forget("src", "a")
        raise RuntimeError("crash before the index commits")
    # The tombstones survived the failed forget; the post is still indexed beside them.
    assert [(t.source, t.entry_id, t.title, t.reason, t.removed) for t in index.tombstones()] == [
        ("b", "copy", "Kept title", "retention", NOW),
        ("src", "a", "Kept title", "retention", NOW),
    ]
    assert index.tombstoned_posts() == [("src", "a", "retention", "src/a.md")]
    assert index.known_entries("src", ["a", "other"]).buried == {"a": "retention"}
    assert index.tombstones("b")[0].entry_id == "copy"


def test_tombstones_newest_first_lift_and_restore(index: Index) -> None:
    save(index, make_post(id="old"), make_post(id="new"), make_post(source="s2", id="x"))
    index.bury([("src", "old")], "deleted", NOW - DAY)
    index.bury([("src", "new"), ("s2", "x")], "deleted", NOW)
    assert [(t.source, t.entry_id) for t in index.tombstones()] == [
        ("s2", "x"),
        ("src", "new"),
        ("src", "old"),
    ]
    index.save_source_state(SourceState(name="src", etag='"e"', last_modified="yesterday", error_streak=2))
    lifted = index.restore_tombstones("src", ["old", "not-buried"])
    assert [t.entry_id for t in lifted] == ["old"]
    state = index.source_state("src")
    assert (state.etag, state.last_modified, state.error_streak) == (None, None, 2)
    assert index.restore_tombstones("src", ["nothing"]) == []
    with index.transaction():
        index.lift("s2", "x")
    assert [t.entry_id for t in index.tombstones()] == ["new"]


def test_forget_all_posts_owes_every_published_feed_a_build(index: Index) -> None:
    save(index, make_post(id="a"))
    index.record_feeds([("gone-feed", "sig", "Gone", 1, NOW), (ALL_KEY, "sig2", "All", 1, None)])
    index.clear_pending_feed_keys()
    with index.transaction():
        index.forget_all_posts()
    assert index.post_count() == 0 and index.feed_keys() == []
    assert index.pending_feed_keys() == {"gone-feed", ALL_KEY}
    assert index.published_feeds() == []


def test_feeds_are_newest_first_with_ties_by_source_then_id(index: Index) -> None:
    save(
        index,
        make_post(source="b", id="1", date=NOW),
        make_post(source="a", id="2", date=NOW),
        make_post(source="a", id="10", date=NOW),
        make_post(source="B", id="1", date=NOW),  # byte order: "B" < "a" < "b"
        make_post(source="a", id="old", date=NOW - DAY),
        make_post(source="z", id="new", date=NOW + DAY),
    )
    order = [("z", "new"), ("B", "1"), ("a", "10"), ("a", "2"), ("b", "1"), ("a", "old")]
    assert [(p.source, p.id) for p in index.feed_items(ALL_KEY, 10)] == order
    assert [(r.source, r.entry_id) for r in index.feed_refs(ALL_KEY, 3)] == order[:3]
    assert index.posts_beyond(ALL_KEY, 4) == {("b", "1"): "b/1.md", ("a", "old"): "a/old.md"}
    assert index.posts_older_than(ALL_KEY, NOW) == {("a", "old"): "a/old.md"}
    assert index.posts_beyond(source_key("a"), 5) == {}


def test_indexed_posts_read_back_every_field(index: Index) -> None:
    post = make_post(
        id="full",
        title="Tïtle",
        categories=("News", "Tech/Python"),
        tags=("t1", "t2"),
        headimg="https://example.org/i.png",
        enclosures=(Enclosure(url="https://example.org/a.mp3", type="audio/mpeg", length=42),),
        updated=NOW,
        body="<p>Body ☃</p>",
    )
    save(index, post)
    found = index.indexed_posts([("src", "full"), ("src", "missing")])
    assert list(found) == [("src", "full")]
    got = found[("src", "full")]
    assert (got.title, got.categories, got.tags, got.headimg, got.enclosures, got.updated, got.body) == (
        post.title,
        post.categories,
        post.tags,
        post.headimg,
        post.enclosures,
        NOW,
        post.body,
    )
    assert got.content_hash == post.content_hash and got.date == post.date and got.path == "src/full.md"
    (item,) = index.feed_items(ALL_KEY, 1)
    assert item == replace(got, summary=item.summary) and item.summary
    assert index.indexed_posts([]) == {}


def test_a_worker_reads_the_same_posts_through_the_reader_spec(index: Index) -> None:
    save(index, *(make_post(id=str(n)) for n in range(3)))
    reader = open_reader(index.reader_spec())
    try:
        pairs = [("src", "0"), ("src", "2"), ("nope", "0")]
        assert reader.indexed_posts(pairs) == index.indexed_posts(pairs)
    finally:
        reader.close()
    assert "postgresql" not in repr(index.reader_spec()), "a URL's password is never shown"


def test_published_feeds_signatures_and_forgetting(index: Index) -> None:
    assert index.feed_signature(ALL_KEY) is None
    index.record_feeds([(ALL_KEY, "s1", "All", 3, NOW), ("b", "s2", "B", 0, None)])
    index.record_feeds([(ALL_KEY, "s3", "All posts", 4, NOW + DAY)])
    index.record_feeds([])
    assert index.feed_signature(ALL_KEY) == "s3"
    assert index.published_feeds() == [(ALL_KEY, "All posts", 4, NOW + DAY), ("b", "B", 0, None)]
    index.forget_feed("b")
    assert index.feed_signature("b") is None and len(index.published_feeds()) == 1


def test_the_first_post_of_a_feed_titles_it(index: Index) -> None:
    save(
        index,
        make_post(source="b", id="1", categories=("Tech",), date=NOW),
        make_post(source="a", id="1", categories=("tech",), date=NOW),
        make_post(source="a", id="2", categories=("TECH",), date=NOW + DAY),
    )
    assert index.first_post_categories(category_key(["Tech"])) == [("tech",)]
    assert index.first_post_categories("nothing") == []


def test_verify_queries(index: Index) -> None:
    save(index, make_post(id="a"), make_post(id="b"))
    assert sorted(index.iter_paths()) == [
        ("src", "a", "src/a.md", 1000, 10),
        ("src", "b", "src/b.md", 1000, 10),
    ]
    assert index.posts_without_feed() == 0
    assert index.tombstoned_posts() == []


def test_source_states_written_at_once_or_in_groups(index: Index) -> None:
    assert index.source_state("new") == SourceState(name="new")
    index.save_source_state(SourceState(name="a", etag='"1"', last_success=NOW))
    assert index.source_state("a").last_success == NOW
    with index.deferred_states():
        for n in range(STATE_BATCH + 5):
            index.save_source_state(SourceState(name=f"s{n}", etag=f'"{n}"'))
        index.save_source_state(SourceState(name="a", etag='"2"'))
        assert index.source_state("a").etag == '"2"' and index.source_state("s3").etag == '"3"'
    assert {s.name for s in index.all_source_states()} == {"a", *(f"s{n}" for n in range(STATE_BATCH + 5))}
    assert index.source_state("a").etag == '"2"'


def _transactions_that_wrote(index: Index, names: list[str], run: object) -> int:
    """How many transactions wrote the states of ``names`` while ``run()`` ran.

    SQLite: the COMMITs on the index's connection; PostgreSQL: the distinct ``xmin`` (the id of
    the transaction that wrote each row) of their rows.
    """
    if isinstance(index, SqliteIndex):
        statements: list[str] = []
        index.db.set_trace_callback(statements.append)
        try:
            run()  # type: ignore[operator]
        finally:
            index.db.set_trace_callback(None)
        return statements.count("COMMIT")
    assert isinstance(index, PgIndex)
    run()  # type: ignore[operator]
    with psycopg.connect(index.url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT xmin::text FROM source_states WHERE name = ANY(%s)", (names,)
        ).fetchall()
    return len(rows)


def test_a_group_of_source_states_is_written_in_one_transaction(index: Index) -> None:
    names = [f"g{n}" for n in range(50)]
    group = [SourceState(name=name, etag=f'"{name}"', last_success=NOW) for name in names]
    assert _transactions_that_wrote(index, names, lambda: index.save_source_states(group)) == 1
    assert index.source_state("g7").etag == '"g7"' and index.source_state("g7").last_success == NOW
    index.save_source_states([])  # nothing to write: no transaction, no error
    # A state still deferred is older than the group's: the group's is the one kept.
    with index.deferred_states():
        index.save_source_state(SourceState(name="g1", etag='"old"'))
        index.save_source_states([SourceState(name="g1", etag='"new"')])
    assert index.source_state("g1").etag == '"new"'


def test_the_states_version_changes_when_another_connection_writes_states(index: Index) -> None:
    first = index.states_version()
    if isinstance(index, PgIndex):
        assert first is None  # a fleet's nodes write states all the time: nothing may be kept
        return
    assert isinstance(index, SqliteIndex)
    index.save_source_states([SourceState(name="own", etag='"1"')])
    assert index.states_version() == first  # its own writes leave it as it was
    other = sqlite3.connect(index.state_path)
    try:
        with other:
            other.execute("INSERT OR REPLACE INTO sources VALUES ('elsewhere', '{\"name\": \"elsewhere\"}')")
    finally:
        other.close()
    assert index.states_version() != first


def test_status_events_keep_the_newest_and_read_newest_first(index: Index) -> None:
    events = [
        StatusEvent(f"s{n % 7}", "failing", NOW + timedelta(seconds=n), f"d{n}")
        for n in range(KEEP_EVENTS + 3)
    ]
    index.record_status_events(events[:10])
    index.record_status_events(events[5:])  # the overlap is kept once
    index.record_status_events([])
    newest = index.recent_status_events(limit=KEEP_EVENTS + 10)
    assert len(newest) == KEEP_EVENTS
    assert newest[0] == events[-1] and newest[-1] == events[3]
    assert index.recent_status_events(limit=2) == [events[-1], events[-2]]


# PostgreSQL's own: versions, a shared database, errors -----------------------------------


@pytest.mark.postgres
def test_a_newer_postgres_schema_is_refused_with_a_clear_message(postgres_url: str) -> None:
    PgIndex(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE aggregator_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99 is newer than this program understands \(\d+\)"):
        PgIndex(postgres_url)


@pytest.mark.postgres
def test_a_database_the_fleet_made_gets_the_index_tables_and_says_it_had_none(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        pg_schema.migrate(conn, pg_schema.STEPS[: pg_schema.INDEX_VERSION - 1])
    index = PgIndex(postgres_url)
    try:
        assert index.found_version == 0, "no index there yet: the store fills it from the files"
        assert index.schema_version() == pg_schema.latest_version()
    finally:
        index.close()
    again = PgIndex(postgres_url)
    assert again.found_version == pg_schema.latest_version()
    again.close()


@pytest.mark.postgres
def test_an_index_at_version_3_keeps_its_posts_through_the_leaner_writes_step(postgres_url: str) -> None:
    """Step 4: new bodies compressed with lz4 (the old stay pglz, readable), post feeds keyed by the post."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        pg_schema.migrate(conn, pg_schema.STEPS[:3])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET default_toast_compression = pglz")
        conn.execute(
            "INSERT INTO posts (source, entry_id, path, title, link, author, date_ts, first_seen_ts, "
            "categories, tags, enclosures, body, summary, content_hash) VALUES ('src', 'old', "
            "'src/old.md', 'Old', '', '', 1, 1, '[]', '[]', '[]', repeat('old body ', 500), '', 'h')"
        )
        conn.execute("INSERT INTO post_feeds VALUES (%s, 'src', 'old', 1)", (ALL_KEY,))
    index = PgIndex(postgres_url)
    try:
        assert index.schema_version() == 4
        save(index, make_post(id="new", body="new body " * 500))
        assert sorted(p.id for p in index.feed_items(ALL_KEY, 10)) == ["new", "old"]
        assert index.posts_without_feed() == 0
        assert index.indexed_posts([("src", "old")])[("src", "old")].body == "old body " * 500
        with index.transaction():
            assert index.forget("src", "old") == {ALL_KEY}
    finally:
        index.close()
    with psycopg.connect(postgres_url) as conn:
        compressed = conn.execute("SELECT entry_id, pg_column_compression(body) FROM posts").fetchall()
        assert compressed == [("new", "lz4")]
        key = conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'post_feeds'::regclass "
            "AND indisprimary"
        ).fetchone()
        assert key is not None and "(source, entry_id, feed_key)" in key[0]
        assert conn.execute("SELECT to_regclass('post_feeds_by_post')").fetchone() == (None,)


@pytest.mark.postgres
def test_the_binary_copys_types_are_the_columns_types(postgres_url: str) -> None:
    """Binary COPY takes each value as exactly its column's type; a wrong one breaks only some rows."""
    from aggregator.index.postgres.posts import _FEED_COLUMNS, _FEED_TYPES, _ROW_TYPES

    PgIndex(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:

        def type_name(name: str) -> str:
            row = conn.execute("SELECT %s::regtype::text", (name,)).fetchone()
            assert row is not None
            return str(row[0])

        for table, columns, types in (
            ("posts", _ROW_COLUMNS, _ROW_TYPES),
            ("post_feeds", _FEED_COLUMNS, _FEED_TYPES),
        ):
            declared = dict(
                conn.execute(
                    "SELECT attname, atttypid::regtype::text FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    (table,),
                ).fetchall()
            )
            names = [column.strip() for column in columns.split(",")]
            assert set(names) == set(declared), "every column is sent"
            assert {n: declared[n] for n in names} == {
                n: type_name(t) for n, t in zip(names, types, strict=True)
            }


@pytest.mark.postgres
def test_a_state_of_an_earlier_poll_does_not_replace_a_later_polls(postgres_url: str) -> None:
    """Two nodes, one of which stalled past its lease mid-poll, saving the same source's state."""
    stalled, taker = PgIndex(postgres_url), PgIndex(postgres_url)
    try:
        taker.save_source_state(SourceState(name="a", etag='"new"', last_attempt=NOW))
        stalled.save_source_state(SourceState(name="a", etag='"old"', error_streak=1, last_attempt=NOW - DAY))
        assert stalled.source_state("a").etag == '"new"' and taker.source_state("a").error_streak == 0
        # The same poll's state again, a later poll's, and one without a poll (a reset) are written.
        stalled.save_source_state(SourceState(name="a", etag='"again"', last_attempt=NOW))
        assert taker.source_state("a").etag == '"again"'
        taker.save_source_state(SourceState(name="a", etag='"later"', last_attempt=NOW + DAY))
        assert stalled.source_state("a").etag == '"later"'
        taker.save_source_state(SourceState(name="a"))
        assert stalled.source_state("a") == SourceState(name="a")
    finally:
        stalled.close()
        taker.close()


@pytest.mark.postgres
def test_two_nodes_share_one_index(postgres_url: str) -> None:
    one, two = PgIndex(postgres_url), PgIndex(postgres_url)
    try:
        save(one, make_post(source="a", id="1", categories=()))
        save(two, make_post(source="b", id="1", categories=()))
        assert one.post_count() == two.post_count() == 2
        assert (
            one.pending_feed_keys() == two.pending_feed_keys() == {ALL_KEY, source_key("a"), source_key("b")}
        )
        two.save_source_state(SourceState(name="a", etag='"from two"'))
        assert one.source_state("a").etag == '"from two"'
    finally:
        one.close()
        two.close()


@pytest.mark.postgres
def test_an_unreachable_database_is_one_clear_error_without_the_password() -> None:
    from support.postgres import free_port

    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError) as raised:
        PgIndex(url)
    assert "s3cret-pw" not in str(raised.value) and "someone:***@127.0.0.1" in str(raised.value)


# Which index a config opens ---------------------------------------------------------------


@pytest.mark.postgres
def test_open_store_picks_postgres_for_an_index_url_and_sqlite_without(
    tmp_path: Path, postgres_url: str
) -> None:
    on_postgres = load_config(write_config(tmp_path / "pg", [], index=postgres_url))
    with open_store(on_postgres) as store:
        assert isinstance(store.index, PgIndex)
        store.save([make_post(id="a")], NOW)
    assert not (tmp_path / "pg" / "data" / "index.sqlite3").exists()
    assert not (tmp_path / "pg" / "data" / "state.sqlite3").exists()
    on_sqlite = load_config(write_config(tmp_path / "lite", []))
    with open_store(on_sqlite) as store:
        assert isinstance(store.index, SqliteIndex) and store.index.post_count() == 0
    assert (tmp_path / "lite" / "data" / "index.sqlite3").exists()


@pytest.mark.postgres
def test_an_empty_postgres_index_is_filled_from_the_post_files(tmp_path: Path, postgres_url: str) -> None:
    with PostStore(tmp_path / "posts", tmp_path / "data" / "index.sqlite3", fsync="off") as lite:
        lite.save([make_post(id=str(n), title=f"T{n}") for n in range(4)], NOW)
        expected = [(p.source, p.id, p.title) for p in lite.index.feed_items(ALL_KEY, 10)]
    with PostStore(
        tmp_path / "posts", tmp_path / "data" / "index.sqlite3", index=PgIndex(postgres_url)
    ) as store:
        assert [(p.source, p.id, p.title) for p in store.index.feed_items(ALL_KEY, 10)] == expected
        assert store.verify() == []


def test_media_states_refs_failures_and_a_forgotten_posts_images(index: Index) -> None:
    now = datetime(2026, 4, 1, tzinfo=UTC)
    save(index, make_post(id="a"), make_post(id="b"))
    index.record_media_download("https://img/1.jpg", "src", "/media/ab/1.jpg", now)
    index.record_media_failure("https://img/2.jpg", "src", "HTTP 404", now, now + timedelta(minutes=10))
    index.record_media_failure("https://img/2.jpg", "src", "HTTP 403", now, now + timedelta(minutes=20))
    with index.transaction():
        index.set_media_refs(
            "src", "a", [("https://img/1.jpg", "/media/ab/1.jpg"), ("https://img/2.jpg", None)]
        )
        index.set_media_refs("src", "b", [("https://img/2.jpg", None)])
    states = index.media_states(["https://img/1.jpg", "https://img/2.jpg", "https://img/3.jpg"])
    assert (
        states["https://img/1.jpg"].local == "/media/ab/1.jpg" and states["https://img/1.jpg"].failures == 0
    )
    assert (states["https://img/2.jpg"].failures, states["https://img/2.jpg"].last_error) == (2, "HTTP 403")
    assert "https://img/3.jpg" not in states
    assert index.referenced_media() == {"/media/ab/1.jpg"}
    (failure,) = index.media_failures()
    assert (failure.source, failure.count, failure.last_error) == ("src", 1, "HTTP 403")
    assert index.media_due("src", now) == []
    assert index.media_due("src", now + timedelta(minutes=30)) == [
        ("a", "https://img/2.jpg"),
        ("b", "https://img/2.jpg"),
    ]
    with index.transaction():
        index.forget("src", "a")  # its images go with it
    assert [row[1] for row in index.media_refs()] == ["b"]
    index.forget_media(["/media/ab/1.jpg"])
    assert index.media_states(["https://img/1.jpg"])["https://img/1.jpg"].local is None
