"""The dashboard without a browser: its pure parts (health, order, summary, sparkline, auth), and its
queries and routes over a real store (a real SQLite index, read through the read-only connection)."""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from support.helpers import free_port, run_cli, write_config
from support.indexes import BACKENDS
from support.posts import make_post
from support.servers import AppServer

from aggregator.config import Config, parse_config
from aggregator.dashboard import data
from aggregator.dashboard.app import Dashboard, status_report
from aggregator.dashboard.auth import Credentials, authorized, credentials
from aggregator.dashboard.health import (
    daily_counts,
    day_number,
    health_of,
    ordered,
    relative,
    source_row,
    sparkline,
    summarize,
    window_start,
)
from aggregator.dashboard.render import post_path, post_url, render_static_index
from aggregator.errors import ConfigError, FetchError, RateLimited, SourceGone, StoreError
from aggregator.index.dashboard import DashboardIndex, DashboardReader
from aggregator.index.fleet import leases, nodes
from aggregator.index.fleet.leases import Lease
from aggregator.index.opening import open_dashboard_reader
from aggregator.index.postgres.dashboard import holders_at
from aggregator.model import Post
from aggregator.pipeline import source_fingerprint
from aggregator.publish.builder import FeedBuilder
from aggregator.schedule import NextPoll
from aggregator.state import SourceState, after_failure, after_success
from aggregator.store import PostStore, open_store

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PLAN = NextPoll(NOW + timedelta(minutes=30), "interval 30m")


def ok(name: str) -> SourceState:
    return after_success(
        SourceState(name=name), now=NOW, interval=1800, http_status=200, new=1, updated=0,
        etag=None, last_modified=None, permanent_url=None,
    )  # fmt: skip


def failed(name: str, times: int) -> SourceState:
    state = SourceState(name=name)
    for _ in range(times):
        state = after_failure(
            state, FetchError("HTTP 500 Internal Server Error"), now=NOW, interval=1800,
            backoff_cap=86400, rng=random.Random(1),
        )  # fmt: skip
    return state


def row(state: SourceState, per_day: tuple[int, ...] = ()) -> Any:
    return source_row(state, PLAN, per_day, url="https://example.org/feed")


# Health, order, summary ---------------------------------------------------------------------


def test_each_state_has_one_health_word() -> None:
    limited = after_failure(
        SourceState(name="busy"), RateLimited("HTTP 429", status=429, retry_after=3600), now=NOW,
        interval=1800, backoff_cap=86400,
    )  # fmt: skip
    gone = after_failure(
        ok("old"), SourceGone("HTTP 410 Gone", status=410), now=NOW, interval=1800, backoff_cap=1
    )
    assert health_of(SourceState(name="fresh")) == "new"
    assert health_of(ok("fine")) == "ok"
    assert health_of(failed("broken", 2)) == "failing"
    assert health_of(limited) == "backing off"
    assert health_of(gone) == "gone"
    # After a failure, one success makes it ok again.
    assert health_of(after_success(failed("x", 3), now=NOW, interval=60, http_status=200, new=0, updated=0,
                                   etag=None, last_modified=None, permanent_url=None)) == "ok"  # fmt: skip


def test_failing_sources_come_first_gone_then_the_longest_streaks() -> None:
    limited = after_failure(
        SourceState(name="a-busy"), RateLimited("HTTP 429", status=429, retry_after=60), now=NOW,
        interval=1800, backoff_cap=86400,
    )  # fmt: skip
    gone = after_failure(
        ok("z-gone"), SourceGone("HTTP 410", status=410), now=NOW, interval=1800, backoff_cap=1
    )
    rows = [row(ok("b-ok")), row(failed("c-once", 1)), row(limited), row(SourceState(name="d-new")),
            row(failed("e-thrice", 3)), row(gone), row(ok("a-ok"))]  # fmt: skip
    assert [r.name for r in ordered(rows)] == [
        "z-gone",
        "e-thrice",
        "c-once",
        "a-busy",
        "d-new",
        "a-ok",
        "b-ok",
    ]


def test_the_summary_line_counts_each_health() -> None:
    rows = [row(ok("a")), row(ok("b")), row(failed("c", 1)), row(failed("d", 4)), row(SourceState(name="e"))]
    summary = summarize(rows)
    assert summary.line() == "5 sources: 2 ok, 2 failing, 1 new"
    assert summary.failing == 2 and summary.total == 5
    assert summarize([row(SourceState(name="only"))]).line() == "1 source: 1 new"
    assert summarize([]).line() == "0 sources"


# Sparkline ----------------------------------------------------------------------------------


def test_entries_per_day_cover_thirty_days_oldest_first() -> None:
    today = day_number(NOW)
    counts = {today: 4, today - 1: 2, today - 29: 1, today - 30: 99, today + 1: 99}
    per_day = daily_counts(counts, today)
    assert len(per_day) == 30
    assert per_day[-1] == 4 and per_day[-2] == 2 and per_day[0] == 1 and sum(per_day) == 7
    assert window_start(NOW) == datetime(2026, 11, 3, tzinfo=UTC)  # the start of the oldest of the 30 days
    assert day_number(window_start(NOW)) == today - 29


def test_the_sparkline_scales_to_the_busiest_day() -> None:
    line = sparkline((0, 5, 10, 0), step=10, height=12)
    assert line.points == "0,11 10,6 20,1 30,11" and line.width == 30
    assert (line.peak, line.total) == (10, 15)
    assert line.label == "15 entries in 30 days, at most 10 a day"
    flat = sparkline((0,) * 30)
    assert {point.split(",")[1] for point in flat.points.split()} == {"17"}
    assert len(flat.points.split()) == 30


def test_times_are_said_relative_to_now() -> None:
    assert relative(NOW + timedelta(minutes=12), NOW) == "in 12m"
    assert relative(NOW - timedelta(hours=3), NOW) == "3h ago"
    assert relative(NOW - timedelta(hours=3, minutes=20), NOW) == "3h20m ago"
    assert relative(NOW + timedelta(days=1, hours=2), NOW) == "in 1d2h"
    assert relative(NOW - timedelta(seconds=40), NOW) == "40s ago"
    assert relative(NOW, NOW) == "now"
    assert relative(None, NOW) == ""


# Auth ---------------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_accepts_only_the_configured_credentials() -> None:
    expected = Credentials("admin", "s3cret:with colon")
    assert authorized(basic("admin", "s3cret:with colon"), expected)
    assert authorized("basic " + basic("admin", "s3cret:with colon").split()[1], expected)
    for header in (None, "", basic("admin", "wrong"), basic("root", "s3cret:with colon"), "Basic !!!",
                   "Bearer abc", "Basic " + base64.b64encode(b"no-colon").decode()):  # fmt: skip
        assert not authorized(header, expected), header
    assert authorized(None, None)  # no credentials configured: open
    assert "s3cret" not in repr(expected)


def test_dashboard_auth_takes_a_password_or_an_environment_variable(tmp_path: Path) -> None:
    def server(auth: dict[str, Any]) -> Config:
        import yaml

        text = yaml.safe_dump({"server": {"dashboard_auth": auth}})
        return parse_config(text, tmp_path / "aggregator.yaml")

    given = server({"username": "me", "password": "pw"}).server.dashboard_auth
    assert credentials(given) == Credentials("me", "pw")
    from_env = server({"username": "me", "password_env": "DASH_PW"}).server.dashboard_auth
    assert credentials(from_env, {"DASH_PW": "from-env"}) == Credentials("me", "from-env")
    with pytest.raises(ConfigError, match="DASH_PW is not set"):
        credentials(from_env, {})
    for wrong in ({"username": "me"}, {"username": "me", "password": "a", "password_env": "B"}):
        with pytest.raises(ConfigError, match="either password or password_env"):
            server(wrong)
    assert "pw" not in repr(given)
    assert credentials(None) is None


def test_post_addresses_name_the_post_file() -> None:
    path = "新浪财经-国内/2026/12/海关总署 加强-96743be5b6.md"
    url = post_url(path)
    assert url.startswith("/post/%E6%96%B0") and " " not in url and not url.endswith(".md")
    from urllib.parse import unquote

    assert post_path(unquote(url.removeprefix("/post/"))) == path


# Over a real store --------------------------------------------------------------------------


def dashboard_config(base_dir: Path, index: str | None = None) -> Config:
    return Config.model_validate(
        {
            "site": {"title": "Test site", "base_url": "http://127.0.0.1:8080/"},
            "paths": {"posts": "posts", "feeds": "feeds", "data": "data"},
            "defaults": {"fsync": "off"},
            "sources": [
                {"name": "busy", "url": "https://busy.example.org/feed", "categories": ["Tech", "Python"]},
                {"name": "broken", "url": "https://broken.example.org/feed", "categories": ["Tech"]},
                {"name": "never", "url": "https://never.example.org/feed"},
            ],
            "base_dir": base_dir,
            **({"index": index} if index else {}),
        }
    )


def filled_store(config: Config, extra: Sequence[Post] = ()) -> PostStore:
    """The config's store (SQLite or PostgreSQL) with 61 posts (and ``extra``), two sources' states,
    and its feeds built."""
    store = open_store(config)
    posts = [
        make_post(source="busy", id=f"b{n}", title=f"Busy {n}", categories=("Tech", "Python"),
                  date=NOW - timedelta(hours=5 * n), link=f"https://busy.example.org/{n}")
        for n in range(60)
    ]  # fmt: skip
    posts.append(
        make_post(source="other", id="o1", title="Elsewhere", categories=("科学",), date=NOW + timedelta(1))
    )
    store.save([*posts, *extra], NOW)
    for state in (ok("busy"), failed("broken", 2)):  # saved under the config they were polled with
        fingerprint = source_fingerprint(config.source_named(state.name))
        store.index.save_source_state(replace(state, config_hash=fingerprint))
    FeedBuilder(config, store, processes=0).build()
    return store


@pytest.fixture(params=BACKENDS)
def store_config(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Config, PostStore]]:
    """A filled store on SQLite (``[sqlite]``) or on a fresh PostgreSQL database (``[postgres]``)."""
    index = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    config = dashboard_config(tmp_path, index)
    store = filled_store(config)
    yield config, store
    store.close()


def write_through(reader: DashboardIndex) -> None:
    """Try to write on the reader's own connection (it must refuse: it only reads)."""
    connection = reader.db if isinstance(reader, DashboardReader) else reader.conn
    connection.execute("DELETE FROM posts")


def test_the_index_page_counts_every_post_while_the_static_one_counts_feed_items(
    store_config: tuple[Config, PostStore],
) -> None:
    config, _store = store_config
    reader = open_dashboard_reader(config)
    listings = {(f.spec.kind, f.spec.parts): f.count for f in data.published_listings(reader, config)}
    assert listings[("all", ())] == 61
    assert listings[("category", ("Tech",))] == 60 and listings[("category", ("Tech", "Python"))] == 60
    assert listings[("category", ("科学",))] == 1
    assert listings[("source", ("busy",))] == 60
    kinds = [f.spec.kind for f in data.published_listings(reader, config)]
    assert kinds == sorted(kinds, key=("all", "category", "source").index)
    newest = reader.newest_posts(3)
    assert [p.title for p in newest] == ["Elsewhere", "Busy 0", "Busy 1"]
    static = (config.feeds_dir / "index.html").read_text(encoding="utf-8")
    assert '<td class="num">50</td>' in static and '<td class="num">60</td>' not in static  # max_items
    assert "Busy 0" not in static and "<script" not in static  # no posts, no live parts
    assert render_static_index(config, []).decode().count("<tr") == 1  # the header row only
    with pytest.raises(StoreError, match=r"read-?only"):
        reader.run(write_through)
    reader.close()


def test_status_report_orders_the_sources_and_counts_entries_per_day(
    store_config: tuple[Config, PostStore],
) -> None:
    config, _store = store_config
    reader = open_dashboard_reader(config)
    shown, summary = status_report(reader, config, NOW)
    rows = shown.rows
    assert [r.name for r in rows] == ["broken", "never", "busy"]
    assert [r.health for r in rows] == ["failing", "new", "ok"]
    assert (
        rows[0].last_error == "HTTP 500 Internal Server Error"
        and rows[0].next_reason == "backoff after 2 failures"
    )
    busy = rows[2]
    assert len(busy.per_day) == 30 and sum(busy.per_day) == 60  # 60 posts 5 h apart: 12.5 days
    assert busy.per_day[-1] == 3  # 12:00, 07:00 and 02:00 today
    assert summary.line() == "3 sources: 1 ok, 1 failing, 1 new"
    reader.close()


def test_routes_answer_with_their_own_security_headers(store_config: tuple[Config, PostStore]) -> None:
    config, _store = store_config
    dashboard = Dashboard(lambda: config, Credentials("me", "pw"))
    server = AppServer(Starlette(routes=dashboard.routes())).start()
    client = httpx.Client(base_url=server.base_url)
    home = client.get("/")
    assert home.status_code == 200 and "Busy 0" in home.text
    assert "script-src 'self'" in home.headers["content-security-policy"]
    assert client.get("/status").status_code == 401
    report = client.get("/status.json", auth=("me", "pw")).json()
    assert report["summary"]["failing"] == 1 and report["sources"][0]["name"] == "broken"
    # The route plans with the real clock, so the backoff from NOW may be overdue by now.
    assert report["sources"][0]["next_poll_reason"].startswith("backoff after 2 failures")
    assert "html" not in report
    parts = client.get("/status.json?html=1", auth=("me", "pw")).json()
    assert 'class="badge failing"' in parts["html"]["rows"] and "sources" not in parts
    assert parts["html"]["summary"].startswith('<strong>3 sources: <a href="/status?health=ok">1 ok</a>, ')
    assert "Sources 1–3 of 3" in parts["html"]["pager"]
    reader = open_dashboard_reader(config)
    path = reader.newest_posts(2)[1].path
    reader.close()
    page = client.get(post_url(path), auth=("me", "pw"))
    assert page.status_code == 200 and "<h1>Busy 0</h1>" in page.text
    for missing in (
        "/post/busy/2026/12/none",
        "/post/../../../etc/passwd",
        "/post/" + "%2e%2e/" * 4 + "etc/passwd",
    ):
        assert client.get(missing, auth=("me", "pw")).status_code == 404, missing
    assert client.get("/_dashboard/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/_dashboard/status.js").status_code == 200
    client.close()
    server.stop()
    dashboard.close()


def test_the_dashboard_says_not_ready_before_the_index_exists(tmp_path: Path) -> None:
    config = Config.model_validate({"paths": {"data": "data"}, "base_dir": tmp_path})
    with AppServer(Starlette(routes=Dashboard(lambda: config).routes())) as server:
        answer = httpx.get(server.url("/"))
    assert answer.status_code == 503 and "Not ready" in answer.text


# Two posts at one moment with the "busy" ones: ties go by source, then id, byte by byte ("Z" < "a").
TIES = [
    make_post(source=source, id=entry_id, title=f"Tie {source} {entry_id}", categories=("Tech",), date=NOW)
    for source, entry_id in (("other", "b"), ("busy", "a"), ("busy", "Z"))
]
_TIMES = re.compile(r"<time [^>]*>[^<]*</time>")


def dashboard_server(config: Config) -> AppServer:
    return AppServer(Starlette(routes=Dashboard(lambda: config).routes())).start()


def settled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """/status.json's rows without a new source's next poll: "now", the moment of each request."""
    return [{k: v for k, v in r.items() if not (k == "next_poll" and r["health"] == "new")} for r in rows]


def without_times(html: str) -> str:
    """A page without its relative times ("3h ago"), which move with the clock between two requests."""
    return _TIMES.sub("<time>", html)


@pytest.mark.postgres
def test_on_postgresql_the_pages_show_what_they_show_on_sqlite(tmp_path: Path, postgres_url: str) -> None:
    on_sqlite = dashboard_config(tmp_path / "sqlite")
    on_postgres = dashboard_config(tmp_path / "postgres", postgres_url)
    stores = [filled_store(config, TIES) for config in (on_sqlite, on_postgres)]
    readers = [open_dashboard_reader(config) for config in (on_sqlite, on_postgres)]
    assert [type(reader).__name__ for reader in readers] == ["DashboardReader", "PgDashboardReader"]

    def seen(reader: DashboardIndex, config: Config) -> dict[str, Any]:
        post = reader.post_at(reader.newest_posts(5)[3].path)
        assert post is not None
        return {
            "listings": data.published_listings(reader, config),
            "newest": reader.newest_posts(100),
            "status": status_report(reader, config, NOW),
            "post": (post, data.feeds_of(reader, config, post), reader.post_body(post.source, post.id)),
            "pace": reader.recent_entry_count("busy", NOW - timedelta(days=3), NOW),
        }

    sqlite_seen, postgres_seen = (seen(r, c) for r, c in zip(readers, (on_sqlite, on_postgres), strict=True))
    assert postgres_seen == sqlite_seen
    counts = {(f.spec.kind, f.spec.parts): f.count for f in postgres_seen["listings"]}
    assert counts[("all", ())] == 64 and counts[("category", ("Tech",))] == 63
    assert counts[("source", ("busy",))] == 62 and counts[("category", ("科学",))] == 1
    newest = [(p.source, p.id) for p in postgres_seen["newest"][:5]]
    assert newest == [("other", "o1"), ("busy", "Z"), ("busy", "a"), ("busy", "b0"), ("other", "b")]
    shown, summary = postgres_seen["status"]
    rows = shown.rows
    assert [r.name for r in rows] == ["broken", "never", "busy"] and sum(rows[2].per_day) == 62
    assert summary.line() == "3 sources: 1 ok, 1 failing, 1 new"
    for reader in readers:
        reader.close()

    servers = [dashboard_server(config) for config in (on_sqlite, on_postgres)]
    try:
        post = postgres_seen["newest"][3]
        for page in ("/", "/status", post_url(post.path)):
            answers = [httpx.get(server.url(page)) for server in servers]
            assert [a.status_code for a in answers] == [200, 200], page
            assert without_times(answers[1].text) == without_times(answers[0].text), page
        reports = [settled(httpx.get(server.url("/status.json")).json()["sources"]) for server in servers]
        assert reports[1] == reports[0] and [r["name"] for r in reports[1]] == ["broken", "never", "busy"]
        assert "<h1>Busy 0</h1>" in answers[1].text
    finally:
        for server in servers:
            server.stop()
        for store in stores:
            store.close()


def test_an_unreachable_postgresql_index_is_not_ready_and_its_password_is_not_shown(tmp_path: Path) -> None:
    index = "postgresql://aggregator:hunter2@127.0.0.1:1/aggregator"  # nothing listens on port 1
    config = Config.model_validate({"paths": {"data": "data"}, "base_dir": tmp_path, "index": index})
    with AppServer(Starlette(routes=Dashboard(lambda: config).routes())) as server:
        page = httpx.get(server.url("/"))
        report = httpx.get(server.url("/status.json"))
    assert page.status_code == 503 and "Not ready" in page.text
    assert "postgresql://aggregator:***@127.0.0.1:1/aggregator" in page.text
    assert report.status_code == 503 and "aggregator:***@127.0.0.1:1" in report.json()["error"]
    assert "hunter2" not in page.text and "hunter2" not in report.text


@pytest.mark.postgres
def test_the_dashboard_opens_its_postgresql_reader_again_once_the_index_is_there(
    tmp_path: Path, postgres_url: str
) -> None:
    config = dashboard_config(tmp_path, postgres_url)
    dashboard = Dashboard(lambda: config)
    with AppServer(Starlette(routes=dashboard.routes())) as server:
        early = httpx.get(server.url("/"))  # an empty database: no daemon has made the index yet
        assert early.status_code == 503 and "no index yet" in early.text
        store = filled_store(config)
        try:
            later = httpx.get(server.url("/"))
            assert later.status_code == 200 and "Busy 0" in later.text
        finally:
            store.close()
    dashboard.close()


def test_a_reload_that_names_another_index_is_read_at_the_next_request(tmp_path: Path) -> None:
    """SIGHUP swaps the daemon's config; the dashboard's open reader follows its ``paths.data``."""
    first, second = dashboard_config(tmp_path / "one"), dashboard_config(tmp_path / "two")
    stores = [
        filled_store(first),
        filled_store(second, extra=[make_post(source="busy", id="new", title="Only two")]),
    ]
    running = [first]
    dashboard = Dashboard(lambda: running[0])
    try:
        with AppServer(Starlette(routes=dashboard.routes())) as server:
            assert "Only two" not in httpx.get(server.url("/")).text
            running[0] = second
            assert "Only two" in httpx.get(server.url("/")).text
    finally:
        dashboard.close()
        for store in stores:
            store.close()


def test_a_source_is_polled_by_the_node_whose_lease_runs_now() -> None:
    def lease(source: str, minutes: int) -> Lease:
        return Lease(source=source, due=NOW - timedelta(hours=1), until=NOW + timedelta(minutes=minutes))

    held = {
        "node-a": [lease("busy", 2), lease("stale", -1)],
        "node-b": [lease("broken", 1), lease("stale", 0)],
    }
    assert holders_at(held, NOW) == {"busy": "node-a", "broken": "node-b"}  # an expired lease is nobody's
    # Two rows for one source (read while a lease moved): the later expiry is the holder.
    assert holders_at({"old": [lease("x", 1)], "new": [lease("x", 2)]}, NOW) == {"x": "new"}
    assert holders_at({}, NOW) == {}


@pytest.mark.postgres
def test_a_fleet_nodes_status_shows_every_source_and_which_node_polls_it(
    tmp_path: Path, postgres_url: str
) -> None:
    config = dashboard_config(tmp_path, postgres_url)
    store = filled_store(config)
    with psycopg.connect(postgres_url, autocommit=True) as fleet:
        nodes.join(fleet, "node-a", port=8081)
        leases.register_sources(fleet, ["busy", "broken", "never"])
        claimed = leases.claim(fleet, "node-a", 1, timedelta(minutes=2), skip=["broken", "never"])
        assert [held.source for held in claimed] == ["busy"]
    # Every source's state comes from the shared database, so this node shows all three.
    with AppServer(Starlette(routes=Dashboard(lambda: config).routes())) as server:
        report = httpx.get(server.url("/status.json")).json()["sources"]
        page = httpx.get(server.url("/status")).text
    store.close()
    assert {r["name"]: r["polled_by"] for r in report} == {"broken": None, "never": None, "busy": "node-a"}
    assert {r["name"]: r["health"] for r in report} == {"broken": "failing", "never": "new", "busy": "ok"}
    assert page.count("polling now on") == 1 and "<code>node-a</code>" in page


def test_the_daemon_refuses_to_start_when_the_password_variable_is_unset(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [],
        server={
            "port": free_port(),
            "dashboard_auth": {"username": "me", "password_env": "NOT_SET_HERE"},
        },
    )
    result = run_cli("run", config=config, env={"NOT_SET_HERE": ""}, timeout=60)
    assert result.returncode != 0
    assert "password_env: the environment variable NOT_SET_HERE is not set" in result.stderr


def test_only_loopback_addresses_count_as_private_to_this_machine() -> None:
    from aggregator.daemon import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost") and _loopback("127.8.0.1")
    assert not _loopback("0.0.0.0") and not _loopback("::") and not _loopback("192.168.1.5")
    assert not _loopback("feeds.example.org")
