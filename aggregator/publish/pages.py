"""index.html: every published feed, for people, with the main feeds as autodiscovery links.

The page is the dashboard's home page without its live parts (``aggregator.dashboard.render``),
its style sheet inlined, so it reads the same from a static host.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from aggregator.config import Config
from aggregator.publish.specs import FeedSpec


def render_index_html(config: Config, feeds: Sequence[tuple[FeedSpec, int, datetime | None]]) -> bytes:
    # Imported here: Jinja2 loads only when a build writes the index pages.
    from aggregator.dashboard.render import render_static_index

    return render_static_index(config, feeds)
