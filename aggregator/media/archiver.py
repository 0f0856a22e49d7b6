"""The archive's flow: the images of the posts a save is about to write, and later retries.

    posts to write | their images' URLs | known copies, or downloads of those due
        | each post rewritten to point at its copies (``html.rewrite_post``) | rendered once

A failed download never holds a post back: the post is written with the original URL,
the failure is recorded with a retry time (``retry_at``, doubling up to a day), and
``Updater`` retries the due ones after each poll of the source (``retry_due``), then
points the post files at the new copies (``repair.point_posts_at``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, redact_url
from aggregator.index.interface import Index
from aggregator.media.archive import MediaArchive
from aggregator.media.download import download

log = logging.getLogger("aggregator.media")

RETRY_FIRST = 600.0  # ten minutes after the first failure, then doubling
RETRY_CAP = 86400.0


def retry_at(failures: int, now: datetime, cap: float = RETRY_CAP) -> datetime:
    """When to try an image again after its ``failures``-th failure in a row."""
    delay = RETRY_FIRST * 2 ** max(min(failures, 40) - 1, 0)
    return now + timedelta(seconds=min(delay, cap))


@dataclass(frozen=True)
class MediaSettings:
    """One source's download settings."""

    source: str
    max_media: int
    referer: str | None = None
    allow_private_redirects: bool = False
    origin: str | None = None  # the feed's http(s) URL; None for a local file


class MediaArchiver:
    """Knows the archive folder and the index; downloads through the caller's fetcher."""

    def __init__(self, archive: MediaArchive, index: Index) -> None:
        self.archive = archive
        self.index = index
        # One download per URL at a time, shared by every post (and source) that wants it.
        self._in_flight: dict[str, asyncio.Future[str | None]] = {}

    async def copies(
        self,
        fetcher: Fetcher,
        urls: Iterable[str],
        settings: MediaSettings,
        now: datetime,
        *,
        budget: float | None = None,
    ) -> dict[str, str]:
        """Original URL -> local copy for each of ``urls`` archived now or before.

        The downloads together get ``budget`` seconds (the fetch deadline unless told), so
        many slow images cost their posts one deadline, not one each: those not done by then
        are recorded as failed, to be retried.

        An URL whose last download for this source failed is tried again only once its retry
        time has come (another source's failure does not hold this one back: its settings,
        a Referer say, may differ).
        """
        wanted = list(dict.fromkeys(urls))
        if not wanted:
            return {}
        states = self.index.media_states(wanted)
        found: dict[str, str] = {}
        due: list[str] = []
        for url in wanted:
            state = states.get(url)
            if state is not None and state.local is not None:
                path = self.archive.path_for_local(state.local)
                if path is not None and path.exists():
                    found[url] = state.local
                    continue
            # Backing off after this source's failure; another source (its own Referer) may try.
            if (
                state is not None
                and state.local is None
                and state.source == settings.source
                and (state.next_try_ts or 0) > now.timestamp()
            ):
                continue
            due.append(url)
        if not due:
            return found
        failures = {url: states[url].failures if url in states else 0 for url in due}
        tasks = {
            url: asyncio.ensure_future(self._one(fetcher, url, settings, now, failures[url])) for url in due
        }
        budget = fetcher.limits.deadline if budget is None else budget
        _done, late = await asyncio.wait(tasks.values(), timeout=budget)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for url, task in tasks.items():
            if task in late:
                # The posts are not held back longer than this: the rest are retried later.
                error = f"not downloaded within the {budget:g}s one save gives its images"
                self.index.record_media_failure(
                    url, settings.source, error, now, retry_at(failures[url] + 1, now)
                )
            elif (local := task.result()) is not None:
                found[url] = local
        return found

    async def _one(
        self, fetcher: Fetcher, url: str, settings: MediaSettings, now: datetime, failures: int
    ) -> str | None:
        running = self._in_flight.get(url)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                return None  # the download it shared was cut off by its own save's budget
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._in_flight[url] = future
        try:
            local = await self._download(fetcher, url, settings, now, failures)
            future.set_result(local)
            return local
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: a waiter-less future must not log it
            raise
        finally:
            del self._in_flight[url]

    async def _download(
        self, fetcher: Fetcher, url: str, settings: MediaSettings, now: datetime, failures: int
    ) -> str | None:
        try:
            image = await download(
                fetcher,
                url,
                max_media=settings.max_media,
                referer=settings.referer,
                allow_private_redirects=settings.allow_private_redirects,
                origin=settings.origin,
            )
            stored = await asyncio.to_thread(self.archive.put, image.data, image.ext)
        except FetchError as error:
            when = retry_at(failures + 1, now)
            log.info(
                "source=%s media %s not archived (try %d, next at %s): %s",
                settings.source, redact_url(url), failures + 1, when.isoformat(), error,
            )  # fmt: skip
            self.index.record_media_failure(url, settings.source, str(error), now, when)
            return None
        except OSError as error:
            when = retry_at(failures + 1, now)
            log.warning(
                "source=%s media %s: cannot store the copy: %s", settings.source, redact_url(url), error
            )
            self.index.record_media_failure(url, settings.source, f"cannot store: {error}", now, when)
            return None
        self.index.record_media_download(url, settings.source, stored.local, now)
        return stored.local

    def collect(self) -> int:
        """Remove the copies no post references any more (``prune``, retention); how many."""
        referenced = self.index.referenced_media()
        removed = self.archive.collect(referenced)
        self.index.forget_media(removed)
        return len(removed)

    def verify(self) -> list[str]:
        """Each copy a post references exists and its bytes match its name."""
        problems: list[str] = []
        seen: set[str] = set()
        for source, entry_id, _url, local in self.index.media_refs():
            if local is None or local in seen:
                continue
            seen.add(local)
            problem = self.archive.check(local)
            if problem is not None:
                problems.append(f"{source}/{entry_id}: {problem}")
        return problems


def pending_urls(due: Sequence[tuple[str, str]]) -> list[str]:
    """The distinct URLs of ``media_due``'s (entry id, URL) pairs, in order."""
    return list(dict.fromkeys(url for _entry, url in due))
