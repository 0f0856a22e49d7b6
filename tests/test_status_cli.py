"""`aggregator fetch` then `aggregator status`, as real subprocesses against the fault server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.faultserver import SAMPLE_RSS, FaultServer, Reply
from support.helpers import run_cli, write_config

from aggregator.config import load_config
from aggregator.daemon import Daemon
from aggregator.state import utcnow
from aggregator.store import open_store

SECRETS = ("url-secret", "auth-secret", "proxy-secret")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        fault_server.feed("/ok.xml", SAMPLE_RSS, etag='"ok"')
        fault_server.redirect("/moved.xml", "/ok2.xml", 301)
        fault_server.feed("/ok2.xml", SAMPLE_RSS.replace(b"fault-1", b"moved-1"))
        fault_server.add("/limited.xml", Reply(429, b"", {"Retry-After": "7200"}))
        yield fault_server


def config_for(tmp_path: Path, server: FaultServer) -> Path:
    port = server.port
    sources = [
        {"name": "healthy", "url": server.url("/ok.xml")},
        {"name": "broken", "url": server.url("/status/500")},
        {"name": "vanished", "url": server.url("/status/410")},
        {"name": "limited", "url": server.url("/limited.xml")},
        {"name": "moved", "url": server.url("/moved.xml")},
        {
            "name": "secretive",
            "url": f"http://user:url-secret@127.0.0.1:{port}/status/404",
            "auth": {"username": "u", "password": "auth-secret"},
            "proxy": f"http://p:proxy-secret@127.0.0.1:{port}",
        },
    ]
    return write_config(tmp_path, sources, defaults={"fsync": "off", "timeout": "5s"})


@pytest.mark.slow
def test_status_table_json_and_exit_code(tmp_path: Path, server: FaultServer) -> None:
    config = config_for(tmp_path, server)
    fetched = run_cli("fetch", config=config)
    assert fetched.returncode == 0, fetched.stderr
    for secret in SECRETS:
        assert secret not in fetched.stdout + fetched.stderr
    assert "moved permanently" in fetched.stderr

    table = run_cli("status", config=config)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if line.startswith("│")]
    order = [line.split("│")[1].strip() for line in lines if line.split("│")[1].strip()]
    names = [
        name for name in order if name in {"healthy", "broken", "vanished", "limited", "moved", "secretive"}
    ]
    assert names[:3] == ["vanished", "broken", "secretive"], "gone first, then failing, by name"
    assert names.index("healthy") > names.index("limited")
    assert "moved permanently to" in table.stdout and server.url("/ok2.xml") in table.stdout
    assert "6 sources, 3 failing (times in UTC)" in table.stdout
    for secret in SECRETS:
        assert secret not in table.stdout + table.stderr

    as_json = run_cli("status", "--json", config=config)
    assert as_json.returncode == 0
    for secret in SECRETS:
        assert secret not in as_json.stdout
    states = json.loads(as_json.stdout)
    by_name = {s["name"]: s for s in states}
    assert [s["failing"] for s in states] == sorted((s["failing"] for s in states), reverse=True)
    assert by_name["vanished"]["gone"] and by_name["vanished"]["next_due"] is None
    assert by_name["broken"]["error_streak"] == 1 and by_name["broken"]["http_status"] == 500
    assert by_name["broken"]["last_error"] == "HTTP 500 Internal Server Error"
    assert by_name["broken"]["due_reason"] == "backoff after 1 failure"
    assert by_name["limited"]["health"] == "waiting" and not by_name["limited"]["failing"]
    assert "Retry-After 7200s" in by_name["limited"]["due_reason"]
    assert by_name["healthy"]["health"] == "ok" and by_name["healthy"]["new_count"] == 1
    assert by_name["healthy"]["last_attempt"] == by_name["healthy"]["last_success"]
    assert by_name["moved"]["permanent_url"] == server.url("/ok2.xml")
    assert by_name["secretive"]["url"] == f"http://127.0.0.1:{server.port}/status/404"
    # When the scheduler polls next, and why.
    assert by_name["vanished"]["next_poll"] is None
    assert by_name["vanished"]["next_poll_reason"].startswith("gone")
    assert by_name["broken"]["next_poll_reason"] == "backoff after 1 failure"
    assert by_name["broken"]["next_poll"] == by_name["broken"]["next_due"]
    assert by_name["limited"]["next_poll_reason"] == "HTTP 429 Retry-After 7200s"
    assert by_name["healthy"]["next_poll_reason"] == "interval 30m"

    failing = run_cli("status", "--fail-on-error", config=config)
    assert failing.returncode == 1
    assert run_cli("status", "--json", "--fail-on-error", config=config).returncode == 1


def test_fail_on_error_is_zero_when_all_are_healthy(tmp_path: Path, server: FaultServer) -> None:
    config = write_config(
        tmp_path, [{"name": "healthy", "url": server.url("/ok.xml")}], defaults={"fsync": "off"}
    )
    never = run_cli("status", "--fail-on-error", config=config)
    assert never.returncode == 0 and "new" in never.stdout
    assert run_cli("fetch", config=config).returncode == 0
    assert run_cli("status", "--fail-on-error", config=config).returncode == 0


def test_fetch_skips_gone_sources_unless_named(tmp_path: Path, server: FaultServer) -> None:
    sources = [
        {"name": "vanished", "url": server.url("/status/410")},
        {"name": "healthy", "url": server.url("/ok.xml")},
    ]
    config = write_config(tmp_path, sources, defaults={"fsync": "off"})
    run_cli("fetch", config=config)
    assert server.count("/status/410") == 1
    again = run_cli("fetch", "--json", config=config)
    report = {s["name"]: s for s in json.loads(again.stdout)["sources"]}
    assert report["vanished"]["outcome"] == "skipped"
    assert server.count("/status/410") == 1
    run_cli("fetch", "vanished", config=config)
    assert server.count("/status/410") == 2


def test_status_shows_the_time_the_scheduler_will_use_with_its_reason(tmp_path: Path) -> None:
    """Issue 15, defect 4: a cron or adaptive source's next poll is the daemon's, not now + interval."""
    now = utcnow()
    feeds = tmp_path / "feeds-in"
    feeds.mkdir()
    items = "".join(
        f"<item><title>Busy {i}</title><guid>busy-{i}</guid><link>http://127.0.0.1/busy/{i}</link>"
        f"<pubDate>{(now - timedelta(minutes=15 * i)):%a, %d %b %Y %H:%M:%S GMT}</pubDate></item>"
        for i in range(200)  # 200 entries in the last two days: polled about every 50 minutes
    )
    (feeds / "busy.xml").write_text(
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>b</title>{items}</channel></rss>'
    )
    (feeds / "nightly.xml").write_bytes(SAMPLE_RSS)
    (feeds / "plain.xml").write_bytes(SAMPLE_RSS.replace(b"fault-1", b"plain-1"))
    config = write_config(
        tmp_path / "site",
        [
            {"name": "nightly", "url": str(feeds / "nightly.xml"), "cron": "0 3 * * *"},
            {"name": "busy", "url": str(feeds / "busy.xml"), "adaptive": True},
            {"name": "plain", "url": str(feeds / "plain.xml")},
        ],
        defaults={"interval": "30m", "fsync": "off", "min_interval": "1m", "max_interval": "1d"},
    )
    assert run_cli("fetch", config=config).returncode == 0

    listed = run_cli("status", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    by_name = {s["name"]: s for s in json.loads(listed.stdout)}
    for entry in by_name.values():
        assert entry["next_poll"].endswith("+00:00") and entry["last_attempt"].endswith("+00:00")
    nightly = by_name["nightly"]
    polled = datetime.fromisoformat(nightly["last_attempt"])
    tick = (polled + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    if polled.hour < 3:
        tick -= timedelta(days=1)
    assert datetime.fromisoformat(nightly["next_poll"]) == tick  # not 30 minutes after the poll
    assert nightly["next_poll_reason"] == "cron 0 3 * * * (UTC)"
    assert by_name["busy"]["next_poll_reason"] == "adaptive: ~1 entries/poll (200 in 7d), every 50m24s"
    assert by_name["plain"]["next_poll_reason"] == "interval 30m"

    # The daemon's own decision, from the same state: the very same instants.
    daemon = Daemon(config, load_config(config))
    daemon.store = open_store(daemon.config)
    try:
        for source in daemon.config.sources:
            decided = daemon._next_run(source, daemon.store.index.source_state(source.name))
            assert decided == datetime.fromisoformat(by_name[source.name]["next_poll"]), source.name
    finally:
        daemon.store.close()

    table = run_cli("status", config=config)
    assert table.returncode == 0, table.stderr
    assert f"{tick:%Y-%m-%d %H:%M:%S} UTC" in table.stdout
    assert "cron 0 3 * * * (UTC)" in table.stdout
    assert f"{polled.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" in table.stdout
