"""Retrieve a source's bytes politely, bounded in size and time.

One aiohttp session (its connection pool keyed by host); a global and a
per-host concurrency limit; conditional GET with the stored validators;
redirects followed by hand so that permanent ones can be remembered and
redirects into private networks refused; the body decompressed by us, with a
cap on the decompressed size, so a compression bomb stops early; and one
deadline over the whole exchange, because socket timeouts are per read and a
server dripping bytes would never trip them.

aiohttp rather than httpx: a not-modified poll, the commonest request we make,
cost 0.8-1.9 ms of CPU through httpx/httpcore (pool bookkeeping and anyio
layers in Python) and 0.17 ms through aiohttp, whose HTTP parser is in C; at
1,000 sources that is the difference between a one-second cycle and three.

Everything the rest of the program needs to know about a response is in the
returned ``FetchResult``; HTTP failures are raised as ``FetchError`` subclasses.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import ipaddress
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
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
from aggregator.tls import ClientTLS, ca_bundle_deferred

with ca_bundle_deferred():  # see aggregator.tls: the CA bundle is loaded when https is first used
    import aiohttp

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
# Longest response header line read; past it the response is a protocol error.
MAX_HEADER_LINE = 64 * 1024


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


class Fetcher:
    """Owns the HTTP session and the concurrency limits; close it when done."""

    def __init__(
        self,
        user_agent: str,
        limits: FetchLimits = FetchLimits(),
        *,
        resolver: Resolver = system_resolver,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.limits = limits
        self.resolver = resolver
        # The system's CAs unless told otherwise; loaded at the first https request.
        self.tls = ClientTLS(tls_context)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        # Socket timeouts: connect, and the longest silence while reading. The
        # pool never makes a request wait (our semaphores match its limits).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
        )
        self._global = asyncio.Semaphore(limits.concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}

    def _client(self) -> aiohttp.ClientSession:
        """The session of the running event loop (a session cannot move between loops)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits.concurrency,
                limit_per_host=self.limits.per_host,
                ttl_dns_cache=300,
            )
            # No cookies, no proxies from the environment, no decompression (ours is capped).
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                timeout=self._timeout,
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
            self._session_loop = loop
        return self._session

    async def _tls_context(self) -> ssl.SSLContext:
        ready = self.tls.ready
        # The first one loads the CA bundle: in a thread, off the event loop.
        return ready if ready is not None else await asyncio.to_thread(self.tls.context)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._session_loop is asyncio.get_running_loop():
            await session.close()

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
        # The host slot first: a source queueing behind its busy host must not hold
        # a global slot that a source on another host could use.
        async with host_limit, self._global:
            try:
                async with asyncio.timeout(self.limits.deadline):
                    result = await self._fetch_following(request)
            # aiohttp's socket timeouts are TimeoutErrors too: they come first.
            except aiohttp.ServerTimeoutError as error:
                raise FetchTimeout(
                    _describe_timeout(error, self.limits), url=redact_url(request.url)
                ) from error
            except TimeoutError as error:
                raise FetchTimeout(
                    f"no complete response within the {self.limits.deadline:g}s deadline",
                    url=redact_url(request.url),
                ) from error
            except aiohttp.InvalidURL as error:
                raise FetchError(f"invalid URL: {error}", url=redact_url(request.url)) from error
            # Before ValueError: a failed certificate check is a ValueError too (ssl's own class).
            except (aiohttp.ClientError, OSError) as error:
                raise FetchError(_describe_transport_error(error), url=redact_url(request.url)) from error
            except ValueError as error:
                # A hostile Location header (or config URL) that no URL parser accepts.
                raise FetchError(f"invalid URL: {error}", url=redact_url(request.url)) from error
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
            outcome = await self._fetch_once(request, url)
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
        if request.validators.etag:
            headers["If-None-Match"] = request.validators.etag
        if request.validators.last_modified:
            headers["If-Modified-Since"] = request.validators.last_modified
        tls: ssl.SSLContext | bool = True  # True: plain http, no TLS at all
        if url.startswith("https:") or (request.proxy or "").startswith("https:"):
            tls = await self._tls_context()
        now = datetime.now(UTC)
        async with self._client().get(
            url, headers=headers, proxy=request.proxy, allow_redirects=False, ssl=tls
        ) as response:
            status = response.status
            response_headers = _joined(response.headers)
            if status in PERMANENT_REDIRECTS | TEMPORARY_REDIRECTS:
                location = response_headers.get("location")
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
            body = await self._read_body(response, url)
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

    async def _read_body(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        limit = self.limits.max_body
        declared = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "")
        if declared.isdigit() and int(declared) > limit and not encoding:
            raise TooLarge(f"Content-Length {declared} exceeds the {limit}-byte limit", url=redact_url(url))
        decoder = _Decoder(encoding, limit, redact_url(url))
        # Whatever has arrived, as it arrives: the cap is checked chunk by chunk.
        async for chunk in response.content.iter_any():
            decoder.feed(chunk)
        return decoder.finish()


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


def _describe_transport_error(error: BaseException) -> str:
    """One line naming what went wrong on the wire, in the words an operator searches for."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        reason = getattr(error.certificate_error, "verify_message", "") or _cause(error.certificate_error)
        return f"TLS certificate not trusted: {reason} ({error.host}:{error.port})"
    if isinstance(error, aiohttp.ClientSSLError):
        return f"TLS handshake failed: {_cause(error)}"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or error.os_error} ({error.host}:{error.port})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "connection broken while reading: the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return f"connection broken while reading: {_cause(error)}"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"protocol error: {error.message or _cause(error)}"
    if isinstance(error, aiohttp.ClientHttpProxyError):
        return f"proxy error: HTTP {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientOSError | OSError):
        return f"connection error: {_cause(error)}"
    return f"{type(error).__name__}: {_cause(error)}"


def _cause(error: BaseException) -> str:
    return str(error) or str(error.__cause__ or "") or type(error).__name__


def _joined(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-case names; a repeated field joined with commas, as RFC 9110 §5.3 allows."""
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


async def _drain(response: aiohttp.ClientResponse, limit: int = 64 * 1024) -> None:
    """Read a short body to its end so the connection goes back to the pool (not closed)."""
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()  # not worth it: closing the connection is cheaper than reading on
            return


_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@functools.lru_cache(maxsize=4096)
def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _describe_timeout(error: aiohttp.ServerTimeoutError, limits: FetchLimits) -> str:
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return f"connect timeout: no connection within {limits.connect_timeout:g}s"
    return f"read timeout: the server sent nothing for {limits.read_timeout:g}s"


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
