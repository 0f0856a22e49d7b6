"""`aggregator fetch` as a person runs it: on a terminal, against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from support.faultserver import Exchange, FaultServer, Request
from support.helpers import run_cli, write_config
from support.terminal import on_terminal

SOURCES = 40
ENTRIES = 80


def _busy_feed(index: int) -> bytes:
    """A feed whose parsing takes a while (many entries with some HTML), so fetching outruns it."""
    items = "".join(
        f"<item><title>Post {index}-{n}</title><link>http://127.0.0.1/{index}/{n}</link>"
        f"<guid>busy-{index}-{n}</guid><pubDate>Mon, 05 Oct 2026 08:{n % 60:02d}:00 GMT</pubDate>"
        f"<description>&lt;p&gt;{'Some words of the post, then more of them. ' * 12}&lt;/p&gt;"
        "</description></item>"
        for n in range(ENTRIES)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Busy {index}</title>'
        f"<link>http://127.0.0.1/</link><description>d</description>{items}</channel></rss>"
    ).encode()


class SourcesInFlight:
    """Counts, at each request, the sources fetched but not yet finished (their posts not on disk).

    A source's post files are written before it finishes, so the count never exceeds the
    sources truly in flight: it can only be too low, never too high.
    """

    def __init__(self, posts: Path) -> None:
        self.posts = posts
        self.lock = threading.Lock()
        self.received = 0
        self.most = 0

    def finished(self) -> int:
        if not self.posts.exists():
            return 0
        return sum(1 for folder in self.posts.iterdir() if next(folder.rglob("*.md"), None) is not None)

    def handler(self, body: bytes):  # type: ignore[no-untyped-def]
        async def serve(_request: Request, exchange: Exchange) -> None:
            with self.lock:
                self.received += 1
                self.most = max(self.most, self.received - self.finished())
            await exchange.send(200, body, {"Content-Type": "application/rss+xml"})

        return serve


def test_an_interactive_fetch_keeps_the_bound_on_sources_in_flight(tmp_path: Path) -> None:
    """With the progress bar drawn, no more than 2 x concurrency sources are in flight at once."""
    counter = SourcesInFlight(tmp_path / "posts")
    with FaultServer() as server:
        for index in range(SOURCES):
            server.add(f"/busy/{index}.xml", counter.handler(_busy_feed(index)))
        sources = [
            {"name": f"s{index:02d}", "url": server.url(f"/busy/{index}.xml")} for index in range(SOURCES)
        ]
        config = write_config(tmp_path, sources, defaults={"concurrency": 1, "per_host": 1})
        text = on_terminal(["--config", str(config), "fetch"])
    # The interactive path was the one taken: the bar was drawn.
    assert "fetching" in text and f"{SOURCES}/{SOURCES}" in text, text[-2000:]
    assert f"{SOURCES * ENTRIES} new" in text
    assert counter.received == SOURCES
    assert counter.most <= 2, f"{counter.most} sources in flight; the bound is 2 (2 x concurrency)"


def _rate_limited_site(tmp_path: Path, server: FaultServer, status: int) -> Path:
    async def limited(_request: Request, exchange: Exchange) -> None:
        await exchange.send(
            status, b"come back tomorrow", {"Retry-After": "86400", "Content-Type": "text/plain"}
        )

    server.add("/limited.xml", limited)
    server.feed("/fine.xml", _small_feed(), etag='"v1"')
    sources = [
        {"name": "limited", "url": server.url("/limited.xml")},
        {"name": "fine", "url": server.url("/fine.xml")},
    ]
    return write_config(tmp_path, sources)


def _small_feed() -> bytes:
    return (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Fine</title><link>http://127.0.0.1/</link>'
        b"<description>d</description><item><title>One</title><guid>fine-1</guid>"
        b"<link>http://127.0.0.1/fine/1</link></item></channel></rss>"
    )


@pytest.mark.parametrize("status", [429, 503])
def test_a_fetch_of_all_sources_honours_retry_after_until_forced(tmp_path: Path, status: int) -> None:
    with FaultServer() as server:
        config = _rate_limited_site(tmp_path, server, status)
        first = run_cli("fetch", "--json", config=config)
        assert first.returncode == 0, first.stderr
        assert server.count("/limited.xml") == 1
        assert [s["outcome"] for s in json.loads(first.stdout)["sources"]] == ["rate-limited", "ok"]

        # Asked to come back in a day: the next fetch of everything leaves it alone and says so.
        second = run_cli("fetch", config=config)
        assert second.returncode == 0, second.stderr
        assert server.count("/limited.xml") == 1
        assert server.count("/fine.xml") == 2  # a plain interval does not hold a manual fetch back
        assert "limited" in second.stdout and "skipped" in second.stdout
        assert "until 20" in second.stdout and f"UTC (HTTP {status} Retry-After 86400s)" in second.stdout
        assert "1 skipped" in second.stdout

        as_json = run_cli("fetch", "--json", config=config)
        assert as_json.returncode == 0, as_json.stderr
        report = {s["name"]: s for s in json.loads(as_json.stdout)["sources"]}
        assert report["limited"]["outcome"] == "skipped"
        assert report["limited"]["skipped"] == f"HTTP {status} Retry-After 86400s"
        assert report["limited"]["until"].startswith("20") and report["limited"]["until"].endswith("+00:00")
        assert report["fine"]["skipped"] is None and report["fine"]["until"] is None
        assert server.count("/limited.xml") == 1

        forced = run_cli("fetch", "--force", "--json", config=config)
        assert forced.returncode == 0, forced.stderr
        assert server.count("/limited.xml") == 2
        # Naming a source counts as forcing it.
        named = run_cli("fetch", "limited", "--json", config=config)
        assert server.count("/limited.xml") == 3
        assert json.loads(named.stdout)["sources"][0]["outcome"] == "rate-limited"


def test_a_source_in_backoff_is_skipped_and_skipping_is_not_a_failure(tmp_path: Path) -> None:
    with FaultServer() as server:
        sources = [{"name": "broken", "url": server.url("/status/500")}]
        config = write_config(tmp_path, sources)
        first = run_cli("fetch", config=config)
        assert first.returncode == 1  # every source polled failed
        assert server.count("/status/500") == 1
        second = run_cli("fetch", config=config)
        assert server.count("/status/500") == 1
        assert "backoff after 1 failure" in second.stdout
        assert second.returncode == 0, second.stdout  # nothing polled, nothing failed
