"""Keeping the index a faithful cache of the post files: hand edits, deletions, crashes, reindex.

The files are the truth. ``sync_with_files`` reflects what changed on disk
behind the store's back (run by ``aggregator build`` and at daemon start);
``reindex`` rebuilds the posts part of the index from the files alone;
``verify`` lists what differs. A post file deleted by hand becomes a
tombstone, so the entry is not fetched back.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from aggregator import postfile
from aggregator.decide import DELETED, EntryForUpdate
from aggregator.errors import StoreError
from aggregator.files import TEMP_SUFFIX, sweep_temp_files, writer_alive
from aggregator.index.interface import Index
from aggregator.index.posts import PostRecord
from aggregator.keys import feed_keys_for
from aggregator.media.html import original_post
from aggregator.media.repair import record_media
from aggregator.model import Post

log = logging.getLogger("aggregator.store")

REINDEX_BATCH = 500  # post files indexed in one call during a reindex

ReindexVerdict = Literal["adopt", "restored", "pruned", "duplicate"]


def reindex_verdict(tombstone_reason: str | None, adopted_path: str | None) -> ReindexVerdict:
    """What a reindex does with a post file, the newest first: index it (``adopt``; a file put
    back after a deletion by hand is ``restored`` and indexed), or remove it: its entry was
    pruned by retention, or a newer file of the same entry was indexed already."""
    if adopted_path is not None:
        return "duplicate"
    if tombstone_reason == DELETED:
        return "restored"
    if tombstone_reason is not None:
        return "pruned"
    return "adopt"


class FileSync:
    """``PostStore``'s side that reads the posts folder back (over its posts folder and its index)."""

    posts_dir: Path
    index: Index

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
        adopted = [self._record_of_file(post, relpath, known, replacing=True)]
        self.index.record_posts(adopted)
        record_media(self.index, adopted)  # the media map in its front matter
        touched.update(feed_keys_for(post.source, post.categories))
        return touched

    def _record_of_file(
        self, post: Post, relpath: str, known: EntryForUpdate | None, *, replacing: bool
    ) -> PostRecord:
        """The index row of a post file: what the index knew of its entry upstream, else the file's own."""
        try:
            stat = os.stat(self.posts_dir / relpath)
            mtime_ns, size = stat.st_mtime_ns, stat.st_size
        except OSError:
            mtime_ns, size = 0, 0
        return PostRecord(
            post,
            relpath,
            # An archived post's upstream content is its body with the original image URLs.
            upstream_hash=(
                known.upstream_hash if known else replace(original_post(post), merged=()).content_hash
            ),
            upstream_updated_ts=(
                known.upstream_updated_ts if known else (post.updated.timestamp() if post.updated else None)
            ),
            rewrites=known.rewrites if known else 0,
            last_rewrite_ts=known.last_rewrite_ts if known else None,
            replacing=replacing,
            file_mtime_ns=mtime_ns,
            file_size=size,
        )

    def reindex(self, now: datetime | None = None) -> int:
        """Rebuild the posts part of the index from the post files alone.

        When two files hold the same entry, the most recently written one wins
        and the other is removed. Posts the index listed whose files are gone
        were deleted by hand: they become tombstones first, as in
        ``sync_with_files``. Source states and tombstones are not touched.

        The index is emptied first, so who holds a path and what is known of an entry
        need not be asked of it for each file: the files go in ``REINDEX_BATCH`` at a
        time, their tombstones asked once a batch (on PostgreSQL a round trip for each
        file made a reindex of 50,000 posts 4x SQLite's time; bench/results.md).
        """
        sweep_temp_files(self.posts_dir)
        files = self.scan_files()
        missing = [
            (source, entry_id) for source, entry_id, path, *_ in self.index.iter_paths() if path not in files
        ]
        if missing:
            self.index.bury(missing, DELETED, now or datetime.now(UTC))
        newest_first = sorted(files, key=lambda p: (-files[p][0], p))
        adopted: dict[tuple[str, str], str] = {}  # each entry's file, once indexed
        with self.index.transaction():
            self.index.forget_all_posts()
            for start in range(0, len(newest_first), REINDEX_BATCH):
                posts = self._read_posts(newest_first[start : start + REINDEX_BATCH])
                buried = self._tombstone_reasons([post for _relpath, post in posts])
                batch: list[PostRecord] = []
                for relpath, post in posts:
                    key = (post.source, post.id)
                    verdict = reindex_verdict(buried.get(key), adopted.get(key))
                    if verdict == "duplicate":
                        log.warning(
                            "%s: duplicate of %s (same source and id); removed", relpath, adopted[key]
                        )
                    elif verdict == "pruned":
                        log.info("%s: removing the file of a post retention pruned", relpath)
                    if verdict in ("duplicate", "pruned"):
                        (self.posts_dir / relpath).unlink(missing_ok=True)
                        continue
                    if verdict == "restored":
                        log.info("%s: post file back; its entry is published again", relpath)
                        self.index.lift(*key)
                    adopted[key] = relpath
                    batch.append(self._record_of_file(post, relpath, None, replacing=False))
                self.index.record_posts(batch)
                record_media(self.index, batch)  # the media maps in their front matter
        return self.index.post_count()

    def _read_posts(self, relpaths: Sequence[str]) -> list[tuple[str, Post]]:
        """The posts of these files; one that cannot be read is left out, with a warning."""
        posts = []
        for relpath in relpaths:
            try:
                posts.append((relpath, postfile.read(self.posts_dir / relpath)))
            except StoreError as error:
                log.warning("%s", error)
        return posts

    def _tombstone_reasons(self, posts: Sequence[Post]) -> dict[tuple[str, str], str]:
        """Why each of these posts' entries has a tombstone, for those that have one (a query a source)."""
        ids: dict[str, list[str]] = {}
        for post in posts:
            ids.setdefault(post.source, []).append(post.id)
        return {
            (source, entry_id): reason
            for source, wanted in ids.items()
            for entry_id, reason in self.index.known_entries(source, wanted).buried.items()
        }

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
