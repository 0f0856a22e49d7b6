"""A pool of worker processes for parsing, bounded in time and memory.

Parsing is CPU-bound (feedparser is pure Python), so it runs in separate
processes: it neither blocks the event loop nor serializes on one core. Each
worker caps its own address space, and a parse that overruns its time limit
gets its pool torn down and replaced, so one hostile feed can neither stall
nor exhaust the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from aggregator.errors import ParseError
from aggregator.parse import FeedData, parse_document

DEFAULT_PARSE_SECONDS = 30.0
DEFAULT_PARSE_MEMORY = 1024 * 1024**2


def _limit_memory(max_bytes: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def _parse_in_worker(body: bytes, headers: Mapping[str, str], url: str) -> FeedData:
    try:
        return parse_document(body, headers, url)
    except MemoryError:
        raise ParseError("the feed needs more memory than a parse may use") from None


class ParserPool:
    """``await pool.parse(...)``; ``processes=0`` parses in the calling thread (tests, tiny runs)."""

    def __init__(
        self,
        processes: int | None = None,
        *,
        seconds: float = DEFAULT_PARSE_SECONDS,
        memory: int = DEFAULT_PARSE_MEMORY,
    ) -> None:
        self.processes = (os.cpu_count() or 1) if processes is None else processes
        self.seconds = seconds
        self.memory = memory
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                # forkserver: never fork a process that runs threads (the event loop, uvicorn).
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_limit_memory,
                initargs=(self.memory,),
            )
        return self._executor

    async def parse(self, body: bytes, headers: Mapping[str, str], url: str) -> FeedData:
        if self.processes == 0:
            return await asyncio.to_thread(parse_document, body, headers, url)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool(), _parse_in_worker, body, dict(headers), url)
        try:
            return await asyncio.wait_for(future, self.seconds)
        except TimeoutError:
            self._replace_pool()
            raise ParseError(f"parsing took longer than {self.seconds:g}s; gave up") from None
        except BrokenProcessPool:
            self._replace_pool()
            raise ParseError("the parser process died (out of memory?)") from None
        except MemoryError:
            raise ParseError("the feed needs more memory than a parse may use") from None

    def _replace_pool(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor cannot cancel a running task: end its workers.
        for process in list(getattr(executor, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
