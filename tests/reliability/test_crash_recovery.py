"""Crashes: SIGKILL during fetch, post writes, index updates and builds, repeated.

After each kill, ``aggregator verify`` either reports the store consistent or
names every difference (one known kind of line each) and exits 1; no post file
or feed file is ever half written; the next run repairs everything, with no
post lost and none duplicated. (tests/test_crash.py covers the store alone.)
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import frontmatter
import pytest
import yaml
from lxml import etree
from relsupport import REPO, Ledger, healthy_feed, post_ids, scan_feeds, temp_files
from support.helpers import run_cli, wait_for, write_config

# Every line verify may print names one known kind of difference.
KNOWN_PROBLEMS = re.compile(
    r"^(index lists \S.*, but the file is missing"
    r"|\S.* is not in the index"
    r"|\d+ indexed posts belong to no feed"
    r"|leftover temporary file \S.*"
    r"|feed \S+ is missing \(\d+ posts in the index for it\)"
    r"|feed \S+ is out of date: has \d+ items, the index has \d+.*"
    r"|feed \S+ is stale: the index has no posts for it"
    r"|feed \S+ does not parse: .+"
    r"|index\.(html|opml) is missing)$"
)
SOURCES = {"big": 1200, "small": 300}
# Topic sources for the build test: more feeds make the build's writes last long enough
# (about 40 ms here, against 15 with the two sources) for a kill to land among them.
TOPICS = {f"topic{i}": 100 for i in range(6)}


def _site(tmp_path: Path, topics: bool = False, **build: object) -> Path:
    feeds = tmp_path / "upstream"
    feeds.mkdir()
    sources = [
        {"name": "big", "categories": ["News", "World", "Europe"]},
        {"name": "small", "categories": ["News", "Local"]},
    ]
    if topics:
        sources += [{"name": name, "categories": ["Topics", name.title()]} for name in TOPICS]
    counts = {**SOURCES, **TOPICS}
    for source in sources:
        name = str(source["name"])
        (feeds / f"{name}.xml").write_bytes(healthy_feed(counts[name], prefix=name))
        source["url"] = str(feeds / f"{name}.xml")
    return write_config(
        tmp_path / "site",
        sources,
        defaults={"interval": "30m", "fsync": "off", "max_entries": 5000},
        build={"max_items": 100, **build},
    )


def _start(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _post_files(site: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(site / "posts"))


def _feed_mtimes(site: Path) -> dict[str, int]:
    found = {}
    for dirpath, _dirs, files in os.walk(site / "feeds"):
        for name in files:
            with contextlib.suppress(OSError):
                found[os.path.join(dirpath, name)] = os.stat(os.path.join(dirpath, name)).st_mtime_ns
    return found


def _kill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL; whether the process was still running (a kill that landed)."""
    landed = process.poll() is None
    if landed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return landed


def _check_after_crash(config: Path) -> list[str]:
    """verify is exact; nothing is half written. Returns verify's problem lines."""
    site = config.parent
    result = run_cli("verify", config=config)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == 0:
        assert lines and lines[-1].startswith("consistent"), result.stdout
        problems: list[str] = []
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        problems = lines
        assert problems, "exit 1 names at least one difference"
        unknown = [line for line in problems if not KNOWN_PROBLEMS.match(line)]
        assert not unknown, unknown[:5]
        assert f"inconsistent: {len(problems)} problems" in result.stderr
    for path in (site / "posts").rglob("*.md"):
        post = frontmatter.loads(path.read_text(encoding="utf-8"))  # whole, readable
        assert post.get("id") and post.content.strip(), path
    for path in (site / "feeds").rglob("*"):
        if path.suffix in (".xml", ".opml"):
            etree.fromstring(path.read_bytes())  # never half a feed
    return problems


@pytest.mark.slow
def test_sigkill_during_fetch_post_writes_and_index_updates(tmp_path: Path, ledger: Ledger) -> None:
    config = _site(tmp_path)
    site = config.parent
    total = sum(SOURCES.values())
    rng = random.Random(9)
    kills = 0
    reported = 0
    # Kill points: early and late in the post writes, right when the last file lands (index
    # update and build), and at a random moment.
    for target in (total // 3, total, None):
        process = _start(config, "fetch")
        if target is None:
            time.sleep(rng.uniform(1.0, 3.0))  # a random kill moment, not a synchronization
        else:
            wait_for(lambda t=target, p=process: _post_files(site) >= t or p.poll() is not None, timeout=60,
                     interval=0.005, what=f"{target} post files")  # fmt: skip
        kills += _kill(process)
        reported += bool(_check_after_crash(config))
    finished = run_cli("fetch", config=config, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    problems = _check_after_crash(config)
    ids = post_ids(site / "posts")
    lost = total - len(set(ids))
    ledger.record(inputs=total, faults=kills, lost=lost)
    assert kills >= 2, "most kills landed while the fetch ran"
    assert problems == [], problems
    assert lost == 0 and len(ids) == len(set(ids)) == total, "no post lost, none duplicated"
    assert not temp_files(site / "posts", site / "feeds", site / "data")
    assert reported >= 1, "at least one crash left something verify had to report"


def _published_feeds(site: Path) -> dict[str, int]:
    """Each finished feed file's mtime (temporary files and index pages left out)."""
    names = ("/rss.xml", "/atom.xml", "/feed.json")
    found = _feed_mtimes(site).items()
    return {path: mtime for path, mtime in found if path.endswith(names) and "/_status/" not in path}


@pytest.mark.slow
def test_sigkill_during_builds_then_the_next_build_repairs(tmp_path: Path, ledger: Ledger) -> None:
    config = _site(tmp_path, topics=True)
    site = config.parent
    assert run_cli("fetch", config=config, timeout=120).returncode == 0
    assert _check_after_crash(config) == []
    started = time.monotonic()
    assert run_cli("build", config=config).returncode == 0
    rng = random.Random(4)
    kills = 0
    mixed = 0
    for round_ in range(4):
        # A changed item limit makes every feed stale, so the build rewrites all of them; each
        # round's limit is new and every feed holds more posts, so a feed left old has the
        # wrong number of items.
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["build"]["max_items"] = 60 + 10 * round_
        data["build"]["full_content"] = round_ % 2 == 0
        config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        before = _published_feeds(site)
        process = _start(config, "build")
        wait_for(lambda b=before, p=process: _published_feeds(site) != b or p.poll() is not None, timeout=60,
                 interval=0.002, what="the build writing feeds")  # fmt: skip
        time.sleep(rng.uniform(0.0, 0.01))  # a random kill moment while it writes, not a synchronization
        # Frozen first, so the files looked at below are exactly what the kill leaves.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)
        after = _published_feeds(site)
        rewritten = sum(after[path] != before.get(path) for path in after)
        left_old = rewritten < len(after) and process.poll() is None
        kills += _kill(process)
        problems = _check_after_crash(config)
        if left_old:
            mixed += 1
            assert problems, f"round {round_}: {len(after) - rewritten} feed files left old, verify was clean"
    repaired = run_cli("build", config=config)
    assert repaired.returncode == 0, repaired.stderr
    problems = _check_after_crash(config)
    feeds, feed_problems = scan_feeds(site / "feeds")
    expected_posts = sum(SOURCES.values()) + sum(TOPICS.values())
    lost = expected_posts - len(post_ids(site / "posts"))
    ledger.record(inputs=feeds, faults=kills, lost=lost)
    assert problems == [] and not feed_problems
    assert lost == 0
    assert not temp_files(site / "feeds")
    assert kills >= 2 and time.monotonic() - started < 120
    assert mixed >= 1, "at least one kill landed among the feed writes"


def test_verify_names_each_kind_of_damage_and_the_next_run_repairs_it(tmp_path: Path, ledger: Ledger) -> None:
    config = _site(tmp_path)
    site = config.parent
    assert run_cli("fetch", config=config, timeout=120).returncode == 0
    posts = sorted((site / "posts").rglob("*.md"))
    # Damage of every kind verify knows, as crashes and hands leave it.
    posts[0].unlink()  # a post deleted
    stray = posts[1].with_name("stray-post.md")
    stray.write_bytes(posts[1].read_bytes().replace(b"id: big-", b"id: stray-big-"))  # a post not indexed
    (site / "feeds" / "all" / "rss.xml").write_bytes(b"<?xml version='1.0'?><rss><channel><item>")  # cut
    (site / "feeds" / "source" / "small" / "atom.xml").unlink()  # missing
    leftover = site / "feeds" / "all" / ".feed.json.999999.abcd.aggtmp"
    leftover.write_bytes(b"{")
    stale = site / "feeds" / "source" / "removed-source"
    stale.mkdir()
    (stale / "rss.xml").write_bytes(b"<rss/>")
    result = run_cli("verify", config=config)
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    expected = [
        f"index lists {posts[0].relative_to(site / 'posts')}, but the file is missing",
        f"{stray.relative_to(site / 'posts')} is not in the index",
        "feed source/small/atom.xml is missing (100 posts in the index for it)",
        "feed source/removed-source/rss.xml is stale: the index has no posts for it",
        f"leftover temporary file {leftover}",
    ]
    for line in expected:
        assert line in lines, (line, lines)
    assert any(line.startswith("feed all/rss.xml does not parse: invalid XML") for line in lines), lines
    assert "Traceback" not in result.stderr
    # The next run repairs: build reads the posts again and republishes; verify agrees.
    assert run_cli("build", config=config).returncode == 0
    again = run_cli("verify", config=config)
    ledger.record(inputs=6, faults=6)
    assert again.returncode == 0, again.stdout
