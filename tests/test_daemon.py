"""The daemon as a real subprocess: serving, reload, restart, signals, the lock; plus its parts in-process.

Sources are served by a real HTTP server on 127.0.0.1 that counts requests
and concurrent requests per path and can drip a body slowly, so a test can
catch a fetch in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from support.daemon import DaemonProcess
from support.helpers import FIXTURES, free_port, run_cli, wait_for, write_config
from support.servers import AppServer

from aggregator.config import load_config
from aggregator.daemon import Daemon
from aggregator.index.sqlite import SqliteIndex
from aggregator.pipeline import Updater
from aggregator.publish.status import publish_status
from aggregator.schedule import phase_of
from aggregator.state import SourceState, utcnow
from aggregator.status_feed import events_between
from aggregator.store import PostStore
from aggregator.workers import ParserPool

RSS2 = (FIXTURES / "formats" / "rss2.xml").read_bytes()


def rss(title: str, count: int, start: int = 0) -> bytes:
    items = "".join(
        f"<item><title>{title} {i}</title><link>http://127.0.0.1/{title}/{i}</link><guid>{title}-{i}</guid>"
        f"<pubDate>Mon, 05 Oct 2026 {i % 24:02d}:00:00 GMT</pubDate>"
        f"<description>Post {i}</description></item>"
        for i in range(start, start + count)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>http://127.0.0.1/{title}</link><description>d</description>{items}</channel></rss>"
    ).encode()


class FeedHost:
    """An ASGI app serving a folder, counting requests per path; some paths drip their body slowly."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.times: list[float] = []  # time.monotonic() of every request, in arrival order
        self.slow: dict[str, float] = {}  # path -> seconds to spread the body over
        self.halt = threading.Event()  # ends slow bodies early, so the server can stop

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        with self.lock:
            self.counts[path] += 1
            self.active[path] += 1
            self.most[path] = max(self.most[path], self.active[path])
            self.times.append(time.monotonic())
        try:
            if not (self.directory / path.lstrip("/")).is_file():
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"not found"})
            elif path in self.slow:
                await self._drip(path, self.slow[path], send)
            else:
                await self._whole(path, scope, send)
        finally:
            with self.lock:
                self.active[path] -= 1

    async def _whole(self, path: str, scope: dict[str, Any], send: Any) -> None:
        """The file read once (it may be replaced meanwhile), with an ETag and 304 answers."""
        body = (self.directory / path.lstrip("/")).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        asked = dict(scope["headers"]).get(b"if-none-match", b"").decode()
        if asked == etag:
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-type", b"application/rss+xml"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", etag.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _drip(self, path: str, seconds: float, send: Any) -> None:
        body = (self.directory / path.lstrip("/")).read_bytes()
        headers = [(b"content-type", b"application/rss+xml"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        steps = 20
        size = -(-len(body) // steps)
        for start in range(0, len(body), size):
            pause_until = time.monotonic() + seconds / steps
            while time.monotonic() < pause_until:
                if self.halt.is_set():
                    return
                await asyncio.sleep(min(0.05, seconds / steps))
            await send({"type": "http.response.body", "body": body[start : start + size], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def count(self, path: str) -> int:
        with self.lock:
            return self.counts[path]


@pytest.fixture
def host(feed_dir: Path) -> Iterator[tuple[FeedHost, AppServer]]:
    app = FeedHost(feed_dir)
    with AppServer(app) as server:
        yield app, server
        app.halt.set()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGKILL, timeout=10)


def start(daemons: list[DaemonProcess], config: Path, *options: str) -> DaemonProcess:
    daemon = DaemonProcess(config, *options)
    daemons.append(daemon)
    return daemon


def site_config(directory: Path, sources: list[dict[str, Any]], **sections: Any) -> Path:
    """A daemon's config on a free port; logging at debug (one line per poll) unless given."""
    port = free_port()
    return write_config(
        directory,
        sources,
        **{
            "site": {"title": "Test site", "base_url": f"http://127.0.0.1:{port}/"},
            "server": {"port": port},
            "logging": {"level": "debug"},
        }
        | sections,
    )


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no one reaped yet has exited


def _temp_files(root: Path) -> list[Path]:
    return list(root.rglob("*.aggtmp"))


# The daemon as a subprocess ------------------------------------------------------------------


def test_serves_feeds_answers_304_logs_each_fetch_and_stops_cleanly(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer]
) -> None:
    app, server = host
    (feed_dir / "rss2.xml").write_bytes(RSS2)
    dead = f"http://127.0.0.1:{free_port()}/feed.xml"  # nothing listens there: connection refused
    config = site_config(
        tmp_path / "site",
        [
            {"name": "rss2", "url": server.url("rss2.xml"), "categories": ["Tech", "Blogs"]},
            {"name": "dead", "url": dead},
        ],
    )
    daemon = start([], config)
    try:
        daemon.wait_healthy()
        wait_for(lambda: len(daemon.fetch_lines()) >= 2, what="both sources polled")
        wait_for(lambda: httpx.get(daemon.url("all/rss.xml")).status_code == 200, what="feeds built")
        feed = feedparser.parse(httpx.get(daemon.url("all/rss.xml")).content)
        assert not feed.bozo and len(feed.entries) == 2

        for path, media_type in {
            "all/rss.xml": "application/rss+xml",
            "all/atom.xml": "application/atom+xml",
            "category/tech/blogs/feed.json": "application/feed+json",
            "index.opml": "text/x-opml",
            "": "text/html",
            "_status/atom.xml": "application/atom+xml",
        }.items():
            response = httpx.get(daemon.url(path))
            assert response.status_code == 200, path
            assert response.headers["content-type"].split(";")[0] == media_type, path

        first = httpx.get(daemon.url("source/rss2/atom.xml"))
        again = httpx.get(
            daemon.url("source/rss2/atom.xml"), headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        since = {"If-Modified-Since": first.headers["last-modified"]}
        assert httpx.get(daemon.url("source/rss2/atom.xml"), headers=since).status_code == 304
        zipped = httpx.get(daemon.url("all/atom.xml"), headers={"Accept-Encoding": "gzip"})
        assert zipped.headers.get("content-encoding") == "gzip"

        health = daemon.health()
        assert health["scheduler"] == "running" and health["last_build"] > time.time() - 60
        metrics = httpx.get(daemon.url("metrics")).text
        assert re.search(r'aggregator_fetches_total\{outcome="ok"\} 1\.0', metrics)
        assert re.search(r'aggregator_fetches_total\{outcome="error"\} 1\.0', metrics)
        assert re.search(r'aggregator_entries_total\{kind="new"\} 2\.0', metrics)
        assert re.search(
            r'aggregator_source_last_success_timestamp_seconds\{source="rss2"\} 1\.\d+e\+09', metrics
        )
        assert re.search(r"aggregator_build_seconds_count [1-9]", metrics)

        # The operator's feed says the dead source is failing (published by the build after it).
        def status_titles() -> list[str]:
            status = feedparser.parse(httpx.get(daemon.url("_status/rss.xml")).content)
            return [e.title for e in status.entries]

        assert wait_for(status_titles, what="the failure in the operator's feed") == ["dead is failing"]

        # One line per fetch: source, outcome, HTTP status, counts, duration; no traceback for
        # an expected network error.
        (ok,) = daemon.fetch_lines("rss2")
        assert (ok["outcome"], ok["status"], ok["new"], ok["updated"]) == ("ok", "200", "2", "0")
        (failed,) = daemon.fetch_lines("dead")
        assert failed["outcome"] == "error"
        assert "Traceback" not in daemon.log()

        children = daemon.descendants()
        assert children, "the parser processes should be running"
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
    assert "stopped" in daemon.log()
    wait_for(lambda: all(_gone(pid) for pid in children), timeout=10, what="no orphan processes")
    assert not _temp_files(tmp_path)
    assert app.count("/rss2.xml") == 1


@pytest.mark.slow
def test_restart_keeps_due_times_and_picks_up_new_sources(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    app, server = host
    sources = []
    for name in ("a", "b", "c"):
        (feed_dir / f"{name}.xml").write_bytes(rss(name, 2))
        sources.append({"name": name, "url": server.url(f"{name}.xml"), "interval": "60s"})
    config = site_config(tmp_path / "site", sources[:2])
    first = start(daemons, config)
    first.wait_healthy()
    wait_for(lambda: app.count("/a.xml") == 1 and app.count("/b.xml") == 1, what="a and b polled")
    assert first.stop() == 0

    config = site_config(tmp_path / "site", sources, server={"port": first.port})
    second = start(daemons, config)
    second.wait_healthy()
    # The new source runs at once (within the short start spread) ...
    wait_for(lambda: app.count("/c.xml") == 1, what="c polled")
    # ... while a and b keep the due times persisted by the first daemon: no burst.
    assert (app.count("/a.xml"), app.count("/b.xml")) == (1, 1)
    assert second.stop() == 0


def test_sigterm_right_after_a_poll_writes_the_state_it_held(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    """A poll's state is held up to a second (``aggregator.writebehind``); a clean stop writes it."""
    app, server = host
    (feed_dir / "a.xml").write_bytes(rss("a", 2))
    config = site_config(tmp_path / "site", [{"name": "a", "url": server.url("a.xml"), "interval": "30m"}])
    daemon = start(daemons, config)
    wait_for(lambda: daemon.fetch_lines("a"), timeout=30, what="a polled")
    daemon.send(signal.SIGTERM)  # well within the buffer's bound of the poll
    assert daemon.stop(timeout=20) == 0, daemon.log()
    index = SqliteIndex(
        tmp_path / "site" / "data" / "index.sqlite3", tmp_path / "site" / "data" / "state.sqlite3"
    )
    try:
        state = index.source_state("a")
    finally:
        index.close()
    assert state.etag is not None and state.last_success is not None and state.http_status == 200
    assert app.count("/a.xml") == 1


@pytest.mark.slow
def test_after_a_cold_fetch_the_daemon_spreads_the_polls_over_the_interval(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    """Issue 15, defect 12, end to end: a one-shot fetch of every source, then the daemon."""
    app, server = host
    interval, count = 6, 60
    sources = []
    for i in range(count):
        (feed_dir / f"f{i}.xml").write_bytes(rss(f"f{i}", 1))
        sources.append({"name": f"feed-{i}", "url": server.url(f"f{i}.xml"), "interval": f"{interval}s"})
    config = site_config(tmp_path / "site", sources, logging={"level": "info"})
    assert run_cli("fetch", config=config).returncode == 0  # every source polled at once
    daemon = start(daemons, config)
    daemon.wait_healthy()
    ready = time.monotonic()
    wait_for(lambda: time.monotonic() > ready + 3 * interval, timeout=5 * interval, what="three intervals")
    assert daemon.stop() == 0
    with app.lock:
        times = list(app.times)
    # From the second interval on: two polls per source, one second at a time.
    per_second = Counter(
        int(t - ready - interval) for t in times if ready + interval <= t < ready + 3 * interval
    )
    counts = [per_second.get(second, 0) for second in range(2 * interval)]
    mean = count / interval
    print(f"polls per second over two intervals after a cold fetch: {counts}")
    assert sum(counts) == pytest.approx(2 * count, abs=count // 4), counts
    assert max(counts) <= 3 * mean and min(counts) >= mean / 3, f"bunched: {counts} (mean {mean:.0f}/s)"


@pytest.mark.slow
def test_reload_adds_and_removes_sources_and_survives_an_invalid_config(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    app, server = host
    (feed_dir / "a.xml").write_bytes(rss("a", 1))
    (feed_dir / "b.xml").write_bytes(rss("b", 1))
    a = {"name": "a", "url": server.url("a.xml"), "interval": "1s"}
    b = {"name": "b", "url": server.url("b.xml"), "interval": "1s", "categories": ["Bees"]}
    config = site_config(tmp_path / "site", [a])
    port = load_config(config).server.port
    daemon = start(daemons, config)
    daemon.wait_healthy()
    wait_for(lambda: app.count("/a.xml") >= 2, what="a polled on its interval")

    # Added through the file watcher, without a restart.
    site_config(tmp_path / "site", [a, b], server={"port": port})
    wait_for(lambda: "config reloaded: 2 sources (1 added, 0 removed" in daemon.log(), what="reload")
    wait_for(lambda: httpx.get(daemon.url("category/bees/rss.xml")).status_code == 200, what="b's feed")

    # An invalid config is reported; the running one is kept.
    config.write_text(config.read_text() + "\nsorces: []\n")
    wait_for(lambda: "config not reloaded, keeping the running one" in daemon.log(), what="rejection")
    assert "sorces: unknown key" in daemon.log()
    polled = app.count("/a.xml")
    wait_for(lambda: app.count("/a.xml") >= polled + 2, what="a still polled")
    assert daemon.health()["ok"]

    # Removed on SIGHUP.
    site_config(tmp_path / "site", [b], server={"port": port})
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "config reloaded: 1 sources (0 added, 1 removed" in daemon.log(), what="removal")
    polled, b_polled = app.count("/a.xml"), app.count("/b.xml")
    wait_for(lambda: app.count("/b.xml") >= b_polled + 3, what="b polled three more times")
    assert app.count("/a.xml") <= polled + 1  # at most the run that was in flight
    assert daemon.health()["jobs"] == 1
    assert daemon.stop() == 0
    assert max(app.most.values()) == 1  # never two runs of one source at once


@pytest.mark.slow
def test_sigterm_mid_fetch_lets_the_write_finish_and_exits_0(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    app, server = host
    (feed_dir / "slow.xml").write_bytes(rss("slow", 5))
    app.slow["/slow.xml"] = 3.0
    config = site_config(tmp_path / "site", [{"name": "slow", "url": server.url("slow.xml")}])
    daemon = start(daemons, config)
    daemon.wait_healthy()
    wait_for(lambda: app.active["/slow.xml"] == 1, what="the fetch in flight")
    children = daemon.descendants()
    daemon.send(signal.SIGTERM)
    assert daemon.stop(timeout=20) == 0, daemon.log()
    log = daemon.log()
    assert log.index("stopping") < log.index("source=slow outcome=ok")
    assert "new=5" in log
    verify = run_cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "consistent: 5 posts" in verify.stdout
    assert len(feedparser.parse((tmp_path / "site" / "feeds" / "all" / "rss.xml").read_bytes()).entries) == 5
    assert not _temp_files(tmp_path)
    wait_for(lambda: all(_gone(pid) for pid in children), timeout=10, what="no orphan processes")


@pytest.mark.slow
def test_sigterm_cancels_a_fetch_that_outlasts_the_deadline(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    app, server = host
    (feed_dir / "fast.xml").write_bytes(rss("fast", 3))
    (feed_dir / "stuck.xml").write_bytes(rss("stuck", 3))
    app.slow["/stuck.xml"] = 120.0
    config = site_config(
        tmp_path / "site",
        [{"name": "fast", "url": server.url("fast.xml")}, {"name": "stuck", "url": server.url("stuck.xml")}],
        defaults={"interval": "30m", "fsync": "off", "deadline": "5m", "timeout": "5m"},
    )
    daemon = start(daemons, config)
    daemon.wait_healthy()
    wait_for(lambda: daemon.fetch_lines("fast") and app.active["/stuck.xml"] == 1, what="stuck in flight")
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.stop(timeout=25) == 0, daemon.log()
    assert time.monotonic() - started < 18
    assert "cancelled 1 runs still in flight" in daemon.log()
    verify = run_cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "consistent: 3 posts" in verify.stdout
    assert not _temp_files(tmp_path)


def test_second_daemon_refused_and_a_one_shot_fetch_is_safe(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    _app, server = host
    sources = []
    for i in range(6):
        (feed_dir / f"s{i}.xml").write_bytes(rss(f"s{i}", 5))
        sources.append({"name": f"s{i}", "url": server.url(f"s{i}.xml"), "interval": "1s"})
    config = site_config(tmp_path / "site", sources, logging={"format": "json", "level": "debug"})
    daemon = start(daemons, config)
    daemon.wait_healthy()

    second = run_cli("run", config=config, timeout=60)
    assert second.returncode != 0
    assert "another aggregator daemon" in second.stderr and "already running" in second.stderr
    assert "Traceback" not in second.stderr

    # The daemon (polling every second) and a one-shot fetch write the same store at the same time.
    for i in range(6):
        (feed_dir / f"s{i}.xml").write_bytes(rss(f"s{i}", 20))
    fetched = run_cli("fetch", "--json", config=config, timeout=60)
    assert fetched.returncode == 0, fetched.stderr
    assert {s["outcome"] for s in json.loads(fetched.stdout)["sources"]} <= {"ok", "not-modified"}
    assert daemon.health()["ok"]
    assert daemon.stop() == 0
    verify = run_cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "consistent: 120 posts" in verify.stdout
    # JSON lines, every one of them.
    lines = daemon.log().splitlines()
    assert lines and all(json.loads(line)["message"] for line in lines)
    assert any(json.loads(line)["message"].startswith("source=s0 outcome=") for line in lines)


SUMMARY_LINE = re.compile(
    r"polls in the last \S+: polls=(?P<polls>\d+) ok=(?P<ok>\d+) not_modified=(?P<not_modified>\d+) "
    r"failed=(?P<failed>\d+) rate_limited=\d+ gone=\d+ new=(?P<new>\d+) updated=\d+"
)


def test_at_info_the_daemon_logs_a_summary_and_failures_not_a_line_per_poll(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], daemons: list[DaemonProcess]
) -> None:
    """Issue 15, defect 13: per-poll lines are DEBUG; INFO has a periodic summary and each failure."""
    app, server = host
    (feed_dir / "busy.xml").write_bytes(rss("busy", 2))
    dead = f"http://127.0.0.1:{free_port()}/feed.xml"  # nothing listens there
    config = site_config(
        tmp_path / "site",
        [{"name": "busy", "url": server.url("busy.xml"), "interval": "1s"}, {"name": "dead", "url": dead}],
        logging={"level": "info", "summary_interval": "1s"},
    )
    daemon = start(daemons, config)
    daemon.wait_healthy()
    wait_for(lambda: app.count("/busy.xml") >= 4, what="busy polled four times")
    # A new source's first poll comes within its first 10 s (spread by its phase), not at once.
    wait_for(lambda: "source=dead health: failing" in daemon.log(), timeout=30, what="dead polled")
    wait_for(
        lambda: sum(int(m["polls"]) for m in SUMMARY_LINE.finditer(daemon.log())) >= 4, what="summary lines"
    )
    assert daemon.stop() == 0
    log = daemon.log()
    assert daemon.fetch_lines("busy") == [], "no line per successful poll at INFO"
    summaries = [m.groupdict() for m in SUMMARY_LINE.finditer(log)]
    assert sum(int(m["new"]) for m in summaries) == 2
    assert sum(int(m["failed"]) for m in summaries) == 1
    assert sum(int(m["ok"]) + int(m["not_modified"]) + int(m["failed"]) for m in summaries) == sum(
        int(m["polls"]) for m in summaries
    )
    # The summaries count every poll the server saw (and the failed one).
    assert sum(int(m["polls"]) for m in summaries) == app.count("/busy.xml") + 1
    # Each failure stays: the failed poll (WARNING) and the health event.
    (failed,) = daemon.fetch_lines("dead")
    assert failed["outcome"] == "error" and "WARNING" in log
    assert "source=dead health: failing: cannot connect" in log


def test_health_changes_are_info_lines_and_polls_are_debug(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer], caplog: pytest.LogCaptureFixture
) -> None:
    _app, server = host
    config = write_config(tmp_path / "site", [{"name": "flaky", "url": server.url("flaky.xml")}])

    async def scenario() -> None:
        daemon = _daemon(config)
        try:
            await daemon._run_source("flaky")  # 404: failing
            (feed_dir / "flaky.xml").write_bytes(rss("flaky", 3))
            await daemon._run_source("flaky")  # 200: recovered, 3 new posts
            await daemon._run_source("flaky")  # 304
            daemon._log_summary()
            daemon._log_summary()  # nothing polled since: no line
        finally:
            await daemon.close()

    with caplog.at_level(logging.DEBUG, logger="aggregator"):
        asyncio.run(scenario())
    loud = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    polls = [r for r in caplog.records if r.getMessage().startswith("source=flaky outcome=")]
    assert [(r.levelno, r.getMessage().split()[1]) for r in polls] == [
        (logging.WARNING, "outcome=error"),
        (logging.DEBUG, "outcome=ok"),
        (logging.DEBUG, "outcome=not-modified"),
    ]
    health = [message for level, message in loud if " health: " in message]
    assert [m.split(": ")[1] for m in health] == ["failing", "recovered"]
    summaries = [message for _level, message in loud if message.startswith("polls in the last")]
    assert len(summaries) == 1
    assert "polls=3 ok=1 not_modified=1 failed=1 rate_limited=0 gone=0 new=3 updated=0" in summaries[0]


def test_a_port_in_use_stops_the_daemon_before_any_work(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "site", [], server={"port": port})
        result = run_cli("run", config=config, timeout=60)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "site" / "feeds" / "index.html").exists()  # no start-up build was made


# Its parts, in-process -------------------------------------------------------------------------


def _on_phase(due: Any, period: float, name: str) -> bool:
    """Is ``due`` one of the source's own slots (``phase_of(name)`` of the way into a period)?"""
    offset = (due.timestamp() - phase_of(name) * period) % period
    return bool(min(offset, period - offset) < 1e-3)


def _daemon(config_path: Path) -> Daemon:
    config = load_config(config_path)
    daemon = Daemon(config_path, config)
    daemon.open()
    daemon.updater = Updater(config, daemon.store, parser=ParserPool(processes=0))
    return daemon


def test_builds_are_debounced_and_touch_only_changed_feeds(tmp_path: Path, feed_dir: Path) -> None:
    for name in ("a", "b", "c"):
        (feed_dir / f"{name}.xml").write_bytes(rss(name, 2))
    config = write_config(
        tmp_path / "site",
        [{"name": n, "url": str(feed_dir / f"{n}.xml"), "categories": [n.upper()]} for n in "abc"],
    )
    calls: list[set[str] | None] = []

    async def scenario() -> None:
        daemon = _daemon(config)
        real_build = daemon.builder.build

        def spy(keys: Any = None) -> Any:
            calls.append(None if keys is None else set(keys))
            return real_build(keys)

        daemon.builder.build = spy  # type: ignore[method-assign]
        try:
            await asyncio.gather(*(daemon._run_source(n) for n in "abc"))
            assert daemon._build_task is not None
            await daemon._build_task
            assert (tmp_path / "site" / "feeds" / "_status" / "rss.xml").exists()
            # Nothing new: no build at all.
            await asyncio.gather(*(daemon._run_source(n) for n in "abc"))
            assert daemon._build_task.done()
            # One source changes: only its feeds.
            (feed_dir / "b.xml").write_bytes(rss("b", 3))
            await asyncio.gather(*(daemon._run_source(n) for n in "abc"))
            await daemon._build_task
        finally:
            await daemon.close()

    asyncio.run(scenario())
    assert calls == [
        {
            "all",
            "source\x1fa",
            "source\x1fb",
            "source\x1fc",
            "category\x1fa",
            "category\x1fb",
            "category\x1fc",
        },
        {"all", "source\x1fb", "category\x1fb"},
    ]


def test_status_feed_reports_failure_and_recovery_and_is_byte_stable(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer]
) -> None:
    _app, server = host
    config = write_config(tmp_path / "site", [{"name": "flaky", "url": server.url("flaky.xml")}])
    status_rss = tmp_path / "site" / "feeds" / "_status" / "rss.xml"

    async def scenario() -> None:
        daemon = _daemon(config)
        try:
            await daemon._run_source("flaky")  # 404: failing
            (feed_dir / "flaky.xml").write_bytes(rss("flaky", 1))
            await daemon._run_source("flaky")  # 200: recovered
            await daemon._run_source("flaky")  # 304: nothing to report
            await daemon._build_pending()
        finally:
            await daemon.close()

    asyncio.run(scenario())
    feed = feedparser.parse(status_rss.read_bytes())
    assert not feed.bozo
    assert [e.title for e in feed.entries] == ["flaky has recovered", "flaky is failing"]
    assert "404" in feed.entries[1].summary
    assert feed.entries[0].id != feed.entries[1].id

    # The events persist in the index; publishing them again rewrites nothing.
    before = status_rss.stat().st_mtime_ns, status_rss.read_bytes()
    loaded = load_config(config)
    with PostStore(loaded.posts_dir, loaded.index_path) as store:
        events = store.index.recent_status_events()
    assert [e.kind for e in events] == ["recovered", "failing"]
    assert publish_status(loaded, events) == []
    assert (status_rss.stat().st_mtime_ns, status_rss.read_bytes()) == before
    atom = feedparser.parse((status_rss.parent / "atom.xml").read_bytes())
    assert not atom.bozo and len(atom.entries) == 2


def test_health_events_between_states() -> None:
    now = utcnow()
    ok = SourceState("s", last_attempt=now, last_success=now, http_status=200)
    failing = SourceState("s", last_attempt=now, error_streak=1, last_error="HTTP 500", http_status=500)
    still = SourceState("s", last_attempt=now, error_streak=2, last_error="HTTP 500")
    gone = SourceState("s", last_attempt=now, gone=True, last_error="HTTP 410", http_status=410)
    moved = SourceState("s", last_attempt=now, last_success=now, permanent_url="http://127.0.0.1/new")
    assert [e.kind for e in events_between(ok, failing)] == ["failing"]
    assert events_between(failing, still) == []  # reported once, not on every attempt
    assert [e.kind for e in events_between(still, ok)] == ["recovered"]
    assert [e.kind for e in events_between(ok, gone)] == ["gone"]
    assert [e.kind for e in events_between(gone, ok)] == ["recovered"]
    (event,) = events_between(ok, moved)
    assert event.kind == "moved" and event.url == "http://127.0.0.1/new"
    assert events_between(moved, moved) == []
    assert events_between(ok, ok) == []


def test_one_source_never_runs_twice_at_once_in_the_updater(
    tmp_path: Path, feed_dir: Path, host: tuple[FeedHost, AppServer]
) -> None:
    app, server = host
    (feed_dir / "slow.xml").write_bytes(rss("slow", 1))
    app.slow["/slow.xml"] = 0.5
    config = write_config(tmp_path / "site", [{"name": "slow", "url": server.url("slow.xml")}])

    async def scenario() -> list[str]:
        daemon = _daemon(config)
        try:
            source = daemon.config.sources[0]
            results = await asyncio.gather(daemon.updater.update(source), daemon.updater.update(source))
        finally:
            await daemon.close()
        return sorted(r.outcome for r in results)

    assert asyncio.run(scenario()) == ["ok", "skipped"]
    assert app.count("/slow.xml") == 1


def test_stale_temp_files_are_swept_but_a_live_writers_are_kept(tmp_path: Path) -> None:
    from aggregator.files import sweep_temp_files

    root = tmp_path / "feeds"
    root.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    left = root / f".rss.xml.{dead_pid}.abcd1234.aggtmp"
    mine = root / f".atom.xml.{os.getpid()}.abcd1234.aggtmp"
    live = root / f".feed.json.{os.getppid()}.abcd1234.aggtmp"
    for path in (left, mine, live):
        path.write_bytes(b"x")
    assert sweep_temp_files(root) == 1, "a live writer's (and, mid-run, our own) files stay"
    assert sweep_temp_files(root, own_too=True) == 1, "a stopping daemon's own leftovers go"
    assert [p.name for p in root.iterdir()] == [live.name]
    shutil.rmtree(root)


def test_adaptive_polling_uses_the_recent_entry_rate(tmp_path: Path, feed_dir: Path) -> None:
    now = utcnow()
    items = "".join(
        f"<item><title>Busy {i}</title><guid>busy-{i}</guid><link>http://127.0.0.1/busy/{i}</link>"
        f"<pubDate>{(now - timedelta(minutes=15 * i)).strftime('%a, %d %b %Y %H:%M:%S GMT')}</pubDate></item>"
        for i in range(200)  # 200 entries in the last two days
    )
    (feed_dir / "busy.xml").write_text(
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>b</title>{items}</channel></rss>'
    )
    (feed_dir / "quiet.xml").write_bytes(rss("quiet", 3))  # last post weeks ago
    (feed_dir / "cron.xml").write_bytes(rss("cron", 1))
    config = write_config(
        tmp_path / "site",
        [{"name": n, "url": str(feed_dir / f"{n}.xml")} for n in ("busy", "quiet")]
        + [{"name": "cron", "url": str(feed_dir / "cron.xml"), "cron": "0 3 * * *"}],
        defaults={"interval": "30m", "adaptive": "true", "min_interval": "1m", "max_interval": "1d"},
    )

    async def scenario() -> dict[str, Any]:
        daemon = _daemon(config)
        try:
            for name in ("busy", "quiet", "cron"):
                await daemon._run_source(name)
            return {
                s.name: (
                    daemon._next_run(s, daemon.store.index.source_state(s.name)),
                    daemon.store.index.source_state(s.name),
                )
                for s in daemon.config.sources
            }
        finally:
            await daemon.close()

    due = asyncio.run(scenario())
    busy, busy_state = due["busy"]
    quiet, quiet_state = due["quiet"]
    cron, _ = due["cron"]
    # 200 entries a week: on its slots every 3024 s, not the configured 30 minutes (the first
    # gap after a first poll is between half an interval and one and a half).
    gap = (busy - busy_state.last_attempt).total_seconds()
    assert 604800 / 200 * 0.5 < gap <= 604800 / 200 * 1.5
    assert _on_phase(busy, 604800 / 200, "busy")
    assert (quiet - quiet_state.last_attempt).total_seconds() > 86400 * 0.5
    assert _on_phase(quiet, 86400, "quiet")
    assert (cron.hour, cron.minute, cron.second) == (3, 0, 0) and cron > now


def test_each_run_moves_its_job_to_the_backoff_or_retry_after_time(tmp_path: Path) -> None:
    from support.faultserver import FaultServer

    with FaultServer() as faults:
        config = write_config(
            tmp_path / "site",
            [
                {"name": "limited", "url": faults.url("/429-seconds?value=900"), "interval": "1m"},
                {"name": "broken", "url": faults.url("/status/500"), "interval": "1m"},
                {"name": "fine", "url": faults.url("/same-etag"), "interval": "1m"},
            ],
        )

        async def scenario() -> dict[str, Any]:
            daemon = _daemon(config)
            daemon._schedule_all(daemon.config.sources)
            daemon.scheduler.start()
            try:
                for name in ("limited", "broken", "fine"):
                    await daemon._run_source(name)
                return {
                    name: (due, daemon.store.index.source_state(name))
                    for name, due in daemon.scheduler.due_times().items()
                }
            finally:
                daemon.scheduler.shutdown()
                await daemon.close()

        due = asyncio.run(scenario())
    limited, limited_state = due["limited"]
    assert "Retry-After" in limited_state.due_reason
    assert limited >= limited_state.last_attempt + timedelta(seconds=900)
    broken, broken_state = due["broken"]
    assert broken_state.error_streak == 1 and broken_state.next_due is not None
    assert broken >= broken_state.next_due
    fine, fine_state = due["fine"]
    assert fine_state.error_streak == 0
    assert timedelta(seconds=30) < fine - fine_state.last_attempt <= timedelta(seconds=90)
    assert _on_phase(fine, 60, "fine")  # its own slot in the minute, not "60 s after this poll"


def test_reload_reschedules_a_changed_source_and_keeps_the_rest(tmp_path: Path, feed_dir: Path) -> None:
    for name in ("a", "b"):
        (feed_dir / f"{name}.xml").write_bytes(rss(name, 1))
    sources = [{"name": n, "url": str(feed_dir / f"{n}.xml"), "interval": "1h"} for n in ("a", "b")]
    config = write_config(tmp_path / "site", sources)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str, Any]:
        daemon = _daemon(config)
        daemon._schedule_all(daemon.config.sources)
        daemon.scheduler.start()
        try:
            for name in ("a", "b"):
                await daemon._run_source(name)
            before = daemon.scheduler.due_times()
            sources[0]["interval"] = "2h"
            write_config(tmp_path / "site", sources)
            reloaded = utcnow()
            await daemon.reload()
            after = daemon.scheduler.due_times()
            trigger = str(daemon.scheduler.scheduler.get_job("a").trigger)
        finally:
            daemon.scheduler.shutdown()
            await daemon.close()
        return before, after, trigger, reloaded

    before, after, trigger, reloaded = asyncio.run(scenario())
    assert after["b"] == before["b"]  # untouched
    assert "2:00:00" in trigger
    # a's config changed: it is polled again soon (within the start spread), then every two hours.
    assert before["a"] > reloaded + timedelta(minutes=29)
    assert after["a"] <= reloaded + timedelta(seconds=11)


def test_the_feeds_on_disk_are_served_while_the_start_up_build_runs(tmp_path: Path) -> None:
    config_path = site_config(tmp_path / "site", [])
    feeds = tmp_path / "site" / "feeds"
    feeds.mkdir(parents=True)
    (feeds / "index.html").write_text("the index of the last run")
    port = load_config(config_path).server.port

    def get(path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}/{path}", timeout=5)

    async def until(check: Any, what: str) -> Any:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                found = await asyncio.to_thread(check)
            except httpx.TransportError:
                found = None
            if found:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    async def scenario() -> tuple[str, dict[str, Any], str, dict[str, Any], int]:
        daemon = Daemon(config_path, load_config(config_path))
        gate = asyncio.Event()
        real_build = daemon._build

        async def held_build(keys: Any) -> None:
            await gate.wait()  # the start-up build takes as long as the test says
            await real_build(keys)

        daemon._build = held_build  # type: ignore[method-assign]
        running = asyncio.create_task(daemon.run())
        try:
            # index.html, not "/": the root is the dashboard, which reads the index.
            during = await until(lambda: (r := get("index.html")).status_code == 200 and r.text, "serving")
            starting = (await asyncio.to_thread(get, "healthz")).json()
            gate.set()
            ready = await until(lambda: (r := get("healthz")).status_code == 200 and r.json(), "healthy")
            after = (await asyncio.to_thread(get, "index.html")).text
        finally:
            gate.set()
            daemon._stopping.set()
            code = await asyncio.wait_for(running, 30)
        return during, starting, after, ready, code

    during, starting, after, ready, code = asyncio.run(scenario())
    assert during == "the index of the last run"
    assert starting["starting"] is True and starting["ok"] is False
    assert ready["starting"] is False and ready["ok"] is True and ready["builds"] >= 1
    assert after != during and "Test site" in after  # the start-up build's own index replaced it
    assert code == 0


def test_healthz_fails_when_the_scheduler_stops_firing(tmp_path: Path, feed_dir: Path) -> None:
    (feed_dir / "a.xml").write_bytes(rss("a", 1))
    config = write_config(
        tmp_path / "site", [{"name": "a", "url": str(feed_dir / "a.xml"), "interval": "1h"}]
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        daemon = _daemon(config)
        daemon._schedule_all(daemon.config.sources)
        daemon.scheduler.start()
        try:
            await daemon._run_source("a")
            healthy = daemon.health()
            # A scheduler that stopped firing: the job stays far past its due time.
            daemon.scheduler.scheduler.pause()
            daemon.scheduler.scheduler.get_job("a").modify(next_run_time=utcnow() - timedelta(minutes=10))
            stalled = daemon.health()
        finally:
            daemon.scheduler.shutdown()
            await daemon.close()
        return healthy, stalled

    healthy, stalled = asyncio.run(scenario())
    assert healthy["ok"] and healthy["most_late_seconds"] == 0 and healthy["builds"] == 0
    assert not stalled["ok"] and stalled["most_late_seconds"] >= 600
