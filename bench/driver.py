"""What every row of ``python -m bench`` is made with: the corpus server, the run's config and
store, a measured ``aggregator`` or Python step, and the ``Row`` it becomes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.corpus import Corpus, render_feed
from bench.server import feed_requests, read_stats

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
BIN = Path(sys.executable).parent
AGGREGATOR = str(BIN / "aggregator")


@dataclass
class Row:
    step: str
    m: measure.Measurement | None
    sources: int = 0
    entries: int = 0
    goal: str = ""
    passed: bool | None = None
    note: str = ""
    seconds: float | None = None  # an in-process timing that replaces the wall time in the goal check
    ratios: dict[str, str] = field(default_factory=dict)


class Server:
    """``bench.server`` in its own process; its CPU is not part of any step."""

    def __init__(self, corpus: Corpus, override: Path) -> None:
        override.mkdir(parents=True, exist_ok=True)
        for stale in override.glob("*.xml"):
            stale.unlink()
        self.override = override
        self.corpus = corpus
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.server", str(corpus.directory), str(override)],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, filename: str) -> str:
        return f"{self.base}/f/{filename}"

    def stats(self, reset: bool = True) -> dict[str, int]:
        return read_stats(self.base, reset=reset)

    def feed_requests(self) -> dict[str, int]:
        """Requests per feed file since the last reset (and a reset)."""
        return feed_requests(read_stats(self.base, paths=True))

    def bump(self, indexes: list[int], extra: int) -> None:
        """Feeds ``indexes`` gain ``extra`` entries (new validators)."""
        for i in indexes:
            info = self.corpus.feeds()[i]
            target = self.override / info.filename
            temp = target.with_suffix(".tmp")
            temp.write_bytes(render_feed(self.corpus.spec, info, extra=extra))
            os.replace(temp, target)

    def reset(self) -> None:
        for stale in self.override.glob("*.xml"):
            stale.unlink()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def write_config(
    path: Path, corpus: Corpus, server: Server, *, port: int = 8080, media: bool = False
) -> Path:
    sources = []
    for info in corpus.feeds():
        sources.append(
            {"name": info.source, "url": server.url(info.filename), "categories": list(info.categories)}
        )
    config = {
        "site": {"title": "bench", "base_url": f"http://127.0.0.1:{port}/"},
        "paths": {"posts": "posts", "feeds": "feeds", "data": "data", "media": "media"},
        # Every benchmark feed is on one host (127.0.0.1), so the per-host limit is raised
        # to the global one; real sources are spread over many hosts.
        "defaults": {"concurrency": 16, "per_host": 16, "media": "archive" if media else "off"},
        "server": {"host": "127.0.0.1", "port": port},
        "logging": {"level": "warning"},
        "sources": sources,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return path


def fresh_store(run_dir: Path) -> None:
    for name in ("posts", "feeds", "data", "media"):
        set_aside(run_dir / name)


def set_aside(path: Path) -> None:
    """Move ``path`` out of the way now; ``empty_trash`` deletes it once nothing is being measured.

    Deleting right before a step slows that step: for about 30 s after a file is
    deleted, ext4 skips its inode when allocating new ones (``recently_deleted``,
    12% of the main process's samples in `perf` during a cold run that followed
    the removal of the previous store), so every file the step creates costs more.
    """
    if not path.exists():
        return
    trash = path.parent.parent / "trash"
    trash.mkdir(exist_ok=True)
    path.rename(trash / f"{time.time_ns()}-{path.name}")


def empty_trash(work: Path) -> None:
    shutil.rmtree(work / "trash", ignore_errors=True)


def aggregator(config: Path, *args: str, keep: list[int]) -> measure.Measurement:
    m = measure.run([AGGREGATOR, "-c", str(config), "--log-level", "warning", *args], keep=keep, cwd=REPO)
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(m.argv)} failed ({m.returncode}):\n{m.stderr[-3000:]}")
    return m


def fetch_summary(m: measure.Measurement) -> dict[str, int]:
    report = json.loads(m.stdout)
    summary = {"ok": 0, "not-modified": 0, "new": 0, "updated": 0, "other": 0}
    for source in report["sources"]:
        outcome = source["outcome"]
        summary[outcome if outcome in summary else "other"] += 1
        summary["new"] += source["new"]
        summary["updated"] += source["updated"]
    summary["feeds_built"] = report["feeds_built"]
    return summary


def python_step(*args: str, keep: list[int]) -> tuple[measure.Measurement, dict[str, Any]]:
    m = measure.run([sys.executable, "-m", *args], keep=keep, cwd=REPO)
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(m.argv)} failed ({m.returncode}):\n{m.stderr[-3000:]}")
    return m, json.loads(m.stdout.strip().splitlines()[-1])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
