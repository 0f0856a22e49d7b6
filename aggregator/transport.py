"""The HTTP client under the fetcher: ``httpx.AsyncClient``, over aiohttp or httpcore.

httpx is the client (requests, responses, streams, its exception tree); what
carries the bytes is its transport. Two can be chosen:

- ``"aiohttp"`` (the default): ``httpx_aiohttp.AiohttpTransport`` over an
  aiohttp session of ours, whose HTTP parser is in C;
- ``"httpcore"``: httpx's own transport, pure Python.

A not-modified poll is the commonest request we make, and the transport is
most of its cost: ``python -m bench.poll_cpu`` measures it (bench/results.md,
"The HTTP client"), and that is why aiohttp carries the bytes.

httpx fixes proxies per client, not per request, so there is one client per
distinct proxy (made when a source first names it), all on the running event
loop (a client's connections cannot move between loops). Every client holds
the same TLS context, whose CA bundle is loaded at the first https request
(see aggregator.tls).

Errors: httpx's tree (``httpx.TransportError`` and below) is what both
transports raise, with the original error chained as ``__cause__`` (or held
in its args); ``describe_wire_error`` turns that chain into one line an
operator can search for. The aiohttp transport maps some errors loosely (a
refused connection, or a server that hangs up, arrives as
``httpx.ConnectTimeout``) and lets some through unmapped (a malformed status
line is aiohttp's own ``ClientResponseError``), so the chain's aiohttp root,
when there is one, decides.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from aggregator.tls import ca_bundle_deferred

if "httpx" not in sys.modules:
    # httpx's __init__ imports its command-line tool whenever click and rich are installed (as
    # ours are), and with it rich.syntax and pygments: 150-400 ms of every start-up here, for
    # nothing we call. Told that the module cannot be imported, it falls back to a stub.
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        del sys.modules["httpx._main"]  # a later ``import httpx._main`` works as usual
import httpx

with ca_bundle_deferred():  # see aggregator.tls: aiohttp's import-time contexts load no CA bundle
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

__all__ = [
    "DEFAULT_TRANSPORT",
    "TRANSPORTS",
    "WIRE_ERRORS",
    "Clients",
    "PoolSettings",
    "TransportKind",
    "WireFault",
    "describe_wire_error",
    "forward_proxy_headers",
    "httpx",  # import httpx from here: this module imports it without its command-line tool
    "parsed_url",
    "redirect_location",
]

TransportKind = Literal["aiohttp", "httpcore"]
TRANSPORTS: tuple[TransportKind, ...] = ("aiohttp", "httpcore")
DEFAULT_TRANSPORT: TransportKind = "aiohttp"
# Longest response header line read; past it the response is a protocol error
# (aiohttp; httpcore's own bound is 100 KiB for the whole head).
MAX_HEADER_LINE = 64 * 1024

# httpx logs every request at INFO: one line per poll in the daemon's log. Ours say what matters.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class PoolSettings:
    """What every client's connection pool is built with."""

    concurrency: int
    per_host: int
    connect_timeout: float
    read_timeout: float


class _NoCookies(httpx.Cookies):
    """A feed poll carries no cookies: none are kept from one response for the next request."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies()


class _Client(httpx.AsyncClient):
    """httpx's client, keeping no cookies.

    httpx has no switch for that, and reading a response's cookies was the
    largest single part of httpx's own CPU on a not-modified poll (it builds a
    urllib request and an email message per response, Set-Cookie or not).
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        return None


@functools.lru_cache(maxsize=8192)
def parsed_url(url: str) -> httpx.URL:
    """httpx's parse of a URL, kept: the same sources are polled again and again."""
    return httpx.URL(url)


_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_LOCATION = "aggregator.location"


async def _hide_location(response: httpx.Response) -> None:
    """Keep a redirect's Location from httpx, which would judge it by rules of its own.

    Even when not following, httpx builds the next request of every redirect
    (``next_request``) and raises when it cannot: ``javascript:`` becomes an
    ``InvalidURL`` about paths. The fetcher follows redirects, and judges
    their targets, itself; it reads the Location with ``redirect_location``.
    """
    if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
        response.extensions[_LOCATION] = ", ".join(response.headers.get_list("location"))
        del response.headers["location"]


def redirect_location(response: httpx.Response) -> str | None:
    """A redirect's Location header (joined if repeated), as the server sent it."""
    location: str | None = response.extensions.get(_LOCATION)
    return location


class Clients:
    """One ``httpx.AsyncClient`` per proxy, on the running event loop; close with ``aclose``."""

    def __init__(self, kind: TransportKind, pool: PoolSettings, tls: ssl.SSLContext) -> None:
        if kind not in TRANSPORTS:
            raise ValueError(f"unknown HTTP transport {kind!r} (one of {', '.join(TRANSPORTS)})")
        self.kind = kind
        self.pool = pool
        self.tls = tls
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Per request, as the transports read it; pool=None: our semaphores match the pool's limits.
        self.timeout = httpx.Timeout(
            connect=pool.connect_timeout, read=pool.read_timeout, write=pool.read_timeout, pool=None
        ).as_dict()

    def client(self, proxy: str | None) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Another loop (a new asyncio.run): the old clients' connections belong to the old loop.
            self._clients, self._loop = {}, loop
        client = self._clients.get(proxy)
        if client is None or client.is_closed:
            client = self._clients[proxy] = self._make(proxy)
        return client

    def _make(self, proxy: str | None) -> httpx.AsyncClient:
        via = _proxy(proxy, self.tls) if proxy else None
        transport: httpx.AsyncBaseTransport
        if self.kind == "aiohttp":
            transport = AiohttpTransport(verify=self.tls, trust_env=False, proxy=via, client=self._session())
        else:
            transport = httpx.AsyncHTTPTransport(
                verify=self.tls,
                trust_env=False,
                proxy=via,
                limits=httpx.Limits(
                    max_connections=self.pool.concurrency, max_keepalive_connections=self.pool.concurrency
                ),
            )
        # No proxies or .netrc from the environment, no cookies (_Client), no redirects (the fetcher follows
        # them itself), no decompression (ours is capped: the fetcher reads raw bytes).
        return _Client(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(**self.timeout),
            event_hooks={"response": [_hide_location]},
        )

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.pool.concurrency,
            limit_per_host=self.pool.per_host,
            ttl_dns_cache=300,
            ssl=self.tls,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),  # per request, from httpx's timeout
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        if self._loop is not None and self._loop is asyncio.get_running_loop():
            for client in clients.values():
                await client.aclose()


# What a request can raise from the wire: httpx's tree; aiohttp's own errors, which httpx-aiohttp
# lets through when it has no httpx class for them; and the OS's.
WIRE_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, aiohttp.ClientError, OSError)


@dataclass(frozen=True)
class WireFault:
    """A failed exchange in one line; ``timeout`` when a connect or read timeout ran out."""

    text: str
    timeout: bool


def _proxy(url: str, tls: ssl.SSLContext) -> httpx.Proxy:
    """The proxy, its user:password as a Proxy-Authorization header for its CONNECT requests.

    (Left in the URL, httpx-aiohttp would pass them to aiohttp as ``proxy_auth``, which
    aiohttp 3.14 deprecates.) An http URL is not tunnelled but forwarded, and aiohttp sends
    these headers only on CONNECT: the request itself carries ``forward_proxy_headers``.
    """
    authorization = _proxy_authorization(url)
    parsed = httpx.URL(url).copy_with(username=None, password=None)
    headers = {"Proxy-Authorization": authorization} if authorization else {}
    # Our context for an https proxy (httpx's default loads certifi); httpcore refuses one for http.
    return httpx.Proxy(parsed, ssl_context=tls if parsed.scheme == "https" else None, headers=headers)


def forward_proxy_headers(proxy: str | None, url: str) -> dict[str, str]:
    """Headers for a request to ``url`` through ``proxy``: its credentials if it forwards it.

    An http URL goes to the proxy as the request itself (absolute form), so the request
    carries Proxy-Authorization (RFC 9110 §11.7.1); an https one goes through a CONNECT
    tunnel, whose own request carries it, never the request inside, which the origin reads.
    """
    if proxy is None or not url.startswith("http:"):
        return {}
    authorization = _proxy_authorization(proxy)
    return {"Proxy-Authorization": authorization} if authorization else {}


@functools.lru_cache(maxsize=64)
def _proxy_authorization(proxy: str) -> str | None:
    parsed = httpx.URL(proxy)
    if not (parsed.username or parsed.password):
        return None
    token = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode("ascii")
    return f"Basic {token}"


def describe_wire_error(
    error: BaseException, url: str, connect_timeout: float, read_timeout: float
) -> WireFault:
    """What went wrong fetching ``url``, in the words an operator searches for."""
    chain = list(_chain(error))
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    # aiohttp's root, when there is one, decides: httpx-aiohttp maps a refused connection (and a
    # server hanging up) to httpx.ConnectTimeout.
    root = next((c for c in chain if isinstance(c, aiohttp.ClientError)), chain[0])
    if isinstance(root, httpx.TimeoutException | aiohttp.ServerTimeoutError):
        return WireFault(_describe_timeout(chain, connect_timeout, read_timeout), timeout=True)
    return WireFault(_describe_failure(chain, host, port), timeout=False)


def _describe_timeout(chain: list[BaseException], connect_timeout: float, read_timeout: float) -> str:
    # The innermost error that knows which timeout it was: aiohttp's root, else httpx's class.
    connect = False
    for cause in chain:
        if isinstance(cause, httpx.ConnectTimeout | aiohttp.ConnectionTimeoutError):
            connect = True
        elif isinstance(cause, httpx.ReadTimeout | httpx.WriteTimeout | aiohttp.SocketTimeoutError):
            connect = False
    if connect:
        return f"connect timeout: no connection within {connect_timeout:g}s"
    return f"read timeout: the server sent nothing for {read_timeout:g}s"


def _describe_failure(chain: list[BaseException], host: str, port: int) -> str:
    for cause in chain:  # TLS first: the handshake failing is the story, whatever wraps it
        # aiohttp's error is an SSLCertVerificationError too, without the reason: ssl's follows it.
        if isinstance(cause, ssl.SSLCertVerificationError) and getattr(cause, "verify_message", None):
            return f"TLS certificate not trusted: {cause.verify_message} ({host}:{port})"
    for cause in chain:
        if isinstance(cause, ssl.SSLError | aiohttp.ClientSSLError):
            return f"TLS handshake failed: {_text(cause)}"
    root = next((c for c in chain if isinstance(c, aiohttp.ClientError)), None)
    if root is not None:
        return _describe_aiohttp(root, host, port)
    return _describe_httpx(chain[0], chain, host, port)


def _describe_aiohttp(error: aiohttp.ClientError, host: str, port: int) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or error.os_error} ({host}:{port})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "connection broken while reading: the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return f"connection broken while reading: {_text(error)}"
    if isinstance(error, aiohttp.ClientHttpProxyError):
        return f"proxy error: HTTP {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"protocol error: {error.message or _text(error)}"
    if isinstance(error, aiohttp.InvalidURL):
        return f"invalid URL: {_text(error)}"
    return f"connection error: {_text(error)}"


def _describe_httpx(error: BaseException, chain: list[BaseException], host: str, port: int) -> str:
    # httpx's message, else the first one under it (httpcore's ReadError often has none).
    message = next((str(c) for c in chain if str(c)), type(error).__name__)
    if isinstance(error, httpx.ProxyError):
        return f"proxy error: {message}"
    if isinstance(error, httpx.ConnectError):
        # The OS's own words (errno) rather than anyio's summary of its attempts.
        os_errors = [c for c in chain if isinstance(c, OSError)]
        os_error = next((c for c in os_errors if c.strerror), os_errors[0] if os_errors else None)
        reason = (os_error.strerror or str(os_error)) if os_error is not None else message
        return f"cannot connect: {reason} ({host}:{port})"
    if isinstance(error, httpx.ReadError | httpx.WriteError):
        return f"connection broken while reading: {message}"
    if isinstance(error, httpx.RemoteProtocolError):
        # httpcore's words for a server that hangs up mid-exchange (h11 and httpcore's own).
        if "peer closed connection" in message or "Server disconnected" in message:
            return f"connection broken while reading: {message}"
        return f"protocol error: {message}"
    if isinstance(error, httpx.ProtocolError):
        return f"protocol error: {message}"
    if isinstance(error, httpx.UnsupportedProtocol):
        return f"invalid URL: {message}"
    return f"connection error: {message}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what it was raised from, and the errors it holds (aiohttp's attributes, httpcore's args)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        held = [getattr(current, name, None) for name in ("certificate_error", "os_error")]
        held += [*current.args, current.__cause__]
        if current.__cause__ is None and not current.__suppress_context__:
            held.append(current.__context__)
        pending += [inner for inner in held if isinstance(inner, BaseException)]


def _text(error: BaseException) -> str:
    return str(error) or str(error.__cause__ or "") or type(error).__name__
