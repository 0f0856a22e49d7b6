from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.helpers import FIXTURES
from support.postgres import postgres_server, postgres_url
from support.servers import AppServer, static_server

__all__ = ["postgres_server", "postgres_url"]  # fixtures for every test that needs PostgreSQL


@pytest.fixture
def feed_dir(tmp_path: Path) -> Path:
    """A directory a static server serves; copy or write feed files into it."""
    directory = tmp_path / "served"
    directory.mkdir()
    return directory


@pytest.fixture
def feed_server(feed_dir: Path) -> Iterator[AppServer]:
    with static_server(feed_dir) as server:
        yield server


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
