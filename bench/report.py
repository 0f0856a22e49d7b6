"""What ``python -m bench`` writes around its numbers: the table, the machine it ran on, how each
number is measured, and the heading under which results.md's hand-written analysis survives a re-run."""

from __future__ import annotations

import os
import platform

from bench.driver import Row

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
