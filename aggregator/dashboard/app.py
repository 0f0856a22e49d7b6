"""The dashboard's routes: /, /status, /status.json, /post/..., and its own assets under /_dashboard/.

Read-only: every page is read and rendered in a worker thread
(``run_in_threadpool``), its queries on one read-only connection, so the
daemon's event loop, which also polls the sources, goes on meanwhile. Every
page forbids assets from other hosts (Content-Security-Policy) except images,
which come from where the posts point.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from aggregator import postfile
from aggregator.config import Config
from aggregator.dashboard import data, render
from aggregator.dashboard.auth import CHALLENGE, Credentials, authorized
from aggregator.dashboard.health import (
    EVERY_SOURCE,
    RowPage,
    SourceRow,
    StatusView,
    Summary,
    daily_counts,
    day_number,
    ordered,
    page_number,
    page_of,
    source_row,
    status_view,
    summarize,
    window_start,
)
from aggregator.errors import StoreError
from aggregator.fetch import redact_url
from aggregator.index.dashboard import DashboardIndex
from aggregator.index.opening import open_dashboard_reader
from aggregator.normalize import sanitize_html
from aggregator.pipeline import source_fingerprint
from aggregator.schedule import NextPoll, planned_poll
from aggregator.state import SourceState, utcnow

T = TypeVar("T")
NEWEST_POSTS = 100
HEADERS = {
    # Scripts, styles, fonts and icons from this server only; images, audio and video from where
    # the posts point.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http: https: data:; "
        "media-src http: https:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # a post's images are not told the dashboard's address
    "cache-control": "no-cache",
}


def status_report(
    reader: DashboardIndex, config: Config, now: datetime, view: StatusView = EVERY_SOURCE
) -> tuple[RowPage, Summary]:
    """The rows of ``view`` (every source unless it filters or pages), failing first, and the
    summary line of every source.

    The next poll is ``schedule.planned_poll``, the decision the daemon and ``aggregator status`` make.
    On a fleet's shared index every node shows every source, and which node polls it now. The
    30 days' entry counts are read for the page's rows only: one query a source.
    """
    states = reader.source_states()
    holders = reader.lease_holders(now)
    sources = {source.name: source for source in config.sources}

    def state_of(name: str) -> SourceState:
        return states.get(name) or SourceState(name=name)

    # Every row's health, for the summary, the order and the filter; the next poll and the
    # 30 days' counts for the page's rows only (at 20,000 sources: 0.89 s -> 0.59 s a page,
    # bench/dashboard_probe.py).
    unplanned = NextPoll(None, "")
    rows = [
        source_row(
            state_of(name),
            unplanned,
            (),
            url=redact_url(config.source_location(source)),
            polled_by=holders.get(name),
        )
        for name, source in sources.items()
    ]
    rows = ordered(rows)
    page = page_of(rows, view)
    per_day = reader.entries_per_day([row.name for row in page.rows], window_start(now), now)
    today = day_number(now)

    def completed(row: SourceRow) -> SourceRow:
        source = sources[row.name]
        plan = planned_poll(
            config, source, state_of(row.name), now, fingerprint=source_fingerprint(source), entries=reader
        )
        counts = daily_counts(per_day.get(row.name, {}), today)
        return dataclasses.replace(row, next_poll=plan.at, next_reason=plan.reason, per_day=counts)

    return dataclasses.replace(page, rows=[completed(row) for row in page.rows]), summarize(rows)


def row_json(row: SourceRow) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "name": row.name,
        "url": row.url,
        "health": row.health,
        "last_attempt": iso(row.last_attempt),
        "last_success": iso(row.last_success),
        "last_error": row.last_error,
        "error_streak": row.error_streak,
        "http_status": row.http_status,
        "next_poll": iso(row.next_poll),
        "next_poll_reason": row.next_reason,
        "moved_to": row.moved_to,
        "polled_by": row.polled_by,
        "entries_per_day": list(row.per_day),
    }


class Dashboard:
    """The dashboard over the config the daemon runs now (``config()``: a reload swaps it)."""

    def __init__(self, config: Callable[[], Config], credentials: Credentials | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self._reader: DashboardIndex | None = None
        self._reader_of: tuple[object, ...] = ()  # where the open reader reads (see _index_location)
        self._lock = threading.Lock()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.home),
            Route("/status", self.status),
            Route("/status.json", self.status_json),
            Route("/post/{path:path}", self.post),
            Mount("/_dashboard", app=StaticFiles(packages=[("aggregator.dashboard", "static")])),
        ]

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # Reading --------------------------------------------------------------------------------

    def _read_now(self, query: Callable[[DashboardIndex], T]) -> T:
        config = self.config()
        with self._lock:
            if self._reader is not None and self._reader_of != _index_location(config):
                self._reader.close()  # a reload named another index: read that one
                self._reader = None
            if self._reader is None:
                self._reader = open_dashboard_reader(config)  # the SQLite files or the PostgreSQL index
                self._reader_of = _index_location(config)
            try:
                return self._reader.run(query)
            except StoreError:
                self._reader.close()  # opened again by the next request (the index may have been rebuilt)
                self._reader = None
                raise

    # Pages ----------------------------------------------------------------------------------

    def _page(self, html: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(html, status_code=status_code, headers=HEADERS)

    def _refused(self, request: Request) -> Response | None:
        """401 unless the request carries the dashboard's credentials (when it has any)."""
        if authorized(request.headers.get("authorization"), self.credentials):
            return None
        page = render.render_message(self.config(), "Log in", "This page needs the dashboard's credentials.")
        return HTMLResponse(page, status_code=401, headers={**HEADERS, "www-authenticate": CHALLENGE})

    def _unavailable(self, error: StoreError) -> HTMLResponse:
        later = "" if self.config().index is not None else " The daemon may still be starting."
        page = render.render_message(self.config(), "Not ready", f"{error}.{later}")
        return self._page(page, 503)

    async def home(self, request: Request) -> Response:
        """The feeds (``?sources=N``: the Nth page of the source feeds) and the newest posts."""
        config = self.config()
        asked = page_number(request.query_params.get("sources"))

        def page() -> str:
            listings, posts = self._read_now(
                lambda reader: (data.published_listings(reader, config), reader.newest_posts(NEWEST_POSTS))
            )
            return render.render_home(config, data.source_feeds_page(listings, asked), posts, utcnow())

        try:
            return self._page(await run_in_threadpool(page))
        except StoreError as error:
            return self._unavailable(error)

    async def status(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        config, now = self.config(), utcnow()
        refresh = _refresh_seconds(request.query_params.get("refresh"))
        view = status_view(request.query_params, paged=True)

        def page() -> str:
            shown, summary = self._read_now(lambda reader: status_report(reader, config, now, view))
            return render.render_status(config, shown, summary, now, refresh_seconds=refresh)

        try:
            return self._page(await run_in_threadpool(page))
        except StoreError as error:
            return self._unavailable(error)

    async def status_json(self, request: Request) -> Response:
        """Every source (or those ``?health=`` and ``?q=`` keep; ``?page=N`` for one page of them).

        ``?html=1`` (what /status asks for when it refreshes): the page's parts, rendered.
        """
        if (refused := self._refused(request)) is not None:
            return refused
        config, now = self.config(), utcnow()
        as_html = request.query_params.get("html") == "1"
        view = status_view(request.query_params, paged=as_html)

        def report() -> dict[str, Any]:
            shown, summary = self._read_now(lambda reader: status_report(reader, config, now, view))
            answer: dict[str, Any] = {
                "generated": now.isoformat(timespec="seconds"),
                "summary": {"total": summary.total, **dict(summary.by_health), "line": summary.line()},
                "page": {"number": shown.number, "pages": shown.pages, "matched": shown.matched},
            }
            if as_html:
                answer["html"] = render.render_status_parts(config, shown, summary, now)
            else:
                answer["sources"] = [row_json(row) for row in shown.rows]
            return answer

        try:
            return JSONResponse(await run_in_threadpool(report), headers={"cache-control": "no-store"})
        except StoreError as error:
            return JSONResponse({"error": str(error)}, status_code=503)

    async def post(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        config = self.config()
        path = render.post_path(request.path_params["path"])

        def page() -> str | None:
            found = self._read_now(lambda reader: _post_and_feeds(reader, config, path))
            if found is None:
                return None
            post, feeds, indexed_body = found
            meta, body = _read_post_file(config.posts_dir, path)
            html = sanitize_html(body if meta is not None else indexed_body, post.link)
            return render.render_post(config, post, body=html, meta=meta, feeds=feeds)

        try:
            html = await run_in_threadpool(page)
        except StoreError as error:
            return self._unavailable(error)
        if html is None:
            message = render.render_message(config, "No such post", "The index has no post at this address.")
            return self._page(message, 404)
        return self._page(html)


def _index_location(config: Config) -> tuple[object, ...]:
    return (config.index, config.index_path, config.state_path)


def _post_and_feeds(
    reader: DashboardIndex, config: Config, path: str
) -> tuple[data.PostSummary, list[Any], str] | None:
    post = reader.post_at(path)
    if post is None:
        return None
    return post, data.feeds_of(reader, config, post), reader.post_body(post.source, post.id)


def _read_post_file(posts_dir: Path, path: str) -> tuple[dict[str, Any] | None, str]:
    """The post file's front matter and body; (None, "") when unreadable (the index's copy is shown)."""
    file = (posts_dir / path).resolve()
    if not file.is_relative_to(posts_dir.resolve()):
        return None, ""
    try:
        meta, body = postfile.split(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
        return None, ""
    return meta, body


def _refresh_seconds(asked: str | None) -> int:
    """``?refresh=N`` (1 to 3600 s), else the default."""
    try:
        return min(max(int(asked), 1), 3600) if asked else render.REFRESH_SECONDS
    except ValueError:
        return render.REFRESH_SECONDS
