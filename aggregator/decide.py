"""What each fetched entry becomes: the save decision, as data in and intents out.

    entries (as fetched) + what the index knows (``IndexView``) + now
        -> one ``EntryUpdateIntent`` a distinct entry

No I/O: the store gathers what the index and the disk know (rows, tombstones,
merges, whether a file is still there, the post a merge would fold into)
beforehand, and carries the intents out afterwards (it names new files and
writes them, then records them in the index). The shape follows
lemon24/reader's ``EntryForUpdate`` / ``EntryUpdateIntent``.

The policy, in the order it is applied to each entry (the first of an id wins):

- tombstoned (retention pruned it, or a person deleted its file): stays so;
- folded into another source's post earlier: unchanged (deleted, if that post's
  file was deleted by hand since);
- known, but its file is gone: deleted by hand, which becomes a tombstone;
- new, with ``merge_by_link`` and another source's post of the same canonical
  link: merged into that post (its categories added);
- new: written, first seen now unless it says otherwise;
- known, same upstream content: unchanged;
- known, changed, but not revised (its own updated date did not move) and
  rewritten ``FREE_REWRITES`` times lately: held back until ``REWRITE_MIN_GAP``
  has passed since the last rewrite (churn: a counter, a rotating ad);
- known, changed: updated in place, keeping its first sight and merges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from aggregator.model import EntryKey, MergedEntry, Outcome, Post

# An entry whose content changes on every fetch while its own updated date
# stays put (a counter, a rotating ad) is rewritten FREE_REWRITES times, then
# at most once per REWRITE_MIN_GAP until its updated date moves again.
FREE_REWRITES = 3
REWRITE_MIN_GAP = timedelta(hours=6)

# Why an entry is tombstoned (the reasons the state database records).
Reason = Literal["retention", "deleted"]
RETENTION: Reason = "retention"
DELETED: Reason = "deleted"  # the post file was deleted by hand


@dataclass(frozen=True)
class EntryForUpdate:
    """What the index remembers about a stored entry beyond its file, and whether the file is there."""

    path: str
    upstream_hash: str
    upstream_updated_ts: float | None
    rewrites: int
    last_rewrite_ts: float | None
    first_seen_ts: float
    merged: tuple[MergedEntry, ...] = ()  # the other sources' copies folded into this post
    file_exists: bool = True


@dataclass(frozen=True)
class AliasForUpdate:
    """An entry folded into another source's post: where that post's file is, and if it still is."""

    path: str
    file_exists: bool = True


@dataclass(frozen=True)
class MergeTarget:
    """Another source's post with a new entry's canonical link: its index row and its file's post."""

    known: EntryForUpdate
    current: Post  # as its file holds it (it may carry merges the index has not seen yet)


@dataclass(frozen=True)
class IndexView:
    """What the index and the disk know about one batch of entries, keyed by (source, id)."""

    known: Mapping[EntryKey, EntryForUpdate] = field(default_factory=dict)
    tombstones: Mapping[EntryKey, str] = field(default_factory=dict)  # the reason
    aliases: Mapping[EntryKey, AliasForUpdate] = field(default_factory=dict)
    merge_targets: Mapping[EntryKey, MergeTarget] = field(default_factory=dict)


@dataclass(frozen=True)
class EntryUpdateIntent:
    """What to do with one entry: its outcome, and for a write, what to write and index."""

    post: Post  # as fetched
    outcome: Outcome
    # Where its post file is, relative to the posts folder; None for a new post
    # (the store names it) and for a tombstoned one (it has no file).
    path: str | None
    to_write: Post | None = None  # None: nothing to write
    previous: EntryForUpdate | None = None  # the row it replaces (for a merge: the target's)
    revision: bool = False  # upstream moved its updated date (or the entry is new)
    # Index columns of the written post (see ``EntryUpdateIntent.for_index``).
    upstream_hash: str = ""
    upstream_updated_ts: float | None = None
    rewrites: int = 0
    last_rewrite_ts: float | None = None

    @property
    def forget(self) -> bool:
        """The index lists this entry, but its file was deleted by hand: tombstone it."""
        return self.outcome is Outcome.DELETED and self.previous is not None and self.to_write is None

    @property
    def result_post(self) -> Post:
        """The post a caller is told about: as written, or (merged, or not written) as fetched."""
        if self.to_write is None or self.outcome is Outcome.MERGED:
            return self.post
        return self.to_write


def decide(
    posts: Sequence[Post], view: IndexView, now: datetime, *, merge_by_link: bool = False
) -> list[EntryUpdateIntent]:
    """One intent a distinct (source, id), in order; the first post of an id wins."""
    now = now.astimezone(UTC).replace(microsecond=0)
    intents: list[EntryUpdateIntent] = []
    seen: set[EntryKey] = set()
    for post in posts:
        key = (post.source, post.id)
        if key in seen:
            continue
        seen.add(key)
        intents.append(_decide_one(post, key, view, now, merge_by_link))
    return intents


def _decide_one(
    post: Post, key: EntryKey, view: IndexView, now: datetime, merge_by_link: bool
) -> EntryUpdateIntent:
    reason = view.tombstones.get(key)
    if reason is not None:
        return EntryUpdateIntent(post, Outcome.DELETED if reason == DELETED else Outcome.PRUNED, None)
    alias = view.aliases.get(key)
    if alias is not None:
        # Recorded with the post it was merged into; gone with it if that was deleted by hand.
        return EntryUpdateIntent(
            post, Outcome.UNCHANGED if alias.file_exists else Outcome.DELETED, alias.path
        )
    previous = view.known.get(key)
    if previous is not None and not previous.file_exists:
        return EntryUpdateIntent(post, Outcome.DELETED, previous.path, previous=previous)
    if previous is None:
        target = view.merge_targets.get(key) if merge_by_link else None
        if target is not None:
            entry = MergedEntry(post.source, post.id, post.categories)
            known = target.known
            return EntryUpdateIntent(
                post,
                Outcome.MERGED,
                known.path,
                to_write=replace(target.current, merged=(*target.current.merged, entry)),
                previous=known,
                # Upstream said nothing new about the target: its hash and cap stay.
                upstream_hash=known.upstream_hash,
                upstream_updated_ts=known.upstream_updated_ts,
                rewrites=known.rewrites,
                last_rewrite_ts=known.last_rewrite_ts,
            )
        return EntryUpdateIntent(
            post,
            Outcome.NEW,
            None,
            to_write=post if post.first_seen else replace(post, first_seen=now),
            revision=True,
            upstream_hash=post.content_hash,
            upstream_updated_ts=_ts(post.updated),
        )
    if previous.upstream_hash == post.content_hash:
        return EntryUpdateIntent(post, Outcome.UNCHANGED, previous.path, previous=previous)
    revision = is_revision(post, previous)
    if not revision and is_capped(previous, now):
        return EntryUpdateIntent(post, Outcome.CAPPED, previous.path, previous=previous)
    return EntryUpdateIntent(
        post,
        Outcome.UPDATED,
        previous.path,
        to_write=replace(
            post,
            updated=post.updated or now,
            first_seen=datetime.fromtimestamp(previous.first_seen_ts, UTC),
            merged=previous.merged,
        ),
        previous=previous,
        revision=revision,
        upstream_hash=post.content_hash,
        upstream_updated_ts=_ts(post.updated),
        rewrites=0 if revision else previous.rewrites + 1,
        last_rewrite_ts=now.timestamp(),
    )


def is_revision(post: Post, previous: EntryForUpdate) -> bool:
    """Upstream says the entry was revised: its own updated date moved."""
    return post.updated is not None and post.updated.timestamp() != previous.upstream_updated_ts


def is_capped(previous: EntryForUpdate, now: datetime) -> bool:
    """Rewritten too often without a new updated date: wait for the gap."""
    if previous.rewrites < FREE_REWRITES or previous.last_rewrite_ts is None:
        return False
    return now - datetime.fromtimestamp(previous.last_rewrite_ts, UTC) < REWRITE_MIN_GAP


def _ts(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None
