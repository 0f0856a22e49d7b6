"""Normalize: every key of a post derived from an entry as the issue says, and HTML made safe."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.model import Enclosure, EntryData, SourceRules
from aggregator.normalize import _joined_if_safe, entry_id, lead_image, normalize, safe_url, sanitize_html
from aggregator.normalize import _may_have_unchecked_urls as sanitize_html_filter_needed
from aggregator.text import clean_text

SEEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
RULES = SourceRules(name="src", categories=("News", "World"), feed_title="The Feed Title")
BASE = "https://example.org/blog/post.html"


def entry(**fields: object) -> EntryData:
    values: dict[str, object] = {
        "id": "urn:entry:1",
        "link": "https://example.org/blog/post.html",
        "title": "A title",
        "title_is_html": False,
        "content": "<p>Body</p>",
        "summary": None,
        "author": None,
        "published": None,
        "updated": None,
        "tags": (),
        "enclosures": (),
        "images": (),
        "base": BASE,
    }
    values.update(fields)
    return EntryData(**values)  # type: ignore[arg-type]


# Title ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"title": "Tom &amp; <b>Jerry</b>", "title_is_html": True}, "Tom & Jerry"),
        ({"title": "  spaced \n\t out  ", "title_is_html": False}, "spaced out"),
        ({"title": "a < b > c", "title_is_html": False}, "a < b > c"),
        ({"title": "", "content": "<p>The <i>text</i> starts here</p>"}, "The text starts here"),
        ({"title": None, "content": "<p>" + "word " * 40 + "</p>"}, None),
        ({"title": "  ", "content": "", "summary": None}, "https://example.org/blog/post.html"),
        ({"title": None, "content": None, "link": None, "id": "x"}, "(untitled)"),
        ({"title": "ctrl\x00\x07chars\x1f"}, "ctrlchars"),
    ],
)
def test_title_rules(fields: dict[str, object], expected: str | None) -> None:
    post = normalize(entry(**fields), RULES, SEEN)
    if expected is None:  # the start of a long text, cut with an ellipsis
        assert post.title.startswith("word word") and post.title.endswith("…")
        assert len(post.title) <= 80
    else:
        assert post.title == expected
    assert post.title


# Lead image -----------------------------------------------------------------


def test_lead_image_order_and_absolute_urls() -> None:
    full = entry(
        images=("thumbs/t.jpg", "https://cdn.example.org/content.jpg"),
        enclosures=(Enclosure("/enc.png", "image/png", 10),),
        content='<p><img src="/first.gif"><img src="/second.gif"></p>',
    )
    # media:thumbnail, then media:content (both arrive in ``images`` in that order)
    assert normalize(full, RULES, SEEN).headimg == "https://example.org/blog/thumbs/t.jpg"
    no_thumb = replace(full, images=("https://cdn.example.org/content.jpg",))
    assert normalize(no_thumb, RULES, SEEN).headimg == "https://cdn.example.org/content.jpg"
    no_media = replace(full, images=())
    assert normalize(no_media, RULES, SEEN).headimg == "https://example.org/enc.png"
    audio_only = replace(no_media, enclosures=(Enclosure("/a.mp3", "audio/mpeg", 1),))
    assert normalize(audio_only, RULES, SEEN).headimg == "https://example.org/first.gif"
    nothing = replace(audio_only, content="<p>no picture</p>")
    post = normalize(nothing, RULES, SEEN)
    assert post.headimg is None


def test_lead_image_skips_unsafe_candidates() -> None:
    candidate = entry(
        images=("javascript:alert(1)", "data:image/png;base64,AAAA"),
        enclosures=(Enclosure("file:///etc/passwd", "image/png", 1),),
        content='<img src="vbscript:x"><img src="ok.png">',
    )
    assert lead_image(candidate, candidate.content or "") == "https://example.org/blog/ok.png"


def test_headimg_and_thumbnail_come_from_the_same_image() -> None:
    post = normalize(entry(images=("https://i.example.org/a.jpg",)), RULES, SEEN)
    assert post.headimg == "https://i.example.org/a.jpg"


# Author, categories, comments -----------------------------------------------


def test_author_override_then_entry_then_feed_title() -> None:
    with_author = entry(author="Alice &amp; Bob")
    assert normalize(with_author, replace(RULES, author="Override"), SEEN).author == "Override"
    assert normalize(with_author, RULES, SEEN).author == "Alice & Bob"
    assert normalize(entry(author=None), RULES, SEEN).author == "The Feed Title"
    assert normalize(entry(author=None), replace(RULES, feed_title=""), SEEN).author == "src"


def test_categories_are_the_source_hierarchy_and_tags_the_entry_own() -> None:
    post = normalize(entry(tags=("python", "<b>web</b>", "python", "")), RULES, SEEN)
    assert post.categories == ("News", "World")
    assert post.tags == ("python", "web")
    assert post.comments is False
    assert normalize(entry(), replace(RULES, comments=True), SEEN).comments is True


# Dates ----------------------------------------------------------------------


def test_date_published_then_updated_then_first_seen_in_whole_seconds() -> None:
    published = datetime(2021, 7, 15, 13, 48, 14, 999, tzinfo=UTC)
    updated = datetime(2021, 7, 16, 1, 2, 3, tzinfo=UTC)
    assert normalize(entry(published=published, updated=updated), RULES, SEEN).date == published.replace(
        microsecond=0
    )
    post = normalize(entry(updated=updated), RULES, SEEN)
    assert post.date == updated and post.updated == updated
    undated = normalize(entry(), RULES, SEEN)
    assert undated.date == SEEN.replace(microsecond=0) == undated.first_seen
    assert undated.updated is None


def test_same_entry_same_first_seen_gives_the_same_post() -> None:
    """What makes a second run write nothing: normalize is a pure function of its inputs."""
    first = normalize(entry(), RULES, SEEN)
    again = normalize(entry(), RULES, SEEN + timedelta(microseconds=5))
    assert first.content_hash == again.content_hash


def test_unrepresentable_years_fall_back() -> None:
    ancient = datetime(42, 1, 1, tzinfo=UTC)
    post = normalize(entry(published=ancient), RULES, SEEN)
    assert post.date == SEEN.replace(microsecond=0)


# Identity -------------------------------------------------------------------


def test_entry_id_guid_then_link_then_hash() -> None:
    assert entry_id(entry(id="guid-1")) == "guid-1"
    assert entry_id(entry(id=None)) == "https://example.org/blog/post.html"
    hashed = entry_id(entry(id=None, link=None))
    assert hashed.startswith("urn:sha256:")
    assert hashed == entry_id(entry(id=None, link=None))
    assert hashed != entry_id(entry(id=None, link=None, title="Other"))
    assert entry_id(entry(id=" \x00 ", link=None)).startswith("urn:sha256:")


# HTML safety ----------------------------------------------------------------

BAD_SCHEMES = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:x",
               "&#106;avascript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=", "file:///etc/passwd",
               "vbscript:msgbox(1)"]  # fmt: skip
URL_TEMPLATES = [
    '<a href="{u}">a</a>',
    '<img src="{u}">',
    '<img srcset="{u} 1x, {u} 2x">',
    '<video poster="{u}" src="{u}"></video>',
    '<audio src="{u}"></audio>',
    '<picture><source srcset="{u}"></picture>',
    '<blockquote cite="{u}">q</blockquote>',
    '<q cite="{u}">q</q>',
    '<del cite="{u}">d</del>',
    '<ins cite="{u}">i</ins>',
    '<track src="{u}">',
]
_UNSAFE = re.compile(r"(?i)(javascript|vbscript|data|file)\s*:")


@pytest.mark.parametrize("template", URL_TEMPLATES)
@pytest.mark.parametrize("url", BAD_SCHEMES)
def test_no_unsafe_url_survives_in_any_attribute(template: str, url: str) -> None:
    cleaned = sanitize_html(template.format(u=url), BASE)
    assert not _UNSAFE.search(cleaned), cleaned


def test_safe_urls_are_kept_and_relative_ones_made_absolute() -> None:
    cleaned = sanitize_html(
        '<a href="../other">o</a><img src="img/a.png" srcset="a.png 1x, /b.png 2x">'
        '<a href="mailto:me@example.org">m</a><video poster="/p.jpg"></video><q cite="/src">q</q>',
        BASE,
    )
    assert 'href="https://example.org/other"' in cleaned
    assert 'src="https://example.org/blog/img/a.png"' in cleaned
    assert 'srcset="https://example.org/blog/a.png 1x, https://example.org/b.png 2x"' in cleaned
    assert 'href="mailto:me@example.org"' in cleaned
    assert 'poster="https://example.org/p.jpg"' in cleaned
    assert 'cite="https://example.org/src"' in cleaned


def test_relative_urls_are_resolved_when_no_attribute_needs_our_filter() -> None:
    """Without srcset or cite in the body, ammonia alone resolves and checks every URL."""
    markup = '<a href="../other">o</a><img src="img/a.png"><video poster="/p.jpg"></video><a href="x:y">z</a>'
    assert not sanitize_html_filter_needed(markup)
    cleaned = sanitize_html(markup, BASE)
    assert 'href="https://example.org/other"' in cleaned
    assert 'src="https://example.org/blog/img/a.png"' in cleaned
    assert 'poster="https://example.org/p.jpg"' in cleaned
    assert "x:y" not in cleaned
    assert 'href="' not in sanitize_html('<a href="../other">o</a>', "not a base")


def test_scripts_styles_frames_forms_and_handlers_are_removed() -> None:
    cleaned = sanitize_html(
        "<script>alert(1)</script><style>p{}</style><iframe src='https://x.org'></iframe>"
        "<form action='https://x.org'><input name=a></form><p onclick='x()' style='color:red'>ok</p>"
        "<object data='x.swf'></object><embed src='x.swf'><svg onload='x()'></svg><math></math>",
        BASE,
    )
    for forbidden in ("<script", "alert", "<style", "<iframe", "<form", "<input", "onclick", "style=",
                      "<object", "<embed", "<svg", "onload"):  # fmt: skip
        assert forbidden not in cleaned, forbidden
    assert "<p>ok</p>" in cleaned


def test_reader_markup_is_kept() -> None:
    markup = (
        "<h2>T</h2><p><b>b</b> <i>i</i> <em>e</em> <strong>s</strong> <code>c</code></p>"
        "<ul><li>1</li></ul><ol><li>2</li></ol><table><tbody><tr><td>c</td></tr></tbody></table>"
        "<figure><img src='https://e.org/a.png' alt='a'><figcaption>f</figcaption></figure>"
        "<pre>x</pre><blockquote>q</blockquote>"
    )
    cleaned = sanitize_html(markup, BASE)
    for tag in ("h2", "b", "i", "em", "strong", "code", "ul", "ol", "li", "table", "td", "figure",
                "figcaption", "img", "pre", "blockquote"):  # fmt: skip
        assert f"<{tag}" in cleaned, tag


def test_front_matter_urls_are_safe() -> None:
    post = normalize(
        entry(
            link="javascript:alert(1)",
            enclosures=(
                Enclosure("data:audio/mpeg;base64,AAAA", "audio/mpeg", 1),
                Enclosure("file:///etc/passwd", "audio/mpeg", 1),
                Enclosure("mailto:x@example.org", "audio/mpeg", 1),
                Enclosure("/ok.mp3", "audio/mpeg", 3),
            ),
            images=("javascript:alert(1)",),
        ),
        RULES,
        SEEN,
    )
    assert post.link == ""
    assert post.enclosures == (Enclosure("https://example.org/ok.mp3", "audio/mpeg", 3),)
    assert post.headimg is None


def test_trusted_source_keeps_its_html_but_braces_are_still_escaped() -> None:
    markup = "<style>.a{color:red}</style><div onclick='x()'>t</div>"
    post = normalize(entry(content=markup), replace(RULES, trusted=True), SEEN)
    assert post.body == "<style>.a&#123;color:red&#125;</style><div onclick='x()'>t</div>"
    untrusted = normalize(entry(content=markup), RULES, SEEN)
    assert "<style" not in untrusted.body and "onclick" not in untrusted.body


# Hexo escaping --------------------------------------------------------------

HEXO_MARKERS = ("{{", "}}", "{%", "{#", "%}", "#}")


@pytest.mark.parametrize(
    "content",
    [
        "<p>{{ site.title }}</p>",
        "<p>{% raw %}x{% endraw %}</p>",
        "<p>{# comment #}</p>",
        "<pre><code>if (a) {{ b(); }}</code></pre>",
        "<p>&#123;&#123; encoded &#125;&#125;</p>",
        "<a href='https://e.org/?q={{x}}'>l</a>",
        "<p title='{%x%}'>t</p>",
    ],
)
def test_no_hexo_template_marker_survives_in_a_body(content: str) -> None:
    for trusted in (False, True):
        post = normalize(entry(content=content), replace(RULES, trusted=trusted), SEEN)
        for marker in HEXO_MARKERS[:4]:
            assert marker not in post.body, (marker, post.body)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("{}%#<>p/ab &;'\"=\n"), max_size=60))
def test_no_hexo_marker_in_any_body(content: str) -> None:
    for trusted in (False, True):
        body = normalize(entry(content=content), replace(RULES, trusted=trusted), SEEN).body
        assert not any(marker in body for marker in HEXO_MARKERS[:4]), body


def test_escaping_can_be_switched_off() -> None:
    post = normalize(entry(content="<p>{{ x }}</p>"), replace(RULES, escape_braces=False), SEEN)
    assert post.body == "<p>{{ x }}</p>"


URL_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ019-._~:/?#[]@!$&'()*+,;=% \tù")), max_size=30)


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        URL_TEXT.map(lambda rest: "http://" + rest), URL_TEXT.map(lambda rest: "https://" + rest), URL_TEXT
    ),
    st.sampled_from(["", "https://example.org/blog/post.html", "http://example.org/a/", "https://x.org"]),
)
def test_the_quick_url_path_gives_what_joining_gives(url: str, base: str) -> None:
    """safe_url skips urljoin for plain absolute web URLs; the answer must not change."""
    general = _joined_if_safe(clean_text(url).strip(), base) if url else None
    assert safe_url(url, base) == general
