"""The dashboard at a fleet's size: /status's view and pages (pure), and the routes over a real
SQLite index of 450 sources, which answer one page of /status (counting entries for its rows only)
and one page of /'s source feeds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from support.posts import make_post
from support.servers import AppServer

from aggregator.config import Config
from aggregator.dashboard.app import Dashboard, status_report
from aggregator.dashboard.data import SOURCE_FEEDS_PAGE, FeedListing, source_feeds_page
from aggregator.dashboard.health import (
    EVERY_SOURCE,
    PAGE_ROWS,
    SourceRow,
    StatusView,
    matches,
    page_of,
    status_view,
)
from aggregator.dashboard.render import status_link
from aggregator.index.dashboard import DashboardIndex
from aggregator.index.opening import open_dashboard_reader
from aggregator.keys import ALL_KEY, category_key, source_key
from aggregator.publish.builder import FeedBuilder
from aggregator.publish.specs import spec_for
from aggregator.state import SourceState
from aggregator.store import open_store

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SOURCES = 450


def a_row(name: str, health: str = "ok") -> SourceRow:
    return SourceRow(
        name=name, url=f"https://{name}.example.org/feed", health=health, last_attempt=None,
        last_success=None, last_error=None, error_streak=0, http_status=None, next_poll=None,
        next_reason="", moved_to=None, per_day=(),
    )  # fmt: skip


def test_a_request_asks_for_a_health_words_and_a_page_and_nonsense_is_left_out() -> None:
    assert status_view({}, paged=False) == EVERY_SOURCE
    assert status_view({}, paged=True) == StatusView(page=1)
    asked = status_view({"health": "Backing Off", "q": "  Sina  Finance ", "page": "3"}, paged=False)
    assert asked == StatusView("backing off", ("sina", "finance"), 3)
    assert status_view({"health": "sad", "page": "x"}, paged=False) == StatusView(page=1)
    assert status_view({"page": "-4"}, paged=True).page == 1
    assert asked.query() == {"health": "backing off", "q": "sina finance", "page": "3"}
    assert status_link(asked, 1) == "/status?health=backing+off&q=sina+finance"  # page 1 is said by none
    assert status_link(EVERY_SOURCE, 2) == "/status?page=2"


def test_the_filter_matches_health_attention_and_every_word_of_name_or_address() -> None:
    failing, gone, fine = a_row("sina-finance", "failing"), a_row("old", "gone"), a_row("blog")
    assert [matches(r, StatusView("attention")) for r in (failing, gone, fine)] == [True, True, False]
    assert [matches(r, StatusView("gone")) for r in (failing, gone, fine)] == [False, True, False]
    assert matches(failing, StatusView(words=("sina", "example.org")))
    assert not matches(failing, StatusView(words=("sina", "blog")))  # every word, not any


def test_pages_hold_page_rows_each_and_a_page_past_the_end_shows_the_last() -> None:
    rows = [a_row(f"s{n:03}", "failing" if n % 3 == 0 else "ok") for n in range(SOURCES)]
    first = page_of(rows, StatusView(page=1), size=PAGE_ROWS)
    assert (first.number, first.pages, first.matched, first.first, first.last) == (1, 3, 450, 1, 200)
    last = page_of(rows, StatusView(page=99))
    assert (last.number, last.first, last.last, len(last.rows)) == (3, 401, 450, 50)
    assert last.rows[-1].name == "s449"
    failing = page_of(rows, StatusView("failing", page=1))
    assert failing.matched == 150 and failing.pages == 1 and all(r.health == "failing" for r in failing.rows)
    every = page_of(rows, EVERY_SOURCE)
    assert len(every.rows) == 450 and every.pages == 1
    none = page_of(rows, StatusView(words=("nothing",), page=1))
    assert (none.rows, none.pages, none.first, none.last) == ([], 1, 0, 0)


def test_the_home_page_shows_every_category_and_one_page_of_the_source_feeds() -> None:
    def listing(key: str) -> FeedListing:
        return FeedListing(spec_for(key, Config()), 1, None)

    sources = [listing(source_key(f"s{n:03}")) for n in range(SOURCES)]
    listings = [listing(ALL_KEY), listing(category_key(["News"])), *sources]
    second = source_feeds_page(listings, 2)
    assert [f.spec.kind for f in second.listings[:3]] == ["all", "category", "source"]
    assert len(second.listings) == 2 + SOURCE_FEEDS_PAGE and second.listings[2].spec.parts == ("s200",)
    assert (second.sources, second.number, second.pages, second.first, second.last) == (450, 2, 3, 201, 400)
    last = source_feeds_page(listings, 7)
    assert (last.number, last.first, last.last, len(last.listings)) == (3, 401, 450, 52)
    alone = source_feeds_page(listings[:2], 1)
    assert (alone.pages, alone.first, alone.last, len(alone.listings)) == (1, 0, 0, 2)


def many_sources_config(base_dir: Path) -> Config:
    sources = [{"name": f"s{n:03}", "url": f"https://s{n:03}.example.org/feed"} for n in range(SOURCES)]
    return Config.model_validate(
        {
            "site": {"title": "Big site", "base_url": "http://127.0.0.1:8080/"},
            "paths": {"posts": "posts", "feeds": "feeds", "data": "data"},
            "defaults": {"fsync": "off"},
            "sources": sources,
            "base_dir": base_dir,
        }
    )


@pytest.fixture
def big_config(tmp_path: Path) -> Config:
    """450 sources and their feeds built; s000 to s009 have a post a day for 5 days and a success,
    the rest one post 40 days old and no state (new)."""
    config = many_sources_config(tmp_path)
    store = open_store(config)
    posts = [
        make_post(source=f"s{n:03}", id=f"p{day}", title=f"Post {n} {day}", date=NOW - timedelta(days=day))
        for n in range(10)
        for day in range(5)
    ]
    posts += [
        make_post(source=f"s{n:03}", id="old", date=NOW - timedelta(days=40)) for n in range(10, SOURCES)
    ]
    store.save(posts, NOW)
    FeedBuilder(config, store, processes=0).build()
    for n in range(10):
        store.index.save_source_state(replace(SourceState(name=f"s{n:03}"), last_success=NOW))
    store.close()
    return config


class CountingReader:
    """The real reader, noting which sources the 30-day counts were asked for."""

    def __init__(self, reader: DashboardIndex) -> None:
        self.reader = reader
        self.counted: list[str] = []

    def entries_per_day(self, sources: Any, since: datetime, until: datetime) -> dict[str, dict[int, int]]:
        self.counted += list(sources)
        return self.reader.entries_per_day(sources, since, until)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


def test_a_page_counts_entries_for_its_own_rows_only(big_config: Config) -> None:
    reader = open_dashboard_reader(big_config)
    counting = CountingReader(reader)
    shown, summary = status_report(counting, big_config, NOW, StatusView(page=3))  # type: ignore[arg-type]
    assert summary.total == SOURCES and summary.line() == "450 sources: 10 ok, 440 new"
    assert len(shown.rows) == 50 and counting.counted == [row.name for row in shown.rows]
    counting.counted.clear()
    shown, _ = status_report(counting, big_config, NOW, StatusView("ok", page=1))  # type: ignore[arg-type]
    assert [r.name for r in shown.rows] == [f"s{n:03}" for n in range(10)] == counting.counted
    assert [sum(r.per_day) for r in shown.rows] == [5] * 10
    reader.close()


def test_the_routes_answer_one_page_and_json_every_row_unless_a_page_is_asked(big_config: Config) -> None:
    server = AppServer(Starlette(routes=Dashboard(lambda: big_config).routes())).start()
    client = httpx.Client(base_url=server.base_url)
    first = client.get("/status").text
    assert first.count('<tr class="health-') == PAGE_ROWS
    assert "Sources 1–200 of 450 · page 1 of 3" in first and 'href="/status?page=2"' in first
    last = client.get("/status?page=3").text
    assert last.count('<tr class="health-') == 50 and 'rel="prev" href="/status?page=2"' in last
    assert 'rel="next"' not in last
    ok = client.get("/status?health=ok").text
    assert ok.count('<tr class="health-ok"') == 10 and "of 10 matching (of 450)" in ok
    assert 'option value="ok" selected' in ok
    everything = client.get("/status.json").json()
    assert len(everything["sources"]) == SOURCES and everything["page"] == {
        "number": 1,
        "pages": 1,
        "matched": 450,
    }
    paged = client.get("/status.json?page=2&q=s2").json()  # s200 to s299: one page, the last shown
    assert paged["page"] == {"number": 1, "pages": 1, "matched": 100} and len(paged["sources"]) == 100
    parts = client.get("/status.json?html=1&page=2").json()["html"]
    assert parts["rows"].count("<tr") == PAGE_ROWS and "Sources 201–400 of 450" in parts["pager"]
    assert client.get("/status.json?health=gone").json()["sources"] == []
    assert "No source matches the filter." in client.get("/status?health=gone").text
    home = client.get("/").text
    assert (
        home.count('<tr class="kind-source"') == SOURCE_FEEDS_PAGE and "s000" in home and "s200" not in home
    )
    assert "Source feeds 1–200 of 450 · page 1 of 3" in home and 'rel="next" href="/?sources=2"' in home
    last = client.get("/?sources=3").text
    assert last.count('<tr class="kind-source"') == 50 and "s449</td>" in last and "s000</td>" not in last
    assert (
        last.count('<tr class="kind-category') == home.count('<tr class="kind-category')
        and "Everything" in last
    )
