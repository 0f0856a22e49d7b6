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

This module runs the steps in that order and writes results.md. A step is run and becomes a row by
``bench.driver``; ``bench.report`` draws the table and holds results.md's fixed text. The media
archive's, PostgreSQL's, the big store's and the polling daemons' rows are built in
``bench.media_rows``, ``bench.postgres_rows``, ``bench.big_store_rows`` and ``bench.polling_rows``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench import measure
from bench.big_store_rows import big_store
from bench.corpus import CorpusSpec, ensure_corpus
from bench.driver import (
    ROOT,
    Row,
    Server,
    aggregator,
    empty_trash,
    fetch_summary,
    free_port,
    fresh_store,
    log,
    python_step,
    set_aside,
    write_config,
)
from bench.media_rows import media_rows
from bench.polling_rows import daemon_polls_row, fleet_scale_row
from bench.postgres_rows import fleet_cold_row, postgres_cold_row
from bench.report import ANALYSIS_HEADING, METHOD, loadavg, machine, table

REPEATS = 3


def median_run(runs: list[tuple[measure.Measurement, Any]]) -> tuple[measure.Measurement, Any]:
    """The run with the median wall time, and what came with it."""
    return sorted(runs, key=lambda run: run[0].wall)[len(runs) // 2]


def walls(runs: list[tuple[measure.Measurement, Any]]) -> str:
    return ", ".join(f"{m.wall:.2f}" for m, _ in runs)


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
            pg_one = postgres_cold_row(work / "run-postgres", config, server, cold, total, keep)
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
