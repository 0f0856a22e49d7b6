"""Post files (the truth) and the index (a cache of them: SQLite, or PostgreSQL): saving.

What a post file holds, and how it is named, rendered and read, is
``aggregator.postfile``'s business; what each entry becomes is
``aggregator.decide``'s. This module names the new files, writes them, and
keeps the index (``aggregator.index``, behind its Protocol) in step. Pruning
is ``aggregator.retention``'s and reading the files back (hand edits,
deletions, reindex, verify) ``aggregator.filesync``'s; ``PostStore`` mixes
both in.

Durability: files are written atomically (a temporary file in the same
directory, then a rename), so a crash leaves the old file or the new one,
never half of one. The index is updated after the files, so a crash between
the two leaves a file the index does not know yet; the next save of that entry
finds it at its deterministic path and adopts it, ``sync_with_files`` (run by
``aggregator build`` and at daemon start) picks it up, and ``reindex``
rebuilds the whole index from the files. The ``defaults.fsync`` setting says
how hard writes are pushed to the disk against power loss (a crash of the
process alone never loses a renamed file):

- ``file``: every post file and its directory are fsynced before the rename
  is considered done (slowest, survives power loss per post);
- ``batch`` (the default): the files of one source's update are written, then
  fsynced together before the index commits, so after a power loss the index
  never lists a post whose file did not reach the disk;
- ``off``: no fsync; the OS writes back when it likes (fastest; a power loss
  may lose the last seconds of posts, which the next fetch writes again).

Saving runs in steps (``plan_posts``, ``render_files``, ``write_files``,
``make_durable``, ``commit``) so that a caller on an event loop can write and
flush the files in a thread; ``save`` runs them all.

The index also holds what each published feed was built from, so feeds are
built without reading post files. It records its schema version, migrates
older ones step by step, and refuses a newer one. What no post file holds
(each source's polling state, and the tombstones of entries retention pruned
or a person deleted, so they are not fetched back) is in the state database
(``aggregator.index.states``), which ``reindex`` leaves alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from aggregator import postfile
from aggregator.config import Config
from aggregator.decide import (
    AliasForUpdate,
    EntryForUpdate,
    EntryUpdateIntent,
    IndexView,
    MergeTarget,
    decide,
)
from aggregator.errors import StoreError
from aggregator.files import (
    WriterMark,
    fsync_batch,
    sweep_temp_files,
    write_atomic_stat,
)
from aggregator.filesync import FileSync
from aggregator.index.interface import Index
from aggregator.index.opening import open_index
from aggregator.index.posts import PostRecord
from aggregator.index.sqlite import SqliteIndex
from aggregator.index.states import STATE_FILE
from aggregator.media.repair import record_media
from aggregator.model import Outcome, Post
from aggregator.normalize import canonical_link
from aggregator.retention import Retention

log = logging.getLogger("aggregator.store")


@dataclass(frozen=True)
class SaveResult:
    post: Post
    outcome: Outcome
    path: Path
    # Feeds the save changed that the post's own categories may not name: those a post
    # found deleted by hand leaves (its categories as indexed, which a hand edit may have moved).
    left_feeds: frozenset[str] = frozenset()


@dataclass
class SaveBatch:
    """Posts decided on, then written to files, not yet recorded in the index (see ``PostStore.save``)."""

    results: list[SaveResult]
    rows: list[tuple[EntryUpdateIntent, str]]  # the posts to write, in order, with their paths
    now: datetime
    deleted: list[tuple[str, str]] = field(default_factory=list)  # indexed, but the file is gone
    written: list[Path] = field(default_factory=list)  # filled by write_files, one a row
    stats: list[os.stat_result] = field(default_factory=list)
    files: list[bytes] = field(default_factory=list)  # filled by render_files, one a row


class PostStore(Retention, FileSync):
    """Writes post files and keeps the index (``self.index``) in step with them."""

    def __init__(
        self,
        posts_dir: Path,
        index_path: Path,
        *,
        fsync: str = "batch",
        state_path: Path | None = None,
        index: Index | None = None,
    ) -> None:
        """``index``: an index opened elsewhere (``open_store`` gives a PgIndex), which the store
        then owns and closes; else the SQLite files at ``index_path`` and ``state_path``. The
        writer marks are under ``index_path``'s folder (the data folder) either way."""
        self.posts_dir = posts_dir
        self.index_path = index_path
        # Beside the index unless told otherwise; not a cache (see aggregator.index.states).
        self.state_path = state_path or index_path.with_name(STATE_FILE)
        self.fsync = fsync
        # Paths chosen by batches not yet in the index (see ``plan_posts``).
        self._unindexed: set[str] = set()
        try:
            posts_dir.mkdir(parents=True, exist_ok=True)
            index_path.parent.mkdir(parents=True, exist_ok=True)
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if index is not None:
                index.close()
            raise StoreError(f"cannot open the store at {index_path}: {error}") from error
        self.index: Index = index if index is not None else SqliteIndex(index_path, self.state_path)
        try:
            if self.index.found_version == 0 and self._has_post_files():
                self.reindex()
        except BaseException:
            self.index.close()
            raise
        # What a killed writer left behind (a live writer's temporary files are kept);
        # the tree is walked only when a writer's mark says one died mid-run.
        self._mark = WriterMark(index_path.parent / "writers")
        try:
            if self._mark.claim():
                sweep_temp_files(posts_dir)
        except OSError as error:
            self.index.close()
            raise StoreError(f"cannot open the store at {index_path}: {error}") from error

    def close(self) -> None:
        self.index.close()
        self._mark.release()

    def __enter__(self) -> PostStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _has_post_files(self) -> bool:
        return any(self.posts_dir.glob("*/*/*/*.md"))

    # Saving ------------------------------------------------------------------

    def _view(self, posts: Sequence[Post], *, merge_by_link: bool) -> IndexView:
        """What the index and the disk know about a batch of posts, for ``decide``."""
        known: dict[tuple[str, str], EntryForUpdate] = {}
        buried: dict[tuple[str, str], str] = {}
        aliased: dict[tuple[str, str], AliasForUpdate] = {}
        by_source: dict[str, list[str]] = {}
        posts_dir = str(self.posts_dir)

        def missing(path: str) -> bool:
            return not os.path.exists(os.path.join(posts_dir, path))

        for post in posts:
            by_source.setdefault(post.source, []).append(post.id)
        for source, ids in by_source.items():
            entries = self.index.known_entries(source, ids)
            for entry_id, entry in entries.known.items():
                known[(source, entry_id)] = (
                    replace(entry, file_exists=False) if missing(entry.path) else entry
                )
            for entry_id, reason in entries.buried.items():
                buried[(source, entry_id)] = reason
            for entry_id, alias in entries.aliased.items():
                aliased[(source, entry_id)] = (
                    replace(alias, file_exists=False) if missing(alias.path) else alias
                )
        targets: dict[tuple[str, str], MergeTarget] = {}
        if merge_by_link:
            for post in posts:
                key = (post.source, post.id)
                if key not in known and key not in buried and key not in aliased and key not in targets:
                    target = self._merge_target(post)
                    if target is not None:
                        targets[key] = target
        return IndexView(known, buried, aliased, targets)

    def save(self, posts: Sequence[Post], now: datetime, *, merge_by_link: bool = False) -> list[SaveResult]:
        """Write new and changed posts; the index is committed after the files.

        Within one call the first post of an id wins. A known entry whose
        upstream content is unchanged is not written at all; a changed one is
        rewritten in place (same path, first-seen kept, ``updated`` set),
        subject to the rewrite cap. Entries retention pruned stay pruned, and
        so do those whose post file was deleted by hand (noticed here: a known
        entry without its file becomes a tombstone).
        With ``merge_by_link``, a new entry whose canonical link another
        source's post already has is folded into that post (its categories
        added) instead of getting a file of its own.
        """
        batch = self.plan_posts(posts, now, merge_by_link=merge_by_link)
        try:
            self.render_files(batch)
            self.write_files(batch)
            self.make_durable(batch)
        except BaseException:
            self.abandon(batch)
            raise
        return self.commit(batch)

    # ``save`` in steps, for a caller that writes and flushes the files off its event loop
    # (creating files and flushing them wait on the disk) while other work goes on: decide,
    # write the files, flush them, then record them in the index. Between the steps another
    # source's batch may be planned; ``_unindexed`` keeps two batches from choosing one name.

    def plan_posts(self, posts: Sequence[Post], now: datetime, *, merge_by_link: bool = False) -> SaveBatch:
        """Step 1: decide what each post needs (``aggregator.decide``), and name each new file."""
        now = now.astimezone(UTC).replace(microsecond=0)
        intents = decide(
            posts, self._view(posts, merge_by_link=merge_by_link), now, merge_by_link=merge_by_link
        )
        results: list[SaveResult] = []
        rows: list[tuple[EntryUpdateIntent, str]] = []
        deleted: list[tuple[str, str]] = []
        taken = self._unindexed
        # Each new post's own path, and who holds it: one question for the batch, not one a
        # post (a round trip each on PostgreSQL); a path taken sends ``_free_path`` to ask on.
        own_paths = {
            id(intent): postfile.relpath(intent.post)
            for intent in intents
            if intent.to_write is not None and intent.path is None
        }
        owners = self.index.path_owners(own_paths.values())
        for intent in intents:
            post = intent.post
            relpath = intent.path
            if intent.to_write is not None:
                if relpath is None:
                    relpath = self._free_path(own_paths[id(intent)], post, taken, owners)
                taken.add(relpath)
                rows.append((intent, relpath))
            elif intent.forget:
                deleted.append((post.source, post.id))
            path = self.posts_dir / (relpath if relpath is not None else postfile.relpath(post))
            results.append(SaveResult(intent.result_post, intent.outcome, path))
        return SaveBatch(results, rows, now, deleted)

    def render_files(self, batch: SaveBatch) -> None:
        """Step 2: render each post to write, once, after everything that changes it."""
        posts = [intent.to_write for intent, _relpath in batch.rows if intent.to_write is not None]
        batch.files = [postfile.render(post) for post in posts]

    def write_files(self, batch: SaveBatch) -> None:
        """Step 3 (may run in another thread: it touches only the batch and its files)."""
        if len(batch.files) != len(batch.rows):
            raise StoreError("a batch must be rendered (render_files) before its files are written")
        for (_intent, relpath), data in zip(batch.rows, batch.files, strict=True):
            path = self.posts_dir / relpath
            try:
                stat = write_atomic_stat(path, data, fsync=self.fsync == "file")
            except OSError as error:
                raise StoreError(f"cannot write {path}: {error}") from error
            batch.written.append(path)
            batch.stats.append(stat)

    def make_durable(self, batch: SaveBatch) -> None:
        """Step 4 (may run in another thread): flush the batch's files to disk, per the fsync policy."""
        written = batch.written
        if self.fsync == "batch" and written:
            try:
                fsync_batch(written)
            except OSError as error:
                raise StoreError(f"cannot flush posts to disk under {self.posts_dir}: {error}") from error

    def abandon(self, batch: SaveBatch) -> None:
        """A batch that will not be committed (its flush failed or was cancelled)."""
        self._unindexed.difference_update(relpath for _intent, relpath in batch.rows)

    def commit(self, batch: SaveBatch) -> list[SaveResult]:
        """Step 5: record the batch in the index (after its files are on disk)."""
        rows, now, results = batch.rows, batch.now, batch.results
        if len(batch.stats) != len(rows):
            raise StoreError("a batch whose files were not all written cannot be committed")
        try:
            if batch.deleted:
                left = self._forget_deleted(batch.deleted, now)
                results[:] = [
                    replace(r, left_feeds=frozenset(left[(r.post.source, r.post.id)]))
                    if r.outcome is Outcome.DELETED and (r.post.source, r.post.id) in left
                    else r
                    for r in results
                ]
            if rows:
                records = [
                    PostRecord(
                        intent.to_write,
                        relpath,
                        intent.upstream_hash,
                        intent.upstream_updated_ts,
                        intent.rewrites,
                        intent.last_rewrite_ts,
                        replacing=intent.previous is not None,
                        file_mtime_ns=stat.st_mtime_ns,
                        file_size=stat.st_size,
                    )
                    for (intent, relpath), stat in zip(rows, batch.stats, strict=True)
                    if intent.to_write is not None
                ]
                with self.index.transaction():
                    self.index.record_posts(records)
                    record_media(self.index, records)
        finally:
            self.abandon(batch)  # committed or failed: its names are the index's business now
        return results

    def _merge_target(self, post: Post) -> MergeTarget | None:
        """Another source's post with this entry's canonical link, as its file holds it."""
        canon = canonical_link(post.link)
        if not canon:
            return None
        target = self.index.merge_candidate(canon, post.source)
        if target is None:
            return None
        try:
            # The file, not the index: it may already carry a merge made earlier in this batch.
            current = postfile.read(self.posts_dir / target.path)
        except StoreError as error:
            log.warning("not merging %s/%s: %s", post.source, post.id, error)
            return None
        return MergeTarget(target, current)

    def _free_path(
        self, relpath: str, post: Post, taken: set[str], owners: Mapping[str, tuple[str, str]]
    ) -> str:
        """The deterministic path, unless another entry already holds it (``owners``: the
        owners of the deterministic paths, asked of the index for the whole batch)."""
        stem = relpath.removesuffix(".md")
        candidate = relpath
        for attempt in range(2, 100):
            owner = owners.get(candidate) if candidate == relpath else self.index.path_owner(candidate)
            free = owner is None or owner == (post.source, post.id)
            if free and candidate not in taken:
                return candidate
            candidate = f"{stem}-{attempt}.md"
        raise StoreError(f"no free file name for {post.source}/{post.id}")


def open_store(config: Config) -> PostStore:
    """The post store (files, index and state database) a config points at."""
    return PostStore(
        config.posts_dir,
        config.index_path,
        fsync=config.defaults.fsync,
        state_path=config.state_path,
        index=open_index(config),
    )
