"""WebSub: the hub is advertised in every feed and pinged with exactly the feeds that changed.

A tiny Starlette hub runs on 127.0.0.1 and records every publish ping it gets.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.helpers import FIXTURES, run_cli, write_config
from support.servers import AppServer
from test_build import BASE, Site, make_post

from aggregator import websub
from aggregator.keys import ALL_KEY, source_key
from aggregator.publish.builder import FeedBuilder


class Hub:
    """Records (hub.mode, hub.url) of each ping; answers 204, or ``status`` when set."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, str]] = []
        self.status = 204
        self.server = AppServer(Starlette(routes=[Route("/hub", self.receive, methods=["POST"])]))

    async def receive(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        self.pings.append((form["hub.mode"][0], form["hub.url"][0]))
        return Response(status_code=self.status)

    @property
    def url(self) -> str:
        return self.server.url("hub")

    def urls(self) -> list[str]:
        assert {mode for mode, _url in self.pings} <= {"publish"}
        return sorted(url for _mode, url in self.pings)


@pytest.fixture
def hub() -> Iterator[Hub]:
    stub = Hub()
    with stub.server:
        yield stub


def feed_urls(*directories: str) -> list[str]:
    return sorted(BASE + f"{d}/{name}" for d in directories for name in ("rss.xml", "atom.xml", "feed.json"))


def test_every_feed_advertises_the_hub(tmp_path: Path, hub: Hub) -> None:
    site = Site(tmp_path, websub_hub=hub.url)
    site.add(make_post("a", 1, ("Tech",)))
    site.builder.build()
    for key in (ALL_KEY, source_key("a")):
        rss = etree.parse(str(site.feed(key, "rss"))).getroot()
        links = rss.findall("channel/{http://www.w3.org/2005/Atom}link")
        assert [(link.get("rel"), link.get("href")) for link in links if link.get("rel") == "hub"] == [
            ("hub", hub.url)
        ]
        atom = etree.parse(str(site.feed(key, "atom"))).getroot()
        assert atom.find("{http://www.w3.org/2005/Atom}link[@rel='hub']").get("href") == hub.url
        document = json.loads(site.feed(key, "json").read_bytes())
        assert document["hubs"] == [{"type": "WebSub", "url": hub.url}]
    site.store.close()


def test_the_hub_is_told_of_exactly_the_feeds_that_changed(tmp_path: Path, hub: Hub) -> None:
    site = Site(tmp_path, websub_hub=hub.url)
    site.add(make_post("a", 1, ("Tech", "Python")), make_post("b", 2, ("Science",)))
    report = site.builder.build()
    results = asyncio.run(websub.announce(site.config, report.written_urls))
    assert all(result.ok for result in results)
    everything = ("all", "source/a", "source/b", "category/tech", "category/tech/python", "category/science")
    assert hub.urls() == feed_urls(*everything)

    hub.pings.clear()
    keys = site.add(make_post("a", 3, ("Tech", "Python")))
    report = site.builder.build(keys)
    asyncio.run(websub.announce(site.config, report.written_urls))
    assert hub.urls() == feed_urls("all", "source/a", "category/tech", "category/tech/python")

    hub.pings.clear()
    report = FeedBuilder(site.config, site.store).build()  # nothing changed
    asyncio.run(websub.announce(site.config, report.written_urls))
    assert hub.pings == []
    site.store.close()


def test_a_hub_that_refuses_or_is_down_never_fails_the_build(tmp_path: Path, hub: Hub) -> None:
    hub.status = 500
    results = asyncio.run(websub.publish(hub.url, [BASE + "all/rss.xml"]))
    assert [(r.feed_url, r.ok, r.detail) for r in results] == [(BASE + "all/rss.xml", False, "500")]
    down = "http://127.0.0.1:9/hub"  # discard port: nothing listens
    results = asyncio.run(websub.publish(down, [BASE + "all/rss.xml"], timeout=2))
    assert len(results) == 1 and not results[0].ok and results[0].detail


def test_the_cli_pings_the_hub_after_fetch_and_only_when_feeds_changed(tmp_path: Path, hub: Hub) -> None:
    feed = tmp_path / "source.xml"
    shutil.copy(FIXTURES / "formats" / "rss2.xml", feed)
    config = write_config(
        tmp_path / "site",
        [{"name": "local", "url": str(feed), "categories": ["Tech"]}],
        build={"websub_hub": hub.url, "formats": ["atom"]},
    )
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr
    base = "http://127.0.0.1:8080/"
    assert hub.urls() == sorted(base + f"{d}/atom.xml" for d in ("all", "source/local", "category/tech"))
    hub.pings.clear()
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr
    assert hub.pings == []
