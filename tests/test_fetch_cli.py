"""`aggregator fetch` as a person runs it: on a terminal, against real servers on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path

from support.faultserver import Exchange, FaultServer, Request
from support.helpers import write_config
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
