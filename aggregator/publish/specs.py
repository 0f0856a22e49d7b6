"""Which feeds exist, where they live and what they are called.

One feed of each format for everything, for each source, and for every level
of every category hierarchy (a parent holds its children's posts)::

    all/{rss.xml,atom.xml,feed.json}
    source/<source>/{rss.xml,atom.xml,feed.json}
    category/<level1>/<level2>/.../{rss.xml,atom.xml,feed.json}
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote

from aggregator.config import Config
from aggregator.keys import ALL_KEY, category_slugs, slugify, split_key

FORMAT_FILES = {"rss": "rss.xml", "atom": "atom.xml", "json": "feed.json"}
MEDIA_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
FEED_KINDS = ("all", "source", "category")
GENERATOR = "aggregator"
GENERATOR_URI = "https://github.com/aggregator-project/aggregator"


@dataclass(frozen=True)
class FeedSpec:
    """One published feed: which posts, where, and under what name."""

    key: str
    kind: str  # all | source | category
    parts: tuple[str, ...]  # the source's name, or the category's levels as titled
    title: str
    description: str

    @functools.cached_property
    def relative_path(self) -> str:
        """``all``, ``source/<slug>`` or ``category/<slug>/<slug>...`` (a category key holds its slugs)."""
        if self.kind == "all":
            return "all"
        if self.kind == "category":
            return "/".join((self.kind, *split_key(self.key)[1]))
        return "/".join((self.kind, *(slugify(part) for part in self.parts)))

    @property
    def relative_dir(self) -> PurePosixPath:
        return PurePosixPath(self.relative_path)

    @functools.cached_property
    def url_path(self) -> str:
        return quote(self.relative_path)


def spec_for(key: str, config: Config, names: Sequence[str] | None = None) -> FeedSpec:
    """A feed's place and titles. ``names``: a category's levels as titled (the builder
    picks the first spelling seen, see ``aggregator.categories``); its slugs when not given."""
    kind, parts = split_key(key)
    site = config.site.title
    if kind == ALL_KEY:
        return FeedSpec(key, "all", (), site, config.site.description)
    if kind == "source":
        label = " › ".join(parts)
        return FeedSpec(key, kind, parts, f"{site}: {label}", f"Posts from the source {label}")
    slugs, parts = parts, tuple(names) if names is not None else parts
    label = " › ".join(parts)
    title, description = f"{site}: {label}", f"Posts in the category {label}"
    for custom in config.build.categories:
        if category_slugs(custom.path) == slugs:
            title = custom.title or title
            description = custom.description if custom.description is not None else description
    return FeedSpec(key, kind, parts, title, description)


def feed_url(config: Config, spec: FeedSpec, fmt: str) -> str:
    return f"{config.site.base_url}{spec.url_path}/{FORMAT_FILES[fmt]}"
