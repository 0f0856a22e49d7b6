"""The save decision, without SQLite or files: entries and what the index knows in, intents out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.posts import make_post as _ordinary_post

from aggregator.decide import (
    DELETED,
    FREE_REWRITES,
    RETENTION,
    REWRITE_MIN_GAP,
    AliasForUpdate,
    EntryForUpdate,
    IndexView,
    MergeTarget,
    decide,
)
from aggregator.model import MergedEntry, Outcome, Post

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SEEN = datetime(2026, 4, 2, 9, 0, 0, tzinfo=UTC)


def make_post(**fields: object) -> Post:
    """An entry as fetched: id "a", no first-seen date yet."""
    return _ordinary_post(**{"id": "a", "first_seen": None, **fields})


def known(post: Post, **fields: object) -> EntryForUpdate:
    values: dict[str, object] = {
        "path": "src/2026/04/hello.md",
        "upstream_hash": post.content_hash,
        "upstream_updated_ts": post.updated.timestamp() if post.updated else None,
        "rewrites": 0,
        "last_rewrite_ts": None,
        "first_seen_ts": SEEN.timestamp(),
    }
    values.update(fields)
    return EntryForUpdate(**values)  # type: ignore[arg-type]


def test_a_new_entry_is_written_first_seen_now() -> None:
    (intent,) = decide([make_post()], IndexView(), NOW)
    assert intent.outcome is Outcome.NEW and intent.path is None  # the store names the file
    assert intent.to_write is not None and intent.to_write.first_seen == NOW
    assert intent.upstream_hash == make_post().content_hash and intent.rewrites == 0


def test_a_new_entry_keeps_a_first_sight_it_carries() -> None:
    (intent,) = decide([make_post(first_seen=SEEN)], IndexView(), NOW)
    assert intent.to_write == make_post(first_seen=SEEN)


def test_within_one_batch_the_first_post_of_an_id_wins() -> None:
    intents = decide([make_post(title="First"), make_post(title="Second")], IndexView(), NOW)
    assert [i.post.title for i in intents] == ["First"]


def test_a_known_entry_with_the_same_upstream_content_is_not_written() -> None:
    post = make_post()
    (intent,) = decide([post], IndexView(known={("src", "a"): known(post)}), NOW)
    assert intent.outcome is Outcome.UNCHANGED and intent.to_write is None
    assert intent.path == "src/2026/04/hello.md"


def test_a_changed_entry_is_updated_in_place_keeping_its_first_sight_and_merges() -> None:
    merged = (MergedEntry("other", "b", ("Tech",)),)
    row = known(make_post(), merged=merged)
    changed = make_post(body="<p>New</p>")
    (intent,) = decide([changed], IndexView(known={("src", "a"): row}), NOW)
    assert intent.outcome is Outcome.UPDATED and intent.path == row.path
    assert intent.to_write is not None
    assert (intent.to_write.body, intent.to_write.updated, intent.to_write.first_seen) == (
        "<p>New</p>",
        NOW,
        SEEN,
    )
    assert intent.to_write.merged == merged
    assert (intent.rewrites, intent.last_rewrite_ts, intent.revision) == (1, NOW.timestamp(), False)


def test_churn_is_held_back_after_the_free_rewrites_until_the_gap_has_passed() -> None:
    row = known(make_post(), rewrites=FREE_REWRITES, last_rewrite_ts=NOW.timestamp())
    churned = make_post(body="<p>counter 7</p>")
    view = IndexView(known={("src", "a"): row})
    (held,) = decide([churned], view, NOW + REWRITE_MIN_GAP - timedelta(seconds=1))
    assert held.outcome is Outcome.CAPPED and held.to_write is None
    (late,) = decide([churned], view, NOW + REWRITE_MIN_GAP)
    assert late.outcome is Outcome.UPDATED and late.rewrites == FREE_REWRITES + 1


def test_a_real_revision_passes_the_cap_and_resets_it() -> None:
    row = known(make_post(), rewrites=FREE_REWRITES + 5, last_rewrite_ts=NOW.timestamp())
    revised = make_post(body="<p>fixed</p>", updated=NOW)
    (intent,) = decide([revised], IndexView(known={("src", "a"): row}), NOW)
    assert intent.outcome is Outcome.UPDATED and intent.revision and intent.rewrites == 0
    assert intent.to_write is not None and intent.to_write.updated == NOW


def test_tombstoned_entries_stay_away_with_their_reason() -> None:
    view = IndexView(tombstones={("src", "a"): RETENTION, ("src", "b"): DELETED})
    intents = decide([make_post(), make_post(id="b")], view, NOW)
    assert [i.outcome for i in intents] == [Outcome.PRUNED, Outcome.DELETED]
    assert all(i.to_write is None and i.path is None and not i.forget for i in intents)


def test_a_known_entry_whose_file_is_gone_was_deleted_by_hand_and_is_forgotten() -> None:
    post = make_post(body="<p>changed upstream too</p>")
    (intent,) = decide([post], IndexView(known={("src", "a"): known(make_post(), file_exists=False)}), NOW)
    assert intent.outcome is Outcome.DELETED and intent.forget and intent.to_write is None


def test_an_entry_folded_into_another_post_stays_there_or_goes_with_it() -> None:
    here = IndexView(aliases={("src", "a"): AliasForUpdate("other/2026/04/x.md")})
    (intent,) = decide([make_post(body="<p>new</p>")], here, NOW)
    assert intent.outcome is Outcome.UNCHANGED and intent.path == "other/2026/04/x.md"
    gone = IndexView(aliases={("src", "a"): AliasForUpdate("other/2026/04/x.md", file_exists=False)})
    (intent,) = decide([make_post()], gone, NOW)
    assert intent.outcome is Outcome.DELETED and not intent.forget


def test_with_merge_by_link_a_new_entry_is_folded_into_the_other_source_s_post() -> None:
    target_post = make_post(source="other", id="x", categories=("Tech",), first_seen=SEEN)
    target = MergeTarget(
        known(target_post, path="other/2026/04/x.md", rewrites=2, last_rewrite_ts=5.0), target_post
    )
    view = IndexView(merge_targets={("src", "a"): target})
    (intent,) = decide([make_post()], view, NOW, merge_by_link=True)
    assert intent.outcome is Outcome.MERGED and intent.path == "other/2026/04/x.md"
    assert intent.to_write is not None and intent.to_write.merged == (MergedEntry("src", "a", ("News",)),)
    assert intent.to_write.source == "other" and intent.result_post == make_post()
    # Upstream said nothing new about the target: its hash and its rewrite cap stay.
    assert (intent.upstream_hash, intent.rewrites, intent.last_rewrite_ts) == (
        target_post.content_hash,
        2,
        5.0,
    )
    (alone,) = decide([make_post()], view, NOW, merge_by_link=False)
    assert alone.outcome is Outcome.NEW


def test_now_is_cut_to_whole_seconds_in_utc() -> None:
    (intent,) = decide([make_post()], IndexView(), NOW.replace(microsecond=999))
    assert intent.to_write is not None and intent.to_write.first_seen == NOW
