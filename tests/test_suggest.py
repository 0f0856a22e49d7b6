"""The guesses behind "did you mean": the URL a mistyped path spells, the key a typo was meant to be."""

from __future__ import annotations

import pytest

from aggregator.suggest import nearest, probable_url


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("htp:/example.org/feed.xml", "https://example.org/feed.xml"),
        ("htps://example.org/rss", "https://example.org/rss"),
        ("hhtp://example.org/rss", "https://example.org/rss"),
        ("example.org/feed.xml", "https://example.org/feed.xml"),
        ("www.example.org", "https://www.example.org"),
        ("example.org:8080/feed", "https://example.org:8080/feed"),
        ("http:/example.org/feed", "http://example.org/feed"),
        ("https:example.org/feed", "https://example.org/feed"),
        ("http//example.org/feed", "http://example.org/feed"),
        ("//example.org/feed", "https://example.org/feed"),
    ],
)
def test_a_mistyped_web_address_gives_the_url_it_meant(written: str, meant: str) -> None:
    assert probable_url(written) == meant


@pytest.mark.parametrize(
    "written",
    ["welcome.xml", "feeds/local.xml", "./examples/welcome.xml", "/srv/feeds/a.rss", "notes", "ftp:/x.org/a"],
)
def test_a_local_path_is_not_taken_for_a_url(written: str) -> None:
    assert probable_url(written) is None


def test_the_nearest_key_is_suggested_only_when_close() -> None:
    keys = ["interval", "timeout", "deadline", "user_agent"]
    assert nearest("intervall", keys) == "interval"
    assert nearest("useragent", keys) == "user_agent"
    assert nearest("colour", keys) is None
