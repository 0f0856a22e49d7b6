"""SIGKILL during ingestion: never a partial post file, never a duplicate, and the next run heals.

A real ``aggregator fetch`` subprocess ingests several local sources (new
entries and changed ones each round) and is killed with SIGKILL when a random
number of new post files has appeared. After each kill every visible post file
parses and no entry has two files; the next complete run leaves files and index
consistent, and ``reindex`` agrees with the files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.helpers import REPO, run_cli, wait_for, write_config

from aggregator.postfile import read as read_post
from aggregator.store import PostStore

SOURCES = 3
FIRST = 300  # entries per source in round 0
NEW_PER_ROUND = 100
CHANGED_PER_ROUND = 30
ROUNDS = 4


def _write_feed(path: Path, source: int, round_: int) -> int:
    """Entries 0..n of this round; the newest CHANGED_PER_ROUND older ones carry this round's text."""
    count = FIRST + NEW_PER_ROUND * round_
    items = []
    for n in range(count):
        revision = round_ if count - NEW_PER_ROUND - CHANGED_PER_ROUND <= n < count - NEW_PER_ROUND else 0
        items.append(
            f"<item><guid>urn:crash:{source}:{n}</guid><title>Source {source} post {n} ✓</title>"
            f"<link>https://crash.example.org/{source}/{n}</link>"
            f"<description>&lt;p&gt;Post {n}, revision {revision}. {'Lorem ipsum dolor. ' * 20}&lt;/p&gt;"
            f"</description><pubDate>Sun, 01 Mar 2026 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:"
            f"{n % 60:02d} GMT</pubDate></item>"
        )
    path.write_text(
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        f"<title>Crash {source}</title><link>https://crash.example.org/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>",
        encoding="utf-8",
    )
    return count


def _count_posts(root: Path) -> int:
    return sum(1 for _d, _s, files in os.walk(root) for name in files if name.endswith(".md"))


def _check_files(root: Path) -> dict[tuple[str, str], Path]:
    """Every visible post file parses completely; no entry has two files."""
    seen: dict[tuple[str, str], Path] = {}
    for path in root.rglob("*.md"):
        post = read_post(path)  # raises on a truncated or half-written file
        assert post.body.startswith("<p>Post ") and post.body.endswith("</p>"), path
        key = (post.source, post.id)
        assert key not in seen, f"two files for {key}: {seen[key]} and {path}"
        seen[key] = path
    return seen


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts_the_store(tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    sources = [{"name": f"crash{s}", "url": f"crash{s}.xml", "categories": ["Crash", f"S{s}"]}
               for s in range(SOURCES)]  # fmt: skip
    config = write_config(tmp_path, sources, defaults={"max_entries": 5000})
    posts = tmp_path / "posts"
    command = [sys.executable, "-m", "aggregator", "--config", str(config), "--log-level", "error", "fetch"]
    killed = 0
    for round_ in range(ROUNDS):
        expected = sum(_write_feed(tmp_path / f"crash{s}.xml", s, round_) for s in range(SOURCES))
        before = _count_posts(posts) if posts.exists() else 0
        target = before + rng.randrange(0, expected - before)
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(
                lambda p=process, t=target: (
                    p.poll() is not None or (posts.exists() and _count_posts(posts) >= t)
                ),
                timeout=30,
                interval=0.01,
                what=f"{target} post files",
            )
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
        finally:
            process.wait(timeout=10)
            assert process.stderr is not None
            stderr = process.stderr.read().decode()
            process.stderr.close()
        assert "Traceback" not in stderr, stderr
        _check_files(posts)

        # The next complete run heals whatever the kill interrupted.
        result = run_cli("fetch", "--json", config=config)
        assert result.returncode == 0, result.stderr
        assert all(s["outcome"] in ("ok", "not-modified") for s in json.loads(result.stdout)["sources"])
        files = _check_files(posts)
        assert len(files) == expected
        with PostStore(posts, tmp_path / "data" / "index.sqlite3", fsync="off") as store:
            assert store.verify() == []
            assert store.index.post_count() == expected
            assert store.reindex() == expected
            assert store.verify() == []
        assert [p.name for p in posts.rglob("*.aggtmp")] == []
    assert killed >= 2, "the kills should mostly land mid-run"
    verify = run_cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout + verify.stderr
