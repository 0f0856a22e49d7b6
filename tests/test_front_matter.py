"""The post file's front matter, written and read by python-frontmatter, reads back as written."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from pathlib import Path

import frontmatter
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support.posts import make_post

from aggregator import postfile
from aggregator.model import Enclosure, MergedEntry, Post

# Text a feed can carry, weighted towards what YAML treats specially.
SPECIAL = list(" :#-?.,[]{}&*!|>'\"%@`~=<+0123456789yYnNtTfFoOaz\u00a0é中")
TRICKY = st.one_of(
    st.text(alphabet=st.sampled_from(SPECIAL), max_size=12),
    st.text(alphabet=st.sampled_from([*SPECIAL, "\u2028", "\ufeff", "\t", "\n", "\x85", "😀"]), max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
# YAML 1.1 reads these plain as another type (``no`` is false, ``0123`` is 83, ``~`` is null).
WORDS = [
    "yes",
    "No",
    "off",
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


def round_trip(tmp_path: Path, post: Post) -> Post:
    path = tmp_path / "p.md"
    path.write_bytes(postfile.render(post))
    return postfile.read(path)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(TRICKY, st.sampled_from(WORDS)))
def test_any_text_reads_back_as_the_same_text(tmp_path_factory: object, text: str) -> None:
    post = make_post(
        title=text,
        id=text or "x",
        author=text,
        categories=(text, "B"),
        tags=(text,),
        link=text,
        enclosures=(Enclosure("https://x.org/a.mp3", text, 7),),
        merged=(MergedEntry("other", text or "y", (text,)),),
    )
    path = Path(str(tmp_path_factory.mktemp("p")))  # type: ignore[attr-defined]
    assert round_trip(path, post) == post


def test_words_yaml_would_read_as_other_types_are_quoted_and_stay_strings(tmp_path: Path) -> None:
    for word in ("no", "0123", "null", "2026-10-05"):
        text = postfile.render(make_post(title=word, author=word)).decode()
        assert f"title: '{word}'" in text, text
        assert frontmatter.loads(text)["title"] == word  # python-frontmatter's own reading agrees
        assert round_trip(tmp_path, make_post(title=word)).title == word


def test_the_body_keeps_its_own_leading_and_trailing_whitespace(tmp_path: Path) -> None:
    body = "\n\n  <p>x</p>\r\n\n---\nmore\n\n"
    assert round_trip(tmp_path, make_post(body=body)).body == body


def test_a_lone_surrogate_does_not_stop_the_write(tmp_path: Path) -> None:
    post = make_post(title="a\ud800b", body="c\udfffd", tags=("\ud83d",))
    back = round_trip(tmp_path, post)
    assert (back.title, back.body, back.tags) == ("a\ufffdb", "c\ufffdd", ("\ufffd",))


def test_the_file_is_python_frontmatter_s_format(tmp_path: Path) -> None:
    post = make_post(headimg="https://i.example.org/a.jpg", tags=("数据", "c++"))
    loaded = frontmatter.loads(postfile.render(post).decode())
    assert loaded.content == post.body
    assert loaded.metadata == postfile.front_matter(post)
    assert list(loaded.metadata)[:7] == [
        "title",
        "categories",
        "headimg",
        "author",
        "comments",
        "date",
        "thumbnail",
    ]


_scalars = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",))),
    st.sampled_from(
        ["", "no", "yes", "~", "null", "0123", "1e3", "2026-01-01", "- a", ": b", "#c", "'", '"']
    ),
    st.booleans(),
    st.none(),
    st.integers(),
)
_front_matter = st.dictionaries(
    st.text(min_size=1),
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1), inner, max_size=3),
        max_leaves=12,
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(_front_matter)
def test_front_matter_is_written_as_the_stock_safe_dumper_writes_it(matter: dict[str, object]) -> None:
    options = dict(sort_keys=False, width=2**31 - 1, allow_unicode=True, default_flow_style=False)
    ours = postfile.dump_front_matter(matter)
    stock = yaml.dump(matter, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), **options)  # type: ignore[call-overload]
    assert ours == stock


@given(st.datetimes(timezones=st.timezones()))
def test_rfc822_is_what_the_email_library_writes_in_gmt(moment: datetime) -> None:
    assert postfile.rfc822(moment) == email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)
