"""Opening the index, its schema version, and the migrations from each older one.

The index records its schema version, migrates older ones step by step (one
transaction), and refuses a newer one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from aggregator.errors import StoreError
from aggregator.index import media
from aggregator.index.states import adopt_legacy_tables, attach
from aggregator.index.versions import refuse_newer, upgrade
from aggregator.keys import slugged_category_key
from aggregator.normalize import canonical_link

log = logging.getLogger("aggregator.store")

SCHEMA_VERSION = 7

# Each step upgrades the index from the previous version; a fresh index runs them all.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS posts (
    source TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    link TEXT NOT NULL,
    author TEXT NOT NULL,
    date_ts REAL NOT NULL,
    updated_ts REAL,
    first_seen_ts REAL NOT NULL,
    categories TEXT NOT NULL,
    tags TEXT NOT NULL,
    headimg TEXT,
    enclosures TEXT NOT NULL,
    body TEXT NOT NULL,
    summary TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    rewrites INTEGER NOT NULL DEFAULT 0,
    last_rewrite_ts REAL,
    file_mtime_ns INTEGER NOT NULL DEFAULT 0,
    file_size INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, entry_id)
);
CREATE TABLE IF NOT EXISTS post_feeds (
    feed_key TEXT NOT NULL,
    source TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    date_ts REAL NOT NULL,
    PRIMARY KEY (feed_key, source, entry_id)
);
CREATE INDEX IF NOT EXISTS post_feeds_newest ON post_feeds (feed_key, date_ts DESC);
CREATE INDEX IF NOT EXISTS post_feeds_by_post ON post_feeds (source, entry_id);
CREATE TABLE IF NOT EXISTS sources (name TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feeds (
    key TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    title TEXT NOT NULL,
    item_count INTEGER NOT NULL,
    newest_ts REAL
);
""",
    # 2: what upstream last gave (so a hand edit is not mistaken for an upstream
    # change, and churn is told from a real revision), and retention's tombstones.
    2: """
ALTER TABLE posts ADD COLUMN upstream_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE posts ADD COLUMN upstream_updated_ts REAL;
UPDATE posts SET upstream_hash = content_hash, upstream_updated_ts = updated_ts;
CREATE TABLE IF NOT EXISTS pruned (
    source TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    pruned_ts REAL NOT NULL,
    PRIMARY KEY (source, entry_id)
);
""",
    # 3: feeds owed a rebuild, written in the same transaction as the posts that
    # changed them, so a crash between the index commit and the build heals.
    3: """
CREATE TABLE IF NOT EXISTS pending_feeds (key TEXT PRIMARY KEY);
""",
    # 4: cross-source merging: each post's canonical link, the copies folded
    # into it, and which (source, entry) now lives in which post.
    4: """
ALTER TABLE posts ADD COLUMN canon_link TEXT NOT NULL DEFAULT '';
ALTER TABLE posts ADD COLUMN merged TEXT NOT NULL DEFAULT '[]';
CREATE INDEX IF NOT EXISTS posts_canon ON posts (canon_link);
CREATE TABLE IF NOT EXISTS aliases (
    source TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    target_source TEXT NOT NULL,
    target_id TEXT NOT NULL,
    PRIMARY KEY (source, entry_id)
);
CREATE INDEX IF NOT EXISTS aliases_target ON aliases (target_source, target_id);
""",
    # 5: source states and tombstones moved to the state database (copied there
    # first, see ``index.states.adopt_legacy_tables``), so losing the index loses neither.
    5: """
DROP TABLE IF EXISTS main.sources;
DROP TABLE IF EXISTS main.pruned;
""",
    # 6: a category's feed key is the slugs of its path (see ``category_key``): the rows of
    # spellings that make one folder become one feed. Every category feed is owed a build
    # (an empty signature renders it again; one left without posts is removed).
    6: """
INSERT OR IGNORE INTO post_feeds
    SELECT category_feed_key(feed_key), source, entry_id, date_ts FROM post_feeds
    WHERE substr(feed_key, 1, 9) = 'category' || char(31);
DELETE FROM post_feeds
    WHERE substr(feed_key, 1, 9) = 'category' || char(31) AND feed_key != category_feed_key(feed_key);
INSERT OR IGNORE INTO feeds
    SELECT category_feed_key(key), '', title, item_count, newest_ts FROM feeds
    WHERE substr(key, 1, 9) = 'category' || char(31) AND key != category_feed_key(key);
UPDATE feeds SET signature = '' WHERE substr(key, 1, 9) = 'category' || char(31);
DELETE FROM feeds WHERE substr(key, 1, 9) = 'category' || char(31) AND key != category_feed_key(key);
DELETE FROM pending_feeds WHERE substr(key, 1, 9) = 'category' || char(31);
INSERT OR IGNORE INTO pending_feeds
    SELECT key FROM feeds WHERE substr(key, 1, 9) = 'category' || char(31)
    UNION SELECT feed_key FROM post_feeds WHERE substr(feed_key, 1, 9) = 'category' || char(31);
""",
    # 7: the media archive: each image URL's download state, each post's images.
    7: media.MIGRATION,
}
assert max(MIGRATIONS) == SCHEMA_VERSION


def connect(index_path: Path, state_path: Path) -> sqlite3.Connection:
    """The index's connection (WAL, autocommit: transactions are explicit), the state database attached."""
    try:
        db = sqlite3.connect(index_path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store at {index_path}: {error}") from error
    try:
        attach(db, state_path)
    except BaseException:
        db.close()
        raise
    return db


def schema_version(db: sqlite3.Connection) -> int:
    has_meta = db.execute("SELECT 1 FROM main.sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM main.meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, index_path: Path, state_path: Path) -> int:
    """Bring the index to ``SCHEMA_VERSION``; the version it had (0: a new index, to fill from the files)."""
    try:
        version = schema_version(db)
    except (sqlite3.Error, ValueError) as error:
        raise StoreError(f"{index_path}: not a readable index: {error}") from error
    refuse_newer(
        version, SCHEMA_VERSION, index_path, "index",
        "upgrade aggregator, or delete the index and run `aggregator reindex`",
    )  # fmt: skip
    if version == SCHEMA_VERSION:
        return version
    if 0 < version < 5:
        try:
            adopt_legacy_tables(db)  # committed before step 5 drops them from the index
        except sqlite3.Error as error:
            raise StoreError(
                f"{index_path}: cannot copy the source states into {state_path}: {error}"
            ) from error
    steps = "".join(MIGRATIONS[step] for step in range(version + 1, SCHEMA_VERSION + 1))
    db.create_function("category_feed_key", 1, slugged_category_key, deterministic=True)
    upgrade(
        db, steps, meta="main.meta", version=SCHEMA_VERSION,
        failure=f"{index_path}: cannot migrate the index from version {version}",
    )  # fmt: skip
    if 0 < version < 4:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "UPDATE posts SET canon_link=? WHERE source=? AND entry_id=?",
                [
                    (canonical_link(link), source, entry_id)
                    for source, entry_id, link in db.execute("SELECT source, entry_id, link FROM posts")
                ],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    if version > 0:
        log.info("index migrated from schema version %d to %d", version, SCHEMA_VERSION)
    return version
