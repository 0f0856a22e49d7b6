"""A pool of worker processes for parsing, bounded in time and memory.

Parsing is CPU-bound (feedparser is pure Python), so it runs in separate
processes: it neither blocks the event loop nor serializes on one core. The
worker also normalizes the entries (``posts``, with their content hashes and
summaries), so each body crosses the pipe once; the store renders each post
file once, after first sight, transforms and merging have changed it. Each
worker caps its own address space and handles one document at a time over its
own pipe, so a parse that overruns its time limit costs exactly one worker:
that process is killed and replaced, and the parses running in the other
workers carry on (a ``ProcessPoolExecutor`` could only be torn down whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aggregator.errors import NotAFeed, ParseError
from aggregator.model import FeedData, NormalizedFeed, SourceRules
from aggregator.normalize import normalize_feed, prepared
from aggregator.parse import parse_document

DEFAULT_PARSE_SECONDS = 30.0
DEFAULT_PARSE_MEMORY = 1024 * 1024**2
WORKER_START_SECONDS = 60.0

# A worker's reply: ("ok", FeedData | NormalizedFeed) | ("not-a-feed", message, links) | ("error", message)
_Reply = tuple[Any, ...]


@dataclass(frozen=True)
class PostRecipe:
    """What a worker needs besides the document to turn its entries into posts."""

    rules: SourceRules
    seen: datetime  # the first-seen date of entries met for the first time
    max_entries: int | None = None


def _limit_memory(max_bytes: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def parse_safely(
    body: bytes, headers: Mapping[str, str], url: str, recipe: PostRecipe | None = None
) -> _Reply:
    """Parse (and with a recipe, make posts); every way it can fail on hostile input becomes a reply."""
    try:
        feed = parse_document(body, headers, url)
        if recipe is None:
            return ("ok", feed)
        normalized = normalize_feed(feed, recipe.rules, recipe.seen, max_entries=recipe.max_entries)
        del feed
        prepared(normalized.posts)
        return ("ok", normalized)
    except NotAFeed as error:
        return ("not-a-feed", str(error), error.feed_links)
    except ParseError as error:
        return ("error", str(error))
    except MemoryError:
        return ("error", "the feed needs more memory than a parse may use")
    except (RecursionError, ValueError, TypeError, LookupError, AttributeError) as error:
        # feedparser's own failures on malformed input: a fault of the document, not ours.
        return ("error", f"the parser failed on this document: {type(error).__name__}: {error}")


def _unwrap(reply: _Reply) -> Any:
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "not-a-feed":
        raise NotAFeed(reply[1], feed_links=tuple(reply[2]))
    raise ParseError(reply[1])


def _worker_main(conn: Connection, memory: int) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory(memory)
    # A parent that is gone (killed, or it gave up on this parse) ends the worker quietly.
    with contextlib.suppress(EOFError, OSError):
        _serve(conn)


def _serve(conn: Connection) -> None:
    too_big = ("error", "the feed needs more memory than a parse may use")
    conn.send(("ready",))
    while True:
        try:
            job = conn.recv()
        except MemoryError:  # the document alone does not fit (it was read off the pipe)
            conn.send(too_big)
            continue
        if job is None:
            return
        try:
            reply = parse_safely(*job)
            del job
            conn.send(reply)
        except MemoryError:
            conn.send(too_big)


class _Worker:
    """One process and the parent's end of its pipe."""

    def __init__(self, context: Any, memory: int) -> None:
        parent, child = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=_worker_main, args=(child, memory), name="aggregator-parser", daemon=True
        )
        self.process.start()
        child.close()
        self.conn: Connection = parent
        # Start-up (imports) must not count against the first document's time limit.
        try:
            ready = parent.poll(WORKER_START_SECONDS) and parent.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise ParseError("a parser process could not be started")

    def roundtrip(self, job: tuple[bytes, dict[str, str], str, PostRecipe | None]) -> _Reply:
        """Blocking: runs in a thread. A killed worker makes ``recv`` raise EOFError."""
        self.conn.send(job)
        reply: _Reply = self.conn.recv()
        return reply

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class ParserPool:
    """``await pool.posts(body, headers, url, recipe)``: a document's posts, made in a worker.

    ``pool.parse`` stops at the parsed feed (tests of the parser). ``processes=0``
    parses in a thread of this process (tests, tiny runs).
    """

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
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._spawn_lock = threading.Lock()
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._threads: ThreadPoolExecutor | None = None
        # forkserver: never fork a process that runs threads (the event loop, uvicorn).
        self._context = multiprocessing.get_context("forkserver")
        # The fork server imports the parser once; each worker forked from it starts warm
        # (see also cli._run_as_package_main).
        self._context.set_forkserver_preload(
            ["aggregator.workers", "aggregator.normalize", "aggregator.fastparse", "feedparser"]
        )
        self.replaced = 0  # workers killed for overrunning their limits (for tests and metrics)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(max(self.processes, 1)))
        return self._slots[1]

    def _executor(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max(self.processes, 1), thread_name_prefix="parser-io")
        return self._threads

    def _take_worker(self) -> _Worker:
        with self._spawn_lock:
            if not self._live:
                # The whole pool at the first parse: a steady set of processes and pipes from
                # then on (a leak shows), and no start-up cost in the middle of a busy cycle.
                for _ in range(max(self.processes - 1, 0)):
                    self._start_worker(idle=True)
                return self._start_worker(idle=False)
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._start_worker(idle=False)

    def _start_worker(self, *, idle: bool) -> _Worker:
        worker = _Worker(self._context, self.memory)
        with self._lock:
            self._live.add(worker)
            if idle:
                self._idle.append(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()

    async def parse(self, body: bytes, headers: Mapping[str, str], url: str) -> FeedData:
        feed: FeedData = _unwrap(await self._run(body, headers, url, None))
        return feed

    async def posts(
        self, body: bytes, headers: Mapping[str, str], url: str, recipe: PostRecipe
    ) -> NormalizedFeed:
        """Parse, normalize and render the post files, all in a worker."""
        normalized: NormalizedFeed = _unwrap(await self._run(body, headers, url, recipe))
        return normalized

    async def _run(
        self, body: bytes, headers: Mapping[str, str], url: str, recipe: PostRecipe | None
    ) -> _Reply:
        if self.processes == 0:
            return await asyncio.to_thread(parse_safely, body, headers, url, recipe)
        loop = asyncio.get_running_loop()
        async with self._semaphore():
            worker = await loop.run_in_executor(self._executor(), self._take_worker)
            job = (body, dict(headers), url, recipe)
            try:
                reply = await asyncio.wait_for(
                    loop.run_in_executor(self._executor(), worker.roundtrip, job), self.seconds
                )
            except TimeoutError:
                self.replaced += 1
                await loop.run_in_executor(None, self._discard, worker)
                raise ParseError(f"parsing took longer than {self.seconds:g}s; gave up") from None
            except (EOFError, OSError):
                self.replaced += 1
                await loop.run_in_executor(None, self._discard, worker)
                raise ParseError("the parser process died (out of memory?)") from None
            except BaseException:
                # Cancelled mid-parse: the worker's state is unknown, so it goes.
                self._discard(worker)
                raise
            with self._lock:
                self._idle.append(worker)
        return reply

    def close(self) -> None:
        with self._lock:
            workers, self._idle, self._live = list(self._live), [], set()
        for worker in workers:
            worker.stop()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
