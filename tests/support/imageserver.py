"""A loopback image host for the media archive's tests, with the faults image hosts have.

    /a/photo.jpg, /b/same.jpg   one JPEG under two URLs
    /strict.png                 a PNG, but 403 Forbidden when the request carries a Referer
    /missing.jpg                404
    /huge.jpg                   a JPEG of HUGE_SIZE bytes (over the tests' max_media)
    /fake.jpg                   an HTML page served as image/jpeg
    /vector.svg                 an SVG (with a script), served as image/svg+xml
    /slow.jpg                   a JPEG dripped a few bytes a second, for longer than any test deadline
    /flaky.png                  404 until ``flaky_fixed`` is set, then a PNG
    /n/<k>.png                  a distinct small PNG for each k (the bench's corpus)

Every request is counted by path, with the Referer it carried (``requests``, ``referers``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from support.servers import AppServer

HUGE_SIZE = 300 * 1024


def fake_jpeg(seed: str, size: int = 600) -> bytes:
    """Bytes a sniffer takes for a JPEG (its magic), distinct per seed."""
    filler = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + filler[:size] + b"\xff\xd9"


def fake_png(seed: str, size: int = 300) -> bytes:
    filler = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    return b"\x89PNG\r\n\x1a\n" + filler[:size]


PHOTO = fake_jpeg("photo")
STRICT = fake_png("strict")
FLAKY = fake_png("flaky")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


class ImageHost:
    """The app and what it saw."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.referers: dict[str, list[str | None]] = collections.defaultdict(list)
        self.flaky_fixed = False
        self.app = Starlette(routes=[Route("/{path:path}", self.serve)])

    async def serve(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        self.requests[path] += 1
        referer = request.headers.get("referer")
        self.referers[path].append(referer)
        if path in ("/a/photo.jpg", "/b/same.jpg"):
            return Response(PHOTO, media_type="image/jpeg")
        if path == "/strict.png":
            if referer:
                return Response("hotlinking refused", status_code=403)
            return Response(STRICT, media_type="image/png")
        if path == "/huge.jpg":
            return Response(fake_jpeg("huge", HUGE_SIZE), media_type="image/jpeg")
        if path == "/fake.jpg":
            return Response(b"<!doctype html><html><body>Not an image</body></html>", media_type="image/jpeg")
        if path == "/vector.svg":
            return Response(SVG, media_type="image/svg+xml")
        if path == "/slow.jpg":
            return StreamingResponse(_drip(fake_jpeg("slow")), media_type="image/jpeg")
        if path == "/flaky.png":
            if not self.flaky_fixed:
                return Response("not yet", status_code=404)
            return Response(FLAKY, media_type="image/png")
        if path.startswith("/n/") and path.endswith(".png"):
            return Response(fake_png(path), media_type="image/png")
        return Response("no such image", status_code=404)


async def _drip(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8):
        yield data[start : start + 8]
        await asyncio.sleep(0.5)


def image_server() -> tuple[AppServer, ImageHost]:
    host = ImageHost()
    return AppServer(host.app), host
