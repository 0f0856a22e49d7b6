"""One source updated into an existing store, then the incremental build, each timed in-process.

    python -m bench.incremental CONFIG SOURCE     # prints a JSON summary

This is what the daemon does after a poll that found one new post: update the
source (fetch | parse | normalize | save), then build only the feeds the new
post touched. Process start-up and imports are left out of the phase timings
(the daemon pays them once), so ``build_s`` is the incremental build itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aggregator.config import SourceConfig, load_config
from aggregator.pipeline import Updater, UpdateResult
from aggregator.publish.builder import FeedBuilder
from aggregator.store import PostStore
from aggregator.workers import ParserPool


async def _update(updater: Updater, source: SourceConfig) -> UpdateResult:
    try:
        return await updater.update(source)
    finally:
        await updater.aclose()


def main() -> None:
    config = load_config(Path(sys.argv[1]))
    source = config.source_named(sys.argv[2])
    started = time.perf_counter()
    with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
        opened = time.perf_counter()
        posts = store.index.post_count()
        updater = Updater(config, store, parser=ParserPool(processes=0))
        result = asyncio.run(_update(updater, source))
        updated = time.perf_counter()
        report = FeedBuilder(config, store).build(result.touched_keys)
        built = time.perf_counter()
    print(
        json.dumps(
            {
                "posts_before": posts,
                "new": result.new,
                "outcome": result.outcome,
                "keys": sorted(result.touched_keys),
                "rendered": len(report.rendered),
                "open_s": opened - started,
                "update_s": updated - opened,
                "build_s": built - updated,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
