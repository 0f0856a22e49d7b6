"""The dashboard's pages as HTML, from Jinja2 templates (autoescaped) and the values of ``data``/``health``.

The feeds folder's static ``index.html`` is the home page without its live
parts (no post list, no filter, no status), with the style sheet inlined, so it
works from any static host.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup

from aggregator.config import Config
from aggregator.dashboard.data import FeedListing, PostSummary, SourceFeedsPage, sort_listings
from aggregator.dashboard.health import ATTENTION, HEALTHS, RowPage, StatusView, Summary, relative, sparkline
from aggregator.publish.specs import FORMAT_FILES, MEDIA_TYPES, FeedSpec, feed_url

FORMAT_LABELS = {"rss": "RSS", "atom": "Atom", "json": "JSON"}
# How often /status asks /status.json for fresh rows.
REFRESH_SECONDS = 15


def static_file(name: str) -> bytes:
    """One of the dashboard's own assets (``static/``)."""
    return resources.files("aggregator.dashboard").joinpath("static", name).read_bytes()


def post_url(path: str) -> str:
    """A post page's address: ``/post/`` and the post file's path without ``.md``."""
    return "/post/" + quote(path.removesuffix(".md"))


def post_path(url_path: str) -> str:
    """The post file's path (relative to the posts folder) that a post page's address names."""
    return url_path.strip("/") + ".md"


def _utc(moment: datetime | None, pattern: str) -> str:
    return moment.astimezone(UTC).strftime(pattern) if moment else "—"


def _web_url(url: str | None) -> bool:
    return bool(url) and str(url).lower().startswith(("http://", "https://"))


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aggregator.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        utc_minutes=lambda m: _utc(m, "%Y-%m-%d %H:%M UTC"),
        utc_seconds=lambda m: _utc(m, "%Y-%m-%d %H:%M:%S UTC"),
        iso=lambda m: m.astimezone(UTC).isoformat(timespec="seconds") if m else "",
        relative=relative,
        sparkline=sparkline,
        post_url=post_url,
        web_url=_web_url,
    )
    env.globals.update(
        format_files=FORMAT_FILES, format_labels=FORMAT_LABELS, media_types=MEDIA_TYPES,
        healths=HEALTHS, attention=ATTENTION, status_link=status_link, health_link=health_link,
    )  # fmt: skip
    return env


def _render(template: str, config: Config, **values: Any) -> str:
    values.setdefault("live", True)
    return _environment().get_template(template).render(site=config.site, **values)


def _index(config: Config, listings: Sequence[FeedListing], **values: Any) -> str:
    return _render(
        "index.html",
        config,
        page="home",
        listings=listings,
        formats=config.build.formats,
        feed_url=lambda spec, fmt: feed_url(config, spec, fmt),
        **values,
    )


def render_home(config: Config, shown: SourceFeedsPage, posts: Sequence[PostSummary], now: datetime) -> str:
    return _index(config, shown.listings, posts=posts, now=now, source_feeds=shown)


def render_static_index(config: Config, feeds: Sequence[tuple[FeedSpec, int, datetime | None]]) -> bytes:
    """The feeds folder's index.html: each feed with its item count, newest item and formats."""
    listings = sort_listings(FeedListing(spec, count, newest) for spec, count, newest in feeds)
    css = static_file("style.css").decode()
    page = _index(config, listings, live=False, posts=(), css=css, now=None, source_feeds=None)
    return (page + "\n").encode()


def status_link(view: StatusView, page: int = 1) -> str:
    """/status showing ``page`` of ``view``'s rows."""
    asked = StatusView(view.health, view.words, page).query()
    return "/status" + ("?" + urlencode(asked) if asked else "")


def health_link(health: str) -> str:
    """/status showing the sources of one health (the summary line's links)."""
    return status_link(StatusView(health=health))


def render_status(
    config: Config,
    shown: RowPage,
    summary: Summary,
    now: datetime,
    *,
    refresh_seconds: int = REFRESH_SECONDS,
) -> str:
    return _render(
        "status.html", config, page="status", shown=shown, summary=summary, now=now,
        refresh_seconds=refresh_seconds,
    )  # fmt: skip


def render_status_parts(config: Config, shown: RowPage, summary: Summary, now: datetime) -> dict[str, str]:
    """The parts /status replaces when it refreshes: the rows, the summary line and the pager."""
    env = _environment()
    return {
        "rows": env.get_template("_status_rows.html").render(shown=shown, now=now),
        "summary": env.get_template("_summary.html").render(summary=summary, view=shown.view),
        "pager": env.get_template("_pager.html").render(shown=shown, summary=summary),
    }


def render_post(
    config: Config,
    post: PostSummary,
    *,
    body: str,
    meta: Mapping[str, Any] | None,
    feeds: Sequence[FeedSpec],
) -> str:
    """A post page; ``body`` is sanitized HTML, ``meta`` the file's front matter (None: unreadable)."""
    return _render(
        "post.html",
        config,
        page="post",
        post=post,
        body=Markup(body),  # sanitized by the caller (nh3)
        meta=meta,
        meta_items=[(key, _shown(value)) for key, value in (meta or _index_meta(post)).items()],
        feeds=feeds,
        formats=config.build.formats,
    )


def render_message(config: Config, heading: str, message: str) -> str:
    return _render("message.html", config, page="message", heading=heading, message=message)


def _index_meta(post: PostSummary) -> dict[str, Any]:
    return {
        "title": post.title,
        "categories": list(post.categories),
        "author": post.author,
        "date": post.date,
        "link": post.link,
        "id": post.id,
        "source": post.source,
        "headimg": post.headimg,
    }


def _shown(value: Any) -> str:
    """A front-matter value as text: lists joined, mappings as ``key: value``, nothing as ``—``."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"  # as the file says it
    if isinstance(value, datetime):
        return _utc(value, "%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, list | tuple):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_shown(item)}" for key, item in value.items())
    return str(value)
