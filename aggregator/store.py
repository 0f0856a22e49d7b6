"""Post files (the truth) and the index (a cache of them: SQLite, or PostgreSQL for a fleet).

What a post file holds, and how it is named, rendered and read, is
``aggregator.postfile``'s business; this module decides what each save writes,
writes it, and keeps the index in step.

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

Saving runs in steps (``plan_posts``, ``write_files``, ``make_durable``,
``commit``) so that a caller on an event loop can write and flush the files
in a thread; ``save`` runs them all.

The index (WAL mode) also holds what each published feed was built from, so
feeds are built without reading post files. It records its schema version,
migrates older ones step by step, and refuses a newer one. What no post file
holds (each source's polling state, and the tombstones of entries retention
pruned or a person deleted, so they are not fetched back) is in the state
database (``aggregator.index.states``), which ``reindex`` leaves alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import postfile
from aggregator.config import Config
from aggregator.decide import (
    DELETED,
    RETENTION,
    AliasForUpdate,
    EntryForUpdate,
    EntryUpdateIntent,
    IndexView,
    MergeTarget,
    decide,
)
from aggregator.errors import StoreError
from aggregator.files import (
    TEMP_SUFFIX,
    WriterMark,
    fsync_batch,
    sweep_temp_files,
    write_atomic_stat,
    writer_alive,
)
from aggregator.index.interface import Index
from aggregator.index.opening import open_index
from aggregator.index.posts import PostRecord
from aggregator.index.sqlite import SqliteIndex
from aggregator.index.states import STATE_FILE
from aggregator.keys import ALL_KEY, feed_keys_for, source_key
from aggregator.model import Outcome, Post
from aggregator.normalize import canonical_link

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


@dataclass(frozen=True)
class Limits:
    """How many posts to keep, and for how long (by post date); None means no limit."""

    max_age: timedelta | None = None
    max_posts: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age is not None or self.max_posts is not None


@dataclass(frozen=True)
class RetentionPolicy:
    """Limits over all posts together and per source; everything off by default."""

    overall: Limits = Limits()
    per_source: Mapping[str, Limits] = field(default_factory=dict)

    @functools.cached_property
    def active(self) -> bool:  # asked on every update; per_source can hold every source
        return self.overall.active or any(limits.active for limits in self.per_source.values())


@dataclass(frozen=True)
class PruneResult:
    removed: int = 0
    touched_keys: frozenset[str] = frozenset()


class PostStore:
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
        # Who holds each new post's own path: one question for the batch, not one a post
        # (a round trip each on PostgreSQL); a path taken sends ``_free_path`` to ask on.
        owners = self.index.path_owners(
            str(postfile.relpath(i.post)) for i in intents if i.to_write is not None and i.path is None
        )
        for intent in intents:
            post = intent.post
            relpath = intent.path
            if intent.to_write is not None:
                if relpath is None:
                    relpath = self._free_path(postfile.relpath(post), post, taken, owners)
                taken.add(relpath)
                rows.append((intent, relpath))
            elif intent.forget:
                deleted.append((post.source, post.id))
            path = self.posts_dir / (relpath if relpath is not None else postfile.relpath(post))
            results.append(SaveResult(intent.result_post, intent.outcome, path))
        return SaveBatch(results, rows, now, deleted)

    def write_files(self, batch: SaveBatch) -> None:
        """Step 2 (may run in another thread: it touches only the batch and its files)."""
        for intent, relpath in batch.rows:
            path = self.posts_dir / relpath
            assert intent.to_write is not None
            try:
                stat = write_atomic_stat(path, postfile.render(intent.to_write), fsync=self.fsync == "file")
            except OSError as error:
                raise StoreError(f"cannot write {path}: {error}") from error
            batch.written.append(path)
            batch.stats.append(stat)

    def make_durable(self, batch: SaveBatch) -> None:
        """Step 3 (may run in another thread): flush the batch's files to disk, per the fsync policy."""
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
        """Step 4: record the batch in the index (after its files are on disk)."""
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
        self, relpath: Path, post: Post, taken: set[str], owners: Mapping[str, tuple[str, str]]
    ) -> str:
        """The deterministic path, unless another entry already holds it (``owners``: the
        owners of the deterministic paths, asked of the index for the whole batch)."""
        candidate = relpath
        for attempt in range(2, 100):
            owner = (
                owners.get(str(candidate)) if candidate == relpath else self.index.path_owner(str(candidate))
            )
            free = owner is None or owner == (post.source, post.id)
            if free and str(candidate) not in taken:
                return str(candidate)
            candidate = relpath.with_name(f"{relpath.stem}-{attempt}{relpath.suffix}")
        raise StoreError(f"no free file name for {post.source}/{post.id}")

    def _forget_deleted(
        self, keys: Sequence[tuple[str, str]], now: datetime
    ) -> dict[tuple[str, str], set[str]]:
        """Indexed posts whose files were deleted by hand: tombstones, then out of the index.

        Returns the feed keys each post leaves."""
        for source, entry_id in keys:
            log.info("%s/%s: post file deleted by hand; not published again", source, entry_id)
        self.index.bury(keys, DELETED, now)
        with self.index.transaction():
            return {(source, entry_id): self.index.forget(source, entry_id) for source, entry_id in keys}

    # Retention ---------------------------------------------------------------

    def prune(
        self, policy: RetentionPolicy, now: datetime, *, sources: Iterable[str] | None = None
    ) -> PruneResult:
        """Remove posts beyond the limits, index rows and files together.

        ``sources`` restricts the per-source limits to those sources (the
        overall limits always apply). A pruned entry is remembered (a tombstone
        in the state database), so a later fetch that still sees it upstream
        does not bring it back. The tombstones commit first, then the index,
        then the files go: a crash in between leaves rows or files that
        ``sync_with_files`` recognises as pruned and removes.
        """
        if not policy.active:
            return PruneResult()
        scopes: list[tuple[str, Limits]] = [(ALL_KEY, policy.overall)]
        names = policy.per_source.keys() if sources is None else sources
        scopes += [(source_key(n), policy.per_source[n]) for n in names if n in policy.per_source]
        victims: dict[tuple[str, str], str] = {}
        for key, limits in scopes:
            if limits.max_age is not None:
                victims.update(self.index.posts_older_than(key, now - limits.max_age))
            if limits.max_posts is not None:
                victims.update(self.index.posts_beyond(key, limits.max_posts))
        if not victims:
            return PruneResult()
        touched: set[str] = set()
        self.index.bury(list(victims), RETENTION, now)  # copies merged into a post are pruned with it
        with self.index.transaction():
            for source, entry_id in victims:
                touched |= self.index.forget(source, entry_id)
        for path in victims.values():
            try:
                (self.posts_dir / path).unlink(missing_ok=True)
            except OSError as error:
                log.warning("cannot remove pruned post %s: %s", path, error)
        log.info("retention pruned %d posts", len(victims))
        return PruneResult(len(victims), frozenset(touched))

    # Keeping the index a faithful cache of the files -------------------------

    def scan_files(self) -> dict[str, tuple[int, int]]:
        """Every post file's (mtime in ns, size) by its path relative to the posts folder."""
        return self._scan()[0]

    def _scan(self) -> tuple[dict[str, tuple[int, int]], list[str]]:
        """Post files with their (mtime in ns, size), and the temporary files seen on the way.

        os.scandir, and relative paths joined as text (os.path.relpath took
        more than half of a scan of 50,000 posts); two numbers kept per file,
        not its whole stat (a third of the memory of a build at 50,000 posts).
        """
        found: dict[str, tuple[int, int]] = {}
        temporary: list[str] = []
        pending = [("", str(self.posts_dir))]
        while pending:
            relative, directory = pending.pop()
            try:
                entries = os.scandir(directory)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append((relative + name + os.sep, entry.path))
                        elif name.endswith(".md") and not name.startswith("."):
                            stat = entry.stat()
                            found[relative + name] = (stat.st_mtime_ns, stat.st_size)
                        elif name.endswith(TEMP_SUFFIX):
                            temporary.append(entry.path)
                    except OSError:
                        continue
        return found, temporary

    def sync_with_files(self, now: datetime | None = None) -> set[str]:
        """Reflect posts edited, added or deleted by hand; return the feed keys touched.

        An edited file keeps what the index knows about its entry upstream, so
        the next fetch of an unchanged entry leaves the edit alone. A deleted
        file becomes a tombstone (dated ``now``): the entry is not written
        again, whatever upstream does, until ``restore_tombstones``.
        """
        now = now or datetime.now(UTC)
        on_disk, temporary = self._scan()
        for path in temporary:  # as sweep_temp_files, without a second walk of the tree
            if not writer_alive(os.path.basename(path)):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        # One pass over the index, keeping only the differences (not a second map of every post).
        missing: list[tuple[str, str]] = []
        changed: list[str] = []
        for source, entry_id, path, mtime, size in self.index.iter_paths():
            stamp = on_disk.pop(path, None)
            if stamp is None:
                missing.append((source, entry_id))
            elif stamp != (mtime, size):
                changed.append(path)
        touched: set[str] = set()
        if missing:
            touched.update(*self._forget_deleted(missing, now).values())
        # A tombstone beside an indexed post whose file is there (a crash between the tombstone's
        # commit and the index's, or a deleted file put back by hand): retention's wins, while
        # a file put back undoes a deletion.
        both = self.index.tombstoned_posts()
        with self.index.transaction():
            for source, entry_id, reason, _path in both:
                if reason == DELETED:
                    self.index.lift(source, entry_id)
                else:
                    touched |= self.index.forget(source, entry_id)
            for path in changed:
                touched |= self._adopt_file(path)
            for path in sorted(on_disk):  # files the index does not know
                touched |= self._adopt_file(path)
        for _source, _entry_id, reason, path in both:
            if reason != DELETED:
                log.info("%s: removing the file of a post retention pruned", path)
                with contextlib.suppress(OSError):
                    (self.posts_dir / path).unlink()
        return touched

    def _adopt_file(self, relpath: str) -> set[str]:
        """Index one post file (inside a transaction); return the feed keys touched."""
        try:
            post = postfile.read(self.posts_dir / relpath)
        except StoreError as error:
            log.warning("%s", error)
            return set()
        touched: set[str] = set()
        # The file at this path may have held another entry before a hand edit.
        owner = self.index.path_owner(relpath)
        if owner is not None and owner != (post.source, post.id):
            touched |= self.index.forget(*owner)
        entries = self.index.known_entries(post.source, [post.id])
        reason = entries.buried.get(post.id)
        if reason == DELETED:
            # Its file was deleted by hand, and now someone put one back: the file is the truth.
            log.info("%s: post file back; its entry is published again", relpath)
            self.index.lift(post.source, post.id)
        elif reason is not None:
            log.info("%s: removing the file of a post retention pruned", relpath)
            (self.posts_dir / relpath).unlink(missing_ok=True)
            return touched
        known = entries.known.get(post.id)
        if known is not None and known.path != relpath and (self.posts_dir / known.path).exists():
            # Two files for one entry: the one the index committed is the survivor.
            log.warning("%s: duplicate of %s (same source and id); removed", relpath, known.path)
            (self.posts_dir / relpath).unlink(missing_ok=True)
            return touched
        if known is not None:
            touched |= self.index.forget(post.source, post.id)
        if post.first_seen is None and known is not None:
            post = replace(post, first_seen=datetime.fromtimestamp(known.first_seen_ts, UTC))
        try:
            stat = os.stat(self.posts_dir / relpath)
            mtime_ns, size = stat.st_mtime_ns, stat.st_size
        except OSError:
            mtime_ns, size = 0, 0
        self.index.record_posts(
            [
                PostRecord(
                    post,
                    relpath,
                    upstream_hash=known.upstream_hash if known else replace(post, merged=()).content_hash,
                    upstream_updated_ts=(
                        known.upstream_updated_ts
                        if known
                        else (post.updated.timestamp() if post.updated else None)
                    ),
                    rewrites=known.rewrites if known else 0,
                    last_rewrite_ts=known.last_rewrite_ts if known else None,
                    replacing=True,
                    file_mtime_ns=mtime_ns,
                    file_size=size,
                )
            ]
        )
        touched.update(feed_keys_for(post.source, post.categories))
        return touched

    def reindex(self, now: datetime | None = None) -> int:
        """Rebuild the posts part of the index from the post files alone.

        When two files hold the same entry, the most recently written one wins
        and the other is removed. Posts the index listed whose files are gone
        were deleted by hand: they become tombstones first, as in
        ``sync_with_files``. Source states and tombstones are not touched.
        """
        sweep_temp_files(self.posts_dir)
        files = self.scan_files()
        missing = [
            (source, entry_id) for source, entry_id, path, *_ in self.index.iter_paths() if path not in files
        ]
        if missing:
            self.index.bury(missing, DELETED, now or datetime.now(UTC))
        with self.index.transaction():
            self.index.forget_all_posts()
            for relpath in sorted(files, key=lambda p: (-files[p][0], p)):
                self._adopt_file(relpath)
        return self.index.post_count()

    def verify(self) -> list[str]:
        """Differences between the files and the index, as readable lines."""
        problems = []
        on_disk = self.scan_files()
        indexed = {path: (source, entry_id) for source, entry_id, path, _m, _s in self.index.iter_paths()}
        for path in sorted(indexed.keys() - on_disk.keys()):
            problems.append(f"index lists {path}, but the file is missing")
        for path in sorted(on_disk.keys() - indexed.keys()):
            problems.append(f"{path} is not in the index")
        without_feed = self.index.posts_without_feed()
        if without_feed:
            problems.append(f"{without_feed} indexed posts belong to no feed")
        for source, entry_id, reason, _path in self.index.tombstoned_posts():
            problems.append(f"{source}/{entry_id} has a tombstone ({reason}) but the index lists it")
        for dirpath, _dirs, filenames in os.walk(self.posts_dir):
            problems += [
                f"leftover temporary file {os.path.join(dirpath, n)}"
                for n in filenames
                if n.endswith(TEMP_SUFFIX) and not writer_alive(n)
            ]
        return problems


def open_store(config: Config) -> PostStore:
    """The post store (files, index and state database) a config points at."""
    return PostStore(
        config.posts_dir,
        config.index_path,
        fsync=config.defaults.fsync,
        state_path=config.state_path,
        index=open_index(config),
    )
