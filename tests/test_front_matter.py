"""The post file's front matter written directly is byte for byte what libyaml writes."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.store import _DUMPER, _events, _front_matter_directly

# Text a feed can carry, weighted towards what YAML treats specially.
SPECIAL = list(" :#-?.,[]{}&*!|>'\"%@`~=<+0123456789yYnNtTfFoOaz\u00a0é中")
TRICKY = st.one_of(
    st.text(alphabet=st.sampled_from(SPECIAL), max_size=12),
    st.text(alphabet=st.sampled_from([*SPECIAL, "\u2028", "\ufeff", "\t", "\n", "\x85", "😀"]), max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
WORDS = [
    "yes",
    "No",
    "null",
    "~",
    "0123",
    "1e3",
    "0x1F",
    "2026-10-05",
    "12:30",
    ".5",
    ".inf",
    "---",
    "...",
    "",
]


def libyaml(matter: dict[str, Any]) -> str:
    text: str = yaml.emit(_events(matter), Dumper=_DUMPER, allow_unicode=True, width=2**31 - 1)
    return text


def check(matter: dict[str, Any]) -> bool:
    direct = _front_matter_directly(matter)
    if direct is None:
        return False  # left to libyaml: always allowed
    assert direct == libyaml(matter), matter
    assert yaml.safe_load(direct) == matter
    return True


@settings(max_examples=600, deadline=None)
@given(st.one_of(TRICKY, st.sampled_from(WORDS)))
def test_any_scalar_is_written_as_libyaml_writes_it(text: str) -> None:
    check({"title": text, "categories": [text, "B"], "tags": [], "comments": False})


@settings(max_examples=200, deadline=None)
@given(TRICKY, st.integers(min_value=0, max_value=2**40))
def test_enclosure_lists_are_written_as_libyaml_writes_them(kind: str, length: int) -> None:
    check(
        {
            "title": "t",
            "comments": True,
            "enclosures": [{"url": "https://x.org/a.mp3", "type": kind, "length": length}],
        }
    )


def test_the_common_post_takes_the_direct_path() -> None:
    """Titles with colons and hashes, Chinese text, URLs, dates: no fallback to the slow path."""
    titles = [
        "Study report #46",
        "Breaking: news",
        "新浪财经：国内",
        "It's 12:30 now",
        "yes",
        "0123",
        "[tag] news",
    ]
    for title in titles:
        assert check(
            {
                "title": title,
                "categories": ["金融", "新浪财经"],
                "headimg": "https://img.example.org/a.jpg?x=1&y=2",
                "author": "Author",
                "comments": False,
                "date": "Wed, 28 Oct 2026 19:50:30 GMT",
                "link": "https://example.org/posts/1.html#top",
                "tags": ["数据", "c++"],
            }
        ), title
