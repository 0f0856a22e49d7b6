"""Opt-in changes to the posts a fetch keeps, in this order:

1. ``full_text``: the body becomes the article extracted (trafilatura) from
   the entry's page, for feeds that carry only a summary. Pages are fetched
   politely (one at a time per host, a small size cap, their own deadline,
   at most ``MAX_ARTICLES_PER_UPDATE`` per update: the rest keep their
   summary until a later update) and every outcome is cached in
   ``<data>/articles/``, so an article is fetched once: later fetches of the
   feed reuse it, and a post's body stays the same from run to run. A failed
   page is tried again after a day.
2. ``opencc``: title and body converted between Simplified and Traditional
   Chinese (only the text between tags, so URLs stay intact).
3. ``rewrite``: regular-expression substitutions on the title or the body.

The extracted or rewritten HTML is sanitized again (unless the source is
trusted, and always for extracted pages), so no transform can bring back
what normalize removed.

trafilatura and opencc are optional packages (the ``extras`` extra), imported
through :mod:`aggregator.optional`: a missing one is one line naming the extra.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggregator import optional
from aggregator.config import Config, SourceConfig, TransformsConfig
from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, FetchLimits, FetchRequest
from aggregator.files import write_atomic
from aggregator.model import Post
from aggregator.normalize import escape_braces, sanitize_html
from aggregator.text import clean_text

log = logging.getLogger("aggregator.transforms")

# Article pages are fetched gently: one at a time per host, few at once, smaller than feeds.
ARTICLE_LIMITS = FetchLimits(
    connect_timeout=10.0, read_timeout=15.0, deadline=30.0, max_body=5 * 1024**2, concurrency=4, per_host=1
)
ARTICLE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
RETRY_FAILED_AFTER = timedelta(days=1)
# Pages fetched per source update at most; the rest keep their summary until a later update
# fetches them (a first poll of a 500-entry feed must not take an hour, nor hammer the site).
MAX_ARTICLES_PER_UPDATE = 20
_TAG = re.compile(r"(<[^>]*>)")


def transforms_for(config: Config, source: SourceConfig) -> TransformsConfig:
    """The global transforms, with the keys the source gives overriding them; rewrites add up."""
    merged = config.transforms
    own = source.transforms
    if own is None:
        return merged
    updates: dict[str, Any] = {key: getattr(own, key) for key in own.model_fields_set}
    updates["rewrite"] = (*merged.rewrite, *own.rewrite)
    return merged.model_copy(update=updates)


def features_enabled(settings: TransformsConfig) -> list[str]:
    """The transforms in ``settings`` that need an optional package."""
    return [feature for feature in ("full_text", "opencc") if getattr(settings, feature)]


def check_dependencies(config: Config) -> None:
    """Import every optional package an enabled transform needs (MissingDependency if one fails)."""
    settings = [config.transforms, *(transforms_for(config, s) for s in config.sources)]
    for feature in sorted({f for each in settings for f in features_enabled(each)}):
        optional.load(feature)


@dataclass(frozen=True)
class CachedArticle:
    url: str
    html: str | None  # None: the page could not be fetched or had no article
    error: str | None
    fetched_at: datetime


class ArticleCache:
    """One JSON file per article URL; written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, url: str) -> Path:
        return self.directory / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:40] + ".json")

    def get(self, url: str) -> CachedArticle | None:
        try:
            data = json.loads(self._path(url).read_text(encoding="utf-8"))
            return CachedArticle(
                url=data["url"],
                html=data["html"],
                error=data["error"],
                fetched_at=datetime.fromisoformat(data["fetched_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged: fetch again

    def put(self, article: CachedArticle) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {
            "url": article.url,
            "html": article.html,
            "error": article.error,
            "fetched_at": article.fetched_at.isoformat(),
        }
        write_atomic(self._path(article.url), json.dumps(data, ensure_ascii=False).encode("utf-8"))


class Transformer:
    """Applies a source's transforms to its kept posts; owns the article fetcher and cache."""

    def __init__(self, config: Config, *, fetcher: Fetcher | None = None) -> None:
        self.cache = ArticleCache(config.data_dir / "articles")
        self.user_agent = config.defaults.user_agent
        self.escape_braces = config.defaults.escape_braces
        self._fetcher = fetcher
        self._own_fetcher = fetcher is None
        self.pages_fetched = 0  # how many article pages went over the network

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.user_agent, ARTICLE_LIMITS)
        return self._fetcher

    async def aclose(self) -> None:
        if self._own_fetcher and self._fetcher is not None:
            await self._fetcher.aclose()
            self._fetcher = None

    async def apply(self, posts: Sequence[Post], settings: TransformsConfig, *, trusted: bool) -> list[Post]:
        for feature in features_enabled(settings):
            optional.load(feature)  # before any page is fetched for it
        out = list(posts)
        if settings.full_text:
            missing = [p.link for p in out if self._needs_fetch(p)]
            allowed = set(missing[:MAX_ARTICLES_PER_UPDATE])
            out = list(await asyncio.gather(*(self._full_text(p, may_fetch=p.link in allowed) for p in out)))
        if settings.opencc:
            out = [convert_chinese(post, settings.opencc) for post in out]
        if settings.rewrite:
            out = [self._rewrite(post, settings, trusted=trusted) for post in out]
        return out

    def _needs_fetch(self, post: Post) -> bool:
        if urlsplit(post.link).scheme not in ("http", "https"):
            return False
        article = self.cache.get(post.link)
        return article is None or (
            article.html is None and datetime.now(UTC) - article.fetched_at > RETRY_FAILED_AFTER
        )

    async def _full_text(self, post: Post, *, may_fetch: bool) -> Post:
        if urlsplit(post.link).scheme not in ("http", "https"):
            return post
        article = self.cache.get(post.link)
        if may_fetch:
            article = await self._fetch_article(post.link, datetime.now(UTC))
            self.cache.put(article)
        if article is None or article.html is None:
            return post
        body = sanitize_html(article.html, post.link)
        return replace(post, body=escape_braces(body) if self.escape_braces else body)

    async def _fetch_article(self, url: str, now: datetime) -> CachedArticle:
        self.pages_fetched += 1
        try:
            result = await self.fetcher.fetch(FetchRequest(url=url, headers={"Accept": ARTICLE_ACCEPT}))
        except FetchError as error:
            log.warning("full text: cannot fetch %s: %s", url, error)
            return CachedArticle(url, None, str(error), now)
        html = await asyncio.to_thread(extract_article, result.body or b"", url)
        if html is None:
            log.info("full text: no article found in %s; the feed's content is kept", url)
            return CachedArticle(url, None, "no article found in the page", now)
        return CachedArticle(url, html, None, now)

    def _rewrite(self, post: Post, settings: TransformsConfig, *, trusted: bool) -> Post:
        title, body = post.title, post.body
        for rule in settings.rewrite:
            if rule.field == "title":
                title = re.sub(rule.pattern, rule.replace, title)
            else:
                body = re.sub(rule.pattern, rule.replace, body)
        if body != post.body and not trusted:
            body = sanitize_html(body, post.link)
            body = escape_braces(body) if self.escape_braces else body
        return replace(post, title=clean_text(title).strip() or post.title, body=body)


def extract_article(page: bytes, url: str) -> str | None:
    """The main article of an HTML page as HTML, or None when none is found."""
    trafilatura = optional.load("full_text")
    html: str | None = trafilatura.extract(
        page,
        url=url,
        output_format="html",
        include_images=True,
        include_links=True,
        include_comments=False,
    )
    return html


@lru_cache(maxsize=16)
def _converter(conversion: str) -> Any:
    return optional.load("opencc").OpenCC(conversion)


def convert_text(text: str, conversion: str) -> str:
    return str(_converter(conversion).convert(text))


def convert_html(markup: str, conversion: str) -> str:
    """Convert the text between tags only: attribute values (URLs) are left alone."""
    parts = _TAG.split(markup)
    return "".join(part if part.startswith("<") else convert_text(part, conversion) for part in parts if part)


def convert_chinese(post: Post, conversion: str) -> Post:
    return replace(
        post,
        title=convert_text(post.title, conversion),
        body=convert_html(post.body, conversion),
    )
