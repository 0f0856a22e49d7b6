"""The big store's rows: growing it, one new post's incremental build, the daemon idle on it."""

from __future__ import annotations

import argparse
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from bench import measure
from bench.corpus import Corpus
from bench.driver import AGGREGATOR, REPO, Row, Server, aggregator, fetch_summary, log, python_step


def big_store(
    args: argparse.Namespace, corpus: Corpus, server: Server, config: Path, grow: int, keep: list[int]
) -> list[Row]:
    """Grow the store to ``--big-posts`` by a cycle in which every feed gained ``grow`` entries."""
    rows: list[Row] = []
    n = corpus.spec.feeds
    log(f"big store: every feed gains {grow} entries")
    t = time.perf_counter()
    server.bump(list(range(n)), extra=grow)
    log(f"big store: corpus rewritten in {time.perf_counter() - t:.1f}s")
    m = aggregator(config, "fetch", "--json", keep=keep)
    s = fetch_summary(m)
    rows.append(Row(f"grow the store: every feed +{grow} entries", m, n, s["new"],
                    note=f"{s['new']} new posts into the store of the steps above; "
                    f"this makes the big store"))  # fmt: skip

    info = corpus.feeds()[1]
    server.bump([info.index], extra=grow + 1)
    log("incremental: one new post")
    m, inc = python_step("bench.incremental", str(config), info.source, keep=keep)
    rows.append(Row(f"incremental build, 1 new post into {inc['posts_before']} posts", m, 1, inc["new"],
                    "<= 0.3 s (build)", inc["build_s"] <= 0.3 and inc["new"] == 1, seconds=inc["build_s"],
                    note=f"the build alone {inc['build_s']:.3f}s: {len(inc['keys'])} feeds "
                    f"({inc['rendered']} rendered); update {inc['update_s']:.3f}s; store open "
                    f"{inc['open_s']:.3f}s; wall and CPU = the whole process"))  # fmt: skip
    server.bump([info.index], extra=grow + 2)
    log("incremental: one new post through `aggregator fetch SOURCE`")
    m = aggregator(config, "fetch", "--json", info.source, keep=keep)
    s = fetch_summary(m)
    rows.append(Row("`aggregator fetch <one source>`, 1 new post", m, 1, s["new"],
                    note="the whole CLI: start-up, update, incremental build"))  # fmt: skip

    log("daemon idle memory")
    port = int(yaml.safe_load(config.read_text())["server"]["port"])
    ready, main_mb, tree_mb = daemon_idle(config, port, keep)
    rows.append(Row(f"daemon idle, {n} sources, {inc['posts_before'] + 2} posts", None,
                    goal="<= 150 MB", passed=tree_mb <= 150,
                    note=f"VmRSS {main_mb:.0f} MB main process, {tree_mb:.0f} MB with children; "
                    f"ready after {ready:.1f}s (start-up sync and build)"))  # fmt: skip
    return rows


def daemon_idle(config: Path, port: int, keep: list[int]) -> tuple[float, float, float]:
    """Start ``aggregator run``, wait until it is ready (start-up build done) and its memory settles."""
    proc = subprocess.Popen(
        [AGGREGATOR, "-c", str(config), "--log-level", "warning", "run"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = time.monotonic()
    try:
        deadline = started + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not start serving within 600 s")
            time.sleep(0.2)
        ready = time.monotonic() - started
        samples: list[float] = []
        settle_deadline = time.monotonic() + 60
        while time.monotonic() < settle_deadline:
            samples.append(measure.tree_rss_mb(proc.pid))
            if len(samples) >= 6 and max(samples[-6:]) - min(samples[-6:]) < 1.0:
                break
            time.sleep(0.5)
        return ready, measure.rss_mb(proc.pid), samples[-1]
    finally:
        measure.stop_daemon(proc, keep)
