"""The media archive's pure parts: which images a post uses, the rewrite, the sniffer, the backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.imageserver import PHOTO, SVG, fake_png
from support.posts import make_post

from aggregator import postfile
from aggregator.media.archiver import RETRY_CAP, retry_at
from aggregator.media.html import (
    absolute_media,
    image_urls,
    local_path,
    original_post,
    parse_local,
    rewrite_html,
    rewrite_post,
)
from aggregator.media.sniff import magic_format, sniff
from aggregator.parse import Enclosure

A = "https://img.example.org/a.jpg"
B = "https://img.example.org/b.jpg?w=2&h=3"
C = "https://cdn.example.net/c,1.png"
LOCAL_A = local_path("ab" + "0" * 62, "jpg")
LOCAL_B = local_path("cd" + "1" * 62, "jpg")
LOCAL_C = local_path("ef" + "2" * 62, "png")

BODY = (
    f'<p>x &#123;y&#125;</p><img alt="a > b" src="{A}">'
    f'<picture><source srcset="{C} 1x, {A} 2x" type="image/png">'
    f'<img src="{B.replace("&", "&amp;")}"></picture>'
    '<video><source src="https://video.example.org/v.jpg"></video>'
    '<img src="data:image/png;base64,AAAA"><img src="/relative.png"><img data-src="https://lazy.example/z.jpg">'
)


def test_image_urls_finds_img_src_srcset_picture_sources_lead_image_and_image_enclosures() -> None:
    post = make_post(
        body=BODY,
        headimg="https://img.example.org/lead.jpg",
        enclosures=(
            Enclosure("https://img.example.org/enc.gif", "image/gif", 10),
            Enclosure("https://audio.example.org/a.mp3", "audio/mpeg", 10),
            Enclosure("https://img.example.org/v.svg", "image/svg+xml", 10),
        ),
    )
    assert image_urls(post) == [
        "https://img.example.org/lead.jpg",
        A,
        C,
        B,  # entity-decoded
        "https://img.example.org/enc.gif",
    ]  # a video's <source src>, data:, relative and data-src URLs are not the post's images


def test_srcset_urls_with_commas_and_descriptors_are_split_as_browsers_do() -> None:
    _, found = rewrite_html(f'<img srcset="{C} 1.5x,{A},  {B.replace("&", "&amp;")} 300w">', lambda _u: None)
    assert found == [C, A, B]


def test_rewrite_replaces_only_the_urls_and_keeps_every_other_byte() -> None:
    copies = {A: LOCAL_A, B: LOCAL_B, C: LOCAL_C}
    post = rewrite_post(make_post(body=BODY), copies)
    expected = (
        f'<p>x &#123;y&#125;</p><img alt="a > b" src="{LOCAL_A}">'
        f'<picture><source srcset="{LOCAL_C} 1x, {LOCAL_A} 2x" type="image/png">'
        f'<img src="{LOCAL_B}"></picture>'
        '<video><source src="https://video.example.org/v.jpg"></video>'
        '<img src="data:image/png;base64,AAAA"><img src="/relative.png"><img data-src="https://lazy.example/z.jpg">'
    )
    assert post.body == expected
    assert post.media == ((C, LOCAL_C), (A, LOCAL_A), (B, LOCAL_B))  # sorted by URL: stable front matter


def test_rewrite_is_deterministic_and_leaves_images_without_a_copy_alone() -> None:
    original = make_post(body=BODY, headimg=A, enclosures=(Enclosure(C, "image/png", 5),))
    once = rewrite_post(original, {A: LOCAL_A})
    again = rewrite_post(original, {A: LOCAL_A})
    assert postfile.render(once) == postfile.render(again)
    assert once.headimg == LOCAL_A and once.enclosures[0].url == C  # no copy of C: its URL stays
    assert C in once.body and B.replace("&", "&amp;") in once.body
    assert image_urls(once) == [C, B]  # what is still pending
    # a later copy of C is added to the map; A's stays
    later = rewrite_post(once, {C: LOCAL_C})
    assert dict(later.media or ()) == {A: LOCAL_A, C: LOCAL_C}
    assert later.enclosures[0].url == LOCAL_C


def test_the_front_matter_keeps_the_reference_keys_and_adds_the_media_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    post = rewrite_post(make_post(body=BODY, headimg=A), {A: LOCAL_A, B: LOCAL_B})
    path = tmp_path / "p.md"
    path.write_bytes(postfile.render(post))
    text = path.read_text()
    keys = [
        line.split(":")[0]
        for line in text.split("---")[1].splitlines()
        if line and not line.startswith((" ", "-"))
    ]
    assert keys[:7] == ["title", "categories", "headimg", "author", "comments", "date", "thumbnail"]
    assert keys[-1] == "media"
    assert f"headimg: {LOCAL_A}" in text and f"thumbnail: {LOCAL_A}" in text
    back = postfile.read(path)
    assert back.media == post.media and back.body == post.body


def test_original_post_undoes_the_rewrite_so_upstream_content_hashes_match() -> None:
    fetched = make_post(body=BODY, headimg=A, enclosures=(Enclosure(C, "image/png", 5),))
    archived = rewrite_post(fetched, {A: LOCAL_A, B: LOCAL_B, C: LOCAL_C})
    assert archived.content_hash != fetched.content_hash
    assert original_post(archived).content_hash == fetched.content_hash


def test_published_feeds_get_absolute_urls_of_the_copies() -> None:
    body = f'<img src="{LOCAL_A}" srcset="{LOCAL_B} 2x, {A} 3x"><a href="{LOCAL_C}">x</a>'
    assert absolute_media(body, "https://news.example.org/feeds/") == (
        f'<img src="https://news.example.org/feeds{LOCAL_A}" '
        f'srcset="https://news.example.org/feeds{LOCAL_B} 2x, '
        f'{A} 3x"><a href="{LOCAL_C}">x</a>'
    )


def test_local_addresses_must_name_their_own_hash_folder() -> None:
    digest = "ab" + "0" * 62
    assert parse_local(local_path(digest, "jpg")) == (digest, "jpg")
    assert parse_local(f"/media/cd/{digest}.jpg") is None
    assert parse_local(f"/media/ab/../{digest}.jpg") is None
    assert parse_local("/media/ab/abc.jpg") is None


def test_sniff_accepts_an_image_whose_type_and_bytes_agree() -> None:
    assert sniff("image/jpeg", PHOTO).ext == "jpg"
    assert sniff("image/png; charset=binary", fake_png("x")).ext == "png"
    assert sniff("image/gif", b"GIF89a....").ext == "gif"
    assert sniff("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ").ext == "webp"
    assert magic_format(b"\x00\x00\x00\x1cftypavif\x00") == "avif"


def test_sniff_refuses_disagreement_html_and_svg() -> None:
    html_page = b"<!doctype html><html>no</html>"
    assert "bytes are not an image" in sniff("image/jpeg", html_page).reason
    assert "bytes are image/png" in sniff("image/jpeg", fake_png("x")).reason
    assert "not an image: text/html" in sniff("text/html", PHOTO).reason
    assert "not an image: no Content-Type" in sniff("", PHOTO).reason
    assert "SVG" in sniff("image/svg+xml", SVG).reason
    assert "SVG" in sniff("image/png", SVG).reason


def test_retries_back_off_doubling_up_to_a_day() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    delays = [retry_at(n, now) - now for n in (1, 2, 3, 4)]
    assert delays == [
        timedelta(minutes=10),
        timedelta(minutes=20),
        timedelta(minutes=40),
        timedelta(minutes=80),
    ]
    assert retry_at(30, now) - now == timedelta(seconds=RETRY_CAP)
