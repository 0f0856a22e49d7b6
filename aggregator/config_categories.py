"""The category paths a config spells, where each level was written, and ``check``'s warnings.

The builder titles category feeds from these paths (``category_paths``); ``aggregator check``
warns of a category spelt two ways, which makes one folder and one feed titled by the first
spelling, and points at both places (``config_warnings``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aggregator.categories import spelling_clashes
from aggregator.config import DEFAULT_CONFIG, Config, load_placed_config


def category_paths(config: Config) -> Iterator[tuple[str, ...]]:
    """Every category path the config spells, in config order: each source's categories, then
    those its rules (its own, then the global ones) file under them; then ``build.categories``.
    The first spelling of a level titles its feed (see ``aggregator.categories``)."""
    for path, _places in _placed_category_paths(config, []):
        yield path


_Place = tuple[str | int, ...]


def _placed_category_paths(
    config: Config, category_defaults: Sequence[Any]
) -> Iterator[tuple[tuple[str, ...], list[_Place | None]]]:
    """Each category path in config order, with where each of its levels was written."""
    for index, source in enumerate(config.sources):
        own: _Place = ("sources", index, "categories")
        inherited: list[_Place | None] = [None] * len(source.categories)
        yield source.categories, [(*own, depth) for depth in range(len(source.categories))]
        for where, rules in ((("sources", index, "rules"), source.rules), (("rules",), config.rules)):
            for number, rule in enumerate(rules):
                placed = [(*where, number, "category", depth) for depth in range(len(rule.category))]
                yield (*source.categories, *rule.category), [*inherited, *placed]
    for number, entry in enumerate(category_defaults):
        path = tuple(str(part).strip() for part in entry["path"])
        yield path, [("category_defaults", number, "path", depth) for depth in range(len(path))]
    for number, custom in enumerate(config.build.categories):
        places: list[_Place | None] = [
            ("build", "categories", number, "path", depth) for depth in range(len(custom.path))
        ]
        yield custom.path, places


def config_warnings(path: Path | str = DEFAULT_CONFIG) -> list[str]:
    """What ``check`` warns of: valid settings that likely say something not meant.

    Two spellings of one category (they make one folder, so one feed, titled by the
    first): each later spelling, naming where the first was written.
    """
    path = Path(path)
    config, places, category_defaults = load_placed_config(path)
    warnings = []
    for clash in spelling_clashes(_placed_category_paths(config, category_defaults)):
        where, dotted = places.locate(clash.place)
        first_where, first_dotted = places.locate(clash.first_place)
        warnings.append(
            f"{where}: {dotted}: {clash.spelling!r} is the category {clash.first_spelling!r} of "
            f"{first_dotted} at {first_where} spelt another way (both make the folder {clash.folder}): "
            f"one category, whose feed is titled {clash.first_spelling!r}"
        )
    return warnings
