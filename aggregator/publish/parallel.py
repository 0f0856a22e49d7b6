"""Large builds shared with worker processes.

A build that renders at least ``PARALLEL_MIN_FEEDS`` feeds (a full build, a settings change)
starts a few worker processes while it is still planning and hands them runs of planned feeds;
see ``Dispatch``. Incremental builds stay in the calling process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from aggregator.config import Config
from aggregator.errors import BuildError
from aggregator.index.readers import ReaderSpec, open_reader
from aggregator.publish.renderer import Built, FragmentCache, Job, Renderer

log = logging.getLogger(__name__)

# A build rendering at least this many feeds shares them with worker processes (a few at most;
# each holds its own fragment cache). Incremental builds stay in the calling process.
PARALLEL_MIN_FEEDS = 64
MAX_WORKER_PROCESSES = 3
WORKER_CACHE_BYTES = 16 * 1024 * 1024
# Runs of feeds per process: enough that the processes end together, few enough to keep items local.
RUNS_PER_PROCESS = 8
PARENT_CHECK_SECONDS = 0.05


def spare_cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKER_PROCESSES))


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to render: settings, the index to read, its parent to outlive not."""

    config: Config
    reader: ReaderSpec  # the index's own (a SQLite path or a PostgreSQL URL)
    cache_bytes: int
    parent_pid: int


class Dispatch:
    """Planned feeds handed out in runs to worker processes and to this process.

    The feeds come in locality order and are cut into runs of about
    ``run_items`` items, so most items are rendered once, by whichever process
    holds their source's run. Workers take runs from the front as soon as they
    exist; this process takes them from the back once the plan is done, until
    none is left, so a slow or late worker simply takes fewer. Workers are
    spawned (never forked: the daemon runs threads), read the index on their
    own connection and write their feeds' files; the builder records every
    feed afterwards. A run whose worker died is rendered here instead.
    """

    def __init__(self, here: Renderer, setup: WorkerSetup, processes: int, run_items: float) -> None:
        self.here = here
        self.run_items = max(run_items, 1.0)
        self.runs: deque[tuple[Job, ...]] = deque()
        self.order: dict[str, int] = {}
        self.results: list[Built] = []
        self.failures: list[BaseException] = []
        self._current: list[Job] = []
        self._weight = 0
        self._planned = False
        self._stop = False
        self._ready = threading.Condition()
        self.pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(setup,),
        )
        self.feeders = [
            threading.Thread(target=self._feed, name="feed-build-feeder", daemon=True)
            for _ in range(processes)
        ]
        for feeder in self.feeders:
            feeder.start()

    def add(self, job: Job) -> None:
        self.order[job.spec.key] = len(self.order)
        self._current.append(job)
        self._weight += len(job.refs)
        if self._weight >= self.run_items:
            self._push()

    def finish(self) -> list[Built]:
        """The plan is done: render runs here until none is left; every feed's outcome, in plan order."""
        self._push()
        with self._ready:
            self._planned = True
            self._ready.notify_all()
        while (run := self._take(front=False)) is not None:
            self._done(self.here.render(run))
        self.close()
        if self.failures:
            raise self.failures[0]
        for run in self.runs:  # left by a worker that died after this process ran out of runs
            self._done(self.here.render(run))
        return sorted(self.results, key=lambda done: self.order[done.key])

    def close(self) -> None:
        """Stop handing out runs, wait for the workers' current ones, end the processes."""
        with self._ready:
            self._stop = True
            self._ready.notify_all()
        for feeder in self.feeders:
            feeder.join()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _push(self) -> None:
        if self._current:
            with self._ready:
                self.runs.append(tuple(self._current))
                self._ready.notify()
            self._current, self._weight = [], 0

    def _take(self, *, front: bool) -> tuple[Job, ...] | None:
        with self._ready:
            while front and not self.runs and not self._planned and not self._stop:
                self._ready.wait()
            if self._stop or not self.runs:
                return None
            return self.runs.popleft() if front else self.runs.pop()

    def _done(self, built: list[Built]) -> None:
        with self._ready:
            self.results += built

    def _feed(self) -> None:
        """One feeder thread per worker process: one run in flight at a time."""
        while (run := self._take(front=True)) is not None:
            try:
                future = self.pool.submit(_worker_render, run)  # starts the process the first time
            except (BrokenProcessPool, OSError) as error:
                self._give_back(run, error)  # no process could be started
                return
            try:
                built = future.result()
            except BrokenProcessPool as error:
                self._give_back(run, error)  # the process died
                return
            except BaseException as error:  # the worker's own failure, e.g. a file it could not write
                self._fail(error)
                return
            self._done(built)

    def _give_back(self, run: tuple[Job, ...], error: BaseException) -> None:
        log.warning("a feed-building process failed (%s); the builder renders its share", error)
        with self._ready:
            self.runs.appendleft(run)

    def _fail(self, error: BaseException) -> None:
        """Stop the build; the builder's thread raises ``error`` in finish()."""
        with self._ready:
            self.failures.append(error)
            self._stop = True


# The worker process's own renderer, made once by _worker_start.
_worker_renderer: Renderer | None = None


def _worker_start(setup: WorkerSetup) -> None:
    """In a worker process: read the index on its own connection; die with the parent."""
    global _worker_renderer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    threading.Thread(target=_exit_with_parent, args=(setup.parent_pid,), daemon=True).start()
    reader = open_reader(setup.reader)
    _worker_renderer = Renderer(setup.config, reader.indexed_posts, FragmentCache(setup.cache_bytes))


def _exit_with_parent(parent_pid: int) -> None:
    """A killed parent must not leave a worker writing feeds behind the next build's back."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _worker_render(run: tuple[Job, ...]) -> list[Built]:
    if _worker_renderer is None:
        raise BuildError("the feed-building process was not started")
    return _worker_renderer.render(run)
