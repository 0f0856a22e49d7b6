"""The exceptions that cross module boundaries.

Every error the aggregator raises on purpose derives from ``AggregatorError``;
third-party errors are translated at the boundary with ``raise ... from e``::

    AggregatorError
    ├── ConfigError          the YAML is unreadable or invalid (file, line, key path)
    │   └── MissingDependency  an enabled feature's optional package is missing (names the extra)
    ├── FetchError           a source could not be retrieved (carries the source URL)
    │   ├── HTTPStatusError  the server answered with an error status
    │   ├── SourceGone       410: the source says it is gone for good
    │   ├── RateLimited      429/503 with a retry delay (not counted as a failure)
    │   ├── TooLarge         the body exceeded the size cap (after decompression)
    │   ├── FetchTimeout     connect, read or total deadline exceeded
    │   ├── RedirectError    too many redirects, a loop, or a refused target
│   └── NotAnImage       a media download that is not an image we keep (type vs bytes, SVG)
    ├── ParseError           the bytes are not a feed we can read
    │   └── NotAFeed         an HTML page, a challenge page or an empty body
    ├── StoreError           the post files or the index could not be written/read
    └── BuildError           a feed could not be rendered or published
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base of every error the aggregator raises on purpose."""


class ConfigError(AggregatorError):
    """The configuration is invalid; the message names file, line and key path."""


class MissingDependency(ConfigError):
    """An enabled feature needs a package that is not installed (or does not import)."""


class FetchError(AggregatorError):
    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class HTTPStatusError(FetchError):
    def __init__(self, message: str, *, url: str = "", status: int = 0) -> None:
        super().__init__(message, url=url)
        self.status = status


class SourceGone(HTTPStatusError):
    """HTTP 410: stop polling until the source's config changes."""


class RateLimited(HTTPStatusError):
    """HTTP 429/503: wait ``retry_after`` seconds; not a failure of the source."""

    def __init__(self, message: str, *, url: str = "", status: int = 0, retry_after: float) -> None:
        super().__init__(message, url=url, status=status)
        self.retry_after = retry_after


class TooLarge(FetchError):
    pass


class FetchTimeout(FetchError):
    pass


class RedirectError(FetchError):
    pass


class NotAnImage(FetchError):
    pass


class ParseError(AggregatorError):
    pass


class NotAFeed(ParseError):
    """The document is not a feed; ``feed_links`` lists feeds an HTML page advertises."""

    def __init__(self, message: str, *, feed_links: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.feed_links = feed_links


class StoreError(AggregatorError):
    pass


class BuildError(AggregatorError):
    pass
