"""What the dashboard's pages show of the feeds, from the index's dashboard reader.

The reader (``aggregator.index.dashboard.DashboardIndex``: SQLite's or PostgreSQL's)
runs the SQL; this module names the feeds as the builder does and puts them in the
index page's order. Every function takes the reader, so either index gives the same
pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from aggregator.categories import display_path, first_spellings, spelling_in
from aggregator.config import Config
from aggregator.config_categories import category_paths
from aggregator.dashboard.paging import paging
from aggregator.index.dashboard import DashboardIndex, DashboardReader, PostSummary
from aggregator.keys import CATEGORY_PREFIX, feed_keys_for, split_key
from aggregator.publish.specs import FeedSpec, spec_for

__all__ = [
    "LISTING_ORDER",
    "DashboardIndex",
    "DashboardReader",
    "FeedListing",
    "PostSummary",
    "SourceFeedsPage",
    "feeds_of",
    "published_listings",
    "source_feeds_page",
]

# The index page's order: everything, the categories as a tree, then the sources.
LISTING_ORDER = ("all", "category", "source")
# Source feeds on one page of the live /: at 20,000 sources the whole list made an 8 MB page
# (bench/dashboard_probe.py). The category tree is always shown whole.
SOURCE_FEEDS_PAGE = 200


@dataclass(frozen=True)
class FeedListing:
    """A published feed as the index page lists it."""

    spec: FeedSpec
    count: int  # on the live page: every post the feed key holds; in the static page: the feed's items
    newest: datetime | None


def published_listings(reader: DashboardIndex, config: Config) -> list[FeedListing]:
    """Every published feed, everything first, then categories (as a tree), then sources."""
    counts = reader.feed_post_counts()
    names = _CategoryNames(reader, config)
    listings = [
        FeedListing(names.spec(key), counts.get(key, 0), newest)
        for key, _title, _items, newest in reader.published_feeds()
    ]
    return sort_listings(listings)


@dataclass(frozen=True)
class SourceFeedsPage:
    """The listings the live / shows: everything, every category, and one page of the source feeds."""

    listings: list[FeedListing]
    sources: int  # source feeds in all
    number: int  # 1-based, at most ``pages``
    pages: int
    first: int  # the first shown source feed's place (1-based; 0 when there are none)
    last: int


def source_feeds_page(
    listings: Sequence[FeedListing], asked: int, size: int = SOURCE_FEEDS_PAGE
) -> SourceFeedsPage:
    """``listings`` (index.html's order) with page ``asked`` of the source feeds, the last past the end"""
    others = [listing for listing in listings if listing.spec.kind != "source"]
    sources = [listing for listing in listings if listing.spec.kind == "source"]
    page = paging(len(sources), asked, size)
    shown = sources[page.start : page.stop]
    return SourceFeedsPage([*others, *shown], len(sources), page.number, page.pages, page.first, page.last)


def sort_listings(listings: Iterable[FeedListing]) -> list[FeedListing]:
    """The order of index.html: everything, each category before its children, then the sources."""
    return sorted(listings, key=lambda f: (LISTING_ORDER.index(f.spec.kind), f.spec.parts))


def feeds_of(reader: DashboardIndex, config: Config, post: PostSummary) -> list[FeedSpec]:
    """The published feeds that hold ``post``, in index.html's order."""
    # Not in any feed yet (a build is pending): the feeds it will be in.
    keys = reader.post_feed_keys(post.source, post.id) or feed_keys_for(post.source, post.categories)
    names = _CategoryNames(reader, config)
    return [f.spec for f in sort_listings(FeedListing(names.spec(key), 0, None) for key in keys)]


class _CategoryNames:
    """How each category level is titled: its first spelling in the config, else in its earliest post.

    The builder's rule (``FeedBuilder._level_name``), read from the same index.
    """

    def __init__(self, reader: DashboardIndex, config: Config) -> None:
        self.reader = reader
        self.config = config
        self.configured = first_spellings(category_paths(config))
        self.from_posts: dict[tuple[str, ...], str | None] = {}

    def spec(self, key: str) -> FeedSpec:
        if not key.startswith(CATEGORY_PREFIX):
            return spec_for(key, self.config)
        return spec_for(key, self.config, display_path(split_key(key)[1], self._level))

    def _level(self, slugs: tuple[str, ...]) -> str | None:
        name = self.configured.get(slugs)
        if name is None:
            if slugs not in self.from_posts:
                paths = self.reader.first_post_categories(CATEGORY_PREFIX + "\x1f".join(slugs))
                spelt = spelling_in(slugs, paths)
                self.from_posts[slugs] = spelt[-1] if spelt else None
            name = self.from_posts[slugs]
        return name
