"""``aggregator migrate-index``: a SQLite store made by a real fetch, moved into PostgreSQL.

After the copy, the same config with ``index:`` pointing at the database answers ``verify``,
``status --json`` and ``tombstones --json`` exactly as the SQLite files did; a second copy is
refused; ``reindex`` and ``fetch`` work against it. The URL's password is never printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import yaml
from support.helpers import run_cli, write_config
from support.servers import AppServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PASSWORD = "never-printed-pw"


def rss(count: int) -> str:
    items = "".join(
        f"<item><title>Post {n}</title><link>http://127.0.0.1/p/{n}</link><guid>g{n}</guid>"
        f"<category>News</category><pubDate>Mon, 0{1 + n % 9} Oct 2026 08:00:00 GMT</pubDate>"
        f"<description>Body {n}</description></item>"
        for n in range(count)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed</title>'
        f"<link>http://127.0.0.1/</link><description>d</description>{items}</channel></rss>"
    )


def with_password(url: str) -> str:
    """The test server trusts every local connection, so a password is accepted and ignored."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_a_fetched_sqlite_store_moves_to_postgres_and_reads_the_same(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer, postgres_url: str
) -> None:
    (feed_dir / "one.xml").write_text(rss(6), encoding="utf-8")
    (feed_dir / "two.xml").write_text(rss(3).replace("g", "h"), encoding="utf-8")
    sources = [
        {"name": "one", "url": feed_server.url("/one.xml"), "categories": ["Tech"]},
        {"name": "two", "url": feed_server.url("/two.xml"), "categories": ["Tech"]},
        {"name": "missing", "url": feed_server.url("/missing.xml"), "categories": ["Tech"]},
    ]
    sqlite_config = write_config(tmp_path / "site", sources)
    assert run_cli("fetch", config=sqlite_config).returncode in (0, 1)
    # A post deleted by hand becomes a tombstone at the next build.
    deleted = sorted((tmp_path / "site" / "posts").rglob("*.md"))[0]
    deleted.unlink()
    run_cli("build", config=sqlite_config, check=True)

    url = with_password(postgres_url)
    migrated = run_cli("migrate-index", url, config=sqlite_config)
    assert migrated.returncode == 0, migrated.stderr
    assert PASSWORD not in migrated.stdout + migrated.stderr
    assert "postgres:***@127.0.0.1" in migrated.stdout
    assert "8 posts" in migrated.stdout and "1 tombstones" in migrated.stdout
    assert "3 source states" in migrated.stdout

    pg_config = tmp_path / "site" / "pg.yaml"  # the same config, with the index in PostgreSQL
    pg_config.write_text(yaml.safe_dump({**yaml.safe_load(sqlite_config.read_text()), "index": url}))
    for command in (["verify"], ["status", "--json"], ["tombstones", "--json"]):
        on_sqlite = run_cli(*command, config=sqlite_config)
        on_postgres = run_cli(*command, config=pg_config)
        assert (on_postgres.returncode, on_postgres.stdout) == (on_sqlite.returncode, on_sqlite.stdout), (
            command
        )
        assert PASSWORD not in on_postgres.stdout + on_postgres.stderr
    assert "consistent: 8 posts" in run_cli("verify", config=pg_config).stdout
    assert len(json.loads(run_cli("tombstones", "--json", config=pg_config).stdout)) == 1

    again = run_cli("migrate-index", url, config=sqlite_config)
    assert again.returncode == 2
    assert "already holds an index (8 posts" in again.stderr and "empty database only" in again.stderr
    assert PASSWORD not in again.stderr

    assert run_cli("reindex", config=pg_config, check=True).stdout.strip() == "indexed 8 posts"
    assert run_cli("verify", config=pg_config).returncode == 0
    # The copied states and tombstones hold: nothing new, the deleted post stays deleted.
    run_cli("fetch", config=pg_config)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM posts").fetchone() == (8,)
    assert not deleted.exists()
    assert run_cli("verify", config=pg_config).returncode == 0


def test_migrate_index_says_what_is_wrong(tmp_path: Path, postgres_url: str) -> None:
    config = write_config(tmp_path / "site", [])
    nothing = run_cli("migrate-index", postgres_url, config=config)
    assert nothing.returncode == 2 and "no SQLite index at" in nothing.stderr
    bad = run_cli("migrate-index", f"mysql://me:{PASSWORD}@host/db", config=config)
    assert bad.returncode == 2 and "postgresql://" in bad.stderr and PASSWORD not in bad.stderr
