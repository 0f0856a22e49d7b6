"""The benchmark's own parts: a deterministic corpus every parser reads, a server that answers 304."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import feedparser
import httpx
import pytest
from support.servers import AppServer

# The benchmark is a package at the top of the repository, beside (not inside) aggregator.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import FORMATS, CorpusSpec, ensure_corpus, feed_info, render_feed
from bench.server import CorpusApp

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
