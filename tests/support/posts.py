"""A post with every field set, for tests that build posts by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregator.model import Post


def make_post(**fields: object) -> Post:
    """An ordinary post; ``fields`` override any value."""
    values: dict[str, object] = {
        "source": "src",
        "id": "urn:1",
        "title": "Hello",
        "link": "https://example.org/1",
        "categories": ("News",),
        "author": "Ann",
        "comments": False,
        "date": datetime(2026, 4, 1, 8, 0, 0, tzinfo=UTC),
        "updated": None,
        "headimg": None,
        "tags": (),
        "enclosures": (),
        "body": "<p>Body</p>",
        "first_seen": datetime(2026, 4, 2, 9, 0, 0, tzinfo=UTC),
    }
    values.update(fields)
    return Post(**values)  # type: ignore[arg-type]
