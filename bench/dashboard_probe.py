"""How long the dashboard's pages take with 1,000 sources (not a test).

    python bench/dashboard_probe.py [--sources 1000] [--per-source 50] [--repeat 5]

Writes a store of ``sources x per-source`` posts (build_probe's posts, so 1,000 sources give
1,571 feeds), a state for every source (one in ten failing), builds the feeds, then serves the
dashboard alone on 127.0.0.1 (uvicorn, as the daemon does, but without polling anything) and
measures, for /, /status (its first page), /status?health=failing, /status.json (every row) and
/status.json?html=1 (what the open status page asks every 15 s): the server's answer (httpx, the
whole body; and the CPU the process spent, the server being in it) and the page in headless
Chromium (navigation start to the last byte and to the load event, from the Navigation Timing
entry), median of ``--repeat``. The store lives
in bench/work/dashboard (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import timedelta  # noqa: E402

import httpx  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from support.browser import chromium  # noqa: E402
from support.servers import AppServer  # noqa: E402

from aggregator.config import Config  # noqa: E402
from aggregator.dashboard.app import Dashboard  # noqa: E402
from aggregator.errors import FetchError  # noqa: E402
from aggregator.pipeline import source_fingerprint  # noqa: E402
from aggregator.publish.builder import FeedBuilder  # noqa: E402
from aggregator.state import SourceState, after_failure, after_success, utcnow  # noqa: E402
from aggregator.store import open_store  # noqa: E402
from bench.build_probe import category_path, make_post  # noqa: E402

WORK = Path(__file__).resolve().parent / "work" / "dashboard"


def config(sources: int) -> Config:
    return Config.model_validate(
        {
            "site": {"title": "Probe", "base_url": "http://127.0.0.1:8080/"},
            "paths": {"posts": str(WORK / "posts"), "feeds": str(WORK / "feeds"), "data": str(WORK / "data")},
            "defaults": {"fsync": "off"},
            "sources": [
                {
                    "name": f"source-{n:03d}",
                    "url": f"http://127.0.0.1:9/{n}.xml",
                    "categories": category_path(n),
                }
                for n in range(sources)
            ],
            "base_dir": WORK,
        }
    )


def setup(cfg: Config, per_source: int) -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.perf_counter()
    now = utcnow()
    with open_store(cfg) as store:
        for number, source in enumerate(cfg.sources):
            posts = [replace(make_post(number, n), date=now - timedelta(hours=n * 13 + number % 24))
                     for n in range(per_source)]  # fmt: skip
            store.save(posts, now)
            state = SourceState(name=source.name, config_hash=source_fingerprint(source))
            if number % 10 == 3:
                state = after_failure(state, FetchError("HTTP 503 Service Unavailable"), now=now,
                                      interval=1800, backoff_cap=86400)  # fmt: skip
            else:
                state = after_success(state, now=now, interval=1800, http_status=200, new=0, updated=0,
                                      etag=None, last_modified=None, permanent_url=None)  # fmt: skip
            store.index.save_source_state(state)
        FeedBuilder(cfg, store).build()
    print(f"setup: {len(cfg.sources) * per_source} posts, {len(cfg.sources)} sources in "
          f"{time.perf_counter() - started:.1f}s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--per-source", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="reuse the store of the last run")
    args = parser.parse_args()
    cfg = config(args.sources)
    if not (args.keep and cfg.index_path.exists()):
        setup(cfg, args.per_source)
    dashboard = Dashboard(lambda: cfg)
    with AppServer(Starlette(routes=dashboard.routes())) as server, chromium() as browser:
        for path in ("/", "/status", "/status?health=failing", "/status.json", "/status.json?html=1"):
            served, cpu, received, loaded, size = [], [], [], [], 0
            for _ in range(args.repeat):
                started, cpu_started = time.perf_counter(), time.process_time()
                answer = httpx.get(server.url(path), timeout=60)
                served.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)  # the server runs in this process
                size = len(answer.content)
                if ".json" in path:
                    continue
                page = browser.new_page()
                page.goto(server.url(path), wait_until="load")
                timing = page.evaluate("(({responseEnd, loadEventEnd}) => [responseEnd, loadEventEnd])"
                                       "(performance.getEntriesByType('navigation')[0])")  # fmt: skip
                received.append(timing[0] / 1000)
                loaded.append(timing[1] / 1000)
                page.close()
            line = (
                f"{path:24} {size / 1024:5.0f} KiB  served in {statistics.median(served) * 1000:5.0f} ms "
                f"(CPU {statistics.median(cpu) * 1000:4.0f} ms)"
            )
            if loaded:
                line += (
                    f"  in Chromium: received {statistics.median(received) * 1000:5.0f} ms, "
                    f"loaded {statistics.median(loaded) * 1000:5.0f} ms"
                )
            print(line + f"  (medians of {args.repeat}; load average {os.getloadavg()[0]:.1f})")
    dashboard.close()


if __name__ == "__main__":
    main()
