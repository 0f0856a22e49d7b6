"""Probe the feed builder's speed on a synthetic store (not a test).

    python bench/build_probe.py setup --sources 600 --per-source 60    # ~1,100 feeds
    python bench/build_probe.py full                                   # full build from scratch
    python bench/build_probe.py rebuild                                # full build, nothing changed
    python bench/build_probe.py incremental                            # one new post, then build
    python bench/build_probe.py profile                                # cProfile of a full build
    python bench/build_probe.py cli [--config C] [--repeat N]          # the real `aggregator build`, measured

``cli`` runs ``aggregator --config C build`` as a child after removing the feeds folder
(``--keep-feeds``: the no-op build instead) and prints wall, CPU of the whole process tree,
peak RSS (largest process / sampled tree sum, as ``python -m bench`` measures) and the load
average. Without ``--config`` it writes ``aggregator.yaml`` for the probe's own store.

600 sources, each under one of 500 three-level category paths (10 top, 60 middle), give
1 + 600 + 500 + 60 + 10 = 1,171 feeds. The store lives in bench/work/build (ignored by git), or
in $BUILD_PROBE_DIR; `setup --per-source 167` gives the 100,000-post store of the incremental goal.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repo root, not bench/ (whose profile.py would shadow the standard library's).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import cProfile  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from aggregator.config import Config, load_config  # noqa: E402
from aggregator.keys import feed_keys_for  # noqa: E402
from aggregator.model import Post  # noqa: E402
from aggregator.parse import Enclosure  # noqa: E402
from aggregator.publish.builder import FeedBuilder  # noqa: E402
from aggregator.store import PostStore  # noqa: E402

WORK = Path(os.environ.get("BUILD_PROBE_DIR") or Path(__file__).resolve().parent / "work" / "build")
START = datetime(2026, 1, 1, tzinfo=UTC)
PARAGRAPH = (
    "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. 中文内容也在这里。</p>\n"
)


def config() -> Config:
    return Config.model_validate(
        {
            "site": {"title": "Probe", "base_url": "https://feeds.example.org/"},
            "paths": {"posts": str(WORK / "posts"), "feeds": str(WORK / "feeds"), "data": str(WORK / "data")},
            "defaults": {"fsync": "off"},
            "base_dir": WORK,
        }
    )


def category_path(source: int) -> tuple[str, ...]:
    leaf = source % 500
    middle = leaf % 60
    top = middle % 10
    return (f"Top {top}", f"Middle {middle}", f"Leaf {leaf}")


def make_post(source: int, number: int) -> Post:
    when = START + timedelta(minutes=number * 37 + source)
    image = f"https://img.example.org/{source}/{number}.jpg" if number % 3 == 0 else None
    return Post(
        source=f"source-{source:03d}",
        id=f"https://source{source}.example.org/posts/{number}",
        title=f"Post {number} of source {source}",
        link=f"https://source{source}.example.org/posts/{number}",
        categories=category_path(source),
        author=f"Author {source % 7}",
        comments=False,
        date=when,
        updated=None,
        headimg=image,
        tags=("probe",),
        enclosures=(Enclosure(f"https://cdn.example.org/{source}/{number}.mp3", "audio/mpeg", 1234),)
        if number % 10 == 0
        else (),
        body=f'<p><img src="{image}"></p>\n' * bool(image) + PARAGRAPH * 8,
    )


def setup(sources: int, per_source: int) -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    cfg = config()
    started = time.perf_counter()
    with PostStore(cfg.posts_dir, cfg.index_path, fsync="off") as store:
        for source in range(sources):
            store.save([make_post(source, n) for n in range(per_source)], START)
    print(f"setup: {sources * per_source} posts in {time.perf_counter() - started:.1f}s")


def build(keys: set[str] | None = None) -> None:
    cfg = config()
    with PostStore(cfg.posts_dir, cfg.index_path, fsync="off") as store:
        started, cpu = time.perf_counter(), time.process_time()
        report = FeedBuilder(cfg, store).build(keys)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{len(report.rendered)} feeds written, {report.skipped} unchanged in {elapsed:.2f}s (cpu {cpu:.2f}s)"
    )


def incremental() -> None:
    cfg = config()
    with PostStore(cfg.posts_dir, cfg.index_path, fsync="off") as store:
        builder = FeedBuilder(cfg, store)
        number = 200 + int(time.time() * 10) % 100_000  # newer than every setup post
        started = time.perf_counter()
        results = store.save([make_post(7, number)], START)
        saved = time.perf_counter()
        keys = {k for r in results for k in feed_keys_for(r.post.source, r.post.categories)}
        report = builder.build(keys)
        elapsed = time.perf_counter() - started
    print(
        f"one new post: saved in {saved - started:.3f}s, {len(report.rendered)} feeds rebuilt, "
        f"total {elapsed:.3f}s"
    )


def cli(config_path: Path | None, repeat: int, keep_feeds: bool) -> None:
    from bench.measure import become_subreaper, run

    if config_path is None:
        config_path = WORK / "aggregator.yaml"
        config_path.write_text(
            "site: {title: Probe, base_url: 'https://feeds.example.org/'}\n"
            "paths: {posts: posts, feeds: feeds, data: data}\n"
            "defaults: {fsync: 'off'}\n"
        )
    feeds = load_config(config_path).feeds_dir
    become_subreaper()
    argv = [str(Path(sys.executable).with_name("aggregator")), "--config", str(config_path), "build"]
    print("$", " ".join(argv), "" if keep_feeds else f"   (after rm -rf {feeds})")
    for _ in range(repeat):
        if not keep_feeds:
            shutil.rmtree(feeds, ignore_errors=True)
        load = os.getloadavg()
        m = run(argv)
        print(
            f"wall {m.wall:.2f}s  cpu {m.cpu:.2f}s  peak RSS {m.peak_rss_mb:.0f} MB process / "
            f"{m.peak_tree_mb:.0f} MB tree  load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}  "
            f"rc {m.returncode}: {m.stdout.strip() or m.stderr.strip()[-300:]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["setup", "full", "rebuild", "incremental", "profile", "cli"])
    parser.add_argument("--sources", type=int, default=600)
    parser.add_argument("--per-source", type=int, default=60)
    parser.add_argument("--config", type=Path, help="cli: the config of the store to build")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep-feeds", action="store_true", help="cli: measure the no-op build")
    args = parser.parse_args()
    if args.command == "cli":
        cli(args.config, args.repeat, args.keep_feeds)
    elif args.command == "setup":
        setup(args.sources, args.per_source)
    elif args.command == "full":
        shutil.rmtree(WORK / "feeds", ignore_errors=True)
        cfg = config()
        with PostStore(cfg.posts_dir, cfg.index_path, fsync="off") as store:
            store.index.db.execute("DELETE FROM feeds")
        build()
    elif args.command == "rebuild":
        build()
    elif args.command == "incremental":
        incremental()
    else:
        shutil.rmtree(WORK / "feeds", ignore_errors=True)
        cfg = config()
        with PostStore(cfg.posts_dir, cfg.index_path, fsync="off") as store:
            store.index.db.execute("DELETE FROM feeds")
        cProfile.run("build()", str(WORK / "profile"))
        pstats.Stats(str(WORK / "profile")).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
