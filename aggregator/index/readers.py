"""What a feed-building worker process needs to open its own read-only index reader.

The builder hands each worker a ``ReaderSpec`` (picklable: workers are spawned), which the
index it reads from makes (``Index.reader_spec``): the SQLite file's path or the PostgreSQL
URL. ``open_reader`` opens the matching reader in the worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aggregator.index.feeds import IndexedPost, IndexReader


class PostReader(Protocol):
    def indexed_posts(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], IndexedPost]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ReaderSpec:
    """The index to read: a SQLite file, or a PostgreSQL URL (never shown: it may hold a password)."""

    sqlite_path: Path | None = None
    postgres_url: str | None = field(default=None, repr=False)


def open_reader(spec: ReaderSpec) -> PostReader:
    if spec.postgres_url is not None:
        from aggregator.index.postgres.reader import PgIndexReader  # psycopg only where it is used

        return PgIndexReader(spec.postgres_url)
    if spec.sqlite_path is None:
        raise ValueError("a ReaderSpec names a SQLite file or a PostgreSQL URL")
    return IndexReader(spec.sqlite_path)
