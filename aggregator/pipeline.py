"""The update flow, one source at a time::

    state from the index | gone, or waiting out a backoff? skip
        | fetch (conditional; not modified: save the state, stop)
        | parse, normalize (one worker process)
        | first-seen dates | filter and categorize | transform
        | save posts (decide | archive their images, if on | render, write and flush, index)
        | retry images whose download failed earlier, if due | retention | save state
        | -> feed keys touched

``Updater`` only sequences the stages; ``update_many`` runs a batch with a
bound on the sources in flight. What follows (build the touched feeds,
announce them) is ``jobs``'s. A failing source becomes an ``UpdateResult``
holding its error, never an exception that stops the batch; its validators
are saved only after its entries are stored, so a crash mid-update makes the
next run fetch again rather than skip entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from aggregator.config import Config, SourceConfig
from aggregator.errors import AggregatorError, MissingDependency, RateLimited, SourceGone, StoreError
from aggregator.fetch import (
    Fetcher,
    FetchLimits,
    FetchRequest,
    FetchResult,
    HostGate,
    Validators,
    read_local,
    redact_url,
    url_credentials,
)
from aggregator.filters import Selection, category_rules, filter_stages, select_posts
from aggregator.keys import feed_keys_for
from aggregator.media.archive import MediaArchive
from aggregator.media.archiver import MediaArchiver, MediaSettings, pending_urls
from aggregator.media.html import image_urls, rewrite_post
from aggregator.media.repair import point_posts_at
from aggregator.model import NormalizedFeed, Outcome, Post, SourceRules
from aggregator.normalize import with_first_seen
from aggregator.retention import Limits, RetentionPolicy
from aggregator.state import (
    SourceState,
    after_failure,
    after_success,
    config_fingerprint,
    poll_hold,
    utcnow,
)
from aggregator.store import PostStore, SaveBatch, SaveResult
from aggregator.transforms import Transformer, transforms_for
from aggregator.workers import ParserPool, PostRecipe
from aggregator.writebehind import StateKeeper

log = logging.getLogger("aggregator.update")

WRITER_THREADS = 2


@dataclass(frozen=True)
class UpdateResult:
    source: str
    state: SourceState
    new: int = 0
    updated: int = 0
    not_modified: bool = False
    error: AggregatorError | None = None
    skipped: str | None = None  # why the source was not polled (gone, held back)
    held_until: datetime | None = None  # held back by a backoff or Retry-After until then
    touched_keys: frozenset[str] = field(default_factory=frozenset)
    duration: float = 0.0
    previous: SourceState | None = None  # the stored state the update began from

    @property
    def outcome(self) -> str:
        if self.skipped:
            return "skipped"
        if isinstance(self.error, RateLimited):
            return "rate-limited"
        if isinstance(self.error, SourceGone):
            return "gone"
        if self.error:
            return "error"
        return "not-modified" if self.not_modified else "ok"


@functools.lru_cache(maxsize=1 << 16)
def source_fingerprint(source: SourceConfig) -> str:
    # Cached: dumping the model on every poll was a tenth of a not-modified cycle. Room for
    # every source of a large config (a daemon asks twice a poll; with 5,000 sources a cache
    # of 4,096 missed on every one of them).
    return config_fingerprint(source.model_dump(mode="json"))


class Updater:
    """Runs the update flow for sources; owns the fetcher, parser pool, transformer and file writers."""

    def __init__(
        self,
        config: Config,
        store: PostStore,
        *,
        parser: ParserPool | None = None,
        host_gate: HostGate | None = None,
        states: StateKeeper | None = None,
    ) -> None:
        self.config = config
        self.store = store
        # Where states are read and saved: the index, or the daemon's write-behind buffer.
        self.states: StateKeeper = states if states is not None else store.index
        self.host_gate = host_gate  # the fleet's per-host places (None: this process alone)
        self.fetcher = Fetcher(config.defaults.user_agent, fetch_limits(config), host_gate=host_gate)
        self.parser = parser or ParserPool()
        self.transformer = Transformer(config)
        self.media = MediaArchiver(MediaArchive(config.media_dir), store.index)
        self._running: set[str] = set()
        self._merge_turn = asyncio.Lock()
        self._retention_policy = RetentionPolicy()
        self._retention_of: Config | None = None
        self._sources: dict[str, SourceConfig] = {}
        self._sources_of: Config | None = None
        # Post files are written and flushed here, off the event loop. Two threads: the disk
        # serializes them anyway, and a fixed pool keeps the daemon's thread count flat.
        self._writers = ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="post-writer")
        # Fetchers replaced by a reload, closed once no fetch can still be using them.
        self._retired: set[Fetcher] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        for task in list(self._closing):
            task.cancel()
        for fetcher in [self.fetcher, *self._retired]:
            await fetcher.aclose()
        self._retired.clear()
        await self.transformer.aclose()
        self.parser.close()
        # Waits for a write under way (its batch is then abandoned by its own task).
        await asyncio.get_running_loop().run_in_executor(None, self._writers.shutdown)

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from the next poll on (a reload).

        A change to the user agent, timeouts, size cap or concurrency takes a new
        fetcher; the old one serves the fetches already under way and is closed
        once the fetch deadline has passed, when none of them can still run.
        """
        old_limits = self.fetcher.limits
        self.config = config
        self.media.archive = MediaArchive(config.media_dir)
        limits = fetch_limits(config)
        if limits == old_limits and config.defaults.user_agent == self.fetcher.user_agent:
            return
        retired, self.fetcher = (
            self.fetcher,
            Fetcher(config.defaults.user_agent, limits, host_gate=self.host_gate),
        )
        self._retired.add(retired)
        task = asyncio.get_running_loop().create_task(self._close_later(retired, old_limits.deadline + 1))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("fetch settings changed: polls from now on use them")

    async def _close_later(self, fetcher: Fetcher, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retired.discard(fetcher)
        await fetcher.aclose()

    async def update_many(
        self,
        sources: Sequence[SourceConfig],
        *,
        force: bool = False,
        on_result: Callable[[UpdateResult], None] | None = None,
    ) -> list[UpdateResult]:
        """Update ``sources`` together, at most ``2 x concurrency`` of them in flight: a fetch.

        A source waiting out a backoff or a server's Retry-After is skipped unless
        ``force`` (see ``state.poll_hold``). ``on_result`` is called as each source
        finishes (the CLI's progress bar, through ``jobs.poll_and_publish``): callers
        add their presentation there, never a loop of their own.
        """
        # Fetching outruns parsing: with every source started at once, each fetched body waited
        # in memory for a parser (1,000 feeds: the whole 270 MB corpus at the peak), so the
        # sources in flight are bounded.
        slots = asyncio.Semaphore(2 * self.config.defaults.concurrency)

        async def bounded(source: SourceConfig) -> UpdateResult:
            async with slots:
                result = await self.update(source, force=force, honour_waits=True)
            if on_result is not None:
                on_result(result)
            return result

        with self.store.index.deferred_states():
            return list(await asyncio.gather(*(bounded(s) for s in sources)))

    async def update(
        self, source: SourceConfig, *, force: bool = False, honour_waits: bool = False
    ) -> UpdateResult:
        """One source through the whole flow; never raises for the source's own faults.

        ``honour_waits``: skip a source waiting out a backoff or a Retry-After (a fetch
        from the command line). The daemon leaves it off: its scheduler decides when.
        """
        if source.name in self._running:
            state = self.states.source_state(source.name)
            return UpdateResult(source.name, state, skipped="already running")
        self._running.add(source.name)
        started = time.monotonic()
        try:
            stored = self.states.source_state(source.name)
            result = await self._update(source, stored, force=force, honour_waits=honour_waits)
        finally:
            self._running.discard(source.name)
        result = replace(result, duration=time.monotonic() - started, previous=stored)
        _log_result(result)
        return result

    async def _update(
        self, source: SourceConfig, state: SourceState, *, force: bool, honour_waits: bool
    ) -> UpdateResult:
        now = utcnow()
        fingerprint = source_fingerprint(source)
        if state.config_hash != fingerprint:
            # A changed config forgets what was learned about the old one.
            state = SourceState(name=source.name, url=source.url, config_hash=fingerprint)
        if state.gone and not force:
            return UpdateResult(source.name, state, skipped="gone (HTTP 410); edit its config to retry")
        hold = poll_hold(state, force=force, now=now) if honour_waits else None
        if hold is not None:
            return UpdateResult(source.name, state, skipped=hold.reason, held_until=hold.until)
        interval = self.config.interval_of(source)
        respect_cache = self.config.respects_cache_headers(source)
        try:
            fetched = await self._fetch(source, state)
            if fetched.not_modified:
                # Nothing parsed, nothing written but the state; validators as they were.
                state = after_success(
                    state, now=now, interval=interval, http_status=fetched.status, new=0, updated=0,
                    etag=fetched.validators.etag, last_modified=fetched.validators.last_modified,
                    permanent_url=fetched.permanent_url, fresh_for=fetched.fresh_for,
                    ttl=state.ttl, respect_cache=respect_cache,
                )  # fmt: skip
                self.states.save_source_state(state)
                retried = await self._retry_media(source, now)
                return UpdateResult(source.name, state, not_modified=True, touched_keys=retried)
            assert fetched.body is not None
            # Parsed, normalized and rendered in a worker process.
            normalized = await self.parser.posts(
                fetched.body, fetched.headers, fetched.url, self._recipe(source)
            )
            posts = self._with_first_seen(source, normalized)
            posts = self._select(source, posts, now).kept  # filters, then category rules
            posts = await self.transformer.apply(
                posts, transforms_for(self.config, source), trusted=source.trusted
            )
            saved = await self._save(posts, now)
            retried = await self._retry_media(source, now)
            pruned = self.store.prune(self._retention(), now, sources=[source.name])
            if pruned.removed and self.config.archives_media(source):
                self.media.collect()  # the images only the pruned posts used
            new = sum(1 for r in saved if r.outcome is Outcome.NEW)
            updated = sum(1 for r in saved if r.outcome is Outcome.UPDATED)
            touched = pruned.touched_keys | frozenset(
                key
                for r in saved
                if r.outcome in (Outcome.NEW, Outcome.UPDATED, Outcome.MERGED)
                for key in feed_keys_for(r.post.source, r.post.categories)
            )
            touched |= frozenset(key for r in saved for key in r.left_feeds) | retried
            # A change held back by the rewrite cap must come again: no validators, no 304.
            capped = any(r.outcome is Outcome.CAPPED for r in saved)
            validators = Validators() if capped else fetched.validators
            if normalized.warning:
                log.warning("source=%s %s", source.name, normalized.warning)
            state = after_success(
                state, now=now, interval=interval, http_status=fetched.status, new=new,
                updated=updated, etag=validators.etag, last_modified=validators.last_modified,
                permanent_url=fetched.permanent_url, fresh_for=fetched.fresh_for,
                ttl=normalized.ttl, respect_cache=respect_cache,
            )  # fmt: skip
            self.states.save_source_state(state)
            return UpdateResult(source.name, state, new=new, updated=updated, touched_keys=touched)
        except (StoreError, MissingDependency):
            raise  # not the source's fault: every source would fail the same way
        except AggregatorError as error:
            state = after_failure(
                state,
                error,
                now=now,
                interval=interval,
                backoff_cap=self.config.defaults.backoff_cap,
            )
            self.states.save_source_state(state)
            return UpdateResult(source.name, state, error=error)

    async def _fetch(self, source: SourceConfig, state: SourceState) -> FetchResult:
        validators = Validators(state.etag, state.last_modified)
        if source.is_local:
            path = Path(self.config.source_location(source))
            return await asyncio.to_thread(read_local, path, validators, self.config.defaults.max_body)
        url = state.permanent_url or source.url
        request = FetchRequest(
            url=url,
            validators=validators,
            headers=dict(source.headers),
            # Credentials written into the config's URL also apply to a URL it moved to.
            auth=(source.auth.username, source.auth.password) if source.auth else url_credentials(source.url),
            proxy=source.proxy,
            allow_private_redirects=source.allow_private_redirects,
        )
        result = await self.fetcher.fetch(request)
        if result.permanent_url:
            log.warning(
                "source=%s moved permanently from %s to %s; update the url in the config",
                source.name,
                redact_url(url),
                redact_url(result.permanent_url),
            )
        return result

    async def preview(self, source: SourceConfig) -> Selection:
        """Fetch, parse and filter one source, saving nothing: what ``fetch --dry-run`` shows."""
        # A blank state: no validators, so the server cannot answer "not modified".
        fetched = await self._fetch(source, SourceState(name=source.name, url=source.url))
        normalized = await self.parser.posts(
            fetched.body or b"", fetched.headers, fetched.url, self._recipe(source)
        )
        return self._select(source, self._with_first_seen(source, normalized), utcnow())

    def _select(self, source: SourceConfig, posts: list[Post], now: datetime) -> Selection:
        stages = filter_stages(self.config, source)
        return select_posts(posts, stages, category_rules(self.config, source), now)

    async def _save(self, posts: list[Post], now: datetime) -> list[SaveResult]:
        """Decide, write and flush, index: the files are written and flushed in a thread (both wait
        on the disk) while the event loop goes on with other sources.

        Merging by link decides from the index which post holds an article, so with it
        on, saves take turns: another source's batch must be in the index first.
        """
        merge_by_link = self.config.defaults.merge_by_link
        async with self._merge_turn if merge_by_link else contextlib.nullcontext():
            batch = self.store.plan_posts(posts, now, merge_by_link=merge_by_link)
            try:
                await self._archive_media(batch, now)
                self.store.render_files(batch)
                await asyncio.get_running_loop().run_in_executor(self._writers, self._write_and_flush, batch)
            except BaseException:
                self.store.abandon(batch)
                raise
            return self.store.commit(batch)

    def _media_settings(self, name: str) -> MediaSettings | None:
        """A source's media download settings; None when it does not archive its images."""
        source = self._source_named(name)
        if source is None or not self.config.archives_media(source):
            return None
        return MediaSettings(
            name,
            self.config.defaults.max_media,
            referer=source.media_referer,
            allow_private_redirects=source.allow_private_redirects,
            origin=None if source.is_local else source.url,
        )

    def _source_named(self, name: str) -> SourceConfig | None:
        if self._sources_of is not self.config:
            self._sources, self._sources_of = {s.name: s for s in self.config.sources}, self.config
        return self._sources.get(name)

    async def _archive_media(self, batch: SaveBatch, now: datetime) -> None:
        """Point the posts about to be written at archived copies of their images (rendered after)."""
        wanted: dict[int, tuple[MediaSettings, list[str]]] = {}
        for number, (intent, _relpath) in enumerate(batch.rows):
            post = intent.to_write
            settings = self._media_settings(post.source) if post is not None else None
            if post is not None and settings is not None:
                wanted[number] = (settings, image_urls(post))
        if not wanted:
            return
        by_source: dict[str, tuple[MediaSettings, list[str]]] = {}
        for settings, urls in wanted.values():
            by_source.setdefault(settings.source, (settings, []))[1].extend(urls)
        found = await asyncio.gather(
            *(self.media.copies(self.fetcher, urls, settings, now) for settings, urls in by_source.values())
        )
        copies = {url: local for part in found for url, local in part.items()}
        for number, (_settings, urls) in wanted.items():
            intent, relpath = batch.rows[number]
            assert intent.to_write is not None
            post = intent.to_write
            mine = {url: copies[url] for url in urls if url in copies}
            archived = rewrite_post(post if post.media is not None else replace(post, media=()), mine)
            batch.rows[number] = (replace(intent, to_write=archived), relpath)

    async def _retry_media(self, source: SourceConfig, now: datetime) -> frozenset[str]:
        """Images of this source's posts whose download failed and whose retry is due: try again."""
        settings = self._media_settings(source.name)
        if settings is None:
            return frozenset()
        due = self.store.index.media_due(source.name, now)
        if not due:
            return frozenset()
        copies = await self.media.copies(self.fetcher, pending_urls(due), settings, now)
        entries = sorted({entry_id for entry_id, url in due if url in copies})
        if not entries:
            return frozenset()
        return frozenset(
            point_posts_at(
                self.store.index, self.store.posts_dir, source.name, entries, copies,
                fsync=self.store.fsync != "off",
            )
        )  # fmt: skip

    def _write_and_flush(self, batch: SaveBatch) -> None:
        self.store.write_files(batch)
        self.store.make_durable(batch)

    def _retention(self) -> RetentionPolicy:
        # Made once per config: it lists every source, and making it per update cost
        # O(sources) each, 2-3 CPU s over a first fetch of 1,000 sources.
        if self._retention_of is not self.config:
            self._retention_policy, self._retention_of = retention_policy(self.config), self.config
        return self._retention_policy

    def _recipe(self, source: SourceConfig) -> PostRecipe:
        rules = SourceRules(
            name=source.name,
            categories=source.categories,
            author=source.author,
            trusted=source.trusted,
            comments=source.comments,
            escape_braces=self.config.defaults.escape_braces,
        )
        return PostRecipe(rules, seen=utcnow(), max_entries=self.config.defaults.max_entries)

    def _with_first_seen(self, source: SourceConfig, normalized: NormalizedFeed) -> list[Post]:
        """An undated entry the store already knows keeps the date it was first seen.

        A dated post is left as the worker made it (its cached hash and file stay
        valid): only its first-seen mark differs, and the store keeps the recorded
        one whenever it rewrites a known post.
        """
        undated = [post.id for post in normalized.posts if post.id in normalized.undated]
        known = self.store.index.first_seen(source.name, undated) if undated else {}
        return [
            with_first_seen(post, known[post.id], undated=True) if post.id in known else post
            for post in normalized.posts
        ]


def fetch_limits(config: Config) -> FetchLimits:
    """The config's fetch settings as the fetcher's limits."""
    defaults = config.defaults
    return FetchLimits(
        connect_timeout=min(defaults.timeout, 10.0),
        read_timeout=defaults.timeout,
        deadline=defaults.deadline,
        max_body=defaults.max_body,
        concurrency=defaults.concurrency,
        per_host=defaults.per_host,
    )


def retention_policy(config: Config) -> RetentionPolicy:
    """The config's retention settings as the store's policy (all off by default)."""

    def limits(max_age: float | None, max_posts: int | None) -> Limits:
        return Limits(timedelta(seconds=max_age) if max_age else None, max_posts)

    retention = config.retention
    return RetentionPolicy(
        overall=limits(retention.max_age, retention.max_posts),
        per_source={
            source.name: limits(chosen.max_age, chosen.max_posts)
            for source in config.sources
            if (chosen := source.retention or retention.per_source)
        },
    )


def _log_result(result: UpdateResult) -> None:
    """One line per poll, at DEBUG: thousands of polls a minute would bury the lines that matter.

    A failed poll is a WARNING; the daemon sums the others up at INFO.
    """
    failed = result.error is not None and not isinstance(result.error, RateLimited)
    level = logging.WARNING if failed else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    status = result.state.http_status or "-"
    message = (
        f"source={result.source} outcome={result.outcome} status={status} "
        f"new={result.new} updated={result.updated} duration={result.duration:.2f}s"
    )
    if result.error is not None:
        log.log(level, "%s error=%s", message, result.error)
    elif result.skipped:
        log.log(level, "%s reason=%s", message, result.skipped)
    else:
        log.log(level, message)
