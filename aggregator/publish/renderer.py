"""Render planned feeds and write the files whose bytes changed.

A ``Job`` (planned by ``aggregator.publish.builder``) names a feed and its newest refs. The
``Renderer`` takes each ref's item fragments from a ``FragmentCache`` (by source, id and content
hash) or renders the missing ones in one batch, makes every configured format, and writes a file
only when its bytes differ, atomically, on a few threads (a reader never sees a partial feed).
It writes nothing to the index: the builder records every feed once all its files are on disk.
The same renderer runs in worker processes (``aggregator.publish.parallel``).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aggregator.config import Config
from aggregator.files import write_atomic
from aggregator.index.feeds import FeedRef, IndexedPost
from aggregator.publish.formats import Fragments, render_feed, render_fragments
from aggregator.publish.items import ItemOptions
from aggregator.publish.specs import FORMAT_FILES, FeedSpec, feed_url

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rendered item fragments kept between feeds (and between builds in the daemon).
FRAGMENT_CACHE_BYTES = 128 * 1024 * 1024


class FragmentCache:
    """Rendered items by (source, id, content hash), least recently used dropped past a byte budget."""

    def __init__(self, budget: int = FRAGMENT_CACHE_BYTES) -> None:
        self.budget = budget
        self.size = 0
        self.options: ItemOptions | None = None
        self._items: OrderedDict[tuple[str, str, str], Fragments] = OrderedDict()

    def reset_if_changed(self, options: ItemOptions) -> None:
        if options != self.options:
            self._items.clear()
            self.size = 0
            self.options = options

    def get(self, key: tuple[str, str, str]) -> Fragments | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, str], fragments: Fragments) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old.size
        self._items[key] = fragments
        self.size += fragments.size
        while self.size > self.budget and len(self._items) > 1:
            _key, dropped = self._items.popitem(last=False)
            self.size -= dropped.size


@dataclass(frozen=True)
class Job:
    """A feed to render: planned by the builder, rendered by it or by a worker process."""

    spec: FeedSpec
    refs: tuple[FeedRef, ...]
    signature: str


@dataclass(frozen=True)
class Built:
    """A feed rendered in this build, recorded in the index once its files are written."""

    key: str
    signature: str
    title: str
    count: int
    newest: datetime | None
    written: bool
    urls: tuple[str, ...]  # public URLs of the files written


class Renderer:
    """Renders planned feeds and writes the files whose bytes changed (no index writes)."""

    def __init__(
        self,
        config: Config,
        posts: Callable[[Iterable[tuple[str, str]]], dict[tuple[str, str], IndexedPost]],
        cache: FragmentCache,
    ) -> None:
        self.config = config
        self.posts = posts
        self.cache = cache
        self.options = ItemOptions.of(config)
        self.root = config.feeds_dir  # resolved once, not per feed

    def render(self, jobs: Iterable[Job]) -> list[Built]:
        with _Writer() as writer:
            return [self._render_one(job, writer) for job in jobs]

    def _render_one(self, job: Job, writer: _Writer) -> Built:
        spec, refs = job.spec, job.refs
        directory = self.root / spec.relative_dir
        fragments = self._fragments(refs)
        newest = newest_of(refs)
        urls = []
        for fmt in self.config.build.formats:
            path = directory / FORMAT_FILES[fmt]
            data = render_feed(self.config, spec, fmt, fragments, newest)
            if differs(path, data):
                writer.write(path, data)
                urls.append(feed_url(self.config, spec, fmt))
        for other, name in FORMAT_FILES.items():
            if other not in self.config.build.formats:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
        newest_post = datetime.fromtimestamp(refs[0].date_ts, UTC) if refs else None
        return Built(spec.key, job.signature, spec.title, len(refs), newest_post, bool(urls), tuple(urls))

    def _fragments(self, refs: Sequence[FeedRef]) -> list[Fragments]:
        """Each ref's rendered item, from the cache or rendered now (one batch per feed)."""
        keys = [(r.source, r.entry_id, r.content_hash) for r in refs]
        found = {key: hit for key in keys if (hit := self.cache.get(key)) is not None}
        missing = [key for key in keys if key not in found]
        if missing:
            posts = self.posts((source, entry_id) for source, entry_id, _hash in missing)
            batch = [posts[(s, e)] for s, e, _h in missing if (s, e) in posts]
            for post, fragments in zip(batch, render_fragments(batch, self.options), strict=True):
                key = (post.source, post.id, post.content_hash)
                found[key] = fragments
                self.cache.put(key, fragments)
        return [found[key] for key in keys if key in found]


class _Writer:
    """Atomic writes on a few threads, so the disk works while the next feed renders."""

    def __init__(self, threads: int = 4) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="feed-writer")
        self.pending: list[Future[object]] = []

    def write(self, path: Path, data: bytes) -> None:
        self.pending.append(self.pool.submit(write_atomic, path, data))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_: object) -> None:
        self.pool.shutdown(wait=True)
        for future in self.pending:
            future.result()  # the first failed write raises here (OSError -> BuildError)


def differs(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return True
        return path.read_bytes() != data
    except FileNotFoundError:
        return True


def newest_of(refs: Sequence[FeedRef]) -> datetime:
    """When the feed last changed: its newest item's date or update (no build time: byte-stable)."""
    stamps = [max(ref.date_ts, ref.updated_ts or 0.0) for ref in refs]
    return datetime.fromtimestamp(max(stamps), UTC) if stamps else EPOCH
