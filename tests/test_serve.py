"""The feeds folder over real HTTP: media types, validators and 304, gzip, health and metrics."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from support.servers import AppServer

from aggregator.serve import create_app

FILES = {
    "all/rss.xml": "application/rss+xml",
    "all/atom.xml": "application/atom+xml",
    "all/feed.json": "application/feed+json",
    "index.opml": "text/x-opml",
    "index.html": "text/html",
    "_status/rss.xml": "application/rss+xml",
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[AppServer, Path, dict[str, object]]]:
    feeds = tmp_path / "feeds"
    for name in FILES:
        (feeds / name).parent.mkdir(parents=True, exist_ok=True)
        # Big enough (and repetitive enough) to be worth compressing.
        (feeds / name).write_text(f"<x>{name}</x>\n" * 200, encoding="utf-8")
    health: dict[str, object] = {"ok": True, "last_build": 1234.5}
    registry = CollectorRegistry()
    counter = Counter("aggregator_fetches", "by outcome", ["outcome"], registry=registry)
    counter.labels("ok").inc(3)
    app = create_app(feeds, health=lambda: dict(health), registry=registry)
    with AppServer(app) as server:
        yield server, feeds, health


@pytest.mark.parametrize(("name", "media_type"), FILES.items())
def test_media_types(served: tuple[AppServer, Path, dict[str, object]], name: str, media_type: str) -> None:
    server, _feeds, _health = served
    response = httpx.get(server.url(name))
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type


def test_index_page_at_the_root(served: tuple[AppServer, Path, dict[str, object]]) -> None:
    server, _feeds, _health = served
    response = httpx.get(server.base_url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_conditional_requests_get_304_until_the_file_changes(
    served: tuple[AppServer, Path, dict[str, object]],
) -> None:
    server, feeds, _health = served
    url = server.url("all/rss.xml")
    first = httpx.get(url)
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('W/"')
    by_etag = httpx.get(url, headers={"If-None-Match": etag})
    assert by_etag.status_code == 304
    assert by_etag.content == b""
    assert by_etag.headers["etag"] == etag
    assert httpx.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    # The gzipped copy shares the (weak) validator.
    zipped = httpx.get(url, headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert zipped.status_code == 304
    (feeds / "all" / "rss.xml").write_text("<x>changed, and longer than before</x>\n" * 300)
    changed = httpx.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


def test_gzip_when_asked(served: tuple[AppServer, Path, dict[str, object]]) -> None:
    server, feeds, _health = served
    with (
        httpx.Client(headers={"Accept-Encoding": "gzip"}) as client,
        client.stream("GET", server.url("all/atom.xml")) as response,
    ):
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in response.headers["vary"].lower()
    assert gzip.decompress(raw) == (feeds / "all" / "atom.xml").read_bytes()
    plain = httpx.get(server.url("all/atom.xml"), headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_missing_file_is_404(served: tuple[AppServer, Path, dict[str, object]]) -> None:
    server, _feeds, _health = served
    assert httpx.get(server.url("category/nope/rss.xml")).status_code == 404


def test_healthz_reports_and_fails_when_not_ok(served: tuple[AppServer, Path, dict[str, object]]) -> None:
    server, _feeds, health = served
    response = httpx.get(server.url("healthz"))
    assert response.status_code == 200
    assert response.json()["last_build"] == 1234.5
    health["ok"] = False
    assert httpx.get(server.url("healthz")).status_code == 503


def test_metrics_in_prometheus_text_format(served: tuple[AppServer, Path, dict[str, object]]) -> None:
    server, _feeds, _health = served
    response = httpx.get(server.url("metrics"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'aggregator_fetches_total{outcome="ok"} 3.0' in response.text
