"""Real HTTP servers on 127.0.0.1, run in a background thread.

``StaticServer`` serves a directory with ETag/Last-Modified/304 support
(Starlette's static files under uvicorn); ``AppServer`` runs any ASGI app.
Both bind port 0 and report the port the OS chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AppServer:
    """Run an ASGI app on 127.0.0.1 in a thread; ``base_url`` ends with a slash."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
        self.server = _ThreadServer(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def static_server(directory: Path) -> AppServer:
    """Serve ``directory`` (feed files) with conditional GET support."""
    app = Starlette(routes=[Mount("/", app=StaticFiles(directory=directory))])
    return AppServer(app)
