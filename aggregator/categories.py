"""One category per folder: spellings that slug alike are one category.

A category level is identified by the slugs of its path (``keys.category_key``),
so ``[Programming, The Pioneer Vector - Latest]`` and ``[programming, The
Pioneer Vector－Latest]`` (a fullwidth hyphen) are one category with one feed,
whichever part of the config or of the run made them: a source's categories,
``category_defaults``, a category rule, or a post whose source is gone.

Its name in titles, the index page and the OPML is the first spelling seen,
level by level: the first in config order (sources in order, each followed by
its rules, then ``build.categories``), else the earliest post's. A child's
name starts with its parent's, so a category nests under one folder.

Pure functions of data, no I/O; ``config_categories.config_warnings`` and the builder use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from aggregator.keys import category_slugs

Place = TypeVar("Place")


def first_spellings(paths: Iterable[Sequence[str]]) -> dict[tuple[str, ...], str]:
    """Each level (by its slugs) and how the first path that has it spells its last part."""
    names: dict[tuple[str, ...], str] = {}
    for path in paths:
        slugs = category_slugs(path)
        for depth in range(1, len(slugs) + 1):
            names.setdefault(slugs[:depth], path[depth - 1])
    return names


def spelling_in(slugs: Sequence[str], paths: Iterable[Sequence[str]]) -> tuple[str, ...] | None:
    """The first of ``paths`` whose first levels make ``slugs``, cut to them; None when none does."""
    depth = len(slugs)
    for path in paths:
        if len(path) >= depth and category_slugs(path[:depth]) == tuple(slugs):
            return tuple(path[:depth])
    return None


def display_path(slugs: Sequence[str], name_of: Callable[[tuple[str, ...]], str | None]) -> tuple[str, ...]:
    """A category's name, level by level: each level's own spelling (``name_of`` its slugs),
    else its slug. Built from the levels above, so siblings share their parent's name."""
    slugs = tuple(slugs)
    return tuple(name_of(slugs[:depth]) or slugs[depth - 1] for depth in range(1, len(slugs) + 1))


@dataclass(frozen=True)
class SpellingClash(Generic[Place]):
    """A level spelt ``spelling`` at ``place`` after ``first_spelling`` at ``first_place``."""

    place: Place
    spelling: str
    first_place: Place
    first_spelling: str
    slugs: tuple[str, ...]

    @property
    def folder(self) -> str:
        return "/".join(("category", *self.slugs))


def spelling_clashes(
    paths: Iterable[tuple[Sequence[str], Sequence[Place | None]]],
) -> list[SpellingClash[Place]]:
    """Levels written two ways, in order: each (path, where each level was written) is checked
    against the levels before it. A level with no place (a rule's levels above its own
    category, which the source wrote) counts as seen without being reported again."""
    first: dict[tuple[str, ...], tuple[str, Place | None]] = {}
    clashes: list[SpellingClash[Place]] = []
    reported: set[tuple[Place, Place]] = set()
    for path, places in paths:
        slugs = category_slugs(path)
        for depth in range(1, len(slugs) + 1):
            level, spelling, place = slugs[:depth], path[depth - 1], places[depth - 1]
            seen = first.get(level)
            if seen is None:
                first[level] = (spelling, place)
                continue
            first_spelling, first_place = seen
            if spelling == first_spelling or place is None or first_place is None:
                continue
            if (place, first_place) not in reported:
                reported.add((place, first_place))
                clashes.append(SpellingClash(place, spelling, first_place, first_spelling, level))
    return clashes
