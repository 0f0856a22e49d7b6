"""The dashboard in a real browser (headless Chromium), served by the real daemon process.

One browser and one site for the module (loopback sources, the
daemon started by ``aggregator run``), shared by every test here; all of them
run on one xdist worker (``xdist_group``). Each page must load with no console
error and take its scripts, styles, fonts and icons from the daemon alone (a
post's images come from the loopback image server, where the posts point).
A screenshot of each page goes to a temporary folder; with
``AGGREGATOR_DOCS_SCREENSHOTS=1`` the README's pictures in docs/ are written again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.browser import chromium, missing_reason, visit
from support.dashboard_site import (
    FINANCE,
    NEWS,
    PASSWORD,
    TECH,
    USERNAME,
    DashboardSite,
    dashboard_site,
)
from support.helpers import REPO, run_cli, wait_for

pytestmark = pytest.mark.xdist_group("browser")

DOCS = os.environ.get("AGGREGATOR_DOCS_SCREENSHOTS") == "1"
LOGIN = {"http_credentials": {"username": USERNAME, "password": PASSWORD}}
WIDE = {"viewport": {"width": 1200, "height": 760}}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser for every test here. Module-scoped, not session-scoped: Playwright's sync API
    runs an event loop in this thread while it is open, and a later test's asyncio.run() fails then."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardSite]:
    with dashboard_site(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def screenshot(
    page: Any, shots: Path, name: str, docs_name: str | None = None, *, whole: bool = True
) -> None:
    """The page (``whole``: all of it, else the window) into ``shots``; into docs/ too when asked."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=whole)
    assert path.stat().st_size > 1000
    if DOCS and docs_name:  # scripts/dashboard_screenshots.sh, which then shrinks them
        page.set_viewport_size({"width": 1100, "height": 640})
        page.screenshot(path=str(REPO / "docs" / docs_name))


def assert_own_assets(site: DashboardSite, requests: list[tuple[str, str]]) -> None:
    """Everything from the daemon, except images from the image server (post images)."""
    foreign = [
        (kind, url)
        for kind, url in requests
        if not url.startswith(site.origin + "/")
        and not (kind == "image" and url.startswith(site.image_origin + "/img/"))
    ]
    assert foreign == []
    kinds = {kind for kind, url in requests if url.startswith(site.origin + "/")}
    assert "stylesheet" in kinds or "document" in kinds


def test_home_lists_the_categories_with_counts_and_takes_its_assets_from_the_daemon(
    browser: Any, site: DashboardSite, shots: Path
) -> None:
    with visit(browser, site.url(), **WIDE) as seen:
        page = seen.page
        assert seen.response.status == 200
        assert seen.errors == [] and seen.failed == []
        assert_own_assets(site, seen.network_requests())
        kinds = {kind for kind, url in seen.network_requests() if url.startswith(site.origin)}
        assert {"document", "stylesheet", "script"} <= kinds
        thumbnails = [url for kind, url in seen.network_requests() if url.startswith(site.image_origin)]
        assert len(thumbnails) == len(TECH) + len(FINANCE)  # the Atom posts have no image

        rows = page.eval_on_selector_all(
            "table.feeds tbody tr.kind-category",
            "rows => rows.map(r => [r.cells[0].innerText.trim(), Number(r.cells[1].innerText)])",
        )
        assert dict(rows) == site.counts
        everything = page.inner_text("table.feeds tr.kind-all td.num")
        assert int(everything) == site.total
        formats = page.eval_on_selector_all(
            "table.feeds tr.kind-all td.formats a", "links => links.map(a => a.getAttribute('href'))"
        )
        assert formats == ["all/rss.xml", "all/atom.xml", "all/feed.json"]
        assert page.get_attribute("a.button[href='index.opml']", "href") == "index.opml"
        for href in (*formats, "index.opml"):
            assert httpx.get(site.url(href)).status_code == 200
        assert page.locator("#posts .post").count() == site.total
        screenshot(page, shots, "home", "dashboard.png")


def test_the_text_filter_narrows_the_posts_and_the_page_is_keyboard_navigable(
    browser: Any, site: DashboardSite
) -> None:
    with visit(browser, site.url(), until="load", **WIDE) as seen:
        page = seen.page
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"

        page.focus("#filter")
        page.keyboard.type("财经")
        visible = page.locator("#posts .post:visible")
        assert visible.count() == len(FINANCE)
        assert page.inner_text("#filter-count") == f"{len(FINANCE)} of {site.total} posts"
        page.fill("#filter", "python 3.14")
        assert page.locator("#posts .post:visible h3").all_inner_texts() == [TECH[0]]
        page.fill("#filter", "")
        assert visible.count() == site.total
        assert seen.errors == []


def test_status_shows_the_unreachable_source_failing_with_its_reason_first(
    browser: Any, site: DashboardSite, shots: Path
) -> None:
    with visit(browser, site.url("status"), **WIDE, **LOGIN) as seen:
        page = seen.page
        assert seen.response.status == 200
        assert seen.errors == [] and seen.failed == []
        assert_own_assets(site, seen.network_requests())
        assert page.inner_text("#summary").startswith("4 sources: 3 ok, 1 failing")
        first = page.locator("#sources tr").first
        assert first.locator(".source-name").inner_text() == site.unreachable
        assert first.locator(".badge").inner_text() == "failing"
        assert "cannot connect" in first.locator("td.error").inner_text()
        assert "backoff after 1 failure" in first.inner_text() and "1 failure in a row" in first.inner_text()
        healthy = page.locator("#sources tr.health-ok")
        assert healthy.count() == 3
        # Each source's sparkline: its posts of the last 30 days.
        labels = page.eval_on_selector_all(
            "#sources tr", "rows => rows.map(r => [r.querySelector('.source-name').innerText, "
            "r.querySelector('svg title').textContent])",
        )  # fmt: skip
        assert dict(labels)["新浪财经-国内"].startswith(f"{len(FINANCE)} entries in 30 days")
        assert dict(labels)[site.unreachable].startswith("0 entries")
        screenshot(page, shots, "status", "status.png")


def test_status_filters_by_health_and_name_and_the_refresh_keeps_the_filter(
    browser: Any, site: DashboardSite
) -> None:
    with visit(browser, site.url("status?refresh=1"), until="load", **WIDE, **LOGIN) as seen:
        page = seen.page
        assert page.inner_text(".pager >> nth=0") == "Sources 1–4 of 4"
        page.click("#summary a:has-text('1 failing')")  # the summary's count links to those sources
        page.wait_for_url("**/status?health=failing")
        names = page.locator("#sources .source-name")
        assert names.all_inner_texts() == [site.unreachable]
        assert page.inner_text(".pager >> nth=0") == "Sources 1–1 of 1 matching (of 4)"
        assert page.input_value("#status-health") == "failing"
        page.select_option("#status-health", "")
        page.fill("#status-q", "新浪财经")
        page.click("form.filter button")  # a plain GET form: the page's CSP allows its own forms
        page.wait_for_url("**/status?q=*")
        assert names.all_inner_texts() == ["新浪财经-国内"]
        page.fill("#status-q", "no such source")
        page.press("#status-q", "Enter")
        page.wait_for_url("**/status?q=no+such+source&health=")  # the form sends its empty health
        assert page.inner_text("#sources") == "No source matches the filter."
        assert seen.errors == [] and seen.failed == []
    with visit(browser, site.url("status?health=ok&refresh=1"), until="load", **WIDE, **LOGIN) as seen:
        with seen.page.expect_response(lambda r: "/status.json?" in r.url, timeout=10_000) as refreshed:
            pass  # the page refreshes every second
        assert refreshed.value.url.endswith("/status.json?health=ok&refresh=1&html=1")
        rows = refreshed.value.json()["html"]["rows"]
        assert rows.count("<tr") == 3 and rows.count("health-ok") == 3  # the refresh kept the filter


def test_the_status_page_and_the_cli_give_the_same_next_polls(site: DashboardSite) -> None:
    page = httpx.get(site.url("status.json"), auth=(USERNAME, PASSWORD)).json()
    cli = json.loads(run_cli("status", "--json", config=site.config, check=True).stdout)
    assert [(s["name"], s["next_poll"], s["next_poll_reason"]) for s in page["sources"]] == [
        (s["name"], s["next_poll"], s["next_poll_reason"]) for s in cli
    ]
    assert page["summary"]["failing"] == 1 and page["summary"]["ok"] == 3


def test_a_post_page_renders_the_post_sanitized_with_its_front_matter_and_feeds(
    browser: Any, site: DashboardSite, shots: Path
) -> None:
    # The home page settles first: a click while its icon loads aborts that request.
    with visit(browser, site.url(), **WIDE, **LOGIN) as home:
        home.page.fill("#filter", NEWS[0])
        home.page.click(f"#posts .post:visible a:text-is('{NEWS[0]}')")
        page = home.page
        page.wait_for_load_state("networkidle")
        assert page.inner_text("h1") == NEWS[0]
        body = page.locator(".article .body")
        assert "Body with markup a dashboard must not run." in body.inner_text()
        assert body.locator("script, iframe").count() == 0
        assert body.locator("[onmouseover]").count() == 0
        assert all(
            not (a.get_attribute("href") or "").startswith("javascript:") for a in body.locator("a").all()
        )
        body.locator("p", has_text="Hover me").hover()
        assert page.title() != "pwned"
        assert page.get_attribute("a:text('Read the original')", "href") == "https://world-news.example.org/0"
        keys = page.locator(".front-matter dt").all_inner_texts()
        front = dict(zip(keys, page.locator(".front-matter dd").all_inner_texts(), strict=True))
        assert front["source"] == "world-news" and front["id"] == "urn:world-news:0"
        feeds = page.eval_on_selector_all(".in-feeds a", "links => links.map(a => a.getAttribute('href'))")
        assert {"/all/rss.xml", "/source/world-news/atom.xml", "/category/news/feed.json"} <= set(feeds)
        with httpx.Client() as client:
            assert all(client.get(site.url(href)).status_code == 200 for href in feeds)
        assert home.errors == [] and home.failed == []
        assert_own_assets(site, home.network_requests())
        screenshot(page, shots, "post")

    with visit(browser, site.url(), **WIDE, **LOGIN) as chinese:
        chinese.page.click(f"a:text-is('{FINANCE[0]}')")
        chinese.page.wait_for_load_state("networkidle")
        assert chinese.page.inner_text("h1") == FINANCE[0]
        assert chinese.page.locator(".article .body img").count() == 1
        assert chinese.errors == [] and chinese.failed == []
        assert_own_assets(site, chinese.network_requests())
        screenshot(chinese.page, shots, "post-zh", "post.png")


def test_basic_auth_protects_status_and_posts_but_not_the_feeds(browser: Any, site: DashboardSite) -> None:
    context = browser.new_context()
    try:  # a browser without the credentials: the status page refuses it, the feeds do not
        assert context.request.get(site.url("status")).status == 401
        assert context.request.get(site.url("all/rss.xml")).status == 200
    finally:
        context.close()
    post = httpx.get(site.url()).text.split('<a href="/post/', 1)[1].split('"', 1)[0]
    for path in ("status", "status.json", f"post/{post}"):
        assert httpx.get(site.url(path)).status_code == 401
        assert httpx.get(site.url(path), auth=(USERNAME, "wrong")).status_code == 401
        answer = httpx.get(site.url(path), auth=(USERNAME, PASSWORD))
        assert answer.status_code == 200
    challenge = httpx.get(site.url("status")).headers["www-authenticate"]
    assert challenge.startswith("Basic realm=")
    for path in ("", "index.html", "index.opml", "all/rss.xml", "category/news/atom.xml", "healthz"):
        assert httpx.get(site.url(path)).status_code == 200, path


def test_the_static_index_dark_mode_and_a_narrow_screen(
    browser: Any, site: DashboardSite, shots: Path
) -> None:
    with visit(browser, site.url("index.html"), **WIDE) as static:
        assert static.errors == [] and static.failed == []
        assert {url for _kind, url in static.network_requests()} == {site.url("index.html")}
        rows = static.page.locator("table.feeds tbody tr.kind-category").count()
        assert rows == len(site.counts)
        assert static.page.locator("#posts, script").count() == 0
        screenshot(static.page, shots, "static-index", whole=False)
        light = static.page.evaluate("getComputedStyle(document.body).backgroundColor")
    with visit(browser, site.url(), until="load", color_scheme="dark", **WIDE) as dark:
        assert dark.page.evaluate("getComputedStyle(document.body).backgroundColor") != light
        assert dark.errors == []
        screenshot(dark.page, shots, "home-dark", whole=False)
    for path in ("", "status"):
        with visit(
            browser, site.url(path), until="load", viewport={"width": 390, "height": 800}, **LOGIN
        ) as narrow:
            overflow = narrow.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, path
            screenshot(narrow.page, shots, f"narrow-{path or 'home'}", whole=False)


def test_status_refreshes_itself_without_a_reload(browser: Any, site: DashboardSite) -> None:
    """A config change the daemon picks up shows in the open page, which is never reloaded."""
    with visit(browser, site.url("status?refresh=1"), until="load", **WIDE, **LOGIN) as seen:
        page = seen.page
        page.evaluate("window.notReloaded = true")
        row = page.locator("#sources tr").first
        assert "backoff after 1 failure" in row.inner_text()
        config = yaml.safe_load(site.config.read_text(encoding="utf-8"))
        offline = next(s for s in config["sources"] if s["name"] == site.unreachable)
        offline["interval"] = "20m"  # another config: it is polled again soon
        site.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        offline_row = page.locator(f"#sources tr:has-text('{site.unreachable}')")
        # The new plan ("config changed: polled again soon"), or already the poll it led to.
        wait_for(
            lambda: any(
                words in offline_row.inner_text() for words in ("config changed", "backoff after 2 failures")
            ),
            timeout=20,
            what="the row to show the new plan",
        )
        assert page.evaluate("window.notReloaded") is True
        assert seen.errors == []
        asked = "/status.json?refresh=1&html=1"  # the view it shows
        assert any(url.endswith(asked) for _kind, url in seen.requests)


def test_docs_screenshots_are_small() -> None:
    """The README's pictures stay a few tens of KB (they are committed)."""
    for name in ("dashboard.png", "status.png", "post.png"):
        path = REPO / "docs" / name
        if path.exists():
            assert path.stat().st_size < 200_000, name
