"""The benchmark's own parts: a deterministic corpus every parser reads, a server that answers 304."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import feedparser
import httpx
import pytest
from support.postgres import PostgresServer
from support.servers import AppServer

# The benchmark is a package at the top of the repository, beside (not inside) aggregator.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import FORMATS, CorpusSpec, ensure_corpus, feed_info, render_feed
from bench.driver import Server, free_port, write_config
from bench.fleet_cold import cold_done, fleet_cold
from bench.fleet_scale import double_polls, scale_run
from bench.postgres_cold import postmaster_pid
from bench.server import CorpusApp, feed_requests, read_stats

SPEC = CorpusSpec(feeds=20, entries=5)


def test_corpus_is_deterministic_and_every_format_parses(tmp_path: Path) -> None:
    corpus = ensure_corpus(SPEC, tmp_path)
    assert {info.format for info in corpus.feeds()} == set(FORMATS)
    for info in corpus.feeds():
        data = corpus.path(info).read_bytes()
        assert data == render_feed(SPEC, info)
        parsed = feedparser.parse(io.BytesIO(data))
        assert not parsed.bozo, (info.filename, parsed.get("bozo_exception"))
        assert len(parsed.entries) == SPEC.entries
    # A second call reuses the files rather than writing them again.
    before = {p.name: p.stat().st_mtime_ns for p in corpus.directory.glob("*.xml")}
    again = ensure_corpus(SPEC, tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in again.directory.glob("*.xml")} == before


def test_a_feed_that_gained_an_entry_keeps_the_rest_and_drops_the_oldest() -> None:
    info = feed_info(3)
    old = feedparser.parse(io.BytesIO(render_feed(SPEC, info))).entries
    new = feedparser.parse(io.BytesIO(render_feed(SPEC, info, extra=1))).entries
    assert [e.title for e in new[1:]] == [e.title for e in old[:-1]]
    assert new[0].title not in {e.title for e in old}


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_server_answers_304_until_the_feed_changes(tmp_path: Path, validator: str) -> None:
    corpus = ensure_corpus(SPEC, tmp_path / "corpus")
    override = tmp_path / "override"
    override.mkdir()
    info = feed_info(0)
    app = CorpusApp(corpus.directory, override)
    with AppServer(app) as server, httpx.Client() as client:
        url = server.url(f"/f/{info.filename}")
        first = client.get(url)
        assert first.status_code == 200
        assert first.content == corpus.path(info).read_bytes()
        assert first.headers["content-type"].startswith("application/rss+xml")
        header = {"etag": "if-none-match", "last-modified": "if-modified-since"}[validator]
        conditional = {header: first.headers[validator]}
        assert client.get(url, headers=conditional).status_code == 304
        (override / info.filename).write_bytes(render_feed(SPEC, info, extra=1))
        # The override must look newer to If-Modified-Since as well.
        os.utime(override / info.filename, (2_000_000_000, 2_000_000_000))
        changed = client.get(url, headers=conditional)
        assert changed.status_code == 200
        assert changed.headers["etag"] != first.headers["etag"]
        assert changed.content == render_feed(SPEC, info, extra=1)
        assert client.get(server.url("/f/missing.xml")).status_code == 404
        assert app.stats["not_modified"] == 1 and app.stats["requests"] == 4


def test_server_counts_each_feeds_requests_and_the_closest_two(tmp_path: Path) -> None:
    corpus = ensure_corpus(SPEC, tmp_path / "corpus")
    (tmp_path / "override").mkdir()
    first, second = feed_info(0), feed_info(1)
    with AppServer(CorpusApp(corpus.directory, tmp_path / "override")) as server, httpx.Client() as client:
        for info in (first, first, second):
            assert client.get(server.url(f"/f/{info.filename}")).status_code == 200
        stats = read_stats(server.url("").rstrip("/"), paths=True)
        assert read_stats(server.url("").rstrip("/"), paths=True)["paths"] == {}  # reset by the first read
    assert feed_requests(stats) == {first.filename: 2, second.filename: 1}
    count, gap = stats["paths"][first.filename]
    assert count == 2 and 0 <= gap < 5
    assert stats["paths"][second.filename] == [1, None]


def test_a_feed_asked_again_within_half_an_interval_is_a_double_poll() -> None:
    paths = {"a.xml": [1, None], "b.xml": [3, 59.0], "c.xml": [2, 29.9], "d.xml": [2, 0.01]}
    assert double_polls(paths, interval=60.0) == 2
    assert double_polls({}, interval=60.0) == 0


def test_the_fleets_cold_cycle_ends_when_every_source_is_saved_and_nothing_is_pending() -> None:
    assert cold_done(sources=3, known=3, saved=3, pending=0)
    assert not cold_done(sources=3, known=3, saved=3, pending=1)  # a feed still to build
    assert not cold_done(sources=3, known=3, saved=2, pending=0)
    assert not cold_done(sources=3, known=2, saved=2, pending=0)  # a node has not registered all


def test_two_fleet_nodes_cold_cycle_saves_every_source_once(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    """The two-node row, tiny: every feed requested once, every entry a post, both nodes at work."""
    corpus = ensure_corpus(SPEC, tmp_path / "corpus")
    server = Server(corpus, tmp_path / "override")
    try:
        config = write_config(tmp_path / "run" / "aggregator.yaml", corpus, server, port=free_port())
        run = fleet_cold(
            config,
            tmp_path / "fleet",
            postgres_url,
            postmaster_pid(postgres_server),
            SPEC.feeds,
            server.feed_requests,
            free_port,
            [server.proc.pid],
            timeout=120,
        )
    finally:
        server.stop()
    assert run.polled_twice == [] and run.never_polled == 0
    assert set(run.requests) == {info.filename for info in corpus.feeds()}
    assert run.saved == SPEC.feeds and run.posts == SPEC.feeds * SPEC.entries
    assert len(run.node_cpu) == 2 and all(cpu > 0 for cpu in run.node_cpu)
    assert run.server_cpu > 0 and run.wall > 0 and run.peak_tree_mb > 0
    # The post files of both nodes are in the one shared folder.
    assert len(list((tmp_path / "fleet" / "posts").rglob("*.md"))) == SPEC.feeds * SPEC.entries


def test_one_fleet_node_at_scale_row_reports_sustained_polls_and_no_double_poll(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    """The scale row, tiny: 30 sources at 3 s on one node, a 6 s window after the warm-up."""
    interval = 3.0
    run = scale_run(30, interval, 0.1, tmp_path, [], database=(postgres_url, postmaster_pid(postgres_server)))
    window = run.window
    assert window.requests >= 30  # two rounds are asked for in the window; one at least came
    assert run.not_modified_share == 1.0  # the cold fetch stored every validator
    assert run.double_polls == 0
    assert max(count for count, _gap in window.paths.values()) <= window.seconds / interval + 2
    assert run.asked_per_second == 10.0 and run.polls_per_second > 0
    assert run.ms_cpu_per_poll > 0 and window.other_cpu > 0 and window.rss_mb > 0


def test_the_postgresql_write_probe_measures_each_way_on_the_servers_cpu(
    postgres_server: PostgresServer,
) -> None:
    """``bench.pg_writes``, tiny: three ways, the same 120 corpus posts, the server's CPU and ours."""
    from bench.pg_writes import WAYS, corpus_records, run

    records = corpus_records(120)
    assert len({(r.post.source, r.post.id) for r in records}) == 120
    assert (
        len({r.post.source for r in records}) == 3 and min(len(r.post.body.encode()) for r in records) >= 1000
    )
    costs = run(120, 1, postgres_server)
    assert [cost.way for cost in costs] == [way for way, _steps, _write in WAYS]
    assert all(cost.posts == 120 and cost.server_us > 0 and cost.client_us > 0 for cost in costs)
