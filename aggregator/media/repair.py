"""Keeping the index's media rows in step with the post files, and pointing posts at late copies.

``record_media`` runs wherever the store records posts (a save, a reindex): the images each
post uses, archived or pending, as its file says. ``point_posts_at`` is the second half of a
retry: images that failed when their post was written are archived now, so the post files
are rewritten (atomically, in place, upstream's hash and rewrite counters kept) to point at
the copies, and their feeds are owed a build.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from aggregator import postfile
from aggregator.errors import StoreError
from aggregator.files import write_atomic_stat
from aggregator.index.interface import Index
from aggregator.index.posts import PostRecord
from aggregator.keys import feed_keys_for
from aggregator.media.html import image_urls, rewrite_post
from aggregator.model import Post

log = logging.getLogger("aggregator.media")


def media_refs_of(post: Post) -> list[tuple[str, str | None]]:
    """(original URL, local copy) of each archived image, then (URL, None) of each still pending."""
    if post.media is None:
        return []
    archived = dict(post.media)
    pending = [(url, None) for url in image_urls(post) if url not in archived]
    return [*archived.items(), *pending]


def record_media(index: Index, records: Sequence[PostRecord]) -> None:
    """The media rows of recorded posts (inside the same ``transaction()``)."""
    for record in records:
        post = record.post
        if post.media is None and not record.replacing:
            continue  # a new post that was not archived: nothing to record or forget
        index.set_media_refs(post.source, post.id, media_refs_of(post))
        if post.media:
            index.adopt_media(post.source, post.media)


def point_posts_at(
    index: Index,
    posts_dir: Path,
    source: str,
    entry_ids: Sequence[str],
    copies: Mapping[str, str],
    *,
    fsync: bool,
) -> set[str]:
    """Rewrite these posts of ``source`` to use the new ``copies``; return the feed keys touched."""
    known = index.known_entries(source, list(entry_ids)).known
    records: list[PostRecord] = []
    touched: set[str] = set()
    for entry_id in entry_ids:
        entry = known.get(entry_id)
        if entry is None:
            continue  # pruned or deleted since
        path = posts_dir / entry.path
        try:
            post = postfile.read(path)
        except StoreError as error:
            log.warning("not pointing %s at its archived images: %s", path, error)
            continue
        if (post.source, post.id) != (source, entry_id):
            continue
        uses = set(image_urls(post))
        mine = {url: local for url, local in copies.items() if url in uses}
        if not mine:
            continue
        changed = rewrite_post(post if post.media is not None else replace(post, media=()), mine)
        try:
            stat = write_atomic_stat(path, postfile.render(changed), fsync=fsync)
        except OSError as error:
            raise StoreError(f"cannot write {path}: {error}") from error
        records.append(
            PostRecord(
                changed, entry.path, entry.upstream_hash, entry.upstream_updated_ts, entry.rewrites,
                entry.last_rewrite_ts, replacing=True, file_mtime_ns=stat.st_mtime_ns, file_size=stat.st_size,
            )
        )  # fmt: skip
        touched.update(feed_keys_for(post.source, post.categories))
    if records:
        with index.transaction():
            index.record_posts(records)
            record_media(index, records)
    return touched
