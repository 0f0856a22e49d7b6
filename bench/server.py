"""Serve a corpus on 127.0.0.1 with ETag, Last-Modified and 304s (uvicorn, one process).

    python -m bench.server CORPUS_DIR OVERRIDE_DIR     # prints the port on the first line of stdout

``/f/<file>`` answers from OVERRIDE_DIR when the file is there (a feed that gained
entries), else from CORPUS_DIR. The validators come from the file's size and
mtime, so writing an override changes them. ``/_stats`` counts the requests and
the 304s since the last ``/_stats?reset=1``, so the driver can check that a warm
cycle really was all 304, and ``/_stats?paths=1`` adds each feed's requests and the shortest
gap between two of them (a source polled twice, or too soon). ``/img/<path>`` answers with
a small image and counts each path's requests (the media archive's step, see ``bench.media``).
Python's http.server is not used: with keep-alive it stalls about 35 ms a response.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import uvicorn

from bench.corpus import FORMATS, MEDIA_TYPES
from bench.media import image_bytes

Scope = dict[str, Any]


class CorpusApp:
    def __init__(self, corpus: Path, override: Path) -> None:
        self.corpus = corpus
        self.override = override
        self.stats = {"requests": 0, "not_modified": 0, "bytes": 0}
        self.images: dict[str, int] = {}  # requests of each /img/ path, since the last reset
        # Per feed since the last reset: [requests, seconds between its two closest, last request].
        self.feeds: dict[str, list[float]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/_stats":
            counts = self.images.values()
            images = {
                "image_requests": sum(counts),
                "image_paths": len(self.images),
                "image_max": max(counts, default=0),
            }
            query = scope.get("query_string", b"")
            report: dict[str, Any] = self.stats | images
            if b"paths=1" in query:
                report["paths"] = {
                    name: [int(n), None if n == 1 else gap] for name, (n, gap, _last) in self.feeds.items()
                }
            body = json.dumps(report).encode()
            if b"reset=1" in query:
                self.stats = {"requests": 0, "not_modified": 0, "bytes": 0}
                self.images = {}
                self.feeds = {}
            await _respond(send, 200, [(b"content-type", b"application/json")], body)
            return
        if path.startswith("/img/"):  # the media archive's step (bench.media)
            self.images[path] = self.images.get(path, 0) + 1
            image, image_type = image_bytes(path)
            await _respond(send, 200, [(b"content-type", image_type.encode())], image)
            return
        name = path.removeprefix("/f/")
        if name == path or "/" in name or name.startswith("."):
            await _respond(send, 404, [], b"not found")
            return
        self.stats["requests"] += 1
        self._count(name)
        file = self.override / name
        try:
            stat = os.stat(file)
        except FileNotFoundError:
            file = self.corpus / name
            try:
                stat = os.stat(file)
            except FileNotFoundError:
                await _respond(send, 404, [], b"not found")
                return
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        last_modified = formatdate(stat.st_mtime, usegmt=True)
        headers = dict(scope["headers"])
        validators = [(b"etag", etag.encode()), (b"last-modified", last_modified.encode())]
        if _not_modified(headers, etag, int(stat.st_mtime)):
            self.stats["not_modified"] += 1
            await _respond(send, 304, validators, b"")
            return
        data = file.read_bytes()
        self.stats["bytes"] += len(data)
        fmt = next((f for f in FORMATS if name.endswith(f"-{f}.xml")), "rss2")
        content_type = f"{MEDIA_TYPES[fmt]}; charset=utf-8".encode()
        await _respond(send, 200, [(b"content-type", content_type), *validators], data)

    def _count(self, name: str) -> None:
        now = time.monotonic()
        seen = self.feeds.get(name)
        if seen is None:
            self.feeds[name] = [1, float("inf"), now]
        else:
            seen[0] += 1
            seen[1] = min(seen[1], now - seen[2])
            seen[2] = now


def _not_modified(headers: dict[bytes, bytes], etag: str, mtime: int) -> bool:
    """RFC 9110 13.1: If-None-Match wins over If-Modified-Since."""
    if b"if-none-match" in headers:
        tags = [t.strip().removeprefix("W/") for t in headers[b"if-none-match"].decode().split(",")]
        return etag in tags or "*" in tags
    if b"if-modified-since" in headers:
        try:
            since = parsedate_to_datetime(headers[b"if-modified-since"].decode()).timestamp()
        except (TypeError, ValueError):
            return False
        return mtime <= since
    return False


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def read_stats(base: str, *, reset: bool = True, paths: bool = False) -> dict[str, Any]:
    """The counters of the server at ``base`` (and each feed's, with ``paths``); reset by default."""
    query = "&".join(part for part, wanted in (("reset=1", reset), ("paths=1", paths)) if wanted)
    with urllib.request.urlopen(f"{base}/_stats{'?' + query if query else ''}") as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def feed_requests(stats: dict[str, Any]) -> dict[str, int]:
    """Requests per feed file, from ``read_stats(..., paths=True)``."""
    return {name: int(count) for name, (count, _gap) in stats["paths"].items()}


def main() -> None:
    corpus, override = Path(sys.argv[1]), Path(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        CorpusApp(corpus, override), log_level="warning", access_log=False, lifespan="off", backlog=2048
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
