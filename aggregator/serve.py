"""Serve the feeds directory over HTTP, with health and metrics.

Starlette's static files give ETag, Last-Modified and 304 answers; the media
type is chosen by file name so readers see ``application/rss+xml`` rather than
a generic ``text/xml``; GZip middleware compresses what is worth it. The ETag
is marked weak: it names the content, not one encoding of it (RFC 9110
§8.8.3), so a gzipped and a plain copy share it and both revalidate with 304.
Builds rewrite a feed only when its bytes change, so an unchanged feed keeps
its ETag and Last-Modified across rebuilds and restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import socket
from collections.abc import Callable, Sequence
from email.utils import formatdate
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from aggregator.errors import AggregatorError
from aggregator.media.html import parse_local
from aggregator.media.sniff import media_type_of

MEDIA_TYPES = {
    "rss.xml": "application/rss+xml; charset=utf-8",
    "atom.xml": "application/atom+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
}


class FeedFiles(StaticFiles):
    """Static files with feed media types, each response one whole version of its file."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        # Starlette takes the headers from a stat of the path and the body from a later
        # open of it: a build renaming a new version over the path in between gave one
        # ETag two bodies. Bytes, ETag and Last-Modified here come from one open file.
        try:
            with open(full_path, "rb") as handle:
                stat_result = os.fstat(handle.fileno())
                body = handle.read()
        except FileNotFoundError:
            return PlainTextResponse("Not Found", status_code=404)
        headers = {
            "etag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            "last-modified": formatdate(stat_result.st_mtime, usegmt=True),
        }
        if self.is_not_modified(Headers(headers), Headers(scope=scope)):
            response: Response = NotModifiedResponse(Headers(headers))
        else:
            media_type = mimetypes.guess_type(str(full_path))[0] or "application/octet-stream"
            response = Response(body, status_code=status_code, headers=headers, media_type=media_type)
        name = Path(str(full_path)).name
        for suffix, media_type in MEDIA_TYPES.items():
            if name.endswith(suffix):
                response.headers["content-type"] = media_type
                break
        response.headers.setdefault("cache-control", "public, max-age=60")
        etag = response.headers.get("etag")
        if etag and not etag.startswith("W/"):
            response.headers["etag"] = "W/" + etag
        return response


class MediaFiles(StaticFiles):
    """The media archive's copies: a name says its content, so they are cached for a year.

    The ETag is the hash in the name (strong: the bytes never change); the content type
    comes from the name's extension, which the download checked against the bytes.
    """

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        path = Path(str(full_path))
        parsed = parse_local(f"/media/{path.parent.name}/{path.name}")
        if parsed is None:
            return PlainTextResponse("Not Found", status_code=404)
        digest, ext = parsed
        headers = {
            "etag": f'"{digest}"',
            "cache-control": "public, max-age=31536000, immutable",
            "last-modified": formatdate(stat_result.st_mtime, usegmt=True),
            "x-content-type-options": "nosniff",
        }
        if self.is_not_modified(Headers(headers), Headers(scope=scope)):
            return NotModifiedResponse(Headers(headers))
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(body, status_code=status_code, headers=headers, media_type=media_type_of(ext))


def create_app(
    feeds_dir: Path,
    *,
    media_dir: Path | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
    registry: CollectorRegistry | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The feeds folder, /healthz, /metrics, and ``routes`` (the dashboard) ahead of the folder."""
    feeds_dir.mkdir(parents=True, exist_ok=True)

    async def healthz(_request: Request) -> Response:
        report = health() if health else {"ok": True}
        return JSONResponse(report, status_code=200 if report.get("ok") else 503)

    async def metrics(_request: Request) -> Response:
        data = generate_latest(registry) if registry is not None else b""
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            *([Mount("/media", app=MediaFiles(directory=media_dir, check_dir=False))] if media_dir else []),
            *routes,
            Mount("/", app=FeedFiles(directory=feeds_dir, html=True, check_dir=False)),
        ],
        middleware=[Middleware(GZipMiddleware, minimum_size=1024)],
    )


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound now: a port in use is a clear error before any work starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise AggregatorError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def make_server(app: Starlette, host: str, port: int) -> QuietServer:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
    return QuietServer(config)
