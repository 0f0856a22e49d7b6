"""Transforms: full text from a local article page (fetched once, then cached), OpenCC, rewrites."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import frontmatter
import pytest
from starlette.staticfiles import StaticFiles
from support.helpers import FIXTURES, run_cli, write_config
from support.servers import AppServer

from aggregator import transforms
from aggregator.config import TransformsConfig, load_config
from aggregator.errors import ConfigError
from aggregator.model import SourceRules
from aggregator.normalize import normalize
from aggregator.parse import parse_document

ARTICLE = FIXTURES / "sources" / "article.html"


class CountingServer:
    """A static server that counts the requests for each path."""

    def __init__(self, directory: Path) -> None:
        self.hits: Counter[str] = Counter()
        self.files = StaticFiles(directory=directory)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.hits[scope["path"]] += 1
        await self.files(scope, receive, send)


@pytest.fixture
def counting(feed_dir: Path) -> Iterator[tuple[CountingServer, AppServer]]:
    app = CountingServer(feed_dir)
    with AppServer(app) as server:
        yield app, server


def _rss(items: list[tuple[str, str]]) -> str:
    body = "".join(
        f"<item><title>{title}</title><link>{link}</link><guid>{link}</guid>"
        "<pubDate>Mon, 05 Oct 2026 08:00:00 GMT</pubDate>"
        "<description>Short teaser only.</description></item>"
        for title, link in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Teasers</title>{body}</channel></rss>'


def _posts(site: Path) -> dict[str, frontmatter.Post]:
    return {p["title"]: p for p in map(frontmatter.load, sorted((site / "posts").rglob("*.md")))}


def test_full_text_is_extracted_from_the_article_page_and_cached(
    tmp_path: Path, feed_dir: Path, counting: tuple[CountingServer, AppServer]
) -> None:
    app, server = counting
    shutil.copy(ARTICLE, feed_dir / "lighthouse.html")
    shutil.copy(ARTICLE, feed_dir / "second.html")
    (feed_dir / "feed.xml").write_text(
        _rss([("Lighthouse", server.url("lighthouse.html"))]), encoding="utf-8"
    )
    site = tmp_path / "site"
    config = write_config(
        site, [{"name": "teasers", "url": server.url("feed.xml"), "transforms": {"full_text": True}}]
    )
    assert run_cli("fetch", config=config).returncode == 0
    post = _posts(site)["Lighthouse"]
    # The article's own text replaced the teaser; navigation, sidebar and footer are gone.
    assert "thirty-one years without missing a single night" in post.content
    assert "Short teaser only" not in post.content
    for boilerplate in ("Ten tricks", "Subscribe now", "Copyright the harbour society", "<nav"):
        assert boilerplate not in post.content
    assert app.hits["/lighthouse.html"] == 1
    assert len(list((site / "data" / "articles").glob("*.json"))) == 1
    post_file = next((site / "posts").rglob("*.md"))
    written = post_file.stat().st_mtime_ns

    # A new entry arrives: the feed is read again and every entry shaped again, yet the first
    # article comes from the cache (no second request) and its post is not rewritten.
    (feed_dir / "feed.xml").write_text(
        _rss([("Lighthouse", server.url("lighthouse.html")), ("Second", server.url("second.html"))]),
        encoding="utf-8",
    )
    result = run_cli("fetch", "--json", config=config)
    assert result.returncode == 0, result.stderr
    assert '"new": 1' in result.stdout and '"updated": 0' in result.stdout
    assert app.hits["/lighthouse.html"] == 1
    assert app.hits["/second.html"] == 1
    assert post_file.stat().st_mtime_ns == written
    assert "thirty-one years" in _posts(site)["Second"].content


def test_article_fetches_per_update_are_capped_and_the_rest_come_later(
    tmp_path: Path,
    feed_dir: Path,
    counting: tuple[CountingServer, AppServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, server = counting
    monkeypatch.setattr(transforms, "MAX_ARTICLES_PER_UPDATE", 1)
    for name in ("one.html", "two.html"):
        shutil.copy(ARTICLE, feed_dir / name)
    feed = _rss([("One", server.url("one.html")), ("Two", server.url("two.html"))]).encode()
    parsed = parse_document(feed, {}, server.url("feed.xml"))
    posts = [normalize(e, SourceRules(name="s", categories=()), datetime.now(UTC)) for e in parsed.entries]
    config = load_config(write_config(tmp_path, []))

    async def shape() -> list[str]:
        transformer = transforms.Transformer(config)
        try:
            shaped = await transformer.apply(posts, TransformsConfig(full_text=True), trusted=False)
        finally:
            await transformer.aclose()
        return [p.body for p in shaped]

    first = asyncio.run(shape())
    assert (app.hits["/one.html"], app.hits["/two.html"]) == (1, 0)
    assert "thirty-one years" in first[0] and first[1] == posts[1].body
    second = asyncio.run(shape())
    assert (app.hits["/one.html"], app.hits["/two.html"]) == (1, 1)
    assert all("thirty-one years" in body for body in second)


CHINESE_FEED = """\
<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>简体频道</title>
<item><title>汉字转换测试：简体中文</title><link>https://example.org/简体/1</link>
<pubDate>Mon, 05 Oct 2026 08:00:00 GMT</pubDate>
<description><![CDATA[<p>这是简体中文的正文。<a href="https://example.org/简体/页面">阅读更多</a></p>]]></description>
</item></channel></rss>
"""


def test_opencc_converts_title_and_text_but_not_urls_then_rewrites_apply(tmp_path: Path) -> None:
    feed = tmp_path / "chinese.xml"
    feed.write_text(CHINESE_FEED, encoding="utf-8")
    site = tmp_path / "site"
    config = write_config(
        site,
        [{"name": "简体", "url": str(feed), "transforms": {"opencc": "s2t"}}],
        # Global rewrites run after the source's conversion, so they see Traditional text.
        transforms={"rewrite": [{"field": "title", "pattern": "^(.*)：", "replace": r"[\1] "}]},
    )
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr
    (post,) = _posts(site).values()
    assert post["title"] == "[漢字轉換測試] 簡體中文"
    assert "這是簡體中文的正文。" in post.content and "閱讀更多" in post.content
    assert 'href="https://example.org/简体/页面"' in post.content  # attribute values are left alone
    assert post["link"] == "https://example.org/简体/1"


def test_a_transform_whose_package_is_missing_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install -e .` without the extras: the config says which package to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trafilatura" else real(name)
    )
    config = write_config(tmp_path, [{"name": "a", "url": "a.xml", "transforms": {"full_text": True}}])
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "sources[0].transforms.full_text: needs the trafilatura package" in str(caught.value)
    assert "pip install 'aggregator[extras]'" in str(caught.value)


# Run in the CLI's process before anything else: lxml_html_clean is not installed, as in a venv where
# pip left out lxml's html_clean part (lxml.html.clean then raises ImportError, which justext hits).
_WITHOUT_HTML_CLEAN = """
import sys


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lxml_html_clean":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.mark.parametrize("command", ["check", "fetch"])
def test_a_broken_optional_dependency_is_one_line_naming_the_extra(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_WITHOUT_HTML_CLEAN, encoding="utf-8")
    shutil.copy(FIXTURES / "formats" / "rss2.xml", tmp_path / "feed.xml")
    config = write_config(tmp_path, [{"name": "a", "url": "feed.xml"}], transforms={"full_text": True})
    result = run_cli(command, config=config, env={"PYTHONPATH": str(blocker)})
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "full_text needs the trafilatura package" in lines[0]
    assert "lxml_html_clean" in lines[0]
    assert lines[0].endswith("pip install 'aggregator[extras]'")
    assert not (tmp_path / "posts").exists() or not any((tmp_path / "posts").rglob("*.md"))
