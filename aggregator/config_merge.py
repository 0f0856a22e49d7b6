"""The config's sources before validation: ``sources.d`` merged in, ``category_defaults`` filled in.

The main file's sources come first, then each ``sources.d/*.yaml`` file's, in name order; each
source remembers its file and line (``Places.origins``) so errors point into the file that says
it. Names (as folders) and URLs are then checked unique across all the files. This works on the
plain data ``config_yaml`` read; ``aggregator.config`` validates the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from aggregator.config_yaml import Places, read_yaml
from aggregator.errors import ConfigError
from aggregator.keys import category_slugs, source_folder
from aggregator.suggest import nearest, same_folder, unknown_key

SOURCES_DIR = "sources.d"


# Settings a category_defaults entry may give; a source's own value always wins.
_SCHEDULE_KEYS = frozenset({"interval", "cron"})


def config_files(path: Path) -> list[Path]:
    """The main config file, then ``sources.d/*.yaml`` beside it, in name order."""
    folder = path.parent / SOURCES_DIR
    extra = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []
    return [path, *extra]


def merge_sources_d(data: dict[str, Any], places: Places) -> None:
    """Append the sources of every ``sources.d`` file (a list, or a mapping with ``sources``)."""
    merged = data.get("sources")
    if merged is None:
        merged = []
    if not isinstance(merged, list):
        return  # the model reports the wrong type at its own line
    for file in config_files(places.path)[1:]:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{file}: cannot read: {error}") from error
        part, lines = read_yaml(text, file)
        prefix: tuple[str, ...] = ()
        if isinstance(part, dict):
            for key in part:
                if key != "sources":
                    line = lines.get((key,), 1)
                    hint = " (did you mean 'sources'?)" if nearest(key, ["sources"]) else ""
                    raise ConfigError(
                        f"{file}:{line}: {key}: unknown key{hint} (a sources.d file holds sources)"
                    )
            part, prefix = part.get("sources") or [], ("sources",)
        if part is None:
            continue
        if not isinstance(part, list):
            raise ConfigError(f"{file}:1: sources: must be a list of sources")
        for index, source in enumerate(part):
            places.origins[len(merged)] = (file, index, lines, prefix)
            merged.append(source)
    if merged or "sources" in data:
        data["sources"] = merged


def apply_category_defaults(data: dict[str, Any], places: Places, source_model: type[BaseModel]) -> None:
    """Fill each source's missing settings from ``category_defaults`` along its category path.

    A deeper category's setting wins over a shallower one; the source's own wins over both.
    ``interval`` and ``cron`` go together: a source that sets either inherits neither.
    """
    entries = data.pop("category_defaults", None)
    if entries is None:
        return
    if not isinstance(entries, list):
        raise places.fail(["category_defaults"], "must be a list of {path: [...], setting: value}")
    inheritable = set(source_model.model_fields) - {"name", "url", "categories"}
    defaults: dict[tuple[str, ...], dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        where: list[str | int] = ["category_defaults", index]
        if not isinstance(entry, dict):
            raise places.fail(where, "must be a mapping with a path and settings")
        raw_path = entry.get("path")
        if not isinstance(raw_path, list) or not raw_path or not all(isinstance(p, str) for p in raw_path):
            raise places.fail([*where, "path"], "a list of category names is required, e.g. [News, World]")
        settings = {k: v for k, v in entry.items() if k != "path"}
        for key in settings:
            if key not in inheritable:
                raise places.fail([*where, key], unknown_key(key, inheritable))
        try:
            source_model.model_validate({"name": "defaults", "url": "defaults", **settings})
        except ValidationError as error:
            raise places.error(error, source_model, tuple(where)) from error
        # A category is its folder: [Tech] and [tech] are one (see aggregator.categories).
        defaults.setdefault(category_slugs([p.strip() for p in raw_path]), {}).update(settings)
    for source in data.get("sources") or []:
        categories = source.get("categories") if isinstance(source, dict) else None
        if not isinstance(categories, list):
            continue
        inherited: dict[str, Any] = {}
        for depth in range(1, len(categories) + 1):
            key = category_slugs([str(c).strip() for c in categories[:depth]])
            inherited.update(defaults.get(key, {}))
        own_schedule = _SCHEDULE_KEYS & source.keys()
        for key, value in inherited.items():
            if key not in source and not (key in _SCHEDULE_KEYS and own_schedule):
                source[key] = value


def check_unique_sources(data: dict[str, Any], places: Places) -> None:
    """Names (as folders: case, spacing and punctuation aside) and URLs are unique across all files."""
    sources = data.get("sources")
    if not isinstance(sources, list):
        return
    for key in ("name", "url"):
        seen: dict[str, int] = {}
        for index, source in enumerate(sources):
            value = source.get(key) if isinstance(source, dict) else None
            if not isinstance(value, str) or not value.strip():
                continue
            folded = source_folder(value) if key == "name" else value.strip()
            if folded in seen:
                first_where, first_path = places.locate(["sources", seen[folded], key])
                note = same_folder(sources[seen[folded]][key], value) if key == "name" else ""
                where = f"{first_path} at {first_where}{note}"
                raise places.fail(["sources", index, key], f"duplicate of {where}")
            seen[folded] = index
