"""index.html: every published feed, for people, with the main feeds as autodiscovery links."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from aggregator.config import Config
from aggregator.publish.specs import FORMAT_FILES, MEDIA_TYPES, FeedSpec, feed_url


def render_index_html(config: Config, feeds: Sequence[tuple[FeedSpec, int, datetime | None]]) -> bytes:
    escape = html.escape
    head = [
        "<!DOCTYPE html>",
        f'<html lang="{escape(config.site.language)}">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(config.site.title)}</title>",
    ]
    for spec, _count, _newest in feeds:
        if spec.kind == "all" or (spec.kind == "category" and len(spec.parts) == 1):
            for fmt in config.build.formats:
                head.append(
                    f'<link rel="alternate" type="{MEDIA_TYPES[fmt]}" '
                    f'title="{escape(spec.title)} ({fmt})" href="{escape(feed_url(config, spec, fmt))}">'
                )
    head.append('<link rel="alternate" type="text/x-opml" title="All feeds (OPML)" href="index.opml">')
    body = [
        "</head>",
        "<body>",
        f"<h1>{escape(config.site.title)}</h1>",
        f"<p>{escape(config.site.description)}</p>",
        '<p><a href="index.opml">Import every feed into your reader (OPML)</a></p>',
        "<table>",
        "<thead><tr><th>Feed</th><th>Items</th><th>Newest item</th><th>Formats</th></tr></thead>",
        "<tbody>",
    ]
    for spec, count, newest in feeds:
        indent = "&#160;&#160;" * max(len(spec.parts) - 1, 0) if spec.kind == "category" else ""
        label = {"all": "Everything", "source": "Source: ", "category": ""}[spec.kind]
        name = label + (spec.parts[-1] if spec.parts else "")
        links = " ".join(
            f'<a href="{escape(spec.url_path)}/{FORMAT_FILES[fmt]}">{fmt.upper()}</a>'
            for fmt in config.build.formats
        )
        when = newest.strftime("%Y-%m-%d %H:%M UTC") if newest else "—"
        body.append(
            f"<tr><td>{indent}{escape(name)}</td><td>{count}</td><td>{when}</td><td>{links}</td></tr>"
        )
    body += ["</tbody>", "</table>", "</body>", "</html>", ""]
    return "\n".join(head + body).encode()
