"""Retrieve a source's bytes politely, bounded in size and time.

httpx is the client (``httpx.AsyncClient``, see aggregator.transport for the
clients and the transport under them); a global and a per-host concurrency
limit; conditional GET with the stored validators; redirects followed by hand
so that permanent ones can be remembered and redirects into private networks
refused; the body read raw and decompressed by us, with a cap on the
decompressed size, so a compression bomb stops early (httpx would decompress
inside its iterator, unbounded); and one deadline over the whole exchange,
because httpx's timeouts are per read and a server dripping bytes would
never trip them.

The transport under httpx is aiohttp's (``httpx-aiohttp``), not httpcore: a
not-modified poll, the commonest request we make, cost 0.41 ms of CPU
through it, 2.9 ms through httpcore (whose HTTP/1.1 parser and pool are
Python), and 0.25 ms through aiohttp used directly, as this module did
before; the 0.16 ms between the first and the last is httpx's own layer
(``python -m bench.poll_cpu``; bench/results.md, "The HTTP client", has the
table and the choice).

Everything the rest of the program needs to know about a response is in the
returned ``FetchResult``; HTTP failures are raised as ``FetchError`` subclasses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import ipaddress
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from aggregator.errors import (
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    RateLimited,
    RedirectError,
    SourceGone,
    TooLarge,
)
from aggregator.tls import ClientTLS
from aggregator.transport import (
    DEFAULT_TRANSPORT,
    WIRE_ERRORS,
    Clients,
    PoolSettings,
    TransportKind,
    WireFault,
    describe_wire_error,
    forward_proxy_headers,
    httpx,
    parsed_url,
    redirect_location,
)

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
MAX_REDIRECTS = 5
PERMANENT_REDIRECTS = frozenset({301, 308})
TEMPORARY_REDIRECTS = frozenset({302, 303, 307})
# Retry-After values outside these bounds are clamped: a server cannot make us
# hammer it (0) or forget it (a year).
MIN_RETRY_AFTER = 60.0
MAX_RETRY_AFTER = 86400.0
DEFAULT_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Validators:
    """What the last successful fetch told us, for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchRequest:
    url: str
    validators: Validators = Validators()
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = field(default=None, repr=False)  # (username, password)
    proxy: str | None = field(default=None, repr=False)  # may carry credentials
    allow_private_redirects: bool = False
    max_body: int | None = None  # this request's size cap (an image's); None: the fetcher's


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one retrieval. ``body`` is None when not modified."""

    url: str  # the URL finally read, after redirects
    status: int
    body: bytes | None
    headers: Mapping[str, str]
    validators: Validators
    permanent_url: str | None = None  # set when every hop was a permanent redirect
    fresh_for: float | None = None  # seconds the server says the document stays fresh
    elapsed: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.body is None


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 60.0
    max_body: int = 10 * 1024**2
    concurrency: int = 16
    per_host: int = 2


def parse_retry_after(value: str | None, now: datetime) -> float:
    """Seconds to wait, from delta-seconds or an HTTP date (RFC 9110 §10.2.3), clamped."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    seconds: float
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def freshness(headers: Mapping[str, str], now: datetime) -> float | None:
    """How long the response says it stays fresh (Cache-Control max-age, else Expires)."""
    cache_control = headers.get("cache-control", "")
    if match := re.search(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", cache_control, re.IGNORECASE):
        return float(match.group(1))
    if expires := headers.get("expires"):
        try:
            when = email.utils.parsedate_to_datetime(expires)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - now).total_seconds(), 0.0)
    return None


class _Decoder:
    """Incremental Content-Encoding decoder with a cap on the decoded size."""

    def __init__(self, encoding: str, limit: int, url: str) -> None:
        self.limit = limit
        self.url = url
        self.size = 0
        self.parts: list[bytes] = []
        encoding = encoding.strip().lower()
        self._zlib: zlib._Decompress | None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
            self._deflate_sniffed = False
        elif encoding in ("", "identity"):
            self._zlib = None
        else:
            raise FetchError(f"unsupported Content-Encoding {encoding!r}", url=url)
        self._encoding = encoding

    def _append(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(f"body larger than {self.limit} bytes (after decompression)", url=self.url)
        self.parts.append(data)

    def feed(self, chunk: bytes) -> None:
        if self._zlib is None:
            self._append(chunk)
            return
        if self._encoding == "deflate" and not self._deflate_sniffed:
            # Some servers send raw deflate without the zlib header.
            self._deflate_sniffed = True
            if chunk and (chunk[0] & 0x0F) != 8:
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        data = chunk
        try:
            while data:
                out = self._zlib.decompress(data, self.limit - self.size + 1)
                self._append(out)
                data = self._zlib.unconsumed_tail
        except zlib.error as error:
            raise FetchError(f"corrupt {self._encoding} body: {error}", url=self.url) from error

    def finish(self) -> bytes:
        if self._zlib is not None:
            try:
                self._append(self._zlib.flush())
            except zlib.error as error:
                raise FetchError(f"corrupt {self._encoding} body: {error}", url=self.url) from error
            if self._encoding != "deflate" and not self._zlib.eof:
                raise FetchError(f"truncated {self._encoding} body", url=self.url)
        return b"".join(self.parts)


def redact_url(url: str) -> str:
    """The URL without its user:password part, for log lines, errors and status output."""
    if "@" not in url:
        return url  # no credentials: /status skips 20,000 urlsplits (0.3 s under cProfile) this way
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


def url_credentials(url: str) -> tuple[str, str] | None:
    """The (username, password) written into a URL, if any."""
    if "@" not in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def is_public_address(address: str) -> bool:
    """True for a globally routable IP address; loopback, private, link-local and the like are not."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def literal_addresses(host: str) -> tuple[str, ...] | None:
    """The addresses a host stands for when that needs no DNS lookup, else None."""
    host = host.strip("[]").lower()
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 §6.3
            return ("127.0.0.1", "::1")
        return None
    return (host,)


def refuse_redirect(origin: Iterable[str], target: Iterable[str]) -> bool:
    """A redirect from public addresses to any non-public one is refused (SSRF into the LAN).

    An origin that is itself private (a feed on the intranet) may redirect anywhere.
    """
    return all(is_public_address(a) for a in origin) and not all(is_public_address(a) for a in target)


Resolver = Callable[[str], Awaitable[tuple[str, ...]]]


async def system_resolver(host: str) -> tuple[str, ...]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return ()
    return tuple(str(info[4][0]) for info in infos)


async def host_addresses(host: str, resolver: Resolver) -> tuple[str, ...]:
    """Literal addresses at once; names through ``resolver`` (called only after a redirect)."""
    return literal_addresses(host) or await resolver(host)


class HostGate(Protocol):
    """Places for requests to a host shared with other processes (a fleet), beside our own semaphores.

    ``admit`` waits for one of ``limit`` places for ``host`` and raises ``RateLimited`` when
    none came within ``deadline`` (or the host asked everyone to wait); ``defer`` tells the
    others that ``host`` asked to be left alone for ``seconds``.
    """

    def admit(self, host: str, limit: int, deadline: float) -> AbstractAsyncContextManager[object]: ...

    async def defer(self, host: str, seconds: float) -> None: ...


class Fetcher:
    """Owns the HTTP clients and the concurrency limits; close it when done."""

    def __init__(
        self,
        user_agent: str,
        limits: FetchLimits = FetchLimits(),
        *,
        resolver: Resolver = system_resolver,
        tls_context: ssl.SSLContext | None = None,
        transport: TransportKind = DEFAULT_TRANSPORT,
        host_gate: HostGate | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.limits = limits
        self.host_gate = host_gate
        self.resolver = resolver
        # The system's CAs unless told otherwise; loaded at the first https request.
        self.tls = ClientTLS(tls_context)
        # Socket timeouts: connect, and the longest silence while reading. The
        # pools never make a request wait (our semaphores match their limits).
        self._clients = Clients(
            transport,
            PoolSettings(
                concurrency=limits.concurrency,
                per_host=limits.per_host,
                connect_timeout=limits.connect_timeout,
                read_timeout=limits.read_timeout,
            ),
            self.tls.handle,
        )
        self._global = asyncio.Semaphore(limits.concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}

    @property
    def transport(self) -> TransportKind:
        return self._clients.kind

    async def _tls_context(self) -> ssl.SSLContext:
        ready = self.tls.ready
        # The first one loads the CA bundle: in a thread, off the event loop.
        return ready if ready is not None else await asyncio.to_thread(self.tls.context)

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def fetch(self, request: FetchRequest) -> FetchResult:
        if "@" in request.url:
            # user:password in the URL becomes basic auth, so that no layer below
            # (debug logs included) ever sees it in a URL.
            credentials = url_credentials(request.url)
            if credentials is not None:
                request = replace(request, url=redact_url(request.url), auth=request.auth or credentials)
        host = urlsplit(request.url).hostname or ""
        host_limit = self._per_host.get(host)
        if host_limit is None:
            host_limit = self._per_host[host] = asyncio.Semaphore(self.limits.per_host)
        started = time.monotonic()
        safe = redact_url(request.url)
        # The host slot first: a source queueing behind its busy host must not hold
        # a global slot that a source on another host could use.
        gate = self.host_gate
        async with host_limit, self._global:
            # The fleet's place for this host last: it is held only while the request runs.
            admitted = (
                gate.admit(host, self.limits.per_host, self.limits.deadline)
                if gate is not None
                else contextlib.nullcontext()
            )
            try:
                async with admitted, asyncio.timeout(self.limits.deadline):
                    result = await self._fetch_following(request)
            except RateLimited as error:
                if gate is not None and error.status:  # the host's own answer, not the gate's
                    await gate.defer(host, error.retry_after)
                raise
            except TimeoutError as error:
                raise FetchTimeout(
                    f"no complete response within the {self.limits.deadline:g}s deadline", url=safe
                ) from error
            except (httpx.InvalidURL, ValueError) as error:
                # A hostile Location header (or config URL) that no URL parser accepts.
                raise FetchError(f"invalid URL: {error}", url=safe) from error
        return _with_elapsed(result, time.monotonic() - started)

    async def _fetch_following(self, request: FetchRequest) -> FetchResult:
        url = request.url
        seen = {url}
        # The last URL reached through permanent redirects only (RFC 9110 §15.4.2, §15.4.9):
        # a temporary hop after it is followed but not remembered.
        permanent: str | None = None
        still_permanent = True
        origin_addresses: tuple[str, ...] | None = None
        safe = redact_url(request.url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                outcome = await self._fetch_once(request, url)
            except WIRE_ERRORS as error:
                # Named with the hop that failed (its host:port), reported under the source's URL.
                fault = describe_wire_error(error, url, self.limits.connect_timeout, self.limits.read_timeout)
                raise _as_fetch_error(fault, safe) from error
            if isinstance(outcome, FetchResult):
                return outcome if permanent is None else replace(outcome, permanent_url=permanent)
            status, location = outcome
            target = urljoin(url, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise RedirectError(f"redirect to a non-http URL: {redact_url(target)}", url=safe)
            if target in seen:
                raise RedirectError(f"redirect loop: {redact_url(target)} was already visited", url=safe)
            if not request.allow_private_redirects:
                # Resolved only now that a redirect happened: no DNS cost on ordinary fetches.
                if origin_addresses is None:
                    origin_addresses = await host_addresses(
                        urlsplit(request.url).hostname or "", self.resolver
                    )
                target_addresses = await host_addresses(urlsplit(target).hostname or "", self.resolver)
                if origin_addresses and refuse_redirect(origin_addresses, target_addresses):
                    raise RedirectError(
                        f"refused redirect from a public address to a private one: {redact_url(target)} "
                        "(set allow_private_redirects on the source to permit it)",
                        url=safe,
                    )
            seen.add(target)
            still_permanent = still_permanent and status in PERMANENT_REDIRECTS
            if still_permanent:
                permanent = target
            url = target
        raise RedirectError(f"more than {MAX_REDIRECTS} redirects", url=safe)

    async def _fetch_once(self, request: FetchRequest, url: str) -> FetchResult | tuple[int, str]:
        headers = {
            "User-Agent": self.user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": "gzip, deflate",
            **request.headers,
        }
        if request.auth is not None:
            user, password = request.auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if url != request.url and _origin(url) != _origin(request.url):
            # Credentials are for the configured origin only, never for wherever it redirects.
            headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        if request.proxy is not None:
            headers.update(forward_proxy_headers(request.proxy, url))
        if request.validators.etag:
            headers["If-None-Match"] = request.validators.etag
        if request.validators.last_modified:
            headers["If-Modified-Since"] = request.validators.last_modified
        if url.startswith("https:") or (request.proxy or "").startswith("https:"):
            await self._tls_context()  # every client holds the context; its CAs are loaded now
        client = self._clients.client(request.proxy)
        # Built here rather than by client.build_request: no default headers or cookies to merge.
        # Values as UTF-8, as aiohttp sent them: httpx would encode str values as ASCII, and refuse.
        encoded = [(name.encode("ascii"), value.encode()) for name, value in headers.items()]
        outgoing = httpx.Request(
            "GET", parsed_url(url), headers=encoded, extensions={"timeout": self._clients.timeout}
        )
        now = datetime.now(UTC)
        response = await client.send(outgoing, stream=True)
        try:
            status = response.status_code
            response_headers = _joined(response.headers.multi_items())
            if status in PERMANENT_REDIRECTS | TEMPORARY_REDIRECTS:
                location = redirect_location(response)
                if not location:
                    raise RedirectError(f"HTTP {status} without a Location header", url=redact_url(url))
                await _drain(response)
                return status, location
            if status == 304:
                await _drain(response)
                return FetchResult(
                    url=url,
                    status=304,
                    body=None,
                    headers=response_headers,
                    validators=request.validators,
                    fresh_for=freshness(response_headers, now),
                )
            if not 200 <= status < 300:
                _raise_for_status(status, response_headers, redact_url(url), now)
            body = await self._read_body(response, response_headers, url, request.max_body)
        finally:
            await response.aclose()
        validators = Validators(
            etag=response_headers.get("etag"), last_modified=response_headers.get("last-modified")
        )
        # A 200 carrying the validator we sent is a server ignoring conditional GET: same document.
        if validators.etag is not None:
            unchanged = validators.etag == request.validators.etag
        else:
            unchanged = validators.last_modified is not None and (
                validators.last_modified == request.validators.last_modified
            )
        return FetchResult(
            url=url,
            status=status,
            body=None if unchanged else body,
            headers=response_headers,
            validators=validators,
            fresh_for=freshness(response_headers, now),
        )

    async def _read_body(
        self, response: httpx.Response, headers: Mapping[str, str], url: str, cap: int | None
    ) -> bytes:
        limit = cap if cap is not None else self.limits.max_body
        declared = headers.get("content-length", "")
        encoding = headers.get("content-encoding", "")
        if declared.isdigit() and int(declared) > limit and not encoding:
            raise TooLarge(f"Content-Length {declared} exceeds the {limit}-byte limit", url=redact_url(url))
        decoder = _Decoder(encoding, limit, redact_url(url))
        # Raw bytes as they arrive (httpx's own decoding is unbounded): the cap is checked chunk by chunk.
        async for chunk in response.aiter_raw():
            decoder.feed(chunk)
        return decoder.finish()


def _as_fetch_error(fault: WireFault, url: str) -> FetchError:
    return FetchTimeout(fault.text, url=url) if fault.timeout else FetchError(fault.text, url=url)


def _raise_for_status(status: int, headers: Mapping[str, str], url: str, now: datetime) -> None:
    if status < 400 and status >= 200:
        return
    if status == 410:
        raise SourceGone("HTTP 410 Gone: the source says it is gone", url=url, status=status)
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        raise RateLimited(
            f"HTTP {status}: asked to retry after {retry_after:g}s",
            url=url,
            status=status,
            retry_after=retry_after,
        )
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}
    detail = f" {reason[status]}" if status in reason else ""
    raise HTTPStatusError(f"HTTP {status}{detail}", url=url, status=status)


def _joined(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; a repeated field joined with commas, as RFC 9110 §5.3 allows."""
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


async def _drain(response: httpx.Response, limit: int = 64 * 1024) -> None:
    """Read a short body to its end so the connection goes back to the pool (not closed)."""
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > limit:
            return  # not worth it: closing the connection (aclose, unread) is cheaper than reading on


_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _with_elapsed(result: FetchResult, elapsed: float) -> FetchResult:
    return replace(result, elapsed=elapsed)


def read_local(path: Path, validators: Validators, max_body: int) -> FetchResult:
    """A local file as a fetch result; its size and mtime act as the validator."""
    try:
        stat = path.stat()
        if stat.st_size > max_body:
            raise TooLarge(f"file larger than {max_body} bytes", url=str(path))
        etag = f'"file-{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        if etag == validators.etag:
            body = None
        else:
            with path.open("rb") as handle:
                body = handle.read(max_body + 1)
            if len(body) > max_body:
                raise TooLarge(f"file larger than {max_body} bytes", url=str(path))
    except FileNotFoundError as error:
        raise FetchError(f"no such file: {path}", url=str(path)) from error
    except IsADirectoryError as error:
        raise FetchError(f"is a directory: {path}", url=str(path)) from error
    except OSError as error:
        raise FetchError(f"cannot read {path}: {os.strerror(error.errno or 0)}", url=str(path)) from error
    content_type = "application/feed+json" if path.suffix == ".json" else "application/xml"
    return FetchResult(
        url=path.as_uri(),
        status=200 if body is not None else 304,
        body=body,
        headers={"content-type": content_type},
        validators=Validators(etag=etag),
    )
