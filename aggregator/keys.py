"""Names made from text: slugs (path components) and the feed keys that name published feeds.

Small and import-free of the rest of the package, so that configuration,
storage and publishing can all name things the same way without importing each other.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

SLUG_BYTES = 80
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d|conin|conout|clock)$", re.IGNORECASE)
_NOT_SLUG = re.compile(r"[^\w]+", re.UNICODE)

# Feed keys name the feeds a post belongs to: everything, its source, and each
# level of its category hierarchy. They are stored as text in the index.
# A category level is named by the slugs of its path, the folder its feed is
# published in: spellings that make one folder (``Vector - Latest`` and
# ``Vector－Latest``) are one category, one feed. How it is titled is the
# builder's choice (see ``aggregator.categories``).
ALL_KEY = "all"
CATEGORY_PREFIX = "category\x1f"


def source_key(name: str) -> str:
    return "source\x1f" + name


def category_key(path: Sequence[str]) -> str:
    return CATEGORY_PREFIX + "\x1f".join(category_slugs(path))


def category_slugs(path: Sequence[str]) -> tuple[str, ...]:
    """The folder names of a category path, one a level."""
    return tuple(_category_slug(part) for part in path)


@functools.lru_cache(maxsize=8192)
def _category_slug(part: str) -> str:
    # Every saved post asks for its levels' slugs; a few hundred names serve them all.
    return slugify(part)


def slugged_category_key(key: str) -> str:
    """A category key of schema 4 or older (the path as spelt) as it is named now."""
    return category_key(split_key(key)[1])


def split_key(key: str) -> tuple[str, tuple[str, ...]]:
    kind, *parts = key.split("\x1f")
    return kind, tuple(parts)


def feed_keys_for(source: str, categories: Sequence[str]) -> list[str]:
    return [ALL_KEY, source_key(source), *_category_keys(tuple(categories))]


@functools.lru_cache(maxsize=4096)
def _category_keys(categories: tuple[str, ...]) -> tuple[str, ...]:
    # Asked twice for every saved post, and nearly every post of a source has the same path.
    slugs = category_slugs(categories)
    return tuple(CATEGORY_PREFIX + "\x1f".join(slugs[: depth + 1]) for depth in range(len(slugs)))


def slugify(text: str, max_bytes: int = SLUG_BYTES) -> str:
    """A readable, safe path component: letters of any script kept, the rest dashes.

    Case-folded (no two names differ only by case), at most ``max_bytes`` of
    UTF-8, never empty, never ``.``/``..`` or a name Windows reserves.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    slug = _NOT_SLUG.sub("-", text).strip("-_")
    encoded = slug.encode("utf-8", "ignore")[:max_bytes]
    slug = encoded.decode("utf-8", "ignore").strip("-_")
    if not slug or _WINDOWS_RESERVED.match(slug):
        slug = f"_{slug}" if slug else "_"
    return slug


def source_folder(name: str) -> str:
    """The folder a source's posts and feed go to: two names that make the same one would collide."""
    return slugify(name.strip())
