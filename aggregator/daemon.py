"""The long-running process: schedule sources, rebuild feeds, serve them.

It owns one lock per data directory (an ``flock`` the OS releases when the
process dies), so a second daemon refuses to start. SIGTERM and SIGINT stop it
cleanly: no new runs start, runs in flight get a deadline to finish their
writes, a last build publishes what they stored, and the exit code is 0.
SIGHUP, or a change to the config file, reloads the sources without a restart;
an invalid config is reported and the running one kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aggregator.build import FeedBuilder
from aggregator.config import Config, load_config
from aggregator.errors import AggregatorError, ConfigError
from aggregator.files import sweep_temp_files
from aggregator.pipeline import Updater, source_fingerprint
from aggregator.schedule import SourceScheduler
from aggregator.serve import create_app, make_server
from aggregator.store import PostStore

log = logging.getLogger("aggregator.daemon")

BUILD_DEBOUNCE_SECONDS = 1.0
STOP_DEADLINE_SECONDS = 20.0
CONFIG_POLL_SECONDS = 2.0


class DaemonLock:
    """An exclusive flock on ``<data>/daemon.lock``; released by the OS on any exit."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "daemon.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the process's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise AggregatorError(
                f"another aggregator daemon (pid {holder}) is already running on {self.path.parent}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fetches = Counter(
            "aggregator_fetches", "Source updates by outcome", ["outcome"], registry=self.registry
        )
        self.entries = Counter("aggregator_entries", "Posts written", ["kind"], registry=self.registry)
        self.build_seconds = Histogram(
            "aggregator_build_seconds", "Feed build durations", registry=self.registry
        )
        self.last_success = Gauge(
            "aggregator_source_last_success_timestamp_seconds",
            "Unix time of each source's last successful update",
            ["source"],
            registry=self.registry,
        )


class Daemon:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.metrics = Metrics()
        self.lock = DaemonLock(config.data_dir)
        self._dirty: set[str] = set()
        self._build_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._last_build: float | None = None
        self._config_mtime = _mtime(config_path)

    async def run(self) -> int:
        self.lock.acquire()
        try:
            return await self._run()
        finally:
            self.lock.release()

    async def _run(self) -> int:
        config = self.config
        sweep_temp_files(config.feeds_dir)
        self.store = PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync)
        self.build_store = PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync)
        self.updater = Updater(config, self.store)
        self.builder = FeedBuilder(config, self.build_store)
        await asyncio.to_thread(self.build_store.sync_with_files)
        await self._build(None)
        self.scheduler = SourceScheduler(self._run_source)
        for source in config.sources:
            self.scheduler.add(config, source, self.store.source_state(source.name))
        self.scheduler.start()
        app = create_app(config.feeds_dir, health=self._health, registry=self.metrics.registry)
        server = make_server(app, config.server.host, config.server.port)
        server_task = asyncio.create_task(server.serve())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        watcher = asyncio.create_task(self._watch_config())
        log.info(
            "daemon started: %d sources, serving %s on http://%s:%d/",
            len(config.sources), config.feeds_dir, config.server.host, config.server.port,
        )  # fmt: skip
        stop_wait = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait({stop_wait, server_task}, return_when=asyncio.FIRST_COMPLETED)
        if server_task in done and not self._stopping.is_set():
            stop_wait.cancel()
            self._shutdown_quietly(watcher)
            error = server_task.exception()
            raise AggregatorError(f"the HTTP server stopped: {error or 'could not start'}")
        log.info("stopping")
        await self._stop(server, server_task, watcher)
        log.info("stopped")
        return 0

    def _shutdown_quietly(self, watcher: asyncio.Task[None]) -> None:
        watcher.cancel()
        self.scheduler.shutdown()

    async def _stop(self, server: Any, server_task: asyncio.Task[None], watcher: asyncio.Task[None]) -> None:
        watcher.cancel()
        self.scheduler.shutdown()
        if self._in_flight:
            _done, pending = await asyncio.wait(self._in_flight, timeout=STOP_DEADLINE_SECONDS)
            for task in pending:
                task.cancel()
        if self._build_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._build_task
        if self._dirty:
            await self._build(set(self._dirty))
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await server_task
        await self.updater.aclose()
        self.store.close()
        self.build_store.close()
        sweep_temp_files(self.config.feeds_dir)

    async def _run_source(self, name: str) -> None:
        if self._stopping.is_set():
            return
        try:
            source = self.config.source_named(name)
        except ConfigError:
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            result = await self.updater.update(source)
        finally:
            self._in_flight.discard(task)
        self.metrics.fetches.labels(result.outcome).inc()
        self.metrics.entries.labels("new").inc(result.new)
        self.metrics.entries.labels("updated").inc(result.updated)
        if result.state.last_success is not None:
            self.metrics.last_success.labels(name).set(result.state.last_success.timestamp())
        if not self._stopping.is_set():
            self.scheduler.reschedule(name, result.state.next_due)
        if result.touched_keys:
            self._dirty.update(result.touched_keys)
            self._schedule_build()

    def _schedule_build(self) -> None:
        if self._build_task is None or self._build_task.done():
            self._build_task = asyncio.create_task(self._debounced_build())

    async def _debounced_build(self) -> None:
        await asyncio.sleep(BUILD_DEBOUNCE_SECONDS)
        keys, self._dirty = self._dirty, set()
        await self._build(keys)

    async def _build(self, keys: set[str] | None) -> None:
        started = time.monotonic()
        try:
            report = await asyncio.to_thread(self.builder.build, keys)
        except AggregatorError as error:
            log.error("build failed: %s", error)
            if keys:
                self._dirty.update(keys)
            return
        elapsed = time.monotonic() - started
        self.metrics.build_seconds.observe(elapsed)
        self._last_build = time.time()
        if report.changed:
            log.info(
                "built %d feeds (%d unchanged) in %.2fs",
                len(report.rendered),
                report.skipped,
                elapsed,
            )

    def _health(self) -> dict[str, Any]:
        alive = self.scheduler.running and not self._stopping.is_set()
        return {"ok": alive, "scheduler": "running" if alive else "stopped",
                "last_build": self._last_build, "sources": len(self.config.sources)}  # fmt: skip

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            mtime = _mtime(self.config_path)
            if mtime != self._config_mtime:
                self._config_mtime = mtime
                await self.reload()

    async def reload(self) -> None:
        """Apply added, removed and changed sources; keep the running config if invalid."""
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error("config not reloaded, keeping the running one: %s", error)
            return
        old_sources = {s.name: s for s in self.config.sources}
        new_sources = {s.name: s for s in new.sources}
        self.config = new
        self.updater.config = new
        self.builder.config = new
        for name in old_sources.keys() - new_sources.keys():
            self.scheduler.remove(name)
        for name, source in new_sources.items():
            old = old_sources.get(name)
            if old is None or source_fingerprint(old) != source_fingerprint(source):
                self.scheduler.add(new, source, self.store.source_state(name))
        added = len(new_sources.keys() - old_sources.keys())
        removed = len(old_sources.keys() - new_sources.keys())
        log.info("config reloaded: %d sources (%d added, %d removed)", len(new_sources), added, removed)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
