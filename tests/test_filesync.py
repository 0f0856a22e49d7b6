"""``aggregator.filesync``'s reindex: what it does with each file (pure), and batches over a real store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.indexes import BACKENDS, open_test_store, persisted_rows
from support.posts import make_post

from aggregator import filesync
from aggregator.decide import DELETED, RETENTION
from aggregator.filesync import reindex_verdict
from aggregator.keys import ALL_KEY
from aggregator.store import PostStore

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_a_file_is_indexed_unless_pruned_or_an_older_copy() -> None:
    assert reindex_verdict(None, None) == "adopt"
    assert reindex_verdict(DELETED, None) == "restored"  # put back after a deletion by hand
    assert reindex_verdict(RETENTION, None) == "pruned"
    assert reindex_verdict(None, "src/newer.md") == "duplicate"
    assert reindex_verdict(DELETED, "src/newer.md") == "duplicate"


@pytest.fixture(params=BACKENDS)
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PostStore]:
    with open_test_store(tmp_path, request.param, request, fsync="off") as opened:
        yield opened


def test_a_reindex_in_batches_keeps_every_post_and_decides_each_file_as_one_by_one(
    store: PostStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight posts in batches of three, with a copy, a file put back and a pruned entry among them."""
    monkeypatch.setattr(filesync, "REINDEX_BATCH", 3)
    results = store.save([make_post(id=str(n), title=f"T{n}") for n in range(8)], NOW)
    paths = {r.post.id: r.path for r in results}
    # An older copy of post 0 (removed), post 1 deleted by hand then put back (indexed again),
    # post 2 pruned by retention while its file stayed (removed).
    content = paths["1"].read_bytes()
    paths["1"].unlink()
    store.sync_with_files(NOW)
    paths["1"].write_bytes(content)
    copy = paths["0"].with_name("copy-of-0.md")
    copy.write_bytes(paths["0"].read_bytes())
    store.index.bury([("src", "2")], RETENTION, NOW)
    # Newest first: posts 0 to 7, then the copy, in its own batch (0-2, 3-5, 6-7 and the copy).
    for n, path in [*((int(id_), p) for id_, p in paths.items() if p.exists()), (8, copy)]:
        os.utime(path, ns=(int((NOW.timestamp() - n * 3600) * 10**9),) * 2)
    persisted_rows(store, "DELETE FROM posts")  # the index lost, the files kept

    assert store.reindex() == 7
    assert not copy.exists() and paths["1"].exists() and not paths["2"].exists()
    assert store.verify() == []
    assert sorted(p.title for p in store.index.feed_items(ALL_KEY, 10)) == [
        f"T{n}" for n in range(8) if n != 2
    ]
    assert [(t.entry_id, t.reason) for t in store.index.tombstones()] == [("2", RETENTION)]
