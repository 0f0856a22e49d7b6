"""What happens after polling, in one place: which feeds to build, build, forget, announce::

    poll (Updater.update_many) | feed keys touched, and those still pending | build
        | forget the pending keys built | announce the feed files rewritten (WebSub)

``aggregator fetch``, ``build`` and ``prune`` and the daemon's debounced builds
all call these functions; callers add only their presentation (a progress bar,
a table, log lines, metrics) and their timing (the daemon's debounce).

Crash safety rests on the index's pending keys: every commit that changes a
feed records its key, and a key is forgotten only after a build of it has
succeeded. A build that fails, or a process killed before it, leaves the keys
for the next run to build.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aggregator.config import Config, SourceConfig
from aggregator.files import sweep_temp_files
from aggregator.pipeline import Updater, UpdateResult, retention_policy
from aggregator.state import utcnow
from aggregator.store import PostStore

if TYPE_CHECKING:
    from aggregator.publish.builder import BuildReport, FeedBuilder
    from aggregator.websub import PingResult
    from aggregator.workers import ParserPool

T = TypeVar("T")


@dataclass(frozen=True)
class Published:
    """One build and its announcement."""

    build: BuildReport
    pings: tuple[PingResult, ...] = ()  # one per feed file rewritten, when a hub is configured
    build_seconds: float = 0.0

    @property
    def feeds_written(self) -> int:
        return len(self.build.rendered)


@dataclass(frozen=True)
class BatchReport:
    """A one-shot poll of some sources and the build that followed it."""

    results: tuple[UpdateResult, ...]
    published: Published | None  # None: no feed was due

    @property
    def feeds_written(self) -> int:
        return self.published.feeds_written if self.published else 0

    @property
    def all_failed(self) -> bool:
        return every_poll_failed(self.results)


@dataclass(frozen=True)
class PruneReport:
    removed: int  # posts
    published: Published | None


def touched_keys(results: Iterable[UpdateResult]) -> frozenset[str]:
    """The feed keys a batch of updates changed."""
    return frozenset(key for result in results for key in result.touched_keys)


def every_poll_failed(results: Sequence[UpdateResult]) -> bool:
    """Did every source that was polled fail? A skipped source was not polled, so it is no failure."""
    polled = [r for r in results if not r.skipped]
    failed = sum(1 for r in polled if r.outcome in ("error", "gone"))
    return bool(failed) and failed == len(polled)


def build_due(keys: Collection[str], *, index_exists: bool) -> bool:
    """Is a build needed: feeds to rebuild, or a feeds folder without its index page yet."""
    return bool(keys) or not index_exists


def builder_for(config: Config, store: PostStore) -> FeedBuilder:
    # Imported when a build is due: feedgen and lxml were a fifth of the start-up of a poll
    # in which nothing changed.
    from aggregator.publish.builder import FeedBuilder

    return FeedBuilder(config, store)


def build_and_forget(builder: FeedBuilder, keys: Iterable[str] | None) -> BuildReport:
    """Build ``keys`` (every feed when None), then forget the pending keys that were built.

    Blocking (the daemon runs it in a thread). When the build raises, nothing is
    forgotten. A full build forgets the keys pending when it started: one that a
    concurrent run adds meanwhile stays for the next build.
    """
    store = builder.store
    wanted = None if keys is None else set(keys)
    built = store.index.pending_feed_keys() if wanted is None else wanted
    report = builder.build(wanted)
    store.index.clear_pending_feed_keys(built)
    return report


async def announce(config: Config, urls: Sequence[str]) -> list[PingResult]:
    """Ping the WebSub hub, when one is configured, with the feed URLs rewritten."""
    if config.build.websub_hub is None or not urls:
        return []
    from aggregator import websub

    return await websub.announce(config, urls)


async def publish(builder: FeedBuilder, keys: Iterable[str] | None, *, in_thread: bool = True) -> Published:
    """Build ``keys`` (every feed when None), forget them as pending, announce what was rewritten.

    ``in_thread``: the daemon's event loop must go on serving and polling during a
    build; a one-shot command has nothing else to run and builds inline.
    Raises what the build raises (``BuildError``), before anything is forgotten.
    """
    started = time.monotonic()
    report = await _blocking(in_thread, build_and_forget, builder, keys)
    seconds = time.monotonic() - started
    pings = await announce(builder.config, report.written_urls)
    return Published(report, tuple(pings), seconds)


async def publish_pending(
    config: Config,
    store: PostStore,
    also: Iterable[str] = (),
    *,
    builder: FeedBuilder | None = None,
    in_thread: bool = True,
) -> Published | None:
    """Publish ``also`` and every key still pending in the index; None when nothing was due.

    The pending keys include those a run in another process saved but did not
    build (it died, or its build failed), whoever runs next. ``builder``: the
    caller's own (the daemon keeps one, over its own connection to ``store``);
    else one is made, only when a build is due.
    """
    left_pending = await _blocking(in_thread, store.index.pending_feed_keys)
    keys = set(also) | left_pending
    if not build_due(keys, index_exists=(config.feeds_dir / "index.html").exists()):
        return None
    if left_pending - set(also):
        # An earlier run stopped before building these: if it was killed mid-build, its
        # temporary files are still there (those of a writer still running are left alone).
        await _blocking(in_thread, sweep_temp_files, config.feeds_dir)
    return await publish(builder or builder_for(config, store), keys, in_thread=in_thread)


async def _blocking(in_thread: bool, function: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(function, *args) if in_thread else function(*args)


async def poll_and_publish(
    config: Config,
    store: PostStore,
    sources: Sequence[SourceConfig],
    *,
    force: bool = False,
    on_result: Callable[[UpdateResult], None] | None = None,
    parser: ParserPool | None = None,
) -> BatchReport:
    """Poll ``sources`` once (``Updater.update_many``), then publish every feed they or earlier runs changed.

    ``on_result`` is called as each source finishes (the CLI's progress bar). The
    pending keys are read after the polls, so feeds an interrupted earlier run
    changed but never built are built too.
    """
    updater = Updater(config, store, parser=parser)
    try:
        results = await updater.update_many(sources, force=force, on_result=on_result)
    finally:
        await updater.aclose()
    published = await publish_pending(config, store, touched_keys(results), in_thread=False)
    return BatchReport(tuple(results), published)


async def rebuild_everything(config: Config, store: PostStore) -> Published:
    """``aggregator build``: take in hand edits, sweep what a killed build left, prune, build every feed."""
    store.sync_with_files()
    sweep_temp_files(config.feeds_dir)
    store.prune(retention_policy(config), utcnow())
    return await publish(builder_for(config, store), None, in_thread=False)


async def prune_and_publish(config: Config, store: PostStore) -> PruneReport:
    """``aggregator prune``: apply retention now, then publish the feeds it (or earlier runs) changed."""
    pruned = store.prune(retention_policy(config), utcnow())
    published = await publish_pending(config, store, pruned.touched_keys, in_thread=False)
    return PruneReport(pruned.removed, published)
