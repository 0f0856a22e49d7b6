"""The publish flow (``aggregator.jobs``): which feeds are built, what is forgotten, what is announced.

Run for real: local feed files as sources, the real index and feeds folder, a
WebSub hub on 127.0.0.1 (``test_websub.Hub``), the in-process daemon and the CLI.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.helpers import run_cli, write_config
from test_websub import Hub

from aggregator import jobs
from aggregator.config import Config, SourceConfig, load_config
from aggregator.daemon import Daemon
from aggregator.errors import BuildError, FetchError
from aggregator.keys import ALL_KEY, feed_keys_for
from aggregator.pipeline import Updater, UpdateResult
from aggregator.state import SourceState
from aggregator.store import PostStore, open_store
from aggregator.workers import ParserPool

BASE = "http://127.0.0.1:8080/"  # write_config's site.base_url


@pytest.fixture
def hub() -> Iterator[Hub]:
    stub = Hub()
    with stub.server:
        yield stub


def rss(title: str, count: int) -> bytes:
    items = "".join(
        f"<item><title>{title} {i}</title><link>http://127.0.0.1/{title}/{i}</link><guid>{title}-{i}</guid>"
        f"<pubDate>Mon, 05 Oct 2026 {i:02d}:00:00 GMT</pubDate><description>Post {i}</description></item>"
        for i in range(count)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>http://127.0.0.1/{title}</link><description>d</description>{items}</channel></rss>"
    ).encode()


def two_sources(tmp_path: Path, **sections: object) -> Path:
    """Source a in [Tech] and b in [Science], both local files with two entries; Atom only."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for name in "ab":
        (upstream / f"{name}.xml").write_bytes(rss(name, 2))
    return write_config(
        tmp_path / "site",
        [
            {"name": "a", "url": str(upstream / "a.xml"), "categories": ["Tech"]},
            {"name": "b", "url": str(upstream / "b.xml"), "categories": ["Science"]},
        ],
        build={"formats": ["atom"], **sections.pop("build", {})},  # type: ignore[dict-item]
        **sections,
    )


def keys_of(config: Config, name: str) -> set[str]:
    source = config.source_named(name)
    return set(feed_keys_for(source.name, source.categories))


def atom_urls(*directories: str) -> list[str]:
    return sorted(f"{BASE}{d}/atom.xml" for d in directories)


def titles(feed: Path) -> list[str]:
    import feedparser

    return [entry.title for entry in feedparser.parse(feed.read_bytes()).entries]


def poll(config: Config, store: PostStore, *names: str) -> jobs.BatchReport:
    sources = [config.source_named(name) for name in names]
    return asyncio.run(jobs.poll_and_publish(config, store, sources, parser=ParserPool(processes=0)))


def save_without_building(config: Config, store: PostStore, source: SourceConfig) -> None:
    """As if a run died after its index commit and before its build: the update alone."""

    async def update() -> None:
        updater = Updater(config, store, parser=ParserPool(processes=0))
        try:
            assert (await updater.update(source)).new == 2
        finally:
            await updater.aclose()

    asyncio.run(update())


def test_a_batch_builds_the_feeds_it_touched_and_those_left_pending(tmp_path: Path, hub: Hub) -> None:
    config = load_config(two_sources(tmp_path, build={"websub_hub": hub.url}))
    with open_store(config) as store:
        save_without_building(config, store, config.source_named("b"))
        assert store.index.pending_feed_keys() == keys_of(config, "b")
        assert hub.pings == []

        report = poll(config, store, "a")  # polls a only

        assert [r.outcome for r in report.results] == ["ok"]
        assert jobs.touched_keys(report.results) == keys_of(config, "a")
        assert report.published is not None
        assert set(report.published.build.rendered) == keys_of(config, "a") | keys_of(config, "b")
        assert report.feeds_written == 5  # everything, two sources, two categories
        assert store.index.pending_feed_keys() == set()
    assert titles(config.feeds_dir / "source" / "b" / "atom.xml") == ["b 1", "b 0"]
    assert titles(config.feeds_dir / "all" / "atom.xml") == ["a 1", "b 1", "a 0", "b 0"]
    changed = atom_urls("all", "source/a", "source/b", "category/tech", "category/science")
    assert hub.urls() == changed
    assert sorted(ping.feed_url for ping in report.published.pings) == changed


def test_pending_keys_survive_a_failed_build_and_the_next_run_builds_them(tmp_path: Path) -> None:
    config = load_config(two_sources(tmp_path))
    config.feeds_dir.write_text("a file where the feeds folder should be")  # every feed write fails
    with open_store(config) as store:
        with pytest.raises(BuildError, match="cannot write feeds"):
            poll(config, store, "a")
        assert store.index.pending_feed_keys() == keys_of(config, "a")

        config.feeds_dir.unlink()
        report = poll(config, store, "a")

        assert [r.outcome for r in report.results] == ["not-modified"]  # nothing new this time
        assert jobs.touched_keys(report.results) == frozenset()
        assert report.published is not None
        assert set(report.published.build.rendered) == keys_of(config, "a")
        assert store.index.pending_feed_keys() == set()
        # Nothing pending and nothing new: no build at all.
        assert poll(config, store, "a").published is None
    assert titles(config.feeds_dir / "category" / "tech" / "atom.xml") == ["a 1", "a 0"]


def test_the_cli_fetch_keeps_the_keys_of_a_failed_build_for_the_next_fetch(tmp_path: Path) -> None:
    path = two_sources(tmp_path)
    config = load_config(path)
    config.feeds_dir.write_text("a file where the feeds folder should be")
    failed = run_cli("fetch", config=path)
    assert failed.returncode == 2
    assert "cannot write feeds" in failed.stderr and "Traceback" not in failed.stderr
    config.feeds_dir.unlink()
    fetched = run_cli("fetch", "--json", config=path)
    assert fetched.returncode == 0, fetched.stderr
    assert '"feeds_built": 5' in fetched.stdout
    assert '"outcome": "not-modified"' in fetched.stdout and '"outcome": "ok"' not in fetched.stdout
    assert titles(config.feeds_dir / "source" / "b" / "atom.xml") == ["b 1", "b 0"]


def test_the_daemon_builds_its_keys_and_the_pending_ones_and_announces_what_it_rewrote(
    tmp_path: Path, hub: Hub
) -> None:
    path = two_sources(tmp_path, build={"websub_hub": hub.url})
    config = load_config(path)

    async def scenario() -> list[list[str]]:
        daemon = Daemon(path, config)
        daemon.open()
        daemon.updater = Updater(config, daemon.store, parser=ParserPool(processes=0))
        announced: list[list[str]] = []

        def take() -> None:
            announced.append(hub.urls())
            hub.pings.clear()

        try:
            # Left pending by an earlier process that died before its build.
            await daemon.updater.update(config.source_named("b"))
            assert daemon.store.index.pending_feed_keys() == keys_of(config, "b")
            assert await daemon._build(None)  # the start-up build: every feed
            assert daemon.store.index.pending_feed_keys() == set()
            take()
            # b changes, saved by a run the daemon does not account (another process's fetch
            # whose build failed): its keys are pending in the index only.
            (tmp_path / "upstream" / "b.xml").write_bytes(rss("b", 3))
            await daemon.updater.update(config.source_named("b"))
            await daemon._run_source("a")
            assert daemon._build_task is not None
            await daemon._build_task  # the debounced build: a's keys, and b's from the index
            assert daemon.store.index.pending_feed_keys() == set()
            take()
            await asyncio.gather(daemon._run_source("a"), daemon._run_source("b"))  # both not modified
            assert daemon._build_task.done()
            take()
        finally:
            await daemon.close()
        return announced

    assert asyncio.run(scenario()) == [
        atom_urls("all", "source/b", "category/science"),
        atom_urls("all", "source/a", "source/b", "category/tech", "category/science"),
        [],
    ]
    assert titles(config.feeds_dir / "source" / "b" / "atom.xml") == ["b 2", "b 1", "b 0"]


def test_prune_announces_the_feeds_it_rewrote(tmp_path: Path, hub: Hub) -> None:
    path = two_sources(tmp_path, build={"websub_hub": hub.url})
    assert run_cli("fetch", config=path).returncode == 0
    assert len(hub.pings) == 5
    hub.pings.clear()
    config = load_config(path)
    config_text = path.read_text(encoding="utf-8")
    path.write_text(config_text + "retention:\n  max_posts: 2\n", encoding="utf-8")

    pruned = run_cli("prune", config=path)

    assert pruned.returncode == 0, pruned.stderr
    assert "pruned 2 posts" in pruned.stdout
    # The two oldest posts were a 0 and b 0: every feed lost one.
    assert titles(config.feeds_dir / "all" / "atom.xml") == ["a 1", "b 1"]
    assert hub.urls() == atom_urls("all", "source/a", "source/b", "category/tech", "category/science")
    with open_store(config) as store:
        assert store.index.pending_feed_keys() == set()


def _result(outcome: str) -> UpdateResult:
    state = SourceState(name=outcome, url="http://127.0.0.1/")
    if outcome == "skipped":
        return UpdateResult(outcome, state, skipped="backoff")
    error = FetchError("refused") if outcome == "error" else None
    return UpdateResult(outcome, state, error=error, not_modified=outcome == "not-modified")


@pytest.mark.parametrize(
    ("outcomes", "all_failed"),
    [
        ((), False),
        (("error",), True),
        (("error", "error", "skipped"), True),  # skipped: not polled, so no success either
        (("error", "ok"), False),
        (("error", "not-modified"), False),
        (("skipped",), False),
    ],
)
def test_a_batch_fails_only_when_every_source_polled_failed(
    outcomes: tuple[str, ...], all_failed: bool
) -> None:
    results = [_result(outcome) for outcome in outcomes]
    assert jobs.every_poll_failed(results) is all_failed
    assert jobs.BatchReport(tuple(results), None).all_failed is all_failed


def test_a_build_is_due_for_keys_or_a_feeds_folder_without_its_index() -> None:
    assert jobs.build_due({ALL_KEY}, index_exists=True)
    assert jobs.build_due(set(), index_exists=False)
    assert not jobs.build_due(set(), index_exists=True)


def test_a_fetch_in_which_nothing_changed_never_imports_the_builder(tmp_path: Path) -> None:
    """feedgen and lxml were a fifth of the start-up of such a poll: the builder is made only when due."""
    path = two_sources(tmp_path)
    assert run_cli("fetch", config=path).returncode == 0
    probe = (
        "import sys\n"
        "from aggregator.cli import main\n"
        f"sys.argv = ['aggregator', '--config', {str(path)!r}, 'fetch', '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as done:\n"
        "    print('exit', done.code, file=sys.stderr)\n"
        "heavy = ('aggregator.publish.builder', 'feedgen')\n"
        "print('imported:', sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert "exit 0" in result.stderr, result.stderr
    assert '"feeds_built": 0' in result.stdout
    assert result.stdout.splitlines()[-1] == "imported: []"


def test_building_what_an_earlier_run_left_pending_sweeps_the_temporary_files_it_left(tmp_path: Path) -> None:
    """A fetch killed mid-build leaves its keys pending and its temporary files: the next one clears both."""
    config = load_config(two_sources(tmp_path))
    config.feeds_dir.write_text("a file where the feeds folder should be")
    with open_store(config) as store:
        with pytest.raises(BuildError):
            poll(config, store, "a")  # the keys stay pending, as after a kill mid-build
        config.feeds_dir.unlink()
        folder = config.feeds_dir / "source" / "a"
        folder.mkdir(parents=True)
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        left = folder / f".rss.xml.{int(dead.stdout)}.0badf00d.aggtmp"
        left.write_bytes(b"<rss")
        running = folder / f".atom.xml.{os.getpid()}.0badf00d.aggtmp"
        running.write_bytes(b"<feed")  # its writer still runs: left alone
        report = poll(config, store, "a")
        assert report.published is not None and store.index.pending_feed_keys() == set()
    assert not left.exists()
    assert running.exists()
