"""The peer: the ``reader`` library updating the same feeds from the same server.

    python -m bench.peer add DB URLS_FILE        # subscribe (not timed by the driver as a step)
    python -m bench.peer update DB --workers 16  # one update of every feed; prints a JSON summary

``scheduled=False`` makes every update poll every feed, as ``aggregator fetch``
does (reader otherwise skips feeds it polled within the last hour, and a warm
run would measure nothing). reader keeps ETag/Last-Modified, so its warm run is
all 304 too. ``workers`` threads retrieve and parse, reader's own parallelism.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reader import make_reader


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("action", choices=("add", "update"))
    parser.add_argument("db", type=Path)
    parser.add_argument("urls", type=Path, nargs="?")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    reader = make_reader(str(args.db))
    if args.action == "add":
        known = {feed.url for feed in reader.get_feeds()}
        for url in args.urls.read_text().split():
            if url not in known:
                reader.add_feed(url)
        print(json.dumps({"feeds": len(list(reader.get_feeds()))}))
        return
    summary = {"feeds": 0, "new": 0, "modified": 0, "not_modified": 0, "errors": 0}
    for result in reader.update_feeds_iter(scheduled=False, workers=args.workers):
        summary["feeds"] += 1
        value = result.value
        if value is None:
            summary["not_modified"] += 1
        elif isinstance(value, Exception):
            summary["errors"] += 1
            print(f"{result.url}: {value}", file=sys.stderr)
        else:
            summary["new"] += value.new
            summary["modified"] += value.modified
    reader.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
