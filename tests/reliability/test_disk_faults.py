"""Disk faults: a full disk and a read-only directory.

Where the machine allows it (root, and mount permitted), the disk is real: the
site lives on a 4 MiB tmpfs filled to the last byte, and the read-only posts
folder is a read-only bind mount. Otherwise the same faults are injected at the
one seam every write goes through (``aggregator.files``), raising ENOSPC or EROFS.
Either way: the error is reported, old posts and feeds are intact byte for byte,
no temporary file is left, the source's validators are not advanced (the next
run fetches again), and once the fault is gone the next run stores everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relsupport import Ledger, healthy_feed, temp_files
from support.faultserver import FaultServer
from support.helpers import write_config

import aggregator.files
from aggregator.config import Config, load_config
from aggregator.errors import AggregatorError, BuildError, StoreError
from aggregator.pipeline import Updater, UpdateResult
from aggregator.publish.builder import FeedBuilder
from aggregator.store import PostStore
from aggregator.verify import verify
from aggregator.workers import ParserPool


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _mount(*args: str) -> bool:
    try:
        subprocess.run(["mount", *args], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def _fill(directory: Path) -> Path:
    """Write until the file system refuses: the disk is full."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                handle.write(block)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0")
    return filler


class _FailingOs:
    """``os`` as aggregator.files sees it, except that writes to files opened under ``under`` fail
    half way with ``code``, as on a full disk or a read-only mount."""

    def __init__(self, code: int, under: Path) -> None:
        self.code, self.under = code, under
        self.failing: set[int] = set()

    def open(self, path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        fd = os.open(path, flags, mode, *args, **kwargs)
        if flags & os.O_WRONLY and Path(path).is_relative_to(self.under):
            self.failing.add(fd)
        return fd

    def write(self, fd: int, data: Any) -> int:
        if fd in self.failing:
            os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(self.code, os.strerror(self.code))
        return os.write(fd, data)

    def close(self, fd: int) -> None:
        self.failing.discard(fd)
        os.close(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@contextlib.contextmanager
def injected(monkeypatch: pytest.MonkeyPatch, code: int, under: Path) -> Iterator[None]:
    """Every atomic write under ``under`` fails with ``code`` (the seam: aggregator.files.os)."""
    with monkeypatch.context() as patch:
        patch.setattr(aggregator.files, "os", _FailingOs(code, under))
        yield


def _site(root: Path, server: FaultServer) -> Config:
    server.feed("/feed.xml", healthy_feed(10, prefix="v1"), etag='"v1"')
    path = write_config(
        root / "site", [{"name": "disk", "url": server.url("/feed.xml"), "categories": ["Disk"]}]
    )
    return load_config(path)


def _update(config: Config) -> list[UpdateResult]:
    """One fetch pass and build, in this process (so a seam can be patched)."""

    async def run() -> list[UpdateResult]:
        with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
            updater = Updater(config, store, parser=ParserPool(processes=0))
            try:
                results = await updater.update_many(list(config.sources))
            finally:
                await updater.aclose()
            FeedBuilder(config, store).build({key for r in results for key in r.touched_keys})
            return results

    return asyncio.run(run())


def _snapshot(config: Config) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for root in (config.posts_dir, config.feeds_dir)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _etag(config: Config) -> str | None:
    with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
        return store.index.source_state("disk").etag


def _then_recovers(config: Config, server: FaultServer) -> int:
    """With the fault gone, the next run stores the new entries; returns posts lost."""
    results = _update(config)
    assert results[0].error is None, results[0].error
    assert _etag(config) == '"v2"'
    with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
        report = verify(config, store)
        assert report.consistent, report.problems
        return 15 - store.index.post_count()


def _change_upstream(server: FaultServer) -> None:
    server.feed("/feed.xml", healthy_feed(15, prefix="v1").replace(b"Body of", b"New body of"), etag='"v2"')


@pytest.mark.parametrize("mode", ["tmpfs", "injected"])
def test_full_disk_keeps_old_posts_and_feeds_and_the_validators(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if mode == "tmpfs" and not (_can_mount() and _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))):
        pytest.skip("cannot mount a tmpfs here (not root, or refused): the injected variant covers it")
    try:
        with FaultServer() as server:
            config = _site(disk, server)
            assert _update(config)[0].new == 10
            before, etag = _snapshot(config), _etag(config)
            _change_upstream(server)
            with contextlib.ExitStack() as fault:
                if mode == "tmpfs":
                    filler = _fill(disk)
                else:
                    fault.enter_context(injected(monkeypatch, errno.ENOSPC, disk))
                with pytest.raises(AggregatorError) as caught:
                    _update(config)
                assert isinstance(caught.value, StoreError | BuildError)
                # SQLite may be the first to hit the full disk (it needs room for its WAL).
                message = str(caught.value)
                assert any(m in message for m in ("No space left", "disk I/O error", "disk is full")), message
                assert _snapshot(config) == before, "old posts and feeds intact"
                assert not temp_files(disk)
                if mode == "tmpfs":
                    filler.unlink()  # SQLite cannot even be read on a disk that full
                assert _etag(config) == etag == '"v1"', "validators not advanced"
            lost = _then_recovers(config, server)
    finally:
        if mode == "tmpfs":
            _umount(disk)
    ledger.record(inputs=2, faults=1, lost=lost)
    assert lost == 0


def test_full_disk_during_a_build_keeps_the_published_feeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    with FaultServer() as server:
        config = _site(tmp_path, server)
        _update(config)
        feeds_before = {str(p): p.read_bytes() for p in config.feeds_dir.rglob("*") if p.is_file()}
        with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
            changed = config.model_copy(update={"build": config.build.model_copy(update={"max_items": 3})})
            with injected(monkeypatch, errno.ENOSPC, config.feeds_dir), pytest.raises(BuildError) as caught:
                FeedBuilder(changed, store).build(None)
            assert "No space left on device" in str(caught.value)
            after = {str(p): p.read_bytes() for p in config.feeds_dir.rglob("*") if p.is_file()}
            assert after == feeds_before and not temp_files(config.feeds_dir)
            FeedBuilder(changed, store).build(None)
            report = verify(changed, store)
    ledger.record(inputs=1, faults=1)
    assert report.consistent, report.problems


@pytest.mark.parametrize("mode", ["mount", "injected"])
def test_read_only_posts_folder_is_reported_and_nothing_advances(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    with FaultServer() as server:
        config = _site(tmp_path, server)
        _update(config)
        before, etag = _snapshot(config), _etag(config)
        _change_upstream(server)
        posts = config.posts_dir
        with contextlib.ExitStack() as fault:
            if mode == "mount":
                if not (_can_mount() and _mount("--bind", str(posts), str(posts))):
                    pytest.skip("cannot bind-mount here: the injected variant covers it")
                fault.callback(_umount, posts)
                if not _mount("-o", "remount,ro,bind", str(posts)):
                    pytest.skip("cannot remount read-only here")
            else:
                fault.enter_context(injected(monkeypatch, errno.EROFS, posts))
            with pytest.raises(StoreError) as caught:
                _update(config)
            assert "Read-only file system" in str(caught.value)
            assert _snapshot(config) == before
            assert not temp_files(tmp_path)
            assert _etag(config) == etag
        lost = _then_recovers(config, server)
    ledger.record(inputs=2, faults=1, lost=lost)
    assert lost == 0
