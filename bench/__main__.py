"""``python -m bench``: our speed beside the peer's and the parser's, in one run.

    python -m bench                                   # 1,000 feeds x 50 entries, the full run
    python -m bench --feeds 100 --entries 20 --big-posts 5000   # a quick run
    python -m bench profile                           # py-spy profiles of cold, warm and build

Steps, each a measured child process (see ``bench.measure``): a cold
``aggregator fetch`` into an empty store, a warm one (every source answers 304),
one where 1% of the feeds gained an entry, a full ``aggregator build`` (feeds
folder removed first), a no-op build; ``reader`` cold and warm on the same
URLs; feedparser alone over the same bytes; the floor (``bench.floor``: the
cold cycle's work inside C libraries and the kernel, redone alone); the cold
cycle with the media archive on, the corpus's images on loopback, and a second cycle
(``--only-media`` runs just that, with its own baseline); then a store of ``--big-posts``
posts made by a cold fetch of a larger corpus (same generator, more entries a
feed), one new post into it with the incremental build timed, and the daemon's
idle memory on that store; then the daemon's CPU per not-modified poll beside a warm
fetch's per source (``bench.daemon_polls``); last, one fleet node polling ``--scale-sources``
small sources on a PostgreSQL index (``bench.fleet_scale``). After the PostgreSQL cold fetch,
two fleet nodes do the same cold cycle (``bench.fleet_cold``). Everything lives in ``bench/work``
(git-ignored).
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.corpus import Corpus, CorpusSpec, ensure_corpus, render_feed
from bench.media import point_images_at
from bench.server import feed_requests, read_stats

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
BIN = Path(sys.executable).parent
AGGREGATOR = str(BIN / "aggregator")


ANALYSIS_HEADING = "## Analysis"
METHOD = """## How each number is measured

- Every step is a child process started by the driver (`bench/measure.py`). Wall is the child's
  lifetime, start-up and imports included. CPU is the change in `getrusage(RUSAGE_CHILDREN)` across
  the step: the child and all its descendants (the driver is a child subreaper, so the parser
  worker processes orphaned at exit are reaped and counted too). Peak RSS: the largest single
  process (`ru_maxrss` from `wait4`) / the largest sum over the process tree sampled from `/proc`
  every 50 ms (shared pages counted in every process, so the tree figure overstates a little).
- Before each step the driver calls sync(2), untimed: a step starts with the previous one's writes
  on disk, not with the kernel flushing them beside it (after the cold run, ~1.7 GB).
- The package's bytecode is compiled first, as pip does when it installs a package (this machine
  sets PYTHONDONTWRITEBYTECODE, which otherwise makes every step recompile it).
- The corpus server (`bench/server.py`, uvicorn, one process) runs beside the steps; its CPU is in
  no step, but it shares the two cores.
- Cold: `aggregator fetch --json` into an empty store (posts written, every feed built). Warm: the
  same again, every source answers 304 (checked by the server's counters). 1%: one feed in 100 gained
  an entry. Warm and 1% (and reader's warm) run three times each; the table shows the run with the
  median wall time and the note all three, since one sample taken right after the cold run's writes,
  on a machine other work shares, swings by a third. Full build: the feeds folder deleted, then
  `aggregator build`. Config: concurrency 16 and per_host 16 (every benchmark feed is on 127.0.0.1;
  real feeds are spread over many hosts).
- reader: `bench/peer.py`, `update_feeds_iter(scheduled=False, workers=16)` over the same URLs, after
  `add_feed` (not timed); its warm run is all 304 as well.
- Parse only: `bench/parse_only.py`, every corpus file through feedparser in one process, with its
  defaults (sanitizer and relative-URI pass on), with both off (as our parse stage calls it), and our
  whole parse stage (`aggregator.parse.parse_document`).
- The big store: after the steps above every feed gains enough entries that the same store holds
  `--big-posts` posts (one `aggregator fetch`, shown as its own row). Incremental: one feed gains one
  entry; `bench/incremental.py` updates that source and then builds only the feeds it touched, timing
  the build in-process (what the daemon does after such a poll). Daemon idle: `aggregator run` on that
  store, read once `/healthz` answers 200 (start-up sync and build done; the feeds are served from the
  start) and VmRSS has stopped moving.
- Daemon polls: `bench/daemon_polls.py`, its own loopback server of `--daemon-sources` tiny feeds, every
  source at `interval: 1m`. After a cold fetch, a warm `aggregator fetch` (all 304) gives CPU per source;
  then `aggregator run` on the same config and data, once every source has been polled since it
  started: its CPU (it and its children, from `/proc`) over a `--daemon-minutes` window, divided by the
  304s the server answered in it.
- PostgreSQL, two fleet nodes: `bench/fleet_cold.py`. `aggregator fetch` takes no part in a fleet, so
  the fleet's cold cycle is two `aggregator run` nodes (each on its own port) on the cold run's config
  and corpus, with the index in a new database, started together on an empty store; measured until
  every source's lease has completed once (`fleet_sources.last_polled`) and no feed key is pending.
  CPU: both nodes' trees from `/proc` at that moment; the server's (postmaster, live and reaped
  backends) apart. The corpus server counts the requests of each feed: a feed asked twice is a source
  polled twice.
- Fleet scale: `bench/fleet_scale.py`, `bench/daemon_polls.py`'s tiny feeds and window with a
  PostgreSQL index: a cold `aggregator fetch` (not timed), then one `aggregator run` node; once it has
  polled every source (all 304), over `--scale-minutes`: the polls the server answered a second (the
  interval asks `--scale-sources` / `--scale-interval`), the node's and the database server's CPU per
  poll, the node's RSS (with children) at the end, and double polls (a feed asked twice less than half
  an interval apart).
- Floor: `bench/floor.py`, in one process, redoes only the cold cycle's work that runs inside C
  libraries and the kernel, on the cold run's own bytes: lxml building every document's tree, nh3
  sanitizing every entry (our allowlist and URL rewriting), writing every post file and every feed
  file again atomically, and inserting every index row again (a transaction a source). No Python of
  ours can make a cold cycle cost less CPU than this sum; half of it is the least wall time on two
  cores kept fully busy.
- `python -m bench profile` records py-spy profiles of the cold, warm and build steps.
"""


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


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])
    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": f"{total_kb / 2**20:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_all(args: argparse.Namespace) -> list[Row]:
    work: Path = args.work
    spec = CorpusSpec(args.feeds, args.entries)
    log(f"corpus {spec.name}")
    t = time.perf_counter()
    corpus = ensure_corpus(spec, work / "corpus")
    log(f"corpus ready: {corpus.total_bytes / 1e6:.0f} MB in {time.perf_counter() - t:.1f}s")
    server = Server(corpus, work / "override" / "main")
    keep = [server.proc.pid]
    rows: list[Row] = []
    n, total = spec.feeds, spec.feeds * spec.entries
    try:
        run_dir = work / "run"
        fresh_store(run_dir)
        config = write_config(run_dir / "aggregator.yaml", corpus, server, port=free_port())
        server.stats()

        log("cold fetch")
        m = aggregator(config, "fetch", "--json", keep=keep)
        s = fetch_summary(m)
        served = server.stats()
        cold = Row("aggregator cold fetch", m, n, s["new"], "<= 12 s, >= 5x reader",
                   note=f"{s['ok']} ok, {s['new']} new posts, {s['feeds_built']} feeds built; "
                   f"{served['bytes'] / 1e6:.0f} MB served")  # fmt: skip
        cold.passed = m.wall <= 12 and s["new"] == total
        rows.append(cold)
        cold_rss = Row("aggregator cold fetch: peak RSS", None, goal="<= 300 MB")
        if not args.skip_postgres:
            pg_one = postgres_cold(work / "run-postgres", config, server, cold, total, keep)
            rows.append(pg_one)
            if not args.skip_fleet:
                rows.append(fleet_cold_row(work / "run-fleet", config, server, cold, pg_one, total, keep))
        if args.only_cold:
            return rows

        # Warm and 1%: three runs each, the median reported (all three in the note). One
        # sample right after the cold run's 500 MB of writes, on a shared machine, is noise.
        runs = []
        for attempt in range(1, REPEATS + 1):
            log(f"warm fetch ({attempt}/{REPEATS})")
            m = aggregator(config, "fetch", "--json", keep=keep)
            runs.append((m, server.stats()))
        m, served = median_run(runs)
        rows.append(Row("aggregator warm fetch (all 304), median of 3", m, n, 0, "<= 1 s",
                        m.wall <= 1 and all(s["not_modified"] == n for _, s in runs),
                        note=f"{served['not_modified']}/{served['requests']} answered 304; "
                        f"runs {walls(runs)} s"))  # fmt: skip
        warm = rows[-1]

        changed = list(range(0, n, 100)) if n >= 100 else [0]
        runs = []
        for attempt in range(1, REPEATS + 1):
            server.bump(changed, extra=attempt)
            log(f"1% cycle ({attempt}/{REPEATS}): {len(changed)} feeds gained an entry")
            m = aggregator(config, "fetch", "--json", keep=keep)
            server.stats()
            runs.append((m, fetch_summary(m)))
        m, s = median_run(runs)
        rows.append(Row("aggregator 1%-changed fetch, median of 3", m, n, s["new"], "<= 2 s",
                        m.wall <= 2 and all(r["new"] == len(changed) for _, r in runs),
                        note=f"{s['new']} new posts, {s['feeds_built']} feeds rebuilt; "
                        f"runs {walls(runs)} s"))  # fmt: skip

        if not args.skip_media:
            rows += media_rows(corpus, work, keep, cold.m)

        log("full build")
        set_aside(run_dir / "feeds")
        m = aggregator(config, "build", keep=keep)
        rows.append(Row("aggregator full build", m, goal="<= 8 s", passed=m.wall <= 8,
                        note=m.stdout.strip()))  # fmt: skip
        log("no-op build")
        m = aggregator(config, "build", keep=keep)
        rows.append(Row("aggregator build, nothing changed", m, note=m.stdout.strip()))

        if not args.skip_peer:
            server.reset()  # the peer reads exactly the bytes our cold run read
            urls = run_dir / "urls.txt"
            urls.write_text("\n".join(server.url(info.filename) for info in corpus.feeds()) + "\n")
            db = run_dir / "reader.sqlite"
            for stale in run_dir.glob("reader.sqlite*"):
                stale.unlink()
            python_step("bench.peer", "add", str(db), str(urls), keep=keep)
            log("reader cold")
            m, peer = python_step("bench.peer", "update", str(db), "--workers", "16", keep=keep)
            server.stats()
            peer_cold = Row("reader cold update", m, n, peer["new"], note=json.dumps(peer))
            rows.append(peer_cold)
            runs = []
            for attempt in range(1, REPEATS + 1):
                log(f"reader warm ({attempt}/{REPEATS})")
                m, _ = python_step("bench.peer", "update", str(db), "--workers", "16", keep=keep)
                runs.append((m, server.stats()))
            m, served = median_run(runs)
            peer_warm = Row("reader warm update, median of 3", m, n, 0,
                            note=f"{served['not_modified']}/{served['requests']} answered 304; "
                            f"runs {walls(runs)} s")  # fmt: skip
            rows.append(peer_warm)
            speedup = peer_cold.m.wall / cold.m.wall  # type: ignore[union-attr]
            cpu_speedup = peer_cold.m.cpu / cold.m.cpu  # type: ignore[union-attr]
            cold.ratios["reader"] = f"{speedup:.2f}x (CPU {cpu_speedup:.2f}x)"
            cold.passed = bool(cold.passed) and speedup >= 5
            warm.ratios["reader"] = (
                f"{peer_warm.m.wall / warm.m.wall:.2f}x "  # type: ignore[union-attr]
                f"(CPU {peer_warm.m.cpu / warm.m.cpu:.2f}x)"  # type: ignore[union-attr]
            )

        if not args.skip_parse:
            for mode in args.parse_modes.split(","):
                log(f"parse only: {mode}")
                m, parsed = python_step("bench.parse_only", str(corpus.directory), "--mode", mode, keep=keep)
                rows.append(Row(f"parse only, one process: {mode}", m, n, parsed["entries"]))
                # parse-only wall / our cold wall: above 1, our whole cycle beats the bare parse.
                ratio = f"{mode} {m.wall / cold.m.wall:.2f}x"  # type: ignore[union-attr]
                cold.ratios["parse-only"] = "; ".join(filter(None, [cold.ratios.get("parse-only"), ratio]))

        if not args.skip_floor:
            log("floor: the C libraries' and the kernel's share of the cold cycle, alone")
            m, floor = python_step("bench.floor", str(run_dir), str(corpus.directory), keep=keep)
            parts = " + ".join(f"{name} {seconds:.1f}" for name, seconds in floor["parts"].items())
            rows.append(Row("floor: the cold cycle's work in C libraries and the kernel, alone", m, n,
                            floor["entries"],
                            note=f"CPU s: {parts} = {floor['total']:.1f}; on 2 cores at best "
                            f"{floor['total'] / 2:.1f} s wall (see bench/floor.py)"))  # fmt: skip

        assert cold.m is not None
        cold_rss.note = (
            f"largest process {cold.m.peak_rss_mb:.0f} MB; "
            f"whole tree (sampled sum) {cold.m.peak_tree_mb:.0f} MB"
        )
        cold_rss.passed = cold.m.peak_tree_mb <= 300
        rows.insert(1, cold_rss)

        grow = math.ceil(args.big_posts / n) - spec.entries
        if not args.skip_big and grow > 0:
            rows += big_store(args, corpus, server, config, grow, keep)

        if not args.skip_daemon_polls:
            rows.append(daemon_polls_row(args))
        if not args.skip_postgres and not args.skip_fleet:
            rows.append(fleet_scale_row(args))
    finally:
        server.stop()
        log("removing the stores set aside")
        empty_trash(work)
    return rows


REPEATS = 3


def media_rows(
    corpus: Corpus, work: Path, keep: list[int], baseline: measure.Measurement | None
) -> list[Row]:
    """The cold cycle with the media archive on, the corpus's images on loopback (``bench.media``).

    Then a second cycle: every image must have been requested exactly once over the two. The
    added time per image is against ``baseline`` (the cold cycle with the archive off), or
    against a cold run of this corpus with the archive off when none is given.
    """
    server = Server(corpus, work / "override" / "media")
    keep = [*keep, server.proc.pid]
    rows: list[Row] = []
    n, total = corpus.spec.feeds, corpus.spec.feeds * corpus.spec.entries
    run_dir = work / "run-media"
    try:
        point_images_at(corpus, server.override, server.base)
        if baseline is None:
            fresh_store(run_dir)
            config = write_config(run_dir / "aggregator.yaml", corpus, server, port=free_port())
            log("media: cold fetch, archive off (the baseline)")
            baseline = aggregator(config, "fetch", "--json", keep=keep)
            rows.append(Row("aggregator cold fetch, archive off (images on loopback)", baseline, n,
                            fetch_summary(baseline)["new"]))  # fmt: skip
        fresh_store(run_dir)
        config = write_config(run_dir / "aggregator.yaml", corpus, server, port=free_port(), media=True)
        server.stats()
        log("media: cold fetch, archive on")
        m = aggregator(config, "fetch", "--json", keep=keep)
        s = fetch_summary(m)
        first = server.stats(reset=False)
        log("media: second cycle")
        second = aggregator(config, "fetch", "--json", keep=keep)
        both = server.stats()
        images = first["image_paths"]
        files = sum(1 for path in (run_dir / "media").rglob("*") if path.is_file())
        once = both["image_max"] == 1 and both["image_requests"] == images and both["image_paths"] == images
        wall_ms = (m.wall - baseline.wall) / max(images, 1) * 1000
        cpu_ms = (m.cpu - baseline.cpu) / max(images, 1) * 1000
        rows.append(Row("aggregator cold fetch, media archive on", m, n, s["new"],
                        "each image requested once in 2 cycles", once and s["new"] == total,
                        note=f"{images} images archived ({files} files); +{wall_ms:.2f} ms wall, "
                        f"+{cpu_ms:.2f} ms CPU an image over the cold fetch with it off "
                        f"({baseline.wall:.2f} s, {baseline.cpu:.2f} CPU s); second cycle "
                        f"{second.wall:.2f} s, {both['image_requests'] - first['image_requests']} "
                        "image requests"))  # fmt: skip
    finally:
        server.stop()
    return rows


def postgres_cold(run_dir: Path, config: Path, server: Server, cold: Row, total: int, keep: list[int]) -> Row:
    """The cold fetch again, the index in PostgreSQL (``bench.postgres_cold``), beside SQLite's."""
    from bench.postgres_cold import cold_fetch

    log("cold fetch, PostgreSQL index")
    fresh_store(run_dir)
    pg = cold_fetch(config, run_dir, lambda cfg: aggregator(cfg, "fetch", "--json", keep=keep), keep)
    s, served = fetch_summary(pg.m), server.stats()
    ratio = pg.m.wall / cold.m.wall  # type: ignore[union-attr]
    return Row("aggregator cold fetch, PostgreSQL index (one node)", pg.m, cold.sources, s["new"],
               "<= 1.25x SQLite's cold wall", ratio <= 1.25 and s["new"] == total,
               note=f"{ratio:.2f}x SQLite's wall; PostgreSQL server CPU {pg.server_cpu:.1f} s (not in "
               f"the CPU column); {s['new']} new posts, {s['feeds_built']} feeds built; "
               f"{served['requests']} requests")  # fmt: skip


def fleet_cold_row(
    run_dir: Path, config: Path, server: Server, cold: Row, pg_one: Row, total: int, keep: list[int]
) -> Row:
    """The cold cycle by two fleet nodes on a new database (``bench.fleet_cold``), beside the others."""
    from bench.fleet_cold import fleet_cold_on_new_database

    assert cold.m is not None and pg_one.m is not None
    log("cold cycle, PostgreSQL index, two fleet nodes")
    fresh_store(run_dir)
    run = fleet_cold_on_new_database(config, run_dir, cold.sources, server.feed_requests, free_port, keep)
    server.stats()
    twice = run.polled_twice
    once = not twice and run.never_polled == 0 and run.saved == cold.sources and run.posts == total
    cpus = " + ".join(f"{cpu:.1f}" for cpu in run.node_cpu)
    note = (
        f"{run.wall / cold.m.wall:.2f}x SQLite's wall, {run.wall / pg_one.m.wall:.2f}x one PostgreSQL "
        f"node's; CPU of the nodes {cpus} s; PostgreSQL server CPU {run.server_cpu:.1f} s (not in the "
        f"CPU column); {run.saved} sources saved, {run.posts} posts; {len(run.requests)} feeds "
        f"requested, {len(twice)} twice ({', '.join(twice[:5]) or 'none'}); until every source is "
        "saved once and no feed is pending"
    )
    step = "aggregator cold cycle, PostgreSQL index, two fleet nodes (`aggregator run`)"
    return Row(step, run.measurement(), cold.sources, run.posts, "no source polled twice", once, note=note)


def fleet_scale_row(args: argparse.Namespace) -> Row:
    """``bench.fleet_scale``: one fleet node polling many small sources, mostly 304, at a sustained rate."""
    from aggregator.config import parse_duration
    from bench.fleet_scale import scale_run, summary

    sources, every, minutes = args.scale_sources, args.scale_interval, args.scale_minutes
    log(f"fleet scale: {sources} sources at {every} on one node, a {minutes:g} min window")
    run = scale_run(sources, parse_duration(every), minutes, args.work / "fleet-scale", [])
    return Row(
        f"one fleet node (PostgreSQL index), {sources} sources at {every}, mostly 304",
        None,
        goal="no double poll",
        passed=run.double_polls == 0 and run.window.requests > 0,
        note=summary(run) + "; bench/fleet_scale.py",
    )


def median_run(runs: list[tuple[measure.Measurement, Any]]) -> tuple[measure.Measurement, Any]:
    """The run with the median wall time, and what came with it."""
    return sorted(runs, key=lambda run: run[0].wall)[len(runs) // 2]


def walls(runs: list[tuple[measure.Measurement, Any]]) -> str:
    return ", ".join(f"{m.wall:.2f}" for m, _ in runs)


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


def daemon_polls_row(args: argparse.Namespace) -> Row:
    """``bench.daemon_polls``: the daemon's CPU per not-modified poll beside a warm fetch's per source."""
    from bench.daemon_polls import compare

    sources, minutes = args.daemon_sources, args.daemon_minutes
    log(f"daemon polls: {sources} sources at 1m, a {minutes:g} min window")
    (result,) = compare(sources, minutes, args.work / "daemon-polls")
    daemon, fetch = result.daemon, result.fetch
    return Row(
        f"daemon, {sources} sources at 1m: CPU per not-modified poll", None,
        goal="<= 1.5x fetch", passed=result.ratio <= 1.5 and fetch.not_modified == fetch.sources,
        note=f"daemon {daemon.ms_per_poll:.2f} ms a poll ({daemon.polls} polls, {daemon.cpu:.1f} CPU s "
        f"in {daemon.seconds:.0f} s); warm fetch {fetch.ms_per_source:.2f} ms a source "
        f"({fetch.cpu:.2f} CPU s, {fetch.not_modified} 304s); {result.ratio:.2f}x; bench/daemon_polls.py",
    )  # fmt: skip


def table(rows: list[Row]) -> str:
    head = (
        "| step | wall s | CPU s | sources/s | entries/s | peak RSS MB (process / tree) "
        "| vs reader (its wall / ours) | vs parse-only (its wall / ours) | goal | met | notes |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        m = r.m
        if m is None:
            cells = ["", "", "", "", ""]
        else:
            cells = [
                f"{m.wall:.2f}",
                f"{m.cpu:.2f}",
                f"{r.sources / m.wall:.0f}" if r.sources else "",
                f"{r.entries / m.wall:.0f}" if r.entries else "",
                f"{m.peak_rss_mb:.0f} / {m.peak_tree_mb:.0f}",
            ]
        met = "" if r.passed is None else ("yes" if r.passed else "**no**")
        lines.append(
            "| "
            + " | ".join(
                [
                    r.step,
                    *cells,
                    r.ratios.get("reader", ""),
                    r.ratios.get("parse-only", ""),
                    r.goal,
                    met,
                    r.note.replace("|", "/"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--big-posts", type=int, default=100_000, help="posts in the big store")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-parse", action="store_true")
    parser.add_argument(
        "--parse-modes",
        default="feedparser,feedparser-fast,lxml-fast",
        help="parse-only variants, comma-separated: feedparser, feedparser-fast, lxml-fast, ours, "
        "ours-feedparser",
    )
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-media", action="store_true")
    parser.add_argument(
        "--only-media", action="store_true", help="only the media archive's rows; results.md is left alone"
    )
    parser.add_argument("--skip-daemon-polls", action="store_true")
    parser.add_argument("--daemon-sources", type=int, default=5000, help="sources of the daemon-polls row")
    parser.add_argument("--daemon-minutes", type=float, default=3.0, help="its measured window")
    parser.add_argument("--skip-postgres", action="store_true", help="no PostgreSQL cold row")
    parser.add_argument("--skip-fleet", action="store_true", help="no fleet rows (two-node cold, scale)")
    parser.add_argument("--scale-sources", type=int, default=20_000, help="sources of the fleet scale row")
    parser.add_argument("--scale-interval", default="2m", help="their interval (asks sources / it a second)")
    parser.add_argument("--scale-minutes", type=float, default=2.0, help="its measured window")
    parser.add_argument(
        "--only-cold", action="store_true", help="the cold rows alone (SQLite, PostgreSQL, two fleet nodes)"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--output", type=Path, default=ROOT / "results.md")
    args = parser.parse_args(argv)
    # Bytecode as an installed package has it (pip compiles at install): with
    # PYTHONDONTWRITEBYTECODE set, as on the machine these numbers come from, every
    # step would otherwise recompile the package (~50 ms of each start-up).
    compileall.compile_dir(ROOT.parent / "aggregator", quiet=1)
    measure.become_subreaper()
    load_before = loadavg()
    started = time.perf_counter()
    if args.only_media:
        spec = CorpusSpec(args.feeds, args.entries)
        corpus = ensure_corpus(spec, args.work / "corpus")
        try:
            rows = media_rows(corpus, args.work, [], None)
        finally:
            empty_trash(args.work)
        print(table(rows))
        log(f"media rows in {time.perf_counter() - started:.0f} s (results.md not written)")
        return
    rows = run_all(args)
    elapsed = time.perf_counter() - started
    load_after = loadavg()
    result = table(rows)
    print(result)
    info = machine()
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc = [
        "# Benchmark results",
        "",
        f"Command: `{command.strip()}` (what `make bench` runs), on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        f" the whole run took {elapsed:.0f} s.",
        "",
        f"Machine: {info['cpu']}, {info['memory']} RAM, {info['os']}, Python {info['python']}. "
        f"Load average (1/5/15 min) {load_before} before the run, {load_after} after "
        "(other work was running on the machine at the same time).",
        "",
        f"Corpus: {args.feeds} feeds x {args.entries} entries; see `bench/corpus.py`.",
        "",
        result,
        "",
        METHOD,
    ]
    # The hand-written analysis (profiles, what stands in the way) survives a re-run.
    previous = args.output.read_text() if args.output.exists() else ""
    if ANALYSIS_HEADING in previous:
        doc += ["", previous[previous.index(ANALYSIS_HEADING) :].rstrip(), ""]
    args.output.write_text("\n".join(doc))
    log(f"written {args.output}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "profile":
        from bench.profile import main as profile_main

        profile_main(sys.argv[2:])
    else:
        main()
