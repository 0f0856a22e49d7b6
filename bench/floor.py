"""``python -m bench.floor RUN_DIR CORPUS_DIR``: the least CPU a cold cycle's work costs here.

A cold cycle cannot cost less than the work that happens inside C libraries
and the kernel, whatever our Python does around it. This step redoes that
work alone, in one process, on the very bytes of the cold run in ``RUN_DIR``:

- xml: lxml builds the tree of every corpus document (no Python per element);
- sanitize: every entry's HTML through our sanitizer (nh3 with our allowlist,
  relative URLs resolved); the bodies are taken from our parse, untimed;
- post files: every post file the cold run wrote, written again atomically
  (temporary file, rename) into an empty folder;
- index: every index row the cold run wrote, inserted again into an empty index
  of our schema, one transaction a source as the update commits them;
- feed files: every feed file the cold run wrote, written again atomically.

It prints one JSON line: CPU seconds (user + system) per part and their sum.
Half the sum is the least wall time on two cores with both always busy.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from aggregator.files import write_atomic
from aggregator.normalize import sanitize_html
from aggregator.parse import parse_document
from aggregator.store import PostStore
from aggregator.text import clean_text


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work: Callable[[], object]) -> float:
    before = cpu_seconds()
    work()
    return cpu_seconds() - before


def files_under(root: Path) -> list[tuple[Path, bytes]]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            found.append((path.relative_to(root), path.read_bytes()))
    return found


def rewrite(source: Path, target: Path) -> tuple[float, int]:
    """Every file under ``source`` written again under ``target``; the CPU seconds and bytes."""
    files = files_under(source)  # read first, untimed

    def write_all() -> None:
        for relative, data in files:
            write_atomic(target / relative, data)  # makes a missing folder on the way, as the store does

    return timed(write_all), sum(len(data) for _relative, data in files)


def main() -> None:
    run_dir, corpus_dir = Path(sys.argv[1]), Path(sys.argv[2])
    documents = [path.read_bytes() for path in sorted(corpus_dir.glob("*.xml"))]
    scratch = Path(tempfile.mkdtemp(prefix="floor-", dir=run_dir))
    try:
        parts: dict[str, float] = {}
        parts["xml"] = timed(lambda: [etree.fromstring(doc) for doc in documents])

        bodies = []
        for i, doc in enumerate(documents):
            feed = parse_document(doc, {"content-type": "application/xml"}, f"http://127.0.0.1/f/{i}.xml")
            bodies += [(clean_text(e.content or e.summary or ""), e.base) for e in feed.entries]
        parts["sanitize"] = timed(lambda: [sanitize_html(body, base) for body, base in bodies])

        parts["post files"], _ = rewrite(run_dir / "posts", scratch / "posts")
        parts["index"] = _index(run_dir / "data" / "index.sqlite3", scratch / "data")
        parts["feed files"], feed_bytes = rewrite(run_dir / "feeds", scratch / "feeds")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = sum(parts.values())
    print(
        json.dumps(
            {
                "parts": {name: round(seconds, 2) for name, seconds in parts.items()},
                "total": round(total, 2),
                "documents": len(documents),
                "entries": len(bodies),
                "feed_mb": round(feed_bytes / 1e6),
            }
        )
    )


def _index(source_index: Path, target_dir: Path) -> float:
    """Insert the cold run's rows again, a transaction per source; the CPU seconds it took."""
    with contextlib.closing(sqlite3.connect(f"file:{source_index}?mode=ro", uri=True)) as old:
        posts: dict[str, list[tuple[object, ...]]] = {}
        for row in old.execute("SELECT * FROM posts"):
            posts.setdefault(row[0], []).append(row)
        feeds: dict[str, list[tuple[object, ...]]] = {}
        for row in old.execute("SELECT * FROM post_feeds"):
            feeds.setdefault(row[1], []).append(row)
    PostStore(target_dir / "posts", target_dir / "index.sqlite3").close()  # our schema, empty
    db = sqlite3.connect(target_dir / "index.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    post_marks = ",".join("?" * len(next(iter(posts.values()))[0]))
    feed_marks = ",".join("?" * len(next(iter(feeds.values()))[0]))

    def insert() -> None:
        for source, rows in posts.items():
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT INTO posts VALUES ({post_marks})", rows)
            db.executemany(f"INSERT INTO post_feeds VALUES ({feed_marks})", feeds.get(source, []))
            db.execute("COMMIT")

    seconds = timed(insert)
    db.close()
    return seconds


if __name__ == "__main__":
    main()
