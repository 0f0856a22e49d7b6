"""`aggregator fetch` then `aggregator status`, as real subprocesses against the fault server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faultserver import SAMPLE_RSS, FaultServer, Reply
from support.helpers import run_cli, write_config

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
    assert "6 sources, 3 failing" in table.stdout
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
