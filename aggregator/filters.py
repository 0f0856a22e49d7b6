"""Decide which posts of a fetch are kept, and file some one category deeper.

Pure: posts and settings in, a ``Selection`` out; ``now`` is passed in. The
same decisions drive the pipeline (``selection.kept``) and ``aggregator fetch
--dry-run`` (every ``Decision`` with the reasons behind it).

Filter stages run in order, the global ``filters`` first, then the source's
(its own or inherited from ``category_defaults``). Within a stage:

1. ``exclude``: a post matching any exclude pattern is dropped;
2. ``include``: when include patterns are given, a post must match one;
3. ``max_age``: a post dated before ``now - max_age`` is dropped;
4. ``max_entries``: of the posts still kept, the newest N stay.

Patterns are regular expressions, case-insensitive, searched anywhere in the
field (anchor with ``^``/``$`` to match a whole value); ``content`` is the
body as plain text, ``tags`` tries each of the entry's tags, ``any`` tries
title, content, author and tags.

Category rules then run on the kept posts: the source's own rules first, then
the global ones, and the first rule whose ``tag`` matches one of the post's
tags as a whole, or whose ``title`` pattern is found in its title, appends its
``category`` to the post's category path (the source's hierarchy).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache

from aggregator.config import CategoryRule, Config, FiltersConfig, PatternSet, SourceConfig
from aggregator.model import Post
from aggregator.text import plain_text

FIELDS = ("title", "content", "author", "tags")


@dataclass(frozen=True)
class FilterStage:
    name: str  # "global filters" or "source filters": how the dry-run report names it
    settings: FiltersConfig


@dataclass(frozen=True)
class Decision:
    """One post's fate and every reason given for it, in the order the rules ran."""

    post: Post
    kept: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    decisions: tuple[Decision, ...]

    @property
    def kept(self) -> list[Post]:
        return [d.post for d in self.decisions if d.kept]

    @property
    def dropped(self) -> list[Post]:
        return [d.post for d in self.decisions if not d.kept]


def filter_stages(config: Config, source: SourceConfig) -> tuple[FilterStage, ...]:
    stages = [FilterStage("global filters", config.filters)]
    if source.filters is not None:
        stages.append(FilterStage("source filters", source.filters))
    return tuple(stage for stage in stages if _active(stage.settings))


def category_rules(config: Config, source: SourceConfig) -> tuple[CategoryRule, ...]:
    return (*source.rules, *config.rules)


def select_posts(
    posts: Sequence[Post],
    stages: Sequence[FilterStage],
    rules: Sequence[CategoryRule],
    now: datetime,
) -> Selection:
    """Run every filter stage, then the category rules on what is kept."""
    decisions = [Decision(post, True, ()) for post in posts]
    for stage in stages:
        decisions = _run_stage(decisions, stage, now)
    if rules:
        decisions = [_categorize(d, rules) if d.kept else d for d in decisions]
    return Selection(tuple(decisions))


def _active(settings: FiltersConfig) -> bool:
    return bool(
        _patterns(settings.include)
        or _patterns(settings.exclude)
        or settings.max_age is not None
        or settings.max_entries is not None
    )


def _patterns(patterns: PatternSet) -> list[tuple[str, str]]:
    """(field, pattern) pairs; ``any`` last."""
    return [(name, p) for name in (*FIELDS, "any") for p in getattr(patterns, name)]


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _values(post: Post, field: str) -> Iterable[tuple[str, str]]:
    """(field, text) pairs to match; ``any`` gives every field's."""
    if field == "title":
        yield field, post.title
    elif field == "content":
        yield field, plain_text(post.body)
    elif field == "author":
        yield field, post.author
    elif field == "tags":
        yield from ((field, tag) for tag in post.tags)
    else:
        for name in FIELDS:
            yield from _values(post, name)


def _first_match(post: Post, patterns: PatternSet, kind: str) -> str | None:
    """Why the post matches one of ``patterns``, or None."""
    for field, pattern in _patterns(patterns):
        for actual, value in _values(post, field):
            if match := _compiled(pattern).search(value):
                where = f" in the {actual.removesuffix('s')}" if field == "any" else ""
                return f"{kind}.{field} /{pattern}/ matched {_quote(match.group(0) or value)}{where}"
    return None


def _run_stage(decisions: list[Decision], stage: FilterStage, now: datetime) -> list[Decision]:
    settings = stage.settings
    out: list[Decision] = []
    for decision in decisions:
        if not decision.kept:
            out.append(decision)
            continue
        post, reasons = decision.post, decision.reasons
        if why := _first_match(post, settings.exclude, "exclude"):
            out.append(Decision(post, False, (*reasons, f"dropped by {stage.name}: {why}")))
            continue
        if _patterns(settings.include):
            why = _first_match(post, settings.include, "include")
            if why is None:
                out.append(
                    Decision(post, False, (*reasons, f"dropped by {stage.name}: no include pattern matched"))
                )
                continue
            reasons = (*reasons, f"kept by {stage.name}: {why}")
        if settings.max_age is not None and post.date < now - timedelta(seconds=settings.max_age):
            why = f"max_age {format_duration(settings.max_age)}: dated {post.date:%Y-%m-%d %H:%M}"
            out.append(Decision(post, False, (*reasons, f"dropped by {stage.name}: {why}")))
            continue
        out.append(Decision(post, True, reasons))
    if settings.max_entries is not None:
        out = _keep_newest(out, settings.max_entries, stage.name)
    return out


def _keep_newest(decisions: list[Decision], limit: int, stage: str) -> list[Decision]:
    kept = [i for i, d in enumerate(decisions) if d.kept]
    # Newest first; among equal dates the feed's own order decides.
    ranked = sorted(kept, key=lambda i: (-decisions[i].post.date.timestamp(), i))
    beyond = set(ranked[limit:])
    return [
        Decision(d.post, False, (*d.reasons, f"dropped by {stage}: beyond max_entries {limit} (newest kept)"))
        if i in beyond
        else d
        for i, d in enumerate(decisions)
    ]


def _categorize(decision: Decision, rules: Sequence[CategoryRule]) -> Decision:
    post = decision.post
    for number, rule in enumerate(rules, 1):
        why = None
        if rule.tag is not None:
            tag = next((t for t in post.tags if _compiled(rule.tag).fullmatch(t)), None)
            if tag is not None:
                why = f"tag /{rule.tag}/ matched {_quote(tag)}"
        if why is None and rule.title is not None and (match := _compiled(rule.title).search(post.title)):
            why = f"title /{rule.title}/ matched {_quote(match.group(0))}"
        if why is not None:
            categories = (*post.categories, *rule.category)
            reason = f"category rule {number}: {why}: filed under {' / '.join(categories)}"
            return Decision(replace(post, categories=categories), True, (*decision.reasons, reason))
    return decision


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
