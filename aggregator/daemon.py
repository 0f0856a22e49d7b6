"""The long-running process: schedule sources, rebuild feeds, serve them.

It owns one lock per data directory (an ``flock`` the OS releases when the
process dies), so a second daemon refuses to start. SIGTERM and SIGINT stop it
cleanly: no new runs start, runs in flight get a deadline to finish their
writes (a store write never awaits, so a run cancelled at the deadline stops at
a network or parse step and leaves the store consistent), a last build
publishes what they stored, the parser processes are shut down, and the exit
code is 0. SIGHUP, or a change to the config file, reloads the sources without
a restart; an invalid config is reported and the running one kept.

After each run the source's job is moved to the time ``schedule.planned_poll``
decides; feeds touched by new posts are rebuilt once per short window
(``BUILD_DEBOUNCE_SECONDS``), together with the operator's feed when a
source's health changed. What a build covers, forgets and announces is
``jobs``'s decision, the same as for ``aggregator fetch``; the daemon adds only
the debounce, the log lines and the metrics. Each poll's own log line is DEBUG; at INFO the daemon
sums its polls up every ``logging.summary_interval`` (:class:`PollTally`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from aggregator import jobs
from aggregator.config import Config, SourceConfig, load_config
from aggregator.config_merge import config_files
from aggregator.daemon_metrics import Metrics, PollTally
from aggregator.dashboard.app import Dashboard
from aggregator.dashboard.auth import credentials
from aggregator.errors import AggregatorError, ConfigError
from aggregator.files import sweep_temp_files
from aggregator.fleet.mode import FleetMode
from aggregator.pipeline import Updater, UpdateResult, source_fingerprint
from aggregator.publish.builder import FeedBuilder
from aggregator.publish.status import publish_status
from aggregator.schedule import SourceScheduler, planned_poll, timing_for
from aggregator.serve import create_app, listen, make_server
from aggregator.state import SourceState, utcnow
from aggregator.status_feed import events_between
from aggregator.store import open_store
from aggregator.writebehind import StateWriteBehind

log = logging.getLogger("aggregator.daemon")

BUILD_DEBOUNCE_SECONDS = 1.0
STOP_DEADLINE_SECONDS = 10.0
CONFIG_POLL_SECONDS = 1.0
# A job this far past its due time means the scheduler has stopped firing: /healthz says 503.
HEALTH_LATE_SECONDS = 300.0


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


class Daemon:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        # With a PostgreSQL index this process is one node of a fleet (aggregator.fleet.mode):
        # the database's leases decide what it polls, and no data-folder lock is taken.
        self.fleet = FleetMode(config, self) if config.index else None
        self.metrics = Metrics(self.fleet.member.node if self.fleet else None)
        self.lock = DaemonLock(config.data_dir)
        self._tally = PollTally()
        self._tally_since = time.monotonic()
        self._dirty: set[str] = set()
        self._status_dirty = True
        self._build_task: asyncio.Task[None] | None = None
        self._pending_watch: asyncio.Task[None] | None = None  # fleet: keys other nodes left pending
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._last_build: float | None = None
        self._builds = 0
        self._starting = True  # until the start-up sync and build are done and the scheduler runs
        self._config_stamp = _stamp(config_path)
        self.scheduler = SourceScheduler(self._run_source)

    async def run(self) -> int:
        if self.fleet is not None:
            return await self._run()
        self.lock.acquire()
        try:
            return await self._run()
        finally:
            self.lock.release()

    def open(self) -> None:
        """Open the store, the updater and the builders (separate from run() for tests)."""
        config = self.config
        if self.fleet is None:  # a fleet's node sweeps only when it is alone (after joining)
            self._sweep()
        self.store = open_store(config)
        # Builds run in a thread, on a connection of their own.
        self.build_store = open_store(config)
        # Polls save their states here; they reach the index a group at a time (writebehind).
        self.states = StateWriteBehind(self.store.index)
        self.updater = Updater(
            config, self.store, host_gate=self.fleet.gate if self.fleet else None, states=self.states
        )
        self.builder = FeedBuilder(config, self.build_store)

    async def close(self) -> None:
        await self.updater.aclose()
        self.flush_states()
        self.store.close()
        self.build_store.close()
        if self.fleet is None:  # a fleet's leftovers are swept by the next node that starts alone
            self._sweep()

    def _sweep(self) -> None:
        for root in (self.config.feeds_dir, self.config.posts_dir):
            sweep_temp_files(root, own_too=True)

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        config = self.config
        # Serving starts before the start-up sync and build, which take seconds on a large
        # store: the feeds on disk are whole (every file is written atomically), so readers
        # get them rather than a closed port, and /healthz says "starting" (503) meanwhile.
        dashboard = Dashboard(lambda: self.config, credentials(config.server.dashboard_auth))
        if dashboard.credentials is None and not _loopback(config.server.host):
            log.warning(
                "serving on %s: /status and the post pages are open to anyone who reaches it "
                "(set server.dashboard_auth to protect them)", config.server.host,
            )  # fmt: skip
        sock = listen(config.server.host, config.server.port)
        try:
            self.open()
        except BaseException:
            sock.close()
            raise
        app = create_app(
            config.feeds_dir,
            media_dir=config.media_dir,
            health=self.health,
            registry=self.metrics.registry,
            routes=dashboard.routes(),
        )
        server = make_server(app, config.server.host, config.server.port)
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        if self.fleet is not None:
            # Under the fleet's start-up lock: a node starting at the same time waits for this sync.
            async with self.fleet.joining(sock.getsockname()[1]) as alone:
                if alone:
                    self._sweep()
                    await asyncio.to_thread(self.build_store.sync_with_files)
                else:
                    log.info(
                        "fleet: other nodes are running: the start-up sync with the post files is skipped"
                    )
        else:
            await asyncio.to_thread(self.build_store.sync_with_files)
        await self._build(None)
        await self._build_pending()  # the operator's feed
        self._schedule_all(config.sources)
        if self.fleet is not None:
            self.fleet.run()
            # Keys other nodes left pending (one stopped while this one built) are built here too.
            left = self.fleet.build_left_pending(lambda: self._build_now(set()), self._stopping)
            self._pending_watch = asyncio.create_task(left)
        else:
            self.scheduler.start()
        self._starting = False
        watcher = asyncio.create_task(self._watch_config())
        summaries = asyncio.create_task(self._summarize())
        self._background.add(summaries)
        log.info(
            "daemon started: %d sources, serving %s on http://%s:%d/",
            len(config.sources), config.feeds_dir, config.server.host, sock.getsockname()[1],
        )  # fmt: skip
        stop_wait = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait({stop_wait, server_task}, return_when=asyncio.FIRST_COMPLETED)
        if server_task in done and not self._stopping.is_set():
            stop_wait.cancel()
            watcher.cancel()
            self.scheduler.shutdown()
            if self.fleet is not None:
                if self._pending_watch is not None:
                    self._pending_watch.cancel()
                await self.fleet.stop(0)
                await self.fleet.leave()
            await self.close()
            error = server_task.exception()
            raise AggregatorError(f"the HTTP server stopped: {error or 'could not start'}")
        log.info("stopping")
        await self._stop(server, server_task, watcher)
        dashboard.close()
        log.info("stopped")
        return 0

    async def _stop(self, server: Any, server_task: asyncio.Task[None], watcher: asyncio.Task[None]) -> None:
        watcher.cancel()
        # Pause, not shut down: shutting the scheduler down would cancel the runs in flight.
        self.scheduler.pause()
        if self.fleet is not None:
            # The runs in flight finish (or are cancelled at the deadline); the leases go back
            # after the last build below (it takes the fleet's build lock).
            await self.fleet.stop(STOP_DEADLINE_SECONDS)
        if self._in_flight:
            log.info("waiting up to %.0fs for %d runs in flight", STOP_DEADLINE_SECONDS, len(self._in_flight))
            _done, pending = await asyncio.wait(self._in_flight, timeout=STOP_DEADLINE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "cancelled %d runs still in flight after %.0fs", len(pending), STOP_DEADLINE_SECONDS
                )
                await asyncio.gather(*pending, return_exceptions=True)
        # Every run has ended: the states they saved are written before anything else can stop us.
        self.flush_states()
        if self._build_task is not None:
            # The debounced build wakes at once on stop and publishes what is pending.
            await asyncio.gather(self._build_task, return_exceptions=True)
        if self._pending_watch is not None:  # it ends at once on stop, or after the build it runs
            await asyncio.gather(self._pending_watch, return_exceptions=True)
        if self._dirty or self._status_dirty:
            await self._build_pending()
        if self.fleet is not None:
            await self.fleet.leave()
        self.scheduler.shutdown()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await server_task
        for task in list(self._background):
            task.cancel()
        self._log_summary()
        await self.close()

    # Scheduling ------------------------------------------------------------

    def _schedule_all(self, sources: tuple[SourceConfig, ...]) -> None:
        self.metrics.sources.set(len(self.config.sources))
        for source in sources:
            state = self.states.source_state(source.name)
            self.metrics.source_state(state)
            if self.fleet is None:  # in a fleet the database's leases decide instead
                self.scheduler.add(
                    source.name, timing_for(self.config, source), self._next_run(source, state)
                )

    def _next_run(self, source: SourceConfig, state: SourceState) -> datetime | None:
        """The same decision ``aggregator status`` shows (``schedule.planned_poll``)."""
        plan = planned_poll(
            self.config,
            source,
            state,
            utcnow(),
            fingerprint=source_fingerprint(source),
            entries=self.store.index,
        )
        if log.isEnabledFor(logging.DEBUG):  # the time's text is dear enough to skip when unlogged
            at = plan.at.isoformat() if plan.at else "-"
            log.debug("source=%s next poll %s: %s", source.name, at, plan.reason)
        return plan.at

    async def _run_source(self, name: str) -> None:
        if self._stopping.is_set():
            return
        try:
            source = self.config.source_named(name)
        except ConfigError:
            self.scheduler.remove(name)
            return
        try:
            result = await self._tracked_update(source)
        except AggregatorError as error:  # the store failed: not the source's fault
            log.error("source=%s run failed: %s", name, error)
            self.scheduler.reschedule(name, utcnow() + timedelta(seconds=self.config.interval_of(source)))
            return
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we were cancelled ourselves, not just the run
            log.warning("source=%s run cancelled at the stop deadline", name)
            return
        self._account(source, result)
        if not self._stopping.is_set() and self.scheduler.has(name):
            self.scheduler.reschedule(name, self._next_run(self.config.source_named(name), result.state))

    async def _tracked_update(self, source: SourceConfig) -> UpdateResult:
        """The update as a task of our own, counted in flight: a stop can cancel it at its deadline
        without the scheduler reporting the cancellation as a crash of the job."""
        task = asyncio.create_task(self.updater.update(source))
        self._in_flight.add(task)
        try:
            return await task
        finally:
            self._in_flight.discard(task)

    def has_source(self, name: str) -> bool:
        """Whether this node's config has ``name`` (fleet mode declines the others)."""
        try:
            self.config.source_named(name)
        except ConfigError:
            return False
        return True

    async def poll(self, name: str) -> datetime | None:
        """Fleet mode: one poll of ``name`` now; its next poll's time (the schedule's decision)."""
        source = self.config.source_named(name)
        try:
            result = await self._tracked_update(source)
        except AggregatorError as error:  # the store failed: not the source's fault
            log.error("source=%s run failed: %s", name, error)
            return utcnow() + timedelta(seconds=self.config.interval_of(source))
        self._account(source, result)
        return self._next_run(self.config.source_named(name), result.state) if self.has_source(name) else None

    def flush_states(self) -> None:
        """Write the source states the polls saved (on stop; in a fleet, before a lease goes back)."""
        try:
            self.states.flush()
        except AggregatorError as error:
            log.error("%d source states not written: %s", self.states.held, error)

    def _account(self, source: SourceConfig, result: UpdateResult) -> None:
        self._tally = self._tally.add(result)
        self.metrics.polled(result)
        if result.skipped or result.previous is None:
            return
        events = events_between(result.previous, result.state, url=source.url)
        if events:
            self.store.index.record_status_events(events)
            for event in events:
                log.info("source=%s health: %s: %s", event.source, event.kind, event.detail)
            self._status_dirty = True
            self._schedule_build()
        if result.touched_keys:
            self._dirty.update(result.touched_keys)
            self._schedule_build()

    async def _summarize(self) -> None:
        """Every ``logging.summary_interval``, one INFO line for the polls since the last one."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.config.logging.summary_interval)
            if not self._stopping.is_set():
                self._log_summary()

    def _log_summary(self) -> None:
        """Log the polls tallied since the last summary (nothing when there were none)."""
        now = time.monotonic()
        tally, self._tally = self._tally, PollTally()
        since, self._tally_since = self._tally_since, now
        if tally.polls:
            log.info(tally.line(now - since))

    # Builds ----------------------------------------------------------------

    def _schedule_build(self) -> None:
        if self._build_task is None or self._build_task.done():
            self._build_task = asyncio.create_task(self._debounced_build())

    async def _debounced_build(self) -> None:
        """Gather the keys touched in one window, build them once; repeat while more arrive."""
        while self._dirty or self._status_dirty:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), BUILD_DEBOUNCE_SECONDS)
            if not await self._build_pending():
                return  # failed: the keys wait for the next run that touches anything

    async def _build_pending(self) -> bool:
        if self.fleet is not None:
            async with self.fleet.member.build_lock() as held:
                # Another node builds now: the keys stay pending (here and in the index) for the next tick.
                return await self._build_pending_now() if held else not self._stopping.is_set()
        return await self._build_pending_now()

    async def _build_pending_now(self) -> bool:
        keys, self._dirty = self._dirty, set()
        ok = True
        if keys:
            ok = await self._build(keys)
        if self._status_dirty:
            self._status_dirty = False
            events = self.store.index.recent_status_events()
            try:
                await asyncio.to_thread(publish_status, self.config, events)
            except OSError as error:
                log.error("status feed not written: %s", error)
                self._status_dirty, ok = True, False
        return ok

    async def _build(self, keys: set[str] | None) -> bool:
        if self.fleet is not None and keys is None:
            async with self.fleet.member.build_lock() as held:
                return await self._build_now(None) if held else True  # another node builds them all
        return await self._build_now(keys)

    async def _build_now(self, keys: set[str] | None) -> bool:
        """Publish ``keys`` and the keys pending in the index (every feed when None).

        On failure the keys wait for the next build (the index keeps them too).
        """
        try:
            if keys is None:
                published: jobs.Published | None = await jobs.publish(self.builder, None)
            else:
                published = await jobs.publish_pending(
                    self.config, self.build_store, keys, builder=self.builder
                )
        except AggregatorError as error:
            log.error("build failed: %s", error)
            if keys:
                self._dirty.update(keys)
            return False
        if published is None:
            return True  # nothing was due
        self.metrics.build_seconds.observe(published.build_seconds)
        self._last_build = time.time()
        self._builds += 1
        report = published.build
        if report.changed:
            log.info(
                "built %d feeds (%d unchanged) in %.2fs",
                len(report.rendered), report.skipped, published.build_seconds,
            )  # fmt: skip
        return True

    # Health ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        if self.fleet is not None:
            return self.fleet.health(starting=self._starting, stopping=self._stopping.is_set()) | {
                "last_build": self._last_build,
                "builds": self._builds,
                "sources": len(self.config.sources),
                "in_flight": len(self._in_flight),
            }
        alive = self.scheduler.running and not self._stopping.is_set()
        now = utcnow()
        dues = self.scheduler.due_times().values() if alive else ()
        late = max(((now - due).total_seconds() for due in dues if due is not None), default=0.0)
        return {
            "ok": alive and late < HEALTH_LATE_SECONDS,
            "starting": self._starting,
            "scheduler": "running" if alive else "stopped",
            "most_late_seconds": round(max(late, 0.0), 1),
            "last_build": self._last_build,
            "builds": self._builds,
            "sources": len(self.config.sources),
            "jobs": len(self.scheduler.names()) if self.scheduler.running else 0,
            "in_flight": len(self._in_flight),
            "tasks": len(asyncio.all_tasks()),
        }

    # Reload ----------------------------------------------------------------

    def _reload_soon(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            stamp = _stamp(self.config_path)
            if stamp != self._config_stamp:
                self._config_stamp = stamp
                await self.reload()

    async def reload(self) -> None:
        """Apply added, removed and changed sources; keep the running config if invalid."""
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error("config not reloaded, keeping the running one: %s", error)
            return
        old = self.config
        for section in ("paths", "server"):
            if getattr(old, section) != getattr(new, section):
                log.warning("config: %s changed; it takes effect at the next restart", section)
        new = new.model_copy(update={"paths": old.paths, "server": old.server})
        old_sources = {s.name: s for s in old.sources}
        new_sources = {s.name: s for s in new.sources}
        self.config = new
        self.updater.reconfigure(new)
        self.builder.config = new
        if self.fleet is not None:
            try:
                await self.fleet.sync_sources(list(new_sources))
            except AggregatorError as error:  # the new sources wait for the next reload
                log.error("fleet: the reloaded sources not registered: %s", error)
        for name in old_sources.keys() - new_sources.keys():
            self.scheduler.remove(name)
            self.metrics.forget_source(name)
        changed = 0
        for name, source in new_sources.items():
            before = old_sources.get(name)
            if (
                before is None
                or source_fingerprint(before) != source_fingerprint(source)
                or timing_for(old, before) != timing_for(new, source)
            ):
                changed += before is not None
                if self.fleet is not None:
                    continue  # the leases decide; a changed source is polled at its due time
                state = self.states.source_state(name)
                self.scheduler.add(name, timing_for(new, source), self._next_run(source, state))
        self.metrics.sources.set(len(new_sources))
        self._status_dirty = True  # the site's title or base URL may have changed
        self._schedule_build()
        added = len(new_sources.keys() - old_sources.keys())
        removed = len(old_sources.keys() - new_sources.keys())
        log.info(
            "config reloaded: %d sources (%d added, %d removed, %d changed)",
            len(new_sources), added, removed, changed,
        )  # fmt: skip


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What the config files look like now: the main file and every sources.d/*.yaml."""
    stamps = []
    for file in config_files(path):
        try:
            stat = file.stat()
        except OSError:
            continue
        stamps.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)
