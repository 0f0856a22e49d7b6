"""PostgreSQL's schema: numbered migration steps and the version they reached.

A database records its version in ``aggregator_meta`` (key ``schema_version``). Each step
runs in its own transaction together with the version it reaches, so a crash leaves the
database at one step or the next, never between. Nodes that start at once take turns
through a transaction-level advisory lock; a database newer than this program is refused.

Later parts (the PostgreSQL index) add their tables as further :class:`Step` entries at the
end of :data:`STEPS`; a step, once released, is never edited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from aggregator.errors import StoreError

# pg_advisory_xact_lock key that serialises migrations ("aggmigr" in ASCII).
MIGRATION_LOCK_KEY = 0x6167676D696772


@dataclass(frozen=True)
class Step:
    """One migration: ``sql`` brings a database at ``version - 1`` to ``version``."""

    version: int
    name: str
    sql: str


FLEET_TABLES = """
CREATE TABLE fleet_nodes (
    node text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    port integer,
    started timestamptz NOT NULL,
    heartbeat timestamptz NOT NULL
);

CREATE TABLE fleet_sources (
    source text PRIMARY KEY,
    next_due timestamptz NOT NULL,
    lease_node text,
    lease_until timestamptz,
    last_polled timestamptz,
    CHECK ((lease_node IS NULL) = (lease_until IS NULL))
);
-- Claims read unleased sources by due time and leases by expiry: two partial indexes, so
-- the leases in flight (due, but held) are never scanned over.
CREATE INDEX fleet_sources_unleased ON fleet_sources (next_due, source) WHERE lease_node IS NULL;
CREATE INDEX fleet_sources_leased ON fleet_sources (lease_until) WHERE lease_node IS NOT NULL;
CREATE INDEX fleet_sources_lease_node ON fleet_sources (lease_node) WHERE lease_node IS NOT NULL;

CREATE TABLE fleet_host_slots (
    host text NOT NULL,
    slot integer NOT NULL CHECK (slot >= 0),
    holder text,
    lease_until timestamptz,
    PRIMARY KEY (host, slot),
    CHECK ((holder IS NULL) = (lease_until IS NULL))
);
CREATE INDEX fleet_host_slots_holder ON fleet_host_slots (holder) WHERE holder IS NOT NULL;

CREATE TABLE fleet_host_waits (
    host text PRIMARY KEY,
    not_before timestamptz NOT NULL,
    reason text NOT NULL DEFAULT ''
);
"""

# The index (aggregator.index.postgres), as SQLite's schema 6 has it, and the state database's
# tables beside it: one database, so one transaction covers a tombstone and the rows it replaces.
# Keys and paths compare byte by byte (COLLATE "C"), as SQLite's text does: the same ties, the
# same order, whatever collation the database was created with.
INDEX_TABLES = """
CREATE TABLE posts (
    source text COLLATE "C" NOT NULL,
    entry_id text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL UNIQUE,
    title text NOT NULL,
    link text NOT NULL,
    author text NOT NULL,
    date_ts double precision NOT NULL,
    updated_ts double precision,
    first_seen_ts double precision NOT NULL,
    categories text NOT NULL,
    tags text NOT NULL,
    headimg text,
    enclosures text NOT NULL,
    body text NOT NULL,
    summary text NOT NULL,
    content_hash text NOT NULL,
    rewrites integer NOT NULL DEFAULT 0,
    last_rewrite_ts double precision,
    file_mtime_ns bigint NOT NULL DEFAULT 0,
    file_size bigint NOT NULL DEFAULT 0,
    upstream_hash text NOT NULL DEFAULT '',
    upstream_updated_ts double precision,
    canon_link text NOT NULL DEFAULT '',
    merged text NOT NULL DEFAULT '[]',
    PRIMARY KEY (source, entry_id)
);
CREATE INDEX posts_canon ON posts (canon_link);

CREATE TABLE post_feeds (
    feed_key text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    entry_id text COLLATE "C" NOT NULL,
    date_ts double precision NOT NULL,
    PRIMARY KEY (feed_key, source, entry_id)
);
CREATE INDEX post_feeds_newest ON post_feeds (feed_key, date_ts DESC);
CREATE INDEX post_feeds_by_post ON post_feeds (source, entry_id);

CREATE TABLE aliases (
    source text COLLATE "C" NOT NULL,
    entry_id text COLLATE "C" NOT NULL,
    target_source text COLLATE "C" NOT NULL,
    target_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (source, entry_id)
);
CREATE INDEX aliases_target ON aliases (target_source, target_id);

CREATE TABLE feeds (
    key text COLLATE "C" PRIMARY KEY,
    signature text NOT NULL,
    title text NOT NULL,
    item_count integer NOT NULL,
    newest_ts double precision
);
CREATE TABLE pending_feeds (key text COLLATE "C" PRIMARY KEY);

CREATE TABLE source_states (name text COLLATE "C" PRIMARY KEY, state text NOT NULL);
CREATE TABLE tombstones (
    source text COLLATE "C" NOT NULL,
    entry_id text COLLATE "C" NOT NULL,
    removed_ts double precision NOT NULL,
    reason text NOT NULL,
    title text NOT NULL DEFAULT '',
    PRIMARY KEY (source, entry_id)
);

CREATE TABLE status_events (
    id text COLLATE "C" PRIMARY KEY,
    source text NOT NULL,
    kind text NOT NULL,
    at_ts double precision NOT NULL,
    detail text NOT NULL,
    url text NOT NULL
);
CREATE INDEX status_events_newest ON status_events (at_ts DESC, id);
"""

# The media archive (``aggregator.index.media``'s tables), and the trigger that drops a forgotten post's rows.
MEDIA_TABLES = """
CREATE TABLE media_urls (
    url text COLLATE "C" PRIMARY KEY,
    local text COLLATE "C",
    source text COLLATE "C" NOT NULL,
    failures integer NOT NULL DEFAULT 0,
    next_try_ts double precision,
    last_error text,
    last_try_ts double precision
);
CREATE INDEX media_urls_local ON media_urls (local);
CREATE TABLE media_refs (
    source text COLLATE "C" NOT NULL,
    entry_id text COLLATE "C" NOT NULL,
    url text COLLATE "C" NOT NULL,
    local text COLLATE "C",
    PRIMARY KEY (source, entry_id, url)
);
CREATE INDEX media_refs_pending ON media_refs (source, local);
CREATE FUNCTION media_refs_of_forgotten_post() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM media_refs WHERE source = OLD.source AND entry_id = OLD.entry_id;
    RETURN OLD;
END;
$$;
CREATE TRIGGER media_refs_of_forgotten_post AFTER DELETE ON posts
    FOR EACH ROW EXECUTE FUNCTION media_refs_of_forgotten_post();
"""

# Cheaper writes of the index's two busiest tables (the server's CPU in a cold fetch of the
# bench's 50,000 posts was 8.4 s, half of it in the posts' INSERT; see bench/results.md).
# - Bodies and summaries compressed with lz4 instead of pglz: about half the server's CPU
#   per post written. Kept pglz where the server was built without lz4 (or is older than 14).
# - A post's feed rows keyed by the post first: the key serves "this post's feeds" too, so
#   the index that did only that goes, one fewer B-tree to write for each of the rows.
LEANER_WRITES = """
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        EXECUTE 'ALTER TABLE posts ALTER body SET COMPRESSION lz4, ALTER summary SET COMPRESSION lz4';
    END IF;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END;
$$;
ALTER TABLE post_feeds DROP CONSTRAINT post_feeds_pkey, ADD PRIMARY KEY (source, entry_id, feed_key);
DROP INDEX post_feeds_by_post;
"""


STEPS: tuple[Step, ...] = (
    Step(1, "fleet: nodes, source leases, host slots and host waits", FLEET_TABLES),
    Step(2, "index: posts, their feeds and aliases, feeds, pending feeds, states, tombstones", INDEX_TABLES),
    Step(3, "media: each image URL's download state, each post's images", MEDIA_TABLES),
    Step(4, "leaner writes: lz4 for bodies, post feeds keyed by the post", LEANER_WRITES),
)
# The first version with the index's tables: a database older than it holds no index (yet).
INDEX_VERSION = 2

_META = """
CREATE TABLE IF NOT EXISTS aggregator_meta (
    key text PRIMARY KEY,
    value text NOT NULL
)
"""


def latest_version(steps: Sequence[Step] = STEPS) -> int:
    return steps[-1].version if steps else 0


def check_steps(steps: Sequence[Step]) -> None:
    """Steps are numbered 1, 2, 3, ... with no gap (a programming error otherwise)."""
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise ValueError(f"migration step {step.name!r} is numbered {step.version}, expected {expected}")


def pending_steps(current: int, steps: Sequence[Step]) -> list[Step]:
    """The steps a database at ``current`` still needs; refuses one newer than ``steps`` know."""
    known = latest_version(steps)
    if current > known:
        raise StoreError(
            f"PostgreSQL schema version {current} is newer than this program understands ({known}); "
            "upgrade aggregator on this node"
        )
    return [step for step in steps if step.version > current]


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The database's version; 0 when nothing was ever migrated."""
    exists = conn.execute("SELECT to_regclass('aggregator_meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT value FROM aggregator_meta WHERE key = 'schema_version'").fetchone()
    return int(str(row[0])) if row else 0


def migrate(conn: psycopg.Connection[Any], steps: Sequence[Step] = STEPS) -> int:
    """Bring the database to the newest version of ``steps``; return that version.

    ``conn`` must not be inside a transaction (each step is one).
    """
    check_steps(steps)
    version = 0
    try:
        while True:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                conn.execute(_META)
                version = schema_version(conn)
                todo = pending_steps(version, steps)
                if not todo:
                    return version
                step = todo[0]
                conn.execute(step.sql)
                conn.execute(
                    "INSERT INTO aggregator_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(step.version),),
                )
    except psycopg.Error as error:
        raise StoreError(f"PostgreSQL migration from version {version} failed: {error}") from error
