"""A loopback corpus of RSS feeds that records every request: per URL, and concurrency per host.

``/feeds/<name>.xml`` is a feed of a few entries named after the source; it answers 304 to
its own ETag. Each request holds its answer for ``delay`` seconds, so requests of several
daemons overlap and the concurrency per host (the ``Host`` header) is seen. Every request's
start and end time (``time.monotonic()``) is kept per path, so a test can tell whether two
polls of one source overlapped and how far apart the polls were.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any


def corpus_feed(name: str, entries: int) -> bytes:
    """An RSS feed of ``entries`` dated entries, each with a guid of its own."""
    items = "".join(
        f"<item><title>{name} entry {i}</title><link>http://127.0.0.1/{name}/{i}</link>"
        f"<guid>{name}-{i}</guid><pubDate>Mon, 05 Oct 2026 {i % 24:02d}:00:00 GMT</pubDate>"
        f"<description>Entry {i} of {name}</description></item>"
        for i in range(entries)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>http://127.0.0.1/{name}</link><description>corpus</description>{items}</channel></rss>"
    ).encode()


@dataclass(frozen=True)
class Visit:
    """One request: its path and when it started and ended (monotonic seconds)."""

    path: str
    start: float
    end: float


class CorpusServer:
    """The ASGI app: feeds by name, with a request log and per-host concurrency peaks."""

    def __init__(self, names: list[str], entries: int = 3, delay: float = 0.0) -> None:
        self.bodies = {f"/feeds/{name}.xml": corpus_feed(name, entries) for name in names}
        self.delay = delay
        self.lock = threading.Lock()
        self.visits: list[Visit] = []
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.slow: dict[str, float] = {}  # path -> seconds it holds its answer instead of ``delay``
        self.started: Counter[str] = Counter()  # requests per path, counted when they arrive
        self.halt = threading.Event()  # ends the slow answers early, so the server can stop
        self.refuse: dict[str, float] = {}  # path -> Retry-After seconds of its next answer (a 429, once)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode().split(":")[0]
        started = time.monotonic()
        with self.lock:
            self.active[host] += 1
            self.peak[host] = max(self.peak[host], self.active[host])
            self.started[path] += 1
        try:
            hold_until = started + self.slow.get(path, self.delay)
            while time.monotonic() < hold_until and not self.halt.is_set():
                await asyncio.sleep(min(0.05, hold_until - time.monotonic()))
            await self._answer(path, headers, send)
        finally:
            with self.lock:
                self.active[host] -= 1
                self.visits.append(Visit(path, started, time.monotonic()))

    async def _answer(self, path: str, headers: dict[bytes, bytes], send: Any) -> None:
        with self.lock:
            retry_after = self.refuse.pop(path, None)
        if retry_after is not None:
            answer = [(b"retry-after", f"{retry_after:g}".encode())]
            await send({"type": "http.response.start", "status": 429, "headers": answer})
            await send({"type": "http.response.body", "body": b"slow down"})
            return
        body = self.bodies.get(path)
        if body is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not found"})
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if headers.get(b"if-none-match", b"").decode() == etag:
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = [
            (b"content-type", b"application/rss+xml"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", etag.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": answer})
        await send({"type": "http.response.body", "body": body})

    def arrivals(self, path: str) -> int:
        with self.lock:
            return self.started[path]

    def visits_of(self, path: str) -> list[Visit]:
        with self.lock:
            return sorted((v for v in self.visits if v.path == path), key=lambda v: v.start)

    def all_visits(self) -> list[Visit]:
        with self.lock:
            return list(self.visits)

    def overlaps(self) -> dict[str, int]:
        """Per path, how many of its requests started before the previous one had ended."""
        found: dict[str, int] = defaultdict(int)
        for path in self.bodies:
            visits = self.visits_of(path)
            for earlier, later in itertools.pairwise(visits):
                if later.start < earlier.end:
                    found[path] += 1
        return dict(found)
