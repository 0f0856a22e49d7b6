"""Which slice of a long list one page shows: /status's rows and /'s source feeds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paging:
    number: int  # 1-based, at most ``pages``
    pages: int  # at least 1, even for no items
    start: int  # the index of the page's first item
    stop: int  # one past the index of its last

    @property
    def first(self) -> int:
        """The first item's place, 1-based; 0 when the page is empty."""
        return self.start + 1 if self.stop > self.start else 0

    @property
    def last(self) -> int:
        return self.stop if self.stop > self.start else 0


def paging(count: int, asked: int, size: int) -> Paging:
    """Page ``asked`` of ``count`` items, ``size`` a page; a page past the last is the last."""
    pages = max(-(-count // size), 1)
    number = min(max(asked, 1), pages)
    start = (number - 1) * size
    return Paging(number, pages, start, min(start + size, count))
