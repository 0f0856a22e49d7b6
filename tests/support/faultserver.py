"""A misbehaving HTTP/1.1 server on 127.0.0.1, for testing the fetcher against every fault.

ASGI servers cannot produce byte-level faults (headers that never come, a
connection reset in the middle of a body, a Content-Length that lies), so this
is a small asyncio TCP server that speaks just enough HTTP/1.1 (keep-alive,
Content-Length or chunked bodies, absolute-form targets as a forward proxy).
It runs its own event loop in a daemon thread::

    with FaultServer() as server:
        server.feed("/a.xml", RSS_BYTES, etag='"v1"')     # conditional GET aware
        server.redirect("/old", "/a.xml", status=301)
        url = server.url("/a.xml")
        ...
        assert server.count("/a.xml") == 2
        assert server.last_headers("/a.xml")["if-none-match"] == '"v1"'

Routes match the exact path (query string ignored). ``BUILTIN_FAULTS`` lists
the fault routes every server has from the start; any route can be replaced or
added with ``add(path, handler)`` where a handler is ``async (Request,
Exchange) -> None`` or a ready ``Reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Self
from urllib.parse import parse_qsl, urlsplit

REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

SAMPLE_RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Fault server feed</title><link>http://127.0.0.1/</link>
<description>d</description>
<item><title>Only post</title><link>http://127.0.0.1/p/1</link><guid>fault-1</guid>
<pubDate>Mon, 05 Oct 2026 08:00:00 GMT</pubDate><description>Hello</description></item>
</channel></rss>
"""


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: origin-form (/path?q) or absolute-form (through a proxy)
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    proxied: bool  # the target was in absolute form: we were used as a proxy
    received: float  # time.monotonic()


@dataclass(frozen=True)
class Reply:
    """A complete, ordinary response."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class Exchange:
    """What a handler writes its response through."""

    def __init__(self, server: FaultServer, path: str, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.path = path
        self.writer = writer
        self.keep_alive = True

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.server._add_sent(self.path, len(data))
        await self.writer.drain()

    async def head(self, status: int, headers: Mapping[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if not self.keep_alive:
            lines.append("Connection: close")
        await self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send(self, status: int = 200, body: bytes = b"", headers: Mapping[str, str] = {}) -> None:
        """A whole response with a Content-Length; a 304 has no body."""
        all_headers = {**headers}
        if status != 304 and not any(k.lower() == "content-length" for k in headers):
            all_headers["Content-Length"] = str(len(body))
        await self.head(status, all_headers)
        if body and status != 304:
            await self.write(body)

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        await self.write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing server would."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.keep_alive = False
        self.writer.transport.abort()


Handler = Callable[[Request, Exchange], Awaitable[None]]


class _OnLoopback:
    """What both servers share: a port on 127.0.0.1, URLs on it, and use as a context manager."""

    port: int

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")


class FaultServer(_OnLoopback):
    """A threaded asyncio HTTP/1.1 server on 127.0.0.1:0 with fault routes and request records."""

    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._counts: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._max_in_flight: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        for path, handler in BUILTIN_FAULTS.items():
            self.add(path, handler)

    # Life cycle ------------------------------------------------------------

    def start(self) -> str:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve_connection, "127.0.0.1", 0, backlog=1024)
                )
            except BaseException as error:  # reported to start() below
                failure.append(error)
                started.set()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not started.wait(10) or failure:
            raise RuntimeError(f"fault server did not start: {failure}")
        return self.base_url

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(timeout=10)
        self._loop = None

    # Routes ----------------------------------------------------------------

    def add(self, path: str, handler: Handler | Reply) -> None:
        if isinstance(handler, Reply):
            reply = handler

            async def fixed(_request: Request, exchange: Exchange) -> None:
                await exchange.send(reply.status, reply.body, reply.headers)

            handler = fixed
        with self._lock:
            self._routes[path] = handler

    def feed(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/rss+xml",
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
        gzip_body: bool = False,
    ) -> None:
        """A document served with conditional GET: 304 when a validator matches."""
        extra = dict(headers or {})

        async def serve(request: Request, exchange: Exchange) -> None:
            validators: dict[str, str] = {}
            if etag:
                validators["ETag"] = etag
            if last_modified:
                validators["Last-Modified"] = last_modified
            if (etag and request.headers.get("if-none-match") == etag) or (
                last_modified and not etag and request.headers.get("if-modified-since") == last_modified
            ):
                await exchange.send(304, b"", {**validators, **extra})
                return
            payload = body
            out = {"Content-Type": content_type, **validators, **extra}
            if gzip_body:
                payload = gzip.compress(body)
                out["Content-Encoding"] = "gzip"
            await exchange.send(200, payload, out)

        self.add(path, serve)

    def redirect(self, path: str, location: str, status: int = 301) -> None:
        self.add(path, Reply(status, b"", {"Location": location}))

    # Records ---------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def last_headers(self, path: str) -> Mapping[str, str]:
        found = self.requests(path)
        if not found:
            raise AssertionError(f"no request for {path}")
        return found[-1].headers

    def bytes_sent(self, path: str) -> int:
        with self._lock:
            return self._sent[path]

    def max_in_flight(self, prefix: str = "/") -> int:
        """The most requests under ``prefix`` the server was answering at one moment."""
        with self._lock:
            return self._max_in_flight[prefix]

    def reset_records(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counts.clear()
            self._sent.clear()
            self._max_in_flight.clear()

    def _add_sent(self, path: str, size: int) -> None:
        with self._lock:
            self._sent[path] += size

    def _track(self, path: str, delta: int) -> None:
        with self._lock:
            prefixes = {"/"} | {path[: i + 1] for i, ch in enumerate(path) if ch == "/" and i > 0} | {path}
            for prefix in prefixes:
                self._in_flight[prefix] += delta
                if self._in_flight[prefix] > self._max_in_flight[prefix]:
                    self._max_in_flight[prefix] = self._in_flight[prefix]

    # HTTP ------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request = _parse_request(head)
                if request is None:
                    return
                length = request.headers.get("content-length", "0")
                if length.isdigit() and int(length):
                    await reader.readexactly(int(length))
                exchange = Exchange(self, request.path, writer)
                exchange.keep_alive = request.headers.get("connection", "").lower() != "close"
                with self._lock:
                    self._requests.append(request)
                    self._counts[request.path] += 1
                    handler = self._routes.get(request.path, _not_found)
                self._track(request.path, 1)
                try:
                    await handler(request, exchange)
                finally:
                    self._track(request.path, -1)
                if not exchange.keep_alive or writer.transport.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # the server is stopping; a cancelled task here would only be reported as noise
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


def _parse_request(head: bytes) -> Request | None:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    proxied = not target.startswith("/")
    split = urlsplit(target)
    return Request(
        method=method,
        target=target,
        path=split.path or "/",
        query=dict(parse_qsl(split.query)),
        headers=headers,
        proxied=proxied,
        received=time.monotonic(),
    )


# Built-in fault routes ------------------------------------------------------


def _float(request: Request, name: str, default: float) -> float:
    try:
        return float(request.query.get(name, default))
    except ValueError:
        return default


async def _not_found(_request: Request, exchange: Exchange) -> None:
    await exchange.send(404, b"not found", {"Content-Type": "text/plain"})


async def slow_headers(request: Request, exchange: Exchange) -> None:
    """Accept, then say nothing for ``delay`` seconds (default 30)."""
    await asyncio.sleep(_float(request, "delay", 30))
    await exchange.send(200, SAMPLE_RSS, {"Content-Type": "application/rss+xml"})


async def slow_drip(request: Request, exchange: Exchange) -> None:
    """Headers at once, then one byte every ``interval`` seconds (default 0.1), for a long feed."""
    interval = _float(request, "interval", 0.1)
    body = SAMPLE_RSS * 100
    await exchange.head(200, {"Content-Type": "application/rss+xml", "Content-Length": str(len(body))})
    for index in range(len(body)):
        await exchange.write(body[index : index + 1])
        await asyncio.sleep(interval)


async def reset_mid_body(_request: Request, exchange: Exchange) -> None:
    """Promise 5,000 bytes, send 500, then reset the connection."""
    await exchange.head(200, {"Content-Type": "application/rss+xml", "Content-Length": "5000"})
    await exchange.write(SAMPLE_RSS[:500].ljust(500, b" "))
    await asyncio.sleep(0.05)
    exchange.reset()


async def truncated_gzip(_request: Request, exchange: Exchange) -> None:
    """A gzip body cut in the middle of its deflate stream (the length header agrees with the cut)."""
    compressed = gzip.compress(SAMPLE_RSS * 50)
    cut = compressed[: len(compressed) // 2]
    await exchange.send(200, cut, {"Content-Type": "application/rss+xml", "Content-Encoding": "gzip"})


async def compression_bomb(request: Request, exchange: Exchange) -> None:
    """An endless gzip stream of zeros, chunked: about 1 MiB of output per 1 KiB sent."""
    await exchange.head(
        200,
        {
            "Content-Type": "application/rss+xml",
            "Content-Encoding": "gzip",
            "Transfer-Encoding": "chunked",
        },
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    megabyte = b"\0" * (1024 * 1024)
    limit = int(_float(request, "mib", 100_000))
    await exchange.chunk(compressor.compress(b"<rss>"))
    for _ in range(limit):
        await exchange.chunk(compressor.compress(megabyte) + compressor.flush(zlib.Z_SYNC_FLUSH))
    await exchange.chunk(compressor.flush())
    await exchange.end_chunks()


async def huge_content_length(_request: Request, exchange: Exchange) -> None:
    """Declares a terabyte, then streams filler until the client gives up."""
    await exchange.head(200, {"Content-Type": "application/rss+xml", "Content-Length": str(10**12)})
    block = b"<!-- filler -->" * 4096
    while True:
        await exchange.write(block)


async def endless_body(_request: Request, exchange: Exchange) -> None:
    """Chunked, with no declared length and no end."""
    await exchange.head(200, {"Content-Type": "application/rss+xml", "Transfer-Encoding": "chunked"})
    await exchange.chunk(b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>')
    item = b"<item><title>again</title><guid>same</guid></item>" * 1000
    while True:
        await exchange.chunk(item)


async def same_etag(_request: Request, exchange: Exchange) -> None:
    """Ignores If-None-Match and answers 200 with the same ETag every time."""
    await exchange.send(200, SAMPLE_RSS, {"Content-Type": "application/rss+xml", "ETag": '"same"'})


def status(code: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(code, body or f"HTTP {code}".encode(), {"Content-Type": "text/plain", **(headers or {})})


async def retry_after_date(request: Request, exchange: Exchange) -> None:
    """429 with Retry-After as an HTTP date ``seconds`` (default 120) from now."""
    when = formatdate(time.time() + _float(request, "seconds", 120), usegmt=True)
    await exchange.send(429, b"slow down", {"Retry-After": when, "Content-Type": "text/plain"})


async def retry_after_seconds(request: Request, exchange: Exchange) -> None:
    """429 with Retry-After ``value`` as given (default 120); garbage passes through."""
    value = request.query.get("value", "120")
    await exchange.send(429, b"slow down", {"Retry-After": value, "Content-Type": "text/plain"})


HTML_WITH_FEED_LINKS = b"""<!DOCTYPE html>
<html><head><title>A blog</title>
<link rel="alternate" type="application/rss+xml" title="RSS" href="/feed.xml">
<link rel="alternate" type="application/atom+xml" href="https://blog.example.org/atom.xml">
</head><body><p>Welcome</p></body></html>
"""

CHALLENGE_PAGE = b"""<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="refresh" content="390"></head><body><div id="challenge-running">
Checking your browser before accessing the site.</div>
<script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1"></script></body></html>
"""


def charset_feed(title: str, encoding: str, declared: str | None) -> bytes:
    """An RSS document encoded in ``encoding`` whose XML declaration names ``declared``."""
    declaration = f'<?xml version="1.0" encoding="{declared}"?>' if declared else '<?xml version="1.0"?>'
    text = (
        f'{declaration}\n<rss version="2.0"><channel><title>{title}</title><link>http://127.0.0.1/</link>'
        f"<description>d</description><item><title>{title}</title><guid>cs-1</guid>"
        f"<description>{title}</description></item></channel></rss>\n"
    )
    return text.encode(encoding)


CHARSET_TITLE = "Größe café ñandú"  # every character exists in latin-1 and windows-1252
CYRILLIC_TITLE = "Привет, мир"


BUILTIN_FAULTS: dict[str, Handler | Reply] = {
    "/slow-headers": slow_headers,
    "/slow-drip": slow_drip,
    "/reset": reset_mid_body,
    "/truncated-gzip": truncated_gzip,
    "/bomb": compression_bomb,
    "/huge-length": huge_content_length,
    "/endless": endless_body,
    "/same-etag": same_etag,
    "/status/404": status(404),
    "/status/410": status(410),
    "/status/500": status(500),
    "/status/503": status(503, headers={"Retry-After": "300"}),
    "/429-seconds": retry_after_seconds,
    "/429-date": retry_after_date,
    "/html-with-links": Reply(200, HTML_WITH_FEED_LINKS, {"Content-Type": "text/html; charset=utf-8"}),
    "/challenge": Reply(200, CHALLENGE_PAGE, {"Content-Type": "text/html; charset=UTF-8"}),
    "/empty": Reply(200, b"", {"Content-Type": "application/rss+xml"}),
    "/wrong-type": Reply(200, SAMPLE_RSS, {"Content-Type": "text/html; charset=utf-8"}),
    "/wrong-type-json": Reply(200, SAMPLE_RSS, {"Content-Type": "application/json"}),
    # Three ways to declare a non-UTF-8 charset:
    "/charset/header": Reply(
        200,
        charset_feed(CHARSET_TITLE, "iso-8859-1", None),
        {"Content-Type": "application/xml; charset=iso-8859-1"},
    ),
    "/charset/xml-declaration": Reply(
        200,
        charset_feed(CHARSET_TITLE, "windows-1252", "windows-1252"),
        {"Content-Type": "application/xml"},
    ),
    "/charset/conflicting": Reply(
        # RFC 7303 §8.1: the HTTP charset parameter wins over the XML declaration.
        200,
        charset_feed(CYRILLIC_TITLE, "koi8-r", "windows-1251"),
        {"Content-Type": "application/xml; charset=koi8-r"},
    ),
}


class FaultServerProcess(_OnLoopback):
    """A FaultServer in its own process serving ``feeds`` conditional-GET feeds at /f/{i}.xml.

    For benchmarks: a server thread in the test process would compete with the
    code under test for the GIL and measure both at once.
    """

    def __init__(self, feeds: int) -> None:
        self.feeds = feeds
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.feeds)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"fault server process did not start: {line!r}")
        self.port = int(line)
        return self.base_url

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def numbered_feed(index: int) -> bytes:
    return SAMPLE_RSS.replace(b"fault-1", b"feed-%d" % index).replace(b"Only post", b"Post %d" % index)


def _serve_numbered_feeds(count: int) -> None:
    server = FaultServer()
    for index in range(count):
        server.feed(f"/f/{index}.xml", numbered_feed(index), etag=f'"v{index}"')
    server.start()
    print(server.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _serve_numbered_feeds(int(sys.argv[1]))
