"""Post files (the truth) and the SQLite index (a cache of them).

A post is one Markdown file with YAML front matter, in the shape of the
reference post (``title, categories, headimg, author, comments, date,
thumbnail``) plus ``link, id, source, tags, updated, enclosures``. Files are
written atomically and the index is updated after the file, so a crash between
the two leaves a file the index does not know yet; the next save of that entry
finds it at its deterministic path and adopts it, and ``reindex`` rebuilds the
whole index from the files.

The index (WAL mode) also holds each source's polling state and what each
published feed was built from, so feeds are built without reading post files.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import frontmatter
import yaml

from aggregator.errors import StoreError
from aggregator.files import fsync_files, sweep_temp_files, write_atomic
from aggregator.normalize import Post, plain_text
from aggregator.parse import Enclosure
from aggregator.state import SourceState

SCHEMA_VERSION = 1
MAX_FILENAME_BYTES = 255
SLUG_BYTES = 80
# An entry whose content changes on every fetch (a counter, a rotating ad) is
# rewritten at most this often once it has been rewritten a few times.
FREE_REWRITES = 3
REWRITE_MIN_GAP = timedelta(hours=6)
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)$", re.IGNORECASE)
_NOT_SLUG = re.compile(r"[^\w]+", re.UNICODE)

REFERENCE_KEYS = ("title", "categories", "headimg", "author", "comments", "date", "thumbnail")


class Outcome(Enum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    CAPPED = "capped"  # changed upstream, but rewritten too often lately


@dataclass(frozen=True)
class SaveResult:
    post: Post
    outcome: Outcome
    path: Path


@dataclass(frozen=True)
class IndexedPost:
    """A post as the feed builder needs it, read from the index."""

    source: str
    id: str
    path: str
    title: str
    link: str
    author: str
    date: datetime
    updated: datetime | None
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    headimg: str | None
    enclosures: tuple[Enclosure, ...]
    body: str
    summary: str
    content_hash: str


# Feed keys name the feeds a post belongs to: everything, its source, and each
# level of its category hierarchy. They are stored as text in the index.
ALL_KEY = "all"


def source_key(name: str) -> str:
    return "source\x1f" + name


def category_key(path: Sequence[str]) -> str:
    return "category\x1f" + "\x1f".join(path)


def split_key(key: str) -> tuple[str, tuple[str, ...]]:
    kind, *parts = key.split("\x1f")
    return kind, tuple(parts)


def feed_keys_for(source: str, categories: Sequence[str]) -> list[str]:
    keys = [ALL_KEY, source_key(source)]
    keys += [category_key(categories[: depth + 1]) for depth in range(len(categories))]
    return keys


def slugify(text: str, max_bytes: int = SLUG_BYTES) -> str:
    """A readable, safe path component: letters of any script kept, the rest dashes."""
    text = unicodedata.normalize("NFKC", text).casefold()
    slug = _NOT_SLUG.sub("-", text).strip("-_")
    encoded = slug.encode("utf-8")[:max_bytes]
    slug = encoded.decode("utf-8", "ignore").strip("-_")
    if not slug or _WINDOWS_RESERVED.match(slug):
        slug = f"_{slug}" if slug else "_"
    return slug


def post_relpath(post: Post) -> Path:
    """``<source>/<yyyy>/<mm>/<slug>-<hash>.md``: deterministic, safe, under 255 bytes."""
    digest = hashlib.sha1(f"{post.source}\x00{post.id}".encode()).hexdigest()[:10]
    name = f"{slugify(post.title)}-{digest}.md"
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    return Path(slugify(post.source), f"{post.date.year:04d}", f"{post.date.month:02d}", name)


def rfc822(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_rfc822(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def render_post(post: Post) -> bytes:
    """The post file: YAML front matter written by a YAML serializer, then the body."""
    matter: dict[str, Any] = {
        "title": post.title,
        "categories": list(post.categories),
        "headimg": post.headimg,
        "author": post.author,
        "comments": post.comments,
        "date": rfc822(post.date),
        "thumbnail": post.headimg,
        "link": post.link,
        "id": post.id,
        "source": post.source,
        "tags": list(post.tags),
        "updated": rfc822(post.updated) if post.updated else None,
        "enclosures": [{"url": e.url, "type": e.type, "length": e.length} for e in post.enclosures],
    }
    # The reference leaves a key out rather than writing it empty.
    for key in ("headimg", "thumbnail", "updated"):
        if matter[key] is None:
            del matter[key]
    if not matter["enclosures"]:
        del matter["enclosures"]
    text = yaml.safe_dump(matter, allow_unicode=True, sort_keys=False, default_flow_style=False, width=2**31)
    return f"---\n{text}---\n\n{post.body}\n".encode()


def read_post(path: Path) -> Post:
    """Read a post file back; raise StoreError when it is not one of ours."""
    try:
        document = frontmatter.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as error:
        raise StoreError(f"{path}: unreadable post file: {error}") from error
    meta: dict[str, Any] = dict(document.metadata)
    date = parse_rfc822(meta.get("date"))
    if not meta.get("source") or meta.get("id") is None or date is None:
        raise StoreError(f"{path}: not a post file (needs source, id and date)")
    return Post(
        source=str(meta["source"]),
        id=str(meta["id"]),
        title=str(meta.get("title") or ""),
        link=str(meta.get("link") or ""),
        categories=tuple(str(c) for c in meta.get("categories") or ()),
        author=str(meta.get("author") or ""),
        comments=bool(meta.get("comments", False)),
        date=date,
        updated=parse_rfc822(meta.get("updated")),
        headimg=str(meta["headimg"]) if meta.get("headimg") else None,
        tags=tuple(str(t) for t in meta.get("tags") or ()),
        enclosures=tuple(
            Enclosure(
                url=str(e.get("url")),
                type=str(e.get("type", "")),
                length=int(e.get("length", 0) or 0),
            )
            for e in meta.get("enclosures") or ()
            if isinstance(e, dict) and e.get("url")
        ),
        body=document.content,
    )


_SCHEMA = """
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
"""

_POST_COLUMNS = (
    "source, entry_id, path, title, link, author, date_ts, updated_ts, categories, tags, "
    "headimg, enclosures, body, summary, content_hash"
)


class PostStore:
    """Writes post files and keeps the index in step with them."""

    def __init__(self, posts_dir: Path, index_path: Path, *, fsync: str = "batch") -> None:
        self.posts_dir = posts_dir
        self.index_path = index_path
        self.fsync = fsync
        try:
            posts_dir.mkdir(parents=True, exist_ok=True)
            index_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(index_path, timeout=30, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open the store at {index_path}: {error}") from error
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PostStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _migrate(self) -> None:
        has_meta = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        version = 0
        if has_meta:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.index_path}: index schema version {version} is newer than this program "
                f"understands ({SCHEMA_VERSION}); upgrade aggregator, or delete the index and "
                "run `aggregator reindex`"
            )
        if version < SCHEMA_VERSION:
            self.db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA}; INSERT OR REPLACE INTO meta "
                f"VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
            if version == 0 and self._has_post_files():
                self.reindex()

    def _has_post_files(self) -> bool:
        return any(self.posts_dir.glob("*/*/*/*.md"))

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # Posts -----------------------------------------------------------------

    def first_seen(self, source: str, ids: Iterable[str]) -> dict[str, datetime]:
        """When each already-known entry was first seen (its date fallback)."""
        result = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for entry_id, ts in self.db.execute(
                f"SELECT entry_id, first_seen_ts FROM posts WHERE source=? AND entry_id IN ({marks})",
                (source, *chunk),
            ):
                result[entry_id] = datetime.fromtimestamp(ts, UTC)
        return result

    def save(self, posts: Sequence[Post], now: datetime) -> list[SaveResult]:
        """Write new and changed posts; the index is committed after the files."""
        results: list[SaveResult] = []
        written: list[Path] = []
        rows: list[tuple[Post, Path, Outcome, dict[str, Any]]] = []
        for post in posts:
            existing = self.db.execute(
                "SELECT path, content_hash, rewrites, last_rewrite_ts, first_seen_ts "
                "FROM posts WHERE source=? AND entry_id=?",
                (post.source, post.id),
            ).fetchone()
            if existing is None:
                relpath = self._free_path(post_relpath(post), post)
                outcome = Outcome.NEW
                extra: dict[str, Any] = {
                    "rewrites": 0,
                    "last_rewrite_ts": None,
                    "first_seen_ts": now.timestamp(),
                }
            else:
                relpath = Path(existing[0])
                if existing[1] == post.content_hash:
                    results.append(SaveResult(post, Outcome.UNCHANGED, self.posts_dir / relpath))
                    continue
                rewrites, last_ts = existing[2], existing[3]
                if (
                    rewrites >= FREE_REWRITES
                    and last_ts is not None
                    and now - datetime.fromtimestamp(last_ts, UTC) < REWRITE_MIN_GAP
                ):
                    results.append(SaveResult(post, Outcome.CAPPED, self.posts_dir / relpath))
                    continue
                outcome = Outcome.UPDATED
                extra = {
                    "rewrites": rewrites + 1,
                    "last_rewrite_ts": now.timestamp(),
                    "first_seen_ts": existing[4],
                }
            path = self.posts_dir / relpath
            try:
                write_atomic(path, render_post(post), fsync=self.fsync == "file")
            except OSError as error:
                raise StoreError(f"cannot write {path}: {error}") from error
            written.append(path)
            rows.append((post, relpath, outcome, extra))
            results.append(SaveResult(post, outcome, path))
        if self.fsync == "batch" and written:
            fsync_files(written)
        if rows:
            with self._transaction():
                for post, relpath, _outcome, extra in rows:
                    self._index_post(post, relpath, **extra)
        return results

    def _free_path(self, relpath: Path, post: Post) -> Path:
        """The deterministic path, unless another entry already holds it."""
        candidate = relpath
        for attempt in range(2, 100):
            row = self.db.execute(
                "SELECT source, entry_id FROM posts WHERE path=?", (str(candidate),)
            ).fetchone()
            if row is None or (row[0], row[1]) == (post.source, post.id):
                return candidate
            candidate = relpath.with_name(f"{relpath.stem}-{attempt}{relpath.suffix}")
        raise StoreError(f"no free file name for {post.source}/{post.id}")

    def _index_post(
        self,
        post: Post,
        relpath: Path,
        *,
        rewrites: int,
        last_rewrite_ts: float | None,
        first_seen_ts: float,
    ) -> None:
        path = self.posts_dir / relpath
        try:
            stat = path.stat()
            mtime_ns, size = stat.st_mtime_ns, stat.st_size
        except OSError:
            mtime_ns, size = 0, 0
        self.db.execute(
            "INSERT OR REPLACE INTO posts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                post.source,
                post.id,
                str(relpath),
                post.title,
                post.link,
                post.author,
                post.date.timestamp(),
                post.updated.timestamp() if post.updated else None,
                first_seen_ts,
                json.dumps(post.categories, ensure_ascii=False),
                json.dumps(post.tags, ensure_ascii=False),
                post.headimg,
                json.dumps([[e.url, e.type, e.length] for e in post.enclosures]),
                post.body,
                post.summary,
                post.content_hash,
                rewrites,
                last_rewrite_ts,
                mtime_ns,
                size,
            ),
        )
        self.db.execute("DELETE FROM post_feeds WHERE source=? AND entry_id=?", (post.source, post.id))
        self.db.executemany(
            "INSERT OR REPLACE INTO post_feeds VALUES (?,?,?,?)",
            [
                (key, post.source, post.id, post.date.timestamp())
                for key in feed_keys_for(post.source, post.categories)
            ],
        )

    def _forget(self, source: str, entry_id: str) -> list[str]:
        keys = [
            row[0]
            for row in self.db.execute(
                "SELECT feed_key FROM post_feeds WHERE source=? AND entry_id=?", (source, entry_id)
            )
        ]
        self.db.execute("DELETE FROM posts WHERE source=? AND entry_id=?", (source, entry_id))
        self.db.execute("DELETE FROM post_feeds WHERE source=? AND entry_id=?", (source, entry_id))
        return keys

    def post_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM posts").fetchone()[0])

    def feed_keys(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT feed_key FROM post_feeds")]

    def feed_items(self, key: str, limit: int) -> list[IndexedPost]:
        rows = self.db.execute(
            f"SELECT {', '.join('p.' + c.strip() for c in _POST_COLUMNS.split(','))} "
            "FROM post_feeds f JOIN posts p ON p.source=f.source AND p.entry_id=f.entry_id "
            "WHERE f.feed_key=? ORDER BY f.date_ts DESC, p.source, p.entry_id LIMIT ?",
            (key, limit),
        )
        return [_indexed(row) for row in rows]

    def iter_paths(self) -> Iterator[tuple[str, str, str, int, int]]:
        yield from self.db.execute("SELECT source, entry_id, path, file_mtime_ns, file_size FROM posts")

    # Keeping the index a faithful cache of the files -------------------------

    def scan_files(self) -> dict[str, os.stat_result]:
        found = {}
        for dirpath, _dirs, filenames in os.walk(self.posts_dir):
            for name in filenames:
                if name.endswith(".md") and not name.startswith("."):
                    full = os.path.join(dirpath, name)
                    try:
                        found[os.path.relpath(full, self.posts_dir)] = os.stat(full)
                    except OSError:
                        continue
        return found

    def sync_with_files(self) -> set[str]:
        """Reflect posts edited, added or deleted by hand; return the feed keys touched."""
        sweep_temp_files(self.posts_dir)
        on_disk = self.scan_files()
        touched: set[str] = set()
        indexed = {path: (source, entry_id, mtime, size)
                   for source, entry_id, path, mtime, size in self.iter_paths()}  # fmt: skip
        with self._transaction():
            for path, (source, entry_id, mtime, size) in indexed.items():
                stat = on_disk.get(path)
                if stat is None:
                    touched.update(self._forget(source, entry_id))
                elif (stat.st_mtime_ns, stat.st_size) != (mtime, size):
                    touched.update(self._reindex_file(Path(path)))
            for path in on_disk.keys() - indexed.keys():
                touched.update(self._reindex_file(Path(path)))
        return touched

    def _reindex_file(self, relpath: Path) -> set[str]:
        try:
            post = read_post(self.posts_dir / relpath)
        except StoreError:
            return set()
        touched = set(self._forget(post.source, post.id))
        other = self.db.execute(
            "SELECT path FROM posts WHERE source=? AND entry_id=?", (post.source, post.id)
        ).fetchone()
        if other is not None and other[0] != str(relpath):
            return touched
        self._index_post(post, relpath, rewrites=0, last_rewrite_ts=None,
                         first_seen_ts=post.date.timestamp())  # fmt: skip
        touched.update(feed_keys_for(post.source, post.categories))
        return touched

    def reindex(self) -> int:
        """Rebuild the posts part of the index from the post files alone."""
        sweep_temp_files(self.posts_dir)
        count = 0
        with self._transaction():
            self.db.execute("DELETE FROM posts")
            self.db.execute("DELETE FROM post_feeds")
            self.db.execute("DELETE FROM feeds")
            for relpath in sorted(self.scan_files()):
                if self._reindex_file(Path(relpath)):
                    count += 1
        return count

    def verify(self) -> list[str]:
        """Differences between the files and the index, as readable lines."""
        problems = []
        on_disk = self.scan_files()
        indexed = {path: (source, entry_id) for source, entry_id, path, _m, _s in self.iter_paths()}
        for path in sorted(indexed.keys() - on_disk.keys()):
            problems.append(f"index lists {path}, but the file is missing")
        for path in sorted(on_disk.keys() - indexed.keys()):
            problems.append(f"{path} is not in the index")
        for dirpath, _dirs, filenames in os.walk(self.posts_dir):
            problems += [
                f"leftover temporary file {os.path.join(dirpath, n)}"
                for n in filenames
                if n.endswith(".aggtmp")
            ]
        return problems

    # Source state ----------------------------------------------------------

    def source_state(self, name: str) -> SourceState:
        row = self.db.execute("SELECT state FROM sources WHERE name=?", (name,)).fetchone()
        return SourceState.from_json(json.loads(row[0])) if row else SourceState(name=name)

    def all_source_states(self) -> list[SourceState]:
        return [SourceState.from_json(json.loads(r[0])) for r in self.db.execute("SELECT state FROM sources")]

    def save_source_state(self, state: SourceState) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO sources VALUES (?, ?)",
                (state.name, json.dumps(state.to_json(), ensure_ascii=False)),
            )

    # Published feeds -------------------------------------------------------

    def feed_signature(self, key: str) -> str | None:
        row = self.db.execute("SELECT signature FROM feeds WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def record_feed(self, key: str, signature: str, title: str, count: int, newest: datetime | None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO feeds VALUES (?,?,?,?,?)",
            (key, signature, title, count, newest.timestamp() if newest else None),
        )

    def forget_feed(self, key: str) -> None:
        self.db.execute("DELETE FROM feeds WHERE key=?", (key,))

    def published_feeds(self) -> list[tuple[str, str, int, datetime | None]]:
        return [
            (key, title, count, datetime.fromtimestamp(ts, UTC) if ts is not None else None)
            for key, title, count, ts in self.db.execute(
                "SELECT key, title, item_count, newest_ts FROM feeds ORDER BY key"
            )
        ]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _indexed(row: Sequence[Any]) -> IndexedPost:
    (source, entry_id, path, title, link, author, date_ts, updated_ts, categories, tags,
     headimg, enclosures, body, summary, content_hash) = row  # fmt: skip
    return IndexedPost(
        source=source,
        id=entry_id,
        path=path,
        title=title,
        link=link,
        author=author,
        date=datetime.fromtimestamp(date_ts, UTC),
        updated=datetime.fromtimestamp(updated_ts, UTC) if updated_ts is not None else None,
        categories=tuple(json.loads(categories)),
        tags=tuple(json.loads(tags)),
        headimg=headimg,
        enclosures=tuple(Enclosure(url=u, type=t, length=n) for u, t, n in json.loads(enclosures)),
        body=body,
        summary=summary or plain_text(body, limit=280),
        content_hash=content_hash,
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
