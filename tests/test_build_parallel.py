"""Builds shared with worker processes: the same bytes as one process, and safe when things die.

A real store, real spawned worker processes, real feeds on disk; the CLI build
runs as a real subprocess, killed with a real SIGKILL.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.helpers import wait_for, write_config
from support.indexes import BACKENDS, open_test_index, persisted_rows
from test_build import START, Site, make_post

from aggregator.config import load_config
from aggregator.index.readers import ReaderSpec
from aggregator.model import Post
from aggregator.publish.builder import BuildReport, FeedBuilder
from aggregator.publish.parallel import PARALLEL_MIN_FEEDS, WorkerSetup
from aggregator.store import PostStore
from aggregator.text import _plain_text, plain_text

REPO = Path(__file__).resolve().parents[1]


def fill(site: Site, sources: int, posts: int) -> None:
    """``sources`` sources in three-level categories (shared parents), ``posts`` posts each."""
    for s in range(sources):
        categories = (f"Top {s % 3}", f"Middle {s % 5}", f"Leaf {s % 7}")
        site.add(*(make_post(f"src{s}", n, categories, tags=("t",)) for n in range(posts)))


def forget_feeds(site: Site) -> None:
    """As after ``rm -rf feeds`` with the journal cleared: every feed is built from scratch."""
    persisted_rows(site.store, "DELETE FROM feeds")
    shutil.rmtree(site.config.feeds_dir, ignore_errors=True)


def build_with(site: Site, processes: int, **options: Any) -> tuple[BuildReport, dict[str, bytes]]:
    forget_feeds(site)
    builder = FeedBuilder(site.config, site.store, processes=processes, **options)
    report = builder.build()
    return report, site.files()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_build_shared_with_workers_writes_the_same_bytes_and_report_as_one_process(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """On PostgreSQL the workers read posts on connections of their own (the index's ReaderSpec)."""
    site = Site(tmp_path, open_test_index(tmp_path, backend, request) if backend == "postgres" else None)
    try:
        fill(site, sources=12, posts=6)
        alone, files_alone = build_with(site, processes=0)
        with caplog.at_level(logging.WARNING):
            shared, files_shared = build_with(site, processes=2, parallel_min_feeds=1)
        assert "feed-building process failed" not in caplog.text, "the workers read the index themselves"
        assert len(alone.rendered) > 20
        assert files_shared == files_alone
        assert shared.rendered == alone.rendered  # the plan's order, whoever rendered what
        assert sorted(shared.written_urls) == sorted(alone.written_urls)
        assert shared.skipped == alone.skipped == 0
        # The index records every feed: the next build, in one process, has nothing to do.
        again = FeedBuilder(site.config, site.store, processes=0).build()
        assert again.rendered == [] and again.skipped == len(alone.rendered)
    finally:
        site.store.close()


class _BrokenWorkers(FeedBuilder):
    """Workers pointed at an index that does not exist: each one dies as it starts."""

    def _worker_setup(self) -> WorkerSetup:
        setup = super()._worker_setup()
        assert setup.reader.sqlite_path is not None
        absent = ReaderSpec(sqlite_path=setup.reader.sqlite_path.with_name("absent.sqlite3"))
        return WorkerSetup(setup.config, absent, 1024, setup.parent_pid)


@pytest.mark.slow
def test_when_the_workers_die_this_process_renders_their_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = Site(tmp_path)
    try:
        fill(site, sources=8, posts=3)
        alone, files_alone = build_with(site, processes=0)
        forget_feeds(site)
        builder = _BrokenWorkers(site.config, site.store, processes=1, parallel_min_feeds=1)
        with caplog.at_level(logging.WARNING, logger="aggregator.publish.parallel"):
            report = builder.build()
        assert site.files() == files_alone
        assert report.rendered == alone.rendered
        assert "feed-building process failed" in caplog.text
    finally:
        site.store.close()


class _NoWorkers(FeedBuilder):
    def _worker_setup(self) -> WorkerSetup:
        raise AssertionError("a worker process was about to start")


def test_small_and_incremental_builds_start_no_process(tmp_path: Path) -> None:
    site = Site(tmp_path)
    try:
        fill(site, sources=4, posts=2)
        builder = _NoWorkers(site.config, site.store, processes=2)
        first = builder.build()  # 1 + 4 + 3 + 5 + 7 feeds, fewer than PARALLEL_MIN_FEEDS
        assert 0 < len(first.rendered) < PARALLEL_MIN_FEEDS
        keys = site.add(make_post("src1", 99, ("Top 1", "Middle 1", "Leaf 1")))
        assert set(builder.build(keys).rendered) == keys
    finally:
        site.store.close()


_SPACES = st.sampled_from([" ", "\n", "\t", "\r", "\xa0", "\u3000", "\u2003", "\x0b", "\x0c", "\x85"])
_PIECES = st.sampled_from(
    ["<p>", "</p>", "<br>", "&amp;", "&nbsp;", "&#x3000;", "&lt;script&gt;", "word", "中文", "<!--", "-->",
     "<script>", "</script>", "\x00", "\x1f", "\ud800", "\ufffe", "&", "<", ">"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_PIECES, _SPACES), max_size=60))
def test_the_builders_plain_text_is_plain_text(pieces: list[str]) -> None:
    markup = "".join(pieces)
    assert _plain_text(markup) == plain_text(markup)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_a_killed_build_takes_its_worker_processes_with_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site", [], defaults={"fsync": "off"})
    site_config = load_config(config)
    body = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 60 + "</p>"
    with PostStore(site_config.posts_dir, site_config.index_path, fsync="off") as store:
        for s in range(90):  # 90 sources: 90 + 1 + 3 + 5 feeds, enough to share the build
            posts: list[Post] = [
                make_post(f"src{s}", n, (f"Top {s % 3}", f"Middle {s % 5}"), body=body) for n in range(40)
            ]
            store.save(posts, START)
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "build"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def workers_or_end() -> set[int] | bool:
            found = {c for c in _children(process.pid) if "spawn_main" in _cmdline(c)}
            return found or process.poll() is not None

        workers = wait_for(workers_or_end, timeout=60, interval=0.01, what="a worker process")
        assert isinstance(workers, set), "the build ended before it started a worker"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        wait_for(lambda: not any(_alive(w) for w in workers), timeout=5, what="the workers to end")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
