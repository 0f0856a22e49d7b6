"""aggregator: poll RSS/Atom/JSON feeds, keep every entry as a Markdown post, republish per-category feeds."""

__version__ = "0.1.0"
