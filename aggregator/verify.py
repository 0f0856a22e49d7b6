"""Cross-check what was published against the index and the post files.

The post files are the truth, the index is a cache of them, and the feeds are
built from the index. After a crash (or a hand edit) the three can disagree;
``verify`` says exactly where, one readable line per difference:

- files vs index (``PostStore.verify``): a file the index does not list, an
  index row whose file is gone, an indexed post that also has a tombstone (in
  the state database), a temporary file a killed writer left behind;
- every published feed file parses (RSS and Atom as XML, JSON Feed as JSON);
- each feed holds exactly the newest ``build.max_items`` posts of its key, in
  order, as the index has them (one item per entry id); a feed the index has no
  posts for is stale; no two feeds share a folder;
- index.opml parses and lists each feed once;
- no temporary file is left in the feeds or data directories.

It reads only: the next ``build``/``fetch``/daemon start repairs what it reports.
Temporary files of a writer that still runs are in flight, not leftovers.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from aggregator.config import Config
from aggregator.files import TEMP_SUFFIX
from aggregator.index.feeds import IndexedPost
from aggregator.publish.specs import FORMAT_FILES, FeedSpec, spec_for
from aggregator.publish.status import STATUS_DIR
from aggregator.store import PostStore
from aggregator.uris import atom_id

_ATOM = "{http://www.w3.org/2005/Atom}"
# Hostile or broken files must not make verify itself expand entities or fetch DTDs.
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
INDEX_PAGES = ("index.html", "index.opml")


@dataclass(frozen=True)
class VerifyReport:
    problems: tuple[str, ...]
    feeds_checked: int = 0
    posts_indexed: int = 0

    @property
    def consistent(self) -> bool:
        return not self.problems


@dataclass
class _Collector:
    problems: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.problems.append(message)


def verify(config: Config, store: PostStore) -> VerifyReport:
    """Every difference between post files, index and published feeds."""
    out = _Collector()
    out.problems += store.verify()
    keys = sorted(store.index.feed_keys())
    expected_dirs: dict[str, FeedSpec] = {}
    for key in keys:
        spec = spec_for(key, config)
        if (other := expected_dirs.get(str(spec.relative_dir))) is not None:
            names = " and ".join(repr(k.replace("\x1f", "/")) for k in (other.key, key))
            out.add(f"feeds {names} are both published to {spec.relative_dir}")
        expected_dirs[str(spec.relative_dir)] = spec
        _check_feed(config, spec, newest_distinct(store, key, config.build.max_items), out)
    _check_stale_feeds(config.feeds_dir, expected_dirs, out)
    if keys:
        _check_index_pages(config.feeds_dir, out)
    for root in (config.feeds_dir, config.data_dir):
        out.problems += [f"leftover temporary file {path}" for path in _leftover_temp_files(root)]
    return VerifyReport(tuple(out.problems), feeds_checked=len(keys), posts_indexed=store.index.post_count())


def newest_distinct(store: PostStore, key: str, limit: int) -> list[IndexedPost]:
    """What a feed must hold: the newest ``limit`` posts of its key, one per entry id.

    The same entry from two sources is one item (guids are unique in a feed);
    the first in the index's order (newest, then by source) is the one kept.
    """
    window = limit
    while True:
        posts = store.index.feed_items(key, window)
        first: dict[str, IndexedPost] = {}
        for post in posts:
            first.setdefault(post.id, post)
        unique = list(first.values())
        if len(unique) >= limit or len(posts) < window:
            return unique[:limit]
        window *= 4


def _check_feed(config: Config, spec: FeedSpec, items: Sequence[IndexedPost], out: _Collector) -> None:
    directory = config.feeds_dir / spec.relative_dir
    for fmt in config.build.formats:
        path = directory / FORMAT_FILES[fmt]
        shown = os.path.relpath(path, config.feeds_dir)
        if not path.exists():
            out.add(f"feed {shown} is missing ({len(items)} posts in the index for it)")
            continue
        try:
            found = _feed_ids(path, fmt)
        except ValueError as error:
            out.add(f"feed {shown} does not parse: {error}")
            continue
        wanted = [_expected_id(item, fmt) for item in items]
        if found != wanted:
            out.add(f"feed {shown} is out of date: {_difference(found, wanted)}")


def _feed_ids(path: Path, fmt: str) -> list[str]:
    """The item ids of one published feed, in document order; ValueError when it does not parse."""
    data = path.read_bytes()
    if fmt == "json":
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"invalid JSON: {error}") from error
        items = document.get("items") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise ValueError("no items list")
        return [str(item.get("id")) for item in items if isinstance(item, dict)]
    try:
        root = etree.fromstring(data, _XML_PARSER)
    except etree.XMLSyntaxError as error:
        raise ValueError(f"invalid XML: {error}") from error
    if fmt == "rss":
        if root.tag != "rss":
            raise ValueError(f"root element is <{root.tag}>, not <rss>")
        return [guid.text or "" for guid in root.iterfind("channel/item/guid")]
    if root.tag != f"{_ATOM}feed":
        raise ValueError(f"root element is <{root.tag}>, not an Atom <feed>")
    return [entry.findtext(f"{_ATOM}id") or "" for entry in root.iterfind(f"{_ATOM}entry")]


def _expected_id(item: IndexedPost, fmt: str) -> str:
    return atom_id(item.source, item.id) if fmt == "atom" else item.id


def _difference(found: list[str], wanted: list[str]) -> str:
    missing = [i for i in wanted if i not in set(found)]
    extra = [i for i in found if i not in set(wanted)]
    parts = [f"has {len(found)} items, the index has {len(wanted)}"]
    if missing:
        parts.append(f"missing {_some(missing)}")
    if extra:
        parts.append(f"not in the index {_some(extra)}")
    if not missing and not extra:
        parts.append("items in a different order")
    return "; ".join(parts)


def _some(ids: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _check_stale_feeds(root: Path, expected: dict[str, FeedSpec], out: _Collector) -> None:
    """Feed files for a key that no longer has posts (its last post deleted, a source removed)."""
    names = set(FORMAT_FILES.values())
    for kind in ("all", "source", "category"):
        base = root / kind
        if not base.is_dir():
            continue
        for dirpath, _dirs, filenames in os.walk(base):
            relative = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for name in sorted(names & set(filenames)):
                if relative not in expected:
                    out.add(f"feed {relative}/{name} is stale: the index has no posts for it")


def _check_index_pages(root: Path, out: _Collector) -> None:
    for name in INDEX_PAGES:
        if not (root / name).exists():
            out.add(f"{name} is missing")
    opml = root / "index.opml"
    if opml.exists():
        try:
            document = etree.fromstring(opml.read_bytes(), _XML_PARSER)
        except etree.XMLSyntaxError as error:
            out.add(f"index.opml does not parse: {error}")
        else:
            # Two entries for one feed: two keys published to one folder (one overwrote the other).
            urls = Counter(o.get("xmlUrl") for o in document.iter("outline") if o.get("xmlUrl"))
            out.problems += [f"index.opml lists {url} {n} times" for url, n in sorted(urls.items()) if n > 1]
    for fmt in ("rss", "atom"):
        status = root / STATUS_DIR / f"{fmt}.xml"
        if status.exists():
            try:
                etree.fromstring(status.read_bytes(), _XML_PARSER)
            except etree.XMLSyntaxError as error:
                out.add(f"{STATUS_DIR}/{fmt}.xml does not parse: {error}")


def _leftover_temp_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for dirpath, _dirs, filenames in os.walk(root):
        for name in sorted(filenames):
            if name.endswith(TEMP_SUFFIX) and not _writer_running(name):
                yield Path(dirpath, name)


def _writer_running(name: str) -> bool:
    """Temporary files are named ``.<target>.<pid>.<token>.aggtmp``: is that pid alive?"""
    parts = name.rsplit(".", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, owned by another user
    return True
