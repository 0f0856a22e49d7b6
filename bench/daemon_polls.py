"""The daemon's CPU per not-modified poll, beside ``aggregator fetch``'s per source, in one run.

    python -m bench.daemon_polls --sources 5000 --minutes 3 [--repeats 1] [--profile OUT.txt]

A loopback server (``bench.server``, its own process) serves ``--sources`` tiny
feeds; they answer 304 to a conditional request once fetched. The config polls
every source at ``interval: 1m`` (the daemon spreads them over the minute, each
at its own phase). Steps:

1. a cold ``aggregator fetch`` (every source 200, validators stored: not timed);
2. a warm ``aggregator fetch`` (every source 304): its CPU (the child and its
   parser workers, ``getrusage``) over the sources is the fetch figure, start-up
   included, as the issue measured it;
3. ``aggregator run`` on the same config and data; once ``/healthz`` is ready and
   the server has answered every source once since (the daemon is in its steady
   state), the daemon's CPU (utime + stime of it and its children from ``/proc``,
   reaped children included) and the 304s the server answered are read over a
   window of ``--minutes``: ms of CPU per poll.

With ``--repeats`` > 1 steps 2 and 3 take turns that many times. The server's CPU
is in no figure, but it shares the cores.
"""

from __future__ import annotations

import argparse
import os
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
from bench.driver import free_port
from bench.server import read_stats

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
AGGREGATOR = str(Path(sys.executable).parent / "aggregator")
FEED = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {i}</title>'
    "<link>http://127.0.0.1/</link><description>d</description>"
    "<item><title>Post {i}</title><link>http://127.0.0.1/{i}</link><guid>p-{i}</guid>"
    "<pubDate>Tue, 01 Dec 2026 10:00:00 GMT</pubDate><description>one post</description></item>"
    "</channel></rss>\n"
)
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class DaemonWindow:
    cpu: float  # seconds, the daemon and its children
    polls: int  # 304s the server answered in the window
    requests: int  # every request the server answered in the window
    seconds: float  # the window's wall length
    warmup: float  # from start to the steady state
    rss_mb: float = 0.0  # the daemon's and its children's resident memory at the window's end
    other_cpu: float = 0.0  # seconds of ``other_cpu``'s process tree (a database server) in the window
    # Per feed file in the window, with ``paths``: [requests, shortest gap between two (None: one)].
    paths: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ms_per_poll(self) -> float:
        return 1000 * self.cpu / max(self.polls, 1)


@dataclass(frozen=True)
class FetchRun:
    cpu: float
    wall: float
    not_modified: int
    sources: int

    @property
    def ms_per_source(self) -> float:
        return 1000 * self.cpu / self.sources


class FeedServer:
    """``bench.server`` over a folder of tiny feeds; counts requests and 304s."""

    def __init__(self, corpus: Path, override: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.server", str(corpus), str(override)],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stats(self, reset: bool = True, paths: bool = False) -> dict[str, Any]:
        return read_stats(self.base, reset=reset, paths=paths)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def write_feeds(directory: Path, sources: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(sources):
        path = directory / f"feed-{index}.xml"
        if not path.exists():
            path.write_text(FEED.format(i=index))


def write_config(
    path: Path,
    server: FeedServer,
    sources: int,
    port: int,
    *,
    interval: str = "1m",
    index: str | None = None,
) -> Path:
    """The daemon's config for ``sources`` tiny feeds at ``interval`` (``index``: a PostgreSQL URL)."""
    config: dict[str, Any] = {
        "site": {"title": "bench", "base_url": f"http://127.0.0.1:{port}/"},
        "paths": {"posts": "posts", "feeds": "feeds", "data": "data"},
        # Every feed is on 127.0.0.1: the per-host limit is raised to the global one.
        "defaults": {"concurrency": 16, "per_host": 16, "interval": interval},
        "server": {"host": "127.0.0.1", "port": port},
        "logging": {"level": "warning"},
        "sources": [{"name": f"s{i}", "url": f"{server.base}/f/feed-{i}.xml"} for i in range(sources)],
    }
    if index is not None:
        config["index"] = index
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tree_cpu(root: int) -> float:
    """utime + stime of ``root`` and every live descendant, with the children each has reaped."""
    total = 0
    for pid in measure.tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the name.
        total += sum(int(f) for f in fields[11:15])
    return total / _TICKS


def fetch(config: Path, keep: list[int]) -> measure.Measurement:
    m = measure.run([AGGREGATOR, "-c", str(config), "--log-level", "warning", "fetch", "--json"], keep=keep)
    if m.returncode != 0:
        raise SystemExit(f"aggregator fetch failed ({m.returncode}):\n{m.stderr[-3000:]}")
    return m


def warm_fetch(config: Path, server: FeedServer, sources: int, keep: list[int]) -> FetchRun:
    server.stats()
    m = fetch(config, keep)
    served = server.stats()
    return FetchRun(m.cpu, m.wall, served["not_modified"], sources)


def _wait(condition: str, check: object, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited early ({proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not {condition} in time")
        time.sleep(0.5)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def daemon_window(
    config: Path,
    server: FeedServer,
    sources: int,
    port: int,
    minutes: float,
    keep: list[int],
    profile: Path | None = None,
    *,
    steady_timeout: float = 300,
    other_cpu: int | None = None,
    paths: bool = False,
) -> DaemonWindow:
    """Run the daemon to its steady state, then read its CPU and the polls over ``minutes``.

    ``other_cpu``: the pid of another process tree whose CPU in the window is reported too (the
    PostgreSQL server of a fleet node); ``paths``: keep each feed's requests in the window.
    """
    log = config.parent / "daemon.log"
    keep = [*keep, *measure.children()]  # only what the daemon leaves behind is reaped
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [AGGREGATOR, "-c", str(config), "--log-level", "warning", "run"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    started = time.monotonic()
    try:
        server.stats()
        _wait("become ready", lambda: _healthy(port), started + 600, proc)
        # Every source polled once since the start: from here on the polls are the steady state.
        seen = 0

        def all_polled() -> bool:
            nonlocal seen
            seen += server.stats()["requests"]
            return seen >= sources

        _wait("poll every source", all_polled, time.monotonic() + steady_timeout, proc)
        warmup = time.monotonic() - started
        server.stats()
        other_before = tree_cpu(other_cpu) if other_cpu is not None else 0.0
        cpu_before, t0 = tree_cpu(proc.pid), time.monotonic()
        if profile is None:
            time.sleep(minutes * 60)  # the window itself: nothing to wait for but the clock
        else:
            record(proc.pid, minutes * 60, profile)
        cpu_after, t1 = tree_cpu(proc.pid), time.monotonic()
        other = tree_cpu(other_cpu) - other_before if other_cpu is not None else 0.0
        rss = measure.tree_rss_mb(proc.pid)
        served = server.stats(paths=paths)
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited during the window ({proc.returncode})")
        return DaemonWindow(
            cpu_after - cpu_before,
            served["not_modified"],
            served["requests"],
            t1 - t0,
            warmup,
            rss_mb=rss,
            other_cpu=other,
            paths=served.get("paths", {}),
        )
    finally:
        measure.stop_daemon(proc, keep)


def record(pid: int, seconds: float, out: Path) -> None:
    """py-spy samples of the daemon (and its children) over the window, idle threads left out."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    argv = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "100"]
    argv += ["--duration", str(round(seconds)), "-o", str(out)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass(frozen=True)
class Comparison:
    fetch: FetchRun
    daemon: DaemonWindow

    @property
    def ratio(self) -> float:
        return self.daemon.ms_per_poll / self.fetch.ms_per_source


def compare(
    sources: int,
    minutes: float,
    work: Path,
    repeats: int = 1,
    profile: Path | None = None,
    reuse: bool = False,
) -> list[Comparison]:
    """The whole measurement: cold fetch once, then warm fetch and daemon window, ``repeats`` times."""
    measure.become_subreaper()
    corpus, override, run_dir = work / f"feeds-{sources}", work / "override", work / "run"
    write_feeds(corpus, sources)
    override.mkdir(parents=True, exist_ok=True)
    reuse = reuse and (run_dir / "data").exists()
    if not reuse:
        shutil.rmtree(run_dir, ignore_errors=True)
    server = FeedServer(corpus, override)
    keep = [server.proc.pid]
    port = free_port()
    results = []
    try:
        config = write_config(run_dir / "aggregator.yaml", server, sources, port)
        if not reuse:
            _log(f"cold fetch of {sources} sources")
        # A reused store is warmed the same way (the server's port, so its URLs, changed).
        fetch(config, keep)
        for attempt in range(1, repeats + 1):
            _log(f"warm fetch ({attempt}/{repeats})")
            warm = warm_fetch(config, server, sources, keep)
            _log(f"daemon: steady state, then a {minutes:g} min window ({attempt}/{repeats})")
            window = daemon_window(config, server, sources, port, minutes, keep, profile)
            results.append(Comparison(warm, window))
            _log(f"daemon {window.ms_per_poll:.2f} ms/poll, fetch {warm.ms_per_source:.2f} ms/source")
    finally:
        server.stop()
    return results


def table(results: list[Comparison]) -> str:
    lines = [
        "| run | fetch CPU s (all 304) | fetch ms CPU / source | daemon window s | daemon polls (304) "
        "| daemon CPU s | daemon ms CPU / poll | daemon / fetch | goal | met |",
        "|" + "---|" * 10,
    ]
    for i, r in enumerate(results, 1):
        f, d = r.fetch, r.daemon
        met = "yes" if r.ratio <= 1.5 and f.not_modified == f.sources else "**no**"
        lines.append(
            f"| {i} | {f.cpu:.2f} ({f.not_modified}/{f.sources} 304) | {f.ms_per_source:.3f} "
            f"| {d.seconds:.0f} | {d.polls} of {d.requests} | {d.cpu:.2f} | {d.ms_per_poll:.3f} "
            f"| {r.ratio:.2f}x | <= 1.5x fetch | {met} |"
        )
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[daemon_polls {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, default=5000)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "daemon-polls")
    parser.add_argument("--profile", type=Path, help="record the window with py-spy into this file")
    parser.add_argument("--reuse", action="store_true", help="keep the store of the last run")
    args = parser.parse_args()
    results = compare(args.sources, args.minutes, args.work, args.repeats, args.profile, args.reuse)
    print(f"{args.sources} sources at interval 1m, every poll a 304; window {args.minutes:g} min")
    print(table(results))
    if args.profile is not None:
        from bench.profile import summarize

        print(summarize(args.profile, 40))


if __name__ == "__main__":
    main()
