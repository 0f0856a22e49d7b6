"""The parse cost alone: every corpus file through a parser, in one process, no I/O timed but reads.

    python -m bench.parse_only CORPUS_DIR --mode feedparser|feedparser-fast|lxml-fast|ours|ours-feedparser

``feedparser``: its defaults (built-in sanitizer and relative-URI pass on), what
a plain feedparser user pays. ``feedparser-fast``: both passes off, as our parse
stage calls it. ``lxml-fast``: ``aggregator.fastparse.parse`` alone (the lxml
fast path; a declined document falls back to feedparser-fast, and is counted).
``ours``: ``aggregator.parse.parse_document`` (the fast path, feedparser when it
declines, plus our typed extraction). ``ours-feedparser``: the same with the
fast path off. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import feedparser

from aggregator import fastparse
from aggregator.parse import parse_document
from bench.corpus import FORMATS, MEDIA_TYPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parse_only")
    parser.add_argument("corpus", type=Path)
    parser.add_argument(
        "--mode",
        choices=("feedparser", "feedparser-fast", "lxml-fast", "ours", "ours-feedparser"),
        default="feedparser",
    )
    args = parser.parse_args(argv)
    files = sorted(args.corpus.glob("*.xml"))
    entries = 0
    size = 0
    declined = 0
    started = time.perf_counter()
    started_cpu = time.process_time()
    for path in files:
        body = path.read_bytes()
        size += len(body)
        fmt = next((f for f in FORMATS if path.name.endswith(f"-{f}.xml")), "rss2")
        headers = {"content-type": f"{MEDIA_TYPES[fmt]}; charset=utf-8"}
        if args.mode in ("ours", "ours-feedparser"):
            url = f"http://127.0.0.1/f/{path.name}"
            feed = parse_document(body, headers, url, fast_path=args.mode == "ours")
            entries += len(feed.entries)
            continue
        parsed = fastparse.parse(body, headers) if args.mode == "lxml-fast" else None
        if parsed is None:
            declined += args.mode == "lxml-fast"
            fast = args.mode in ("feedparser-fast", "lxml-fast")
            parsed = feedparser.parse(
                io.BytesIO(body),
                response_headers=headers,
                sanitize_html=not fast,
                resolve_relative_uris=not fast,
            )
        entries += len(parsed.entries)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    summary = {"files": len(files), "entries": entries, "bytes": size, "seconds": elapsed, "cpu_seconds": cpu}
    if args.mode == "lxml-fast":
        summary["declined"] = declined
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
