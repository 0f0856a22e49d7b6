"""A post as it is published: the item model every format renders from.

``item_and_content`` turns an indexed post into a ``FeedItem``: fields cleaned of the characters
XML forbids, links mapped to URIs, the content capped (``truncate_html``), ids chosen for RSS/JSON
Feed and for Atom, an image enclosure made from a lead image. Most of the cleaning is skipped
when a quick test shows there is nothing to clean (see ``_clean``, ``_clean_encoded``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime

import aggregator.uris as uris
from aggregator.config import Config
from aggregator.index.feeds import IndexedPost
from aggregator.text import clean_text, summary_of


@dataclass(frozen=True)
class ItemOptions:
    """The settings an item's rendering depends on (and nothing feed-specific)."""

    full_content: bool = True
    max_content_chars: int | None = None

    @classmethod
    def of(cls, config: Config) -> ItemOptions:
        return cls(config.build.full_content, config.build.max_content_chars)


@dataclass(frozen=True)
class FeedItem:
    """A post cleaned for publishing: no XML-forbidden characters, content capped, ids chosen."""

    id: str
    atom_id: str
    permalink: bool
    title: str
    link: str
    author: str
    published: datetime
    updated: datetime
    summary: str
    content: str | None  # HTML, or None for summary-only feeds
    terms: tuple[str, ...]
    image: str | None
    enclosures: tuple[tuple[str, str, int], ...]  # (url, media type, length)
    # The dates' isoformat(), as Atom writes them, made once for Atom and JSON (a twentieth of an item).
    published_iso: str = field(default="", compare=False, repr=False)
    updated_iso: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        """Made here when constructed (``item_and_content`` sets every field itself)."""
        object.__setattr__(self, "published_iso", self.published.isoformat())
        object.__setattr__(self, "updated_iso", self.updated.isoformat())


def item_and_content(post: IndexedPost, options: ItemOptions) -> tuple[FeedItem, bytes | None]:
    """The post as published, and its content in UTF-8 (made on the way, for the templates)."""
    # Links as URIs (spaces, non-ASCII paths): RSS and JSON Feed want URLs, and so do strict readers.
    link = _url(post.link)
    item_id = _clean(post.id) or uris.own_id(post.source, post.id)
    content = data = None
    if options.full_content and post.body:
        content, data = _clean_encoded(post.body)
        if not content:
            content = data = None
        elif options.max_content_chars is not None and len(content) > options.max_content_chars:
            content = truncate_html(content, options.max_content_chars)
            data = content.encode()
    image = _url(post.headimg) if post.headimg else None
    title = _clean(post.title) or "(untitled)"
    enclosures = tuple(
        (_url(e.url), _clean(e.type) or "application/octet-stream", e.length) for e in post.enclosures
    )
    if not enclosures and image:
        enclosures = ((image, _image_type(image), 0),)
    published = post.date
    updated = post.updated if post.updated and post.updated > published else published
    published_iso = published.isoformat()
    # FeedItem(...), set in one __dict__ update: the frozen dataclass's __init__ sets each field with
    # object.__setattr__, a twentieth of an item's rendering.
    item: FeedItem = object.__new__(FeedItem)
    item.__dict__.update(
        id=item_id,
        atom_id=uris.atom_id(post.source, post.id),
        # A guid that is a permalink must be a URL as it stands (the link is one).
        permalink=item_id == link and item_id.startswith(("http://", "https://")),
        title=title,
        link=link,
        author=_clean(post.author) or _clean(post.source),
        published=published,
        updated=updated,
        summary=(_clean(post.summary) if post.summary else summary_of(post.body)) or title,
        content=content,
        terms=_item_terms(post.categories, post.tags),
        image=image,
        enclosures=enclosures,
        published_iso=published_iso,
        updated_iso=published_iso if updated is published else updated.isoformat(),
    )
    return item, data


def _url(value: str) -> str:
    """A link cleaned and mapped to a URI; almost every link is one already (``uri_from_iri``'s fast exit)."""
    return uris.uri_from_iri(_clean(value))


def _clean(value: str) -> str:
    """``clean_text(value)``, skipping its regular expression when there is nothing to remove.

    Every character XML forbids (C0 controls but tab/newline/CR, DEL, surrogates, U+FFFE/U+FFFF)
    is unprintable, so a printable string is already clean; ``str.isprintable`` is a C loop
    several times cheaper than the regex on the short fields of an item (a property test holds
    the two equal).
    """
    return value if value.isprintable() else clean_text(value)


# The bytes that are XML-forbidden characters in UTF-8 (no ASCII byte occurs inside a multi-byte
# sequence, so these mean the same characters there).
_FORBIDDEN_BYTES = bytes((*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))


def _clean_encoded(text: str) -> tuple[str, bytes]:
    """``clean_text(text)`` and its UTF-8 encoding, for bodies (kilobytes each).

    The regex costs about 4 ns a character on non-Latin-1 text; almost every body is clean,
    and that is answered for a fraction of it: the UTF-8 encoding (needed anyway) fails on
    a lone surrogate, ``bytes.translate`` deletes the forbidden control bytes (a length
    change tells), and U+FFFE/U+FFFF are found with ``in`` (a memchr search).
    """
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        pass
    else:
        if (
            len(data.translate(None, _FORBIDDEN_BYTES)) == len(data)
            and "\ufffe" not in text
            and "\uffff" not in text
        ):
            return text, data
    text = clean_text(text)
    return text, text.encode()


# Terms of posts already seen, by their (categories, tags): the lists repeat across posts.
@functools.lru_cache(maxsize=4096)
def _item_terms(categories: tuple[str, ...], tags: tuple[str, ...]) -> tuple[str, ...]:
    """The categories, then the tags, cleaned, without blank ones or repeats (first kept)."""
    cleaned = (_clean(term) for term in (*categories, *tags))
    return tuple(dict.fromkeys(term for term in cleaned if term.strip()))


def truncate_html(markup: str, limit: int) -> str:
    """At most about ``limit`` characters of HTML, cut between tags, open elements closed."""
    if len(markup) <= limit:
        return markup
    cut = limit
    if markup.rfind("<", 0, cut) > markup.rfind(">", 0, cut):
        cut = markup.rfind("<", 0, cut)  # not inside a tag
    amp = markup.rfind("&", 0, cut)
    if amp > markup.rfind(";", 0, cut) and cut - amp <= 10:
        cut = amp  # not inside an entity
    head = markup[:cut]
    open_tags: list[str] = []
    for match in _TAG.finditer(head):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if self_closing or name in _VOID:
            continue
        if not closing:
            open_tags.append(name)
        elif name in open_tags:
            del open_tags[len(open_tags) - 1 - open_tags[::-1].index(name) :]
    return head.rstrip() + "…" + "".join(f"</{name}>" for name in reversed(open_tags))


_TAG = re.compile(r"<(/?)([A-Za-z][\w:-]*)(?:\s[^>]*?)?(/?)>")
_VOID = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()  # noqa: SIM905
)


def _image_type(url: str) -> str:
    """The media type its name's suffix says (every suffix known holds just its leading dot)."""
    lowered = url.lower().partition("?")[0]
    return _IMAGE_TYPES.get(lowered[lowered.rfind(".") :], "image/jpeg")


_IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".svg": "image/svg+xml",
                ".avif": "image/avif"}  # fmt: skip
