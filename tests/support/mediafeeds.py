"""Feeds whose posts use images, configs that archive them, and what a run left, for the media tests."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggregator import postfile
from support.helpers import run_cli, write_config


def write_feed(path: Path, items: Sequence[dict[str, Any]]) -> None:
    """An RSS file whose items have the given ids, HTML bodies and (optionally) an enclosure."""
    parts = []
    for n, item in enumerate(items):
        enclosure = item.get("enclosure")
        parts.append(
            f"<item><guid>{item['id']}</guid><title>{item.get('title', item['id'])}</title>"
            f"<link>https://site.example.org/{item['id']}</link>"
            f"<description>{html.escape(item['body'])}</description>"
            + (
                f'<enclosure url="{html.escape(enclosure[0])}" type="{enclosure[1]}" length="1"/>'
                if enclosure
                else ""
            )
            + f"<pubDate>Mon, {n + 1:02d} Mar 2026 10:00:00 GMT</pubDate></item>"
        )
    path.write_text(
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Pics</title>"
        f"<link>https://site.example.org/</link><description>d</description>{''.join(parts)}</channel></rss>",
        encoding="utf-8",
    )


def media_config(tmp_path: Path, sources: Sequence[dict[str, Any]], **defaults: Any) -> Path:
    return write_config(
        tmp_path,
        list(sources),
        paths={"media": "media"},
        defaults={"media": "archive", "max_media": "100KiB", "deadline": "20s", **defaults},
    )


def posts_by_id(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    found = {}
    for path in (tmp_path / "posts").rglob("*.md"):
        found[postfile.read(path).id] = (path, path.read_text(encoding="utf-8"))
    return found


def media_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "media"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def fetch(config: Path) -> None:
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
