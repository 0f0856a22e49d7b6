"""``python -m bench.render_cpu``: CPU per post file rendered, stock libyaml dumper against our events.

The reference post's shape, rendered many times in alternating rounds, CPU
time (``time.process_time``) so that other load on the machine counts little.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml

from aggregator import postfile
from aggregator.model import Post

ROUNDS = 5
POSTS = 4000
OPTIONS = dict(sort_keys=False, width=2**31 - 1, allow_unicode=True, default_flow_style=False)


def sample() -> Post:
    moment = datetime(2026, 4, 1, 8, tzinfo=UTC)
    url = "https://finance.sina.com.cn/x/2026-04-01/doc-1.shtml"
    return Post(
        source="sina", id=url, title="央行：保持流动性合理充裕", link=url,
        categories=("金融", "新浪财经", "新浪财经－国內"),
        author="新浪财经", comments=False, date=moment, updated=None, headimg="https://n.sinaimg.cn/x.jpg",
        tags=("央行",), enclosures=(), body="<p>正文</p>" * 40, first_seen=moment,
    )  # fmt: skip


def main() -> None:
    matter = postfile.front_matter(sample())
    dumpers: dict[str, Callable[[dict[str, Any]], str]] = {
        "stock CSafeDumper": lambda m: yaml.dump(m, Dumper=yaml.CSafeDumper, **OPTIONS),  # type: ignore[call-overload]
        "dump_front_matter": postfile.dump_front_matter,
    }
    results: dict[str, list[float]] = {name: [] for name in dumpers}
    for _ in range(ROUNDS):
        for name, dump in dumpers.items():
            start = time.process_time()
            for _ in range(POSTS):
                dump(matter)
            results[name].append((time.process_time() - start) / POSTS * 1e6)
    start = time.process_time()
    for _ in range(POSTS):
        postfile.render(sample())
    whole = (time.process_time() - start) / POSTS * 1e6
    for name, samples in results.items():
        print(f"{name:20} front matter: {sorted(samples)[ROUNDS // 2]:6.1f} us CPU (median of {ROUNDS})")
    print(f"{'postfile.render':20} whole post:   {whole:6.1f} us CPU (post made each time)")


if __name__ == "__main__":
    main()
