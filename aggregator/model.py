"""The typed objects that cross the stages: entries as parsed, posts, and what a save made of them.

No I/O here, and nothing but the standard library and ``aggregator.text``:
every stage imports these, so they import no stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cached_property

from aggregator.text import summary_of


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str = ""
    length: int = 0


@dataclass(frozen=True)
class EntryData:
    """One entry as the feed gave it; nothing cleaned yet."""

    id: str | None
    link: str | None
    title: str | None
    title_is_html: bool
    content: str | None  # HTML
    summary: str | None  # HTML
    author: str | None
    published: datetime | None
    updated: datetime | None
    tags: tuple[str, ...]
    enclosures: tuple[Enclosure, ...]
    images: tuple[str, ...]  # media:thumbnail, media:content images, in that order
    base: str  # what relative URLs in this entry resolve against


@dataclass(frozen=True)
class FeedData:
    title: str
    link: str
    version: str
    entries: tuple[EntryData, ...]
    ttl: float | None = None  # RSS <ttl>, in seconds
    warning: str | None = None  # set when the document was malformed but readable


@dataclass(frozen=True)
class SourceRules:
    """What the config says about how a source's entries become posts."""

    name: str
    categories: tuple[str, ...]
    author: str | None = None
    trusted: bool = False
    comments: bool = False
    escape_braces: bool = True
    feed_title: str = ""


@dataclass(frozen=True)
class MergedEntry:
    """Another source's copy of the same article, folded into a post (cross-source merging)."""

    source: str
    id: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Post:
    source: str
    id: str
    title: str
    link: str
    categories: tuple[str, ...]
    author: str
    comments: bool
    date: datetime
    updated: datetime | None
    headimg: str | None
    tags: tuple[str, ...]
    enclosures: tuple[Enclosure, ...]
    body: str
    # When the entry was first seen: the date fallback, kept across runs and reindexes.
    first_seen: datetime | None = None
    # Other sources' copies of this article (same canonical link), when merging is on.
    merged: tuple[MergedEntry, ...] = ()

    @cached_property  # a frozen post: computed once (the store asks several times)
    def content_hash(self) -> str:
        """Changes exactly when something a reader would see changes."""
        material = json.dumps(
            [
                self.title,
                self.link,
                self.categories,
                self.author,
                self.comments,
                self.date.isoformat(),
                self.headimg,
                self.tags,
                [(e.url, e.type, e.length) for e in self.enclosures],
                self.body,
                # Only merged posts add this, so every other post's hash stays as it was.
                *([[(m.source, m.id, m.categories) for m in self.merged]] if self.merged else []),
            ],
            ensure_ascii=False,
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]

    @cached_property
    def summary(self) -> str:
        return summary_of(self.body)


@dataclass(frozen=True)
class NormalizedFeed:
    """A fetched document's posts, ready for the store: what a parser worker sends back."""

    title: str
    version: str
    posts: tuple[Post, ...]
    # Ids of posts dated by the first-seen fallback: a known entry keeps its stored first sight.
    undated: frozenset[str] = frozenset()
    ttl: float | None = None
    warning: str | None = None


EntryKey = tuple[str, str]  # (source, entry id)


class Outcome(Enum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    CAPPED = "capped"  # changed upstream, but rewritten too often lately
    MERGED = "merged"  # another source's post has the same article: folded into it
    PRUNED = "pruned"  # removed by retention earlier; not brought back
    DELETED = "deleted"  # its post file was deleted by hand; not brought back
