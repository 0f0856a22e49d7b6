"""Stores and indexes on either backend, for the tests that must hold on both.

``BACKENDS`` parametrizes a fixture; ``open_test_store`` and ``open_test_index`` give a
fresh store or bare index on SQLite (files under ``tmp_path``) or on a fresh PostgreSQL
database (``postgres_url``: skipped, with the reason, where no server can be started).
``persisted_rows`` reads what another process would see, on a connection of its own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aggregator.index.interface import Index
from aggregator.index.postgres.pgindex import PgIndex
from aggregator.index.sqlite import SqliteIndex
from aggregator.store import PostStore

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def open_test_index(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Index:
    if backend == "postgres":
        return PgIndex(request.getfixturevalue("postgres_url"))
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    return SqliteIndex(tmp_path / "data" / "index.sqlite3", tmp_path / "data" / "state.sqlite3")


def open_test_store(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, **options: Any
) -> PostStore:
    index = PgIndex(request.getfixturevalue("postgres_url")) if backend == "postgres" else None
    return PostStore(tmp_path / "posts", tmp_path / "data" / "index.sqlite3", index=index, **options)


def persisted_rows(store: PostStore, sqlite_query: str, pg_query: str | None = None) -> list[tuple[Any, ...]]:
    """Run a statement as another process would (its own connection, committed at once); its rows.

    The SQLite index has the state database attached as ``state``; PostgreSQL names its own
    tables (``pg_query``) where they differ.
    """
    if isinstance(store.index, PgIndex):
        with psycopg.connect(store.index.url) as conn:
            cursor = conn.execute(pg_query or sqlite_query)
            return cursor.fetchall() if cursor.description else []
    other = sqlite3.connect(store.index_path)
    try:
        other.execute("ATTACH DATABASE ? AS state", (str(store.state_path),))
        with other:
            return other.execute(sqlite_query).fetchall()
    finally:
        other.close()
