"""The ``index:`` PostgreSQL URL and the ``fleet:`` settings: checked, and no password shown."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from aggregator.config import Config, parse_config
from aggregator.dburl import check_postgres_url, redact
from aggregator.errors import ConfigError

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://agg:{SECRET}@db.internal:5432/feeds", "postgresql://agg:***@db.internal:5432/feeds"),
        ("postgresql://agg@db.internal/feeds", "postgresql://agg@db.internal/feeds"),
        (
            f"postgres://agg:{SECRET}@[::1]/feeds?sslmode=require",
            "postgres://agg:***@[::1]/feeds?sslmode=require",
        ),
        # A password whose / or @ was not percent-encoded is still hidden whole.
        (f"postgresql://agg:a/b@{SECRET}@h/feeds", "postgresql://agg:***@h/feeds"),
        ("not a url", "not a url"),
    ],
)
def test_redact_hides_the_password_only(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_full_url_is_accepted_as_written() -> None:
    url = f"postgresql://agg:{SECRET}@db.internal:6432/feeds?sslmode=require"
    assert check_postgres_url(url) == url


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (f"mysql://agg:{SECRET}@h/feeds", "scheme must be postgresql"),
        (f"postgresql://:{SECRET}@h/feeds", "names no user"),
        (f"postgresql://agg:{SECRET}@:5432/feeds", "names no host"),
        (f"postgresql://agg:{SECRET}@h:99999/feeds", "bad port"),
        (f"postgresql://agg:{SECRET}@h:0/feeds", "port must be"),
        (f"postgresql://agg:{SECRET}@h/", "names no database"),
        (f"postgresql://agg:{SECRET}@h/a/b", "names no database"),
        (f"postgresql://agg:pa/ss{SECRET}@h/feeds", "percent-encode"),
    ],
)
def test_a_bad_url_is_refused_without_its_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        check_postgres_url(url)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_the_config_reads_index_and_fleet(tmp_path: Path) -> None:
    text = f"index: postgresql://agg:{SECRET}@127.0.0.1:5432/feeds\nfleet:\n  lease: 3m\n  heartbeat: 20s\n"
    config = parse_config(text, tmp_path / "aggregator.yaml")
    assert config.index == f"postgresql://agg:{SECRET}@127.0.0.1:5432/feeds"
    assert (config.fleet.lease, config.fleet.heartbeat) == (180.0, 20.0)
    assert SECRET not in repr(config)


def test_without_index_the_sqlite_files_stay_and_the_fleet_has_defaults(tmp_path: Path) -> None:
    config = parse_config("site: {title: t}\n", tmp_path / "aggregator.yaml")
    assert config.index is None
    assert (config.fleet.lease, config.fleet.heartbeat) == (120.0, None)
    assert Config().index is None


def test_a_bad_index_url_names_its_line_and_never_the_password(tmp_path: Path) -> None:
    text = f"site: {{title: t}}\nindex: mysql://agg:{SECRET}@h/feeds\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "aggregator.yaml")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'aggregator.yaml'}:2: index: mysql://agg:***@h/feeds")
    assert SECRET not in "".join(traceback.format_exception(caught.value)), "not in the chained cause either"


def test_a_heartbeat_longer_than_half_the_lease_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1: fleet: heartbeat: must be at most half"):
        parse_config("fleet: {lease: 1m, heartbeat: 45s}\n", tmp_path / "aggregator.yaml")
    with pytest.raises(ConfigError, match=r"fleet\.lease"):
        parse_config("fleet: {lease: soon}\n", tmp_path / "aggregator.yaml")
