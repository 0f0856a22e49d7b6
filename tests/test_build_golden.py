"""Golden output: a fixed set of posts builds to the committed feeds, byte for byte.

The posts are fixed ``Post`` objects written through the store; the expected
files live in tests/golden/feeds/ (every feed file, index.html, index.opml).
When a change to the output is intended, regenerate them and review the diff:

    AGGREGATOR_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_build_golden.py

and commit tests/golden/ with the change that explains it.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser

from aggregator.config import Config
from aggregator.model import Enclosure, Post
from aggregator.publish.builder import FeedBuilder
from aggregator.store import PostStore

GOLDEN = Path(__file__).resolve().parent / "golden" / "feeds"
REGENERATE = os.environ.get("AGGREGATOR_REGEN_GOLDEN") == "1"
START = datetime(2021, 7, 15, 13, 48, 14, tzinfo=UTC)


def golden_posts() -> list[Post]:
    """Every feature the feeds carry: categories at three levels, a lead image, an enclosure,
    a non-URI id, a missing author, Chinese text, HTML needing escapes, an update date."""

    def post(number: int, **fields: object) -> Post:
        values: dict[str, object] = {
            "source": "新浪财经",
            "id": f"https://finance.example.cn/doc-{number}.shtml",
            "title": f"海关总署 {number}：国际贸易恢复",
            "link": f"https://finance.example.cn/doc-{number}.shtml",
            "categories": ("金融", "新浪财经", "新浪财经－国內"),
            "author": "新浪财经",
            "comments": False,
            "date": START + timedelta(hours=number),
            "updated": None,
            "headimg": None,
            "tags": (),
            "enclosures": (),
            "body": f"<p>　　中新网青岛7月15日电 第{number}段。</p>",
        }
        values.update(fields)
        return Post(**values)  # type: ignore[arg-type]

    return [
        post(1, headimg="https://n.example.cn/w640h425/d727.jpg"),
        post(2, updated=START + timedelta(days=1), tags=("贸易",)),
        post(3, categories=("金融", "新浪财经")),
        post(
            4,
            source="podcast",
            id="episode-4",
            title='Episode 4: "<tags>" & more',
            link="https://pod.example.org/4",
            categories=("Audio",),
            author="",
            enclosures=(Enclosure("https://pod.example.org/4.mp3", "audio/mpeg", 123456),),
            body='<p>Show notes with <a href="https://pod.example.org/">a link</a>'
            " &amp; braces &#123;x&#125;.</p>",
        ),
        post(
            5,
            source="podcast",
            id="urn:uuid:0f1e2d3c-0000-4000-8000-000000000005",
            link="",
            categories=("Audio",),
            author="Host",
            body="",
        ),
    ]


def build_into(root: Path) -> Path:
    config = Config.model_validate(
        {
            "site": {
                "title": "Golden site",
                "description": "Fixed posts, fixed feeds",
                "base_url": "https://golden.example.org/feeds/",
                "language": "zh-CN",
                "author": "Golden Editor",
            },
            "paths": {"posts": str(root / "posts"), "feeds": str(root / "feeds"), "data": str(root / "data")},
            "defaults": {"fsync": "off"},
            "build": {
                "websub_hub": "https://hub.example.org/",
                "categories": [{"path": ["金融"], "title": "Finance", "description": "Money news"}],
            },
            "base_dir": root,
        }
    )
    with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
        store.save(golden_posts(), START)
        FeedBuilder(config, store).build()
    return config.feeds_dir


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fixed_posts_build_to_the_committed_feeds_byte_for_byte(tmp_path: Path) -> None:
    built = _tree(build_into(tmp_path))
    if REGENERATE:
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for name, data in built.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_bytes(data)
    expected = _tree(GOLDEN)
    assert sorted(built) == sorted(expected)
    for name, data in built.items():
        assert data == expected[name], f"{name} differs from tests/golden/feeds/{name} (see the docstring)"
    # The committed files are themselves readable feeds.
    for name, data in expected.items():
        if name.endswith(".xml"):
            assert not feedparser.parse(data).bozo, name
