"""Temporary files of dead writers are swept when a writer's mark says one died mid-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aggregator.store import PostStore


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_store_open_sweeps_only_after_an_unclean_exit(tmp_path: Path) -> None:
    posts, data = tmp_path / "posts", tmp_path / "data"
    PostStore(posts, data / "index.sqlite3").close()  # a clean run leaves no mark
    assert list((data / "writers").iterdir()) == []
    dead = _dead_pid()
    leftover = posts / "src" / "2026" / "01" / f".a.md.{dead}.abcd1234.aggtmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")

    PostStore(posts, data / "index.sqlite3").close()
    assert leftover.exists(), "no dead writer's mark: the tree is not walked"

    (data / "writers" / f"{dead}-deadbeef").touch()  # what a SIGKILLed writer leaves
    store = PostStore(posts, data / "index.sqlite3")
    assert not leftover.exists()
    assert len(list((data / "writers").iterdir())) == 1, "our own mark, while open"
    store.close()
    assert list((data / "writers").iterdir()) == []
