"""Every fault a server can throw at us, through the real pipeline (Updater + store).

Each case: the right error class and message, the source's state persisted,
its existing posts intact, the other source unaffected, and the next due time
where it should be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from support.faultserver import (
    BUILTIN_FAULTS,
    CHARSET_TITLE,
    CYRILLIC_TITLE,
    FaultServer,
    Reply,
)
from support.helpers import write_config

from aggregator.config import Config, load_config
from aggregator.errors import (
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    NotAFeed,
    ParseError,
    RateLimited,
    RedirectError,
    SourceGone,
    TooLarge,
)
from aggregator.pipeline import Updater, UpdateResult
from aggregator.state import SourceState, utcnow
from aggregator.store import PostStore
from aggregator.workers import ParserPool

INTERVAL = 1800.0


def rss(*guids: str, title: str = "Feed", extra: str = "") -> bytes:
    items = "".join(
        f"<item><title>Post {g}</title><link>http://127.0.0.1/p/{g}</link><guid>{g}</guid>"
        f"<pubDate>Mon, 05 Oct 2026 08:00:00 GMT</pubDate><description>Body {g}</description></item>"
        for g in guids
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>http://127.0.0.1/</link><description>d</description>{extra}{items}</channel></rss>"
    ).encode()


@dataclass
class Harness:
    """A config with a good source and a subject source on the fault server, and a store."""

    tmp: Path
    server: FaultServer
    defaults: dict[str, Any]

    def config(self, sources: Sequence[dict[str, Any]]) -> Config:
        defaults = {"interval": "30m", "fsync": "off", "timeout": "1s", "deadline": "3s", **self.defaults}
        return load_config(write_config(self.tmp / "cfg", sources, defaults=defaults))

    def run(
        self, config: Config, names: Sequence[str] | None = None, *, force: bool = False
    ) -> dict[str, UpdateResult]:
        async def go() -> list[UpdateResult]:
            with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
                updater = Updater(config, store, parser=ParserPool(0))
                try:
                    chosen = [s for s in config.sources if names is None or s.name in names]
                    return await updater.update_many(chosen, force=force)
                finally:
                    await updater.aclose()

        return {r.source: r for r in asyncio.run(go())}

    def state(self, config: Config, name: str) -> SourceState:
        with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
            return store.index.source_state(name)

    def post_files(self, config: Config) -> dict[str, float]:
        return {str(p): p.stat().st_mtime_ns for p in config.posts_dir.rglob("*.md")}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        yield fault_server


@pytest.fixture
def harness(tmp_path: Path, server: FaultServer) -> Harness:
    return Harness(tmp_path, server, {})


def two_sources(server: FaultServer) -> list[dict[str, Any]]:
    return [
        {"name": "good", "url": server.url("/good.xml"), "categories": ["A"]},
        {"name": "subject", "url": server.url("/subject.xml"), "categories": ["B"]},
    ]


def assert_due(state: SourceState, low: float, high: float, since: datetime) -> None:
    assert state.next_due is not None
    delay = (state.next_due - since).total_seconds()
    assert low - 5 <= delay <= high + 5, f"next due in {delay:.0f}s, expected {low:.0f}..{high:.0f}s"


# (fault route, error class, message fragment, what happens to the schedule)
FAULTS = [
    ("/slow-headers", FetchTimeout, "read timeout", "backoff"),
    ("/slow-drip", FetchTimeout, "deadline", "backoff"),
    ("/reset", FetchError, "connection", "backoff"),
    ("/truncated-gzip", FetchError, "truncated gzip", "backoff"),
    ("/bomb", TooLarge, "after decompression", "backoff"),
    ("/huge-length", TooLarge, "Content-Length 1000000000000", "backoff"),
    ("/endless", TooLarge, "larger than", "backoff"),
    ("/status/404", HTTPStatusError, "HTTP 404", "backoff"),
    ("/status/500", HTTPStatusError, "HTTP 500", "backoff"),
    ("/status/410", SourceGone, "410", "gone"),
    ("/429-seconds", RateLimited, "429", "rate"),
    ("/429-date", RateLimited, "429", "rate"),
    ("/status/503", RateLimited, "503", "rate"),
    ("/html-with-links", NotAFeed, "http://127.0.0.1", "backoff"),
    ("/challenge", NotAFeed, "challenge", "backoff"),
    ("/empty", NotAFeed, "empty", "backoff"),
]


@pytest.mark.parametrize(("route", "error_class", "fragment", "schedule"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_contained(
    harness: Harness,
    server: FaultServer,
    route: str,
    error_class: type[Exception],
    fragment: str,
    schedule: str,
) -> None:
    server.feed("/good.xml", rss("g1", "g2"), etag='"g"')
    server.feed("/subject.xml", rss("s1", "s2", "s3"), etag='"s"')
    harness.defaults = {"max_body": "1MiB", "deadline": "1.5s"}
    config = harness.config(two_sources(server))
    first = harness.run(config)
    assert {r.outcome for r in first.values()} == {"ok"}
    posts_before = harness.post_files(config)
    assert len(posts_before) == 5

    handler = BUILTIN_FAULTS[route]
    server.add("/subject.xml", handler)
    before = utcnow()
    results = harness.run(config)

    subject, good = results["subject"], results["good"]
    assert isinstance(subject.error, error_class), subject.error
    assert fragment in str(subject.error)
    assert subject.duration < 4.0, "every fault is cut off by a timeout, deadline or size cap"
    # The other source is untouched by the fault.
    assert good.outcome == "not-modified" and good.error is None
    # Nothing lost: every post file is still there, unmodified.
    assert harness.post_files(config) == posts_before

    state = harness.state(config, "subject")
    assert state.last_attempt is not None and state.last_attempt >= before
    assert state.last_success is not None and state.last_success < before
    assert state.last_error == str(subject.error)
    assert state.etag == '"s"', "validators of the last good fetch are kept"
    if schedule == "backoff":
        assert state.error_streak == 1
        assert_due(state, INTERVAL / 2, INTERVAL, before)
        assert state.due_reason == "backoff after 1 failure"
    elif schedule == "rate":
        assert state.error_streak == 0, "being asked to wait is not a failure"
        assert state.http_status in (429, 503)
        assert isinstance(subject.error, RateLimited)
        # 120 s or 300 s asked, but never sooner than the configured interval.
        assert_due(state, INTERVAL, INTERVAL, before)
        assert "Retry-After" in state.due_reason
    else:
        assert state.gone and state.next_due is None and state.http_status == 410


def test_html_page_names_its_feed_links(harness: Harness, server: FaultServer) -> None:
    config = harness.config([{"name": "page", "url": server.url("/html-with-links")}])
    result = harness.run(config)["page"]
    assert isinstance(result.error, NotAFeed)
    assert result.error.feed_links == (server.url("/feed.xml"), "https://blog.example.org/atom.xml")
    assert "not a feed" in str(result.error) and server.url("/feed.xml") in str(result.error)
    assert result.outcome == "error", "never reported as 'the feed is now empty'"


def test_retry_after_longer_than_interval_is_honoured(harness: Harness, server: FaultServer) -> None:
    config = harness.config([{"name": "busy", "url": server.url("/429-seconds"), "interval": "1m"}])
    server.add("/429-seconds", Reply(429, b"", {"Retry-After": "7200"}))
    before = utcnow()
    harness.run(config)
    state = harness.state(config, "busy")
    assert_due(state, 7200, 7200, before)
    server.add("/429-seconds", BUILTIN_FAULTS["/429-date"])
    config = harness.config([{"name": "busy", "url": server.url("/429-date?seconds=5000"), "interval": "1m"}])
    before = utcnow()
    harness.run(config)
    assert_due(harness.state(config, "busy"), 5000, 5000, before)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-30", 60), ("banana", 3600), ("999999999", 86400), ("Wed, 21 Oct 2015 07:28:00 GMT", 60)],
)
def test_retry_after_garbage_is_clamped(
    harness: Harness, server: FaultServer, value: str, expected: float
) -> None:
    server.add("/busy", Reply(429, b"", {"Retry-After": value}))
    config = harness.config([{"name": "busy", "url": server.url("/busy"), "interval": "30s"}])
    before = utcnow()
    result = harness.run(config)["busy"]
    assert isinstance(result.error, RateLimited) and result.error.retry_after == expected
    assert_due(harness.state(config, "busy"), expected, expected, before)


def test_backoff_grows_then_first_success_resets(harness: Harness, server: FaultServer) -> None:
    server.add("/flaky", BUILTIN_FAULTS["/status/500"])
    config = harness.config([{"name": "flaky", "url": server.url("/flaky"), "interval": "10m"}])
    delays = []
    for streak in range(1, 5):
        before = utcnow()
        harness.run(config, force=True)  # forced: each run stands for the poll once the backoff is over
        state = harness.state(config, "flaky")
        assert state.error_streak == streak and not state.gone
        assert state.next_due is not None
        delays.append((state.next_due - before).total_seconds())
        assert 600 * 2 ** (streak - 1) / 2 - 5 <= delays[-1] <= 600 * 2 ** (streak - 1) + 5
    server.feed("/flaky", rss("f1"))
    before = utcnow()
    result = harness.run(config, force=True)["flaky"]
    assert result.outcome == "ok" and result.new == 1
    state = harness.state(config, "flaky")
    assert state.error_streak == 0 and state.last_error is None
    assert_due(state, 600, 600, before)


def test_backoff_stops_at_the_cap(harness: Harness, server: FaultServer) -> None:
    harness.defaults = {"backoff_cap": "2h"}
    config = harness.config([{"name": "down", "url": server.url("/status/500"), "interval": "30m"}])
    for _ in range(6):
        before = utcnow()
        harness.run(config, force=True)  # each run stands for the poll once the backoff is over
    state = harness.state(config, "down")
    assert state.error_streak == 6
    assert_due(state, 3600, 7200, before)


def test_gone_source_is_not_polled_until_its_config_changes(harness: Harness, server: FaultServer) -> None:
    server.feed("/gone.xml", rss("x1", "x2"))
    sources = [{"name": "old", "url": server.url("/gone.xml")}]
    config = harness.config(sources)
    harness.run(config)
    server.add("/gone.xml", BUILTIN_FAULTS["/status/410"])
    result = harness.run(config)["old"]
    assert result.outcome == "gone" and harness.state(config, "old").gone
    requests = server.count("/gone.xml")

    again = harness.run(config)["old"]
    assert again.skipped and "410" in again.skipped
    assert server.count("/gone.xml") == requests, "a gone source is not polled"
    assert len(harness.post_files(config)) == 2, "its posts stay"

    server.feed("/gone.xml", rss("x1", "x2", "x3"))
    config = harness.config([{**sources[0], "interval": "1h"}])
    revived = harness.run(config)["old"]
    assert revived.outcome == "ok" and revived.new == 1
    assert not harness.state(config, "old").gone


# Conditional GET -------------------------------------------------------------


class CountingParser(ParserPool):
    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    async def parse(self, body: bytes, headers: Any, url: str) -> Any:
        self.calls += 1
        return await super().parse(body, headers, url)

    async def posts(self, body: bytes, headers: Any, url: str, recipe: Any) -> Any:
        self.calls += 1
        return await super().posts(body, headers, url, recipe)


def run_counting(config: Config) -> tuple[UpdateResult, int]:
    async def go() -> tuple[UpdateResult, int]:
        parser = CountingParser()
        with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
            updater = Updater(config, store, parser=parser)
            try:
                result = await updater.update(config.sources[0])
            finally:
                await updater.aclose()
        return result, parser.calls

    return asyncio.run(go())


@pytest.mark.parametrize("route", ["/etag.xml", "/lastmod.xml", "/same-etag"])
def test_not_modified_means_no_parse_and_no_writes(harness: Harness, server: FaultServer, route: str) -> None:
    server.feed("/etag.xml", rss("e1"), etag='"e1"')
    server.feed("/lastmod.xml", rss("l1"), last_modified="Mon, 05 Oct 2026 08:00:00 GMT")
    config = harness.config([{"name": "cond", "url": server.url(route)}])
    first, parses = run_counting(config)
    assert first.outcome == "ok" and parses == 1
    files = harness.post_files(config)
    index_mtime = config.index_path.stat().st_mtime_ns

    second, parses = run_counting(config)
    assert second.outcome == "not-modified" and parses == 0
    assert harness.post_files(config) == files
    headers = server.last_headers(route)
    if route == "/lastmod.xml":
        assert headers["if-modified-since"] == "Mon, 05 Oct 2026 08:00:00 GMT"
    else:
        assert headers["if-none-match"] == ('"same"' if route == "/same-etag" else '"e1"')
    state = harness.state(config, "cond")
    assert state.http_status == (200 if route == "/same-etag" else 304)
    assert state.last_success == state.last_attempt
    assert config.index_path.stat().st_mtime_ns >= index_mtime  # only the state row was written


def test_validators_saved_only_after_entries_are_stored(harness: Harness, server: FaultServer) -> None:
    server.add("/v.xml", Reply(200, b"<html><body>oops</body></html>", {"ETag": '"broken"'}))
    config = harness.config([{"name": "v", "url": server.url("/v.xml")}])
    result = harness.run(config)["v"]
    assert isinstance(result.error, ParseError)
    assert harness.state(config, "v").etag is None
    server.feed("/v.xml", rss("v1"), etag='"good"')
    assert harness.run(config, force=True)["v"].new == 1  # forced: the failure's backoff is not over
    assert "if-none-match" not in server.last_headers("/v.xml"), "the broken response's ETag was not kept"
    assert harness.state(config, "v").etag == '"good"'


# Redirects -----------------------------------------------------------------


def test_permanent_redirects_are_remembered_and_reported(
    harness: Harness, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.redirect("/old.xml", "/middle.xml", 301)
    server.redirect("/middle.xml", server.url("/new.xml"), 308)
    server.feed("/new.xml", rss("n1"))
    config = harness.config([{"name": "moved", "url": server.url("/old.xml")}])
    with caplog.at_level(logging.WARNING, logger="aggregator.update"):
        assert harness.run(config)["moved"].new == 1
    assert harness.state(config, "moved").permanent_url == server.url("/new.xml")
    assert f"moved permanently from {server.url('/old.xml')} to {server.url('/new.xml')}" in caplog.text

    assert harness.run(config)["moved"].outcome == "ok"
    assert server.count("/old.xml") == 1, "the remembered URL is used from then on"
    assert server.count("/new.xml") == 2


@pytest.mark.parametrize("status", [302, 303, 307])
def test_temporary_redirects_are_followed_not_remembered(
    harness: Harness, server: FaultServer, status: int
) -> None:
    server.redirect("/tmp.xml", "/real.xml", status)
    server.feed("/real.xml", rss("t1"))
    config = harness.config([{"name": "tmp", "url": server.url("/tmp.xml")}])
    assert harness.run(config)["tmp"].new == 1
    assert harness.state(config, "tmp").permanent_url is None
    harness.run(config)
    assert server.count("/tmp.xml") == 2


def test_permanent_then_temporary_remembers_only_the_permanent_part(
    harness: Harness, server: FaultServer
) -> None:
    server.redirect("/a.xml", "/b.xml", 301)
    server.redirect("/b.xml", "/c.xml", 302)
    server.feed("/c.xml", rss("c1"))
    config = harness.config([{"name": "mix", "url": server.url("/a.xml")}])
    harness.run(config)
    assert harness.state(config, "mix").permanent_url == server.url("/b.xml")


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        ({"/loop1": "/loop2", "/loop2": "/loop1"}, "redirect loop"),
        ({"/self": "/self"}, "redirect loop"),
        ({f"/hop{i}": f"/hop{i + 1}" for i in range(8)}, "more than 5 redirects"),
    ],
)
def test_redirect_loops_and_long_chains_are_errors(
    harness: Harness, server: FaultServer, routes: dict[str, str], fragment: str
) -> None:
    for path, target in routes.items():
        server.redirect(path, target, 301)
    first = next(iter(routes))
    config = harness.config([{"name": "loop", "url": server.url(first)}])
    result = harness.run(config)["loop"]
    assert isinstance(result.error, RedirectError) and fragment in str(result.error)
    state = harness.state(config, "loop")
    assert state.error_streak == 1 and state.permanent_url is None
    assert sum(server.count(p) for p in routes) <= 6


# Encodings and content types -------------------------------------------------


@pytest.mark.parametrize(
    ("route", "title"),
    [
        ("/charset/header", CHARSET_TITLE),
        ("/charset/xml-declaration", CHARSET_TITLE),
        ("/charset/conflicting", CYRILLIC_TITLE),
        ("/wrong-type", "Only post"),
        ("/wrong-type-json", "Only post"),
    ],
)
def test_encodings_and_content_types(harness: Harness, server: FaultServer, route: str, title: str) -> None:
    config = harness.config([{"name": "enc", "url": server.url(route)}])
    result = harness.run(config)["enc"]
    assert result.outcome == "ok" and result.new == 1, result.error
    (post,) = config.posts_dir.rglob("*.md")
    assert f"title: {title}" in post.read_text(encoding="utf-8")


def test_entries_cap_per_fetch(harness: Harness, server: FaultServer) -> None:
    server.feed("/many.xml", rss(*[f"m{i}" for i in range(12)]))
    harness.defaults = {"max_entries": 5}
    config = harness.config([{"name": "many", "url": server.url("/many.xml")}])
    assert harness.run(config)["many"].new == 5
    assert len(harness.post_files(config)) == 5


def test_gzip_feed_is_read(harness: Harness, server: FaultServer) -> None:
    server.feed("/gz.xml", rss("z1", "z2"), gzip_body=True)
    config = harness.config([{"name": "gz", "url": server.url("/gz.xml")}])
    assert harness.run(config)["gz"].new == 2


# Server freshness hints ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "extra", "respect", "expected"),
    [
        ({"Cache-Control": "public, max-age=7200"}, "", True, 7200),
        ({"Cache-Control": "max-age=60"}, "", True, INTERVAL),  # never shorter than configured
        ({"Cache-Control": "max-age=7200"}, "", False, INTERVAL),
        ({"Expires": "__IN_3H__"}, "", True, 3 * 3600),
        ({}, "<ttl>240</ttl>", True, 4 * 3600),
        ({}, "<ttl>5</ttl>", True, INTERVAL),
        ({"Cache-Control": "max-age=99999999"}, "", True, 7 * 86400),
    ],
)
def test_freshness_hints_lengthen_the_interval(
    harness: Harness,
    server: FaultServer,
    headers: dict[str, str],
    extra: str,
    respect: bool,
    expected: float,
) -> None:
    if headers.get("Expires") == "__IN_3H__":
        headers = {"Expires": formatdate(time.time() + 3 * 3600, usegmt=True)}
    server.feed("/hint.xml", rss("h1", extra=extra), etag='"h"', headers=headers)
    config = harness.config(
        [{"name": "hint", "url": server.url("/hint.xml"), "respect_cache_headers": respect}]
    )
    before = utcnow()
    harness.run(config)
    assert_due(harness.state(config, "hint"), expected, expected, before)
    # A 304 keeps the feed's <ttl> in force.
    before = utcnow()
    assert harness.run(config)["hint"].not_modified
    assert_due(harness.state(config, "hint"), expected, expected, before)


def test_other_sources_keep_their_schedule(harness: Harness, server: FaultServer) -> None:
    server.feed("/good.xml", rss("g1"))
    server.add("/subject.xml", BUILTIN_FAULTS["/status/500"])
    config = harness.config(two_sources(server))
    before = utcnow()
    results = harness.run(config)
    assert results["good"].outcome == "ok" and results["subject"].outcome == "error"
    good = harness.state(config, "good")
    assert good.error_streak == 0 and good.due_reason == "interval"
    assert good.next_due is not None
    assert abs((good.next_due - before - timedelta(seconds=INTERVAL)).total_seconds()) < 5
