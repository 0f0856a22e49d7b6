"""The parse cost alone: every corpus file through a parser, in one process, no I/O timed but reads.

    python -m bench.parse_only CORPUS_DIR --mode feedparser|feedparser-fast|ours

``feedparser``: its defaults (built-in sanitizer and relative-URI pass on), what
a plain feedparser user pays. ``feedparser-fast``: both passes off, as our parse
stage calls it. ``ours``: ``aggregator.parse.parse_document`` (feedparser fast
plus our typed extraction). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import feedparser

from aggregator.parse import parse_document
from bench.corpus import FORMATS, MEDIA_TYPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parse_only")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--mode", choices=("feedparser", "feedparser-fast", "ours"), default="feedparser")
    args = parser.parse_args(argv)
    files = sorted(args.corpus.glob("*.xml"))
    entries = 0
    size = 0
    started = time.perf_counter()
    for path in files:
        body = path.read_bytes()
        size += len(body)
        fmt = next((f for f in FORMATS if path.name.endswith(f"-{f}.xml")), "rss2")
        headers = {"content-type": f"{MEDIA_TYPES[fmt]}; charset=utf-8"}
        if args.mode == "ours":
            entries += len(parse_document(body, headers, f"http://127.0.0.1/f/{path.name}").entries)
            continue
        fast = args.mode == "feedparser-fast"
        parsed = feedparser.parse(
            io.BytesIO(body),
            response_headers=headers,
            sanitize_html=not fast,
            resolve_relative_uris=not fast,
        )
        entries += len(parsed.entries)
    elapsed = time.perf_counter() - started
    print(json.dumps({"files": len(files), "entries": entries, "bytes": size, "seconds": elapsed}))


if __name__ == "__main__":
    main()
