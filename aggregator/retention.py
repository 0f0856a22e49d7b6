"""Retention: how many posts to keep and for how long, and pruning the rest (index rows and files).

A pruned entry is remembered (a tombstone in the state database), so a later
fetch that still sees it upstream does not bring it back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from aggregator.decide import RETENTION
from aggregator.index.interface import Index
from aggregator.keys import ALL_KEY, source_key

log = logging.getLogger("aggregator.store")


@dataclass(frozen=True)
class Limits:
    """How many posts to keep, and for how long (by post date); None means no limit."""

    max_age: timedelta | None = None
    max_posts: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age is not None or self.max_posts is not None


@dataclass(frozen=True)
class RetentionPolicy:
    """Limits over all posts together and per source; everything off by default."""

    overall: Limits = Limits()
    per_source: Mapping[str, Limits] = field(default_factory=dict)

    @functools.cached_property
    def active(self) -> bool:  # asked on every update; per_source can hold every source
        return self.overall.active or any(limits.active for limits in self.per_source.values())


@dataclass(frozen=True)
class PruneResult:
    removed: int = 0
    touched_keys: frozenset[str] = frozenset()


class Retention:
    """``PostStore``'s pruning (over its posts folder and its index)."""

    posts_dir: Path
    index: Index

    def prune(
        self, policy: RetentionPolicy, now: datetime, *, sources: Iterable[str] | None = None
    ) -> PruneResult:
        """Remove posts beyond the limits, index rows and files together.

        ``sources`` restricts the per-source limits to those sources (the
        overall limits always apply). A pruned entry is remembered (a tombstone
        in the state database), so a later fetch that still sees it upstream
        does not bring it back. The tombstones commit first, then the index,
        then the files go: a crash in between leaves rows or files that
        ``sync_with_files`` recognises as pruned and removes.
        """
        if not policy.active:
            return PruneResult()
        scopes: list[tuple[str, Limits]] = [(ALL_KEY, policy.overall)]
        names = policy.per_source.keys() if sources is None else sources
        scopes += [(source_key(n), policy.per_source[n]) for n in names if n in policy.per_source]
        victims: dict[tuple[str, str], str] = {}
        for key, limits in scopes:
            if limits.max_age is not None:
                victims.update(self.index.posts_older_than(key, now - limits.max_age))
            if limits.max_posts is not None:
                victims.update(self.index.posts_beyond(key, limits.max_posts))
        if not victims:
            return PruneResult()
        touched: set[str] = set()
        self.index.bury(list(victims), RETENTION, now)  # copies merged into a post are pruned with it
        with self.index.transaction():
            for source, entry_id in victims:
                touched |= self.index.forget(source, entry_id)
        for path in victims.values():
            try:
                (self.posts_dir / path).unlink(missing_ok=True)
            except OSError as error:
                log.warning("cannot remove pruned post %s: %s", path, error)
        log.info("retention pruned %d posts", len(victims))
        return PruneResult(len(victims), frozenset(touched))
