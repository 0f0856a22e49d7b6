"""Which images a post uses, and the post pointing at their archived copies: pure, no I/O.

The body is not parsed and serialized again (that would change bytes the rest of the
program keeps stable, ``&#123;`` included): ``<img>`` and ``<source>`` tags are found with a
tokenizer that respects quoted attribute values, and only the URL inside a ``src`` or
``srcset`` value is replaced; every other byte stays as it was. The same tokenizer finds
the images and rewrites them, so what is downloaded is exactly what is rewritten, and the
same post with the same copies always gives the same bytes.

A copy's address is ``/media/<hash[:2]>/<hash>.<ext>`` under the site root: Hexo copies
``source/media/`` into the generated site as it is, and the daemon serves ``/media/``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

from aggregator.model import Enclosure, Post

MEDIA_PREFIX = "/media/"
_LOCAL = re.compile(r"/media/([0-9a-f]{2})/([0-9a-f]{64})\.([a-z0-9]{2,5})")
# An <img> or <source> start tag; quoted values may hold '>'.
_TAG = re.compile(r"<(img|source)\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""\s+([^\s"'=<>/`]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
# A picture's <source> offers images in srcset; a video's or audio's <source src> is not one.
_URL_ATTRIBUTES = {"img": ("src", "srcset"), "source": ("srcset",)}

Replace = Callable[[str], str | None]  # an image URL -> what to write instead, or None to keep it


def local_path(digest: str, ext: str) -> str:
    """The site-root address of an archived copy."""
    return f"{MEDIA_PREFIX}{digest[:2]}/{digest}.{ext}"


def parse_local(path: str) -> tuple[str, str] | None:
    """(hash, ext) of an archived copy's address, or None when it is not one."""
    match = _LOCAL.fullmatch(path)
    if match is None or not match.group(2).startswith(match.group(1)):
        return None
    return match.group(2), match.group(3)


def is_remote(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def _srcset_spans(raw: str) -> Iterator[tuple[int, int]]:
    """Where each candidate's URL is in a srcset value (the HTML standard's parsing, simplified)."""
    i, n = 0, len(raw)
    while i < n:
        while i < n and (raw[i].isspace() or raw[i] == ","):
            i += 1
        if i >= n:
            return
        start = i
        while i < n and not raw[i].isspace():
            i += 1
        end = i
        while end > start and raw[end - 1] == ",":
            end -= 1  # commas ending the URL separate it from the next candidate
        yield start, end
        if end < i:
            continue
        depth = 0  # descriptors, up to the next comma outside parentheses
        while i < n:
            char = raw[i]
            i += 1
            if char == "(":
                depth += 1
            elif char == ")":
                depth = max(depth - 1, 0)
            elif char == "," and depth == 0:
                break


def _attribute_value(raw: str, name: str, change: Replace, found: list[str]) -> str:
    """A src or srcset value with each URL that ``change`` maps replaced (the rest kept byte for byte)."""
    if name == "src":
        stripped = raw.strip()
        start = raw.find(stripped)
        spans = [(start, start + len(stripped))] if stripped else []
    else:
        spans = list(_srcset_spans(raw))
    out: list[str] = []
    last = 0
    for start, end in spans:
        url = html.unescape(raw[start:end])
        found.append(url)
        new = change(url)
        if new is not None and new != url:
            out += [raw[last:start], new.replace("&", "&amp;").replace('"', "&quot;")]
            last = end
    out.append(raw[last:])
    return "".join(out)


def rewrite_html(markup: str, change: Replace) -> tuple[str, list[str]]:
    """``markup`` with the image URLs ``change`` maps replaced, and every image URL seen, in order."""
    found: list[str] = []
    if "<" not in markup:
        return markup, found

    def tag(match: re.Match[str]) -> str:
        names = _URL_ATTRIBUTES[match.group(1).lower()]
        attributes = match.group(2)
        pieces: list[str] = []
        last = 0
        for attribute in _ATTRIBUTE.finditer(attributes):
            name = attribute.group(1).lower()
            group = next((g for g in (2, 3, 4) if attribute.group(g) is not None), None)
            if name not in names or group is None:
                continue
            raw = attribute.group(group)
            new = _attribute_value(raw, name, change, found)
            if new != raw:
                pieces += [attributes[last : attribute.start(group)], new]
                last = attribute.end(group)
        if not pieces:
            return match.group(0)
        pieces.append(attributes[last:])
        return f"<{match.group(1)}{''.join(pieces)}>"

    return _TAG.sub(tag, markup), found


def _is_image_enclosure(enclosure: Enclosure) -> bool:
    kind = enclosure.type.lower()
    return kind.startswith("image/") and "svg" not in kind


def image_urls(post: Post) -> list[str]:
    """Every remote image the post uses, each once, in order: lead image, body, image enclosures."""
    _, in_body = rewrite_html(post.body, lambda _url: None)
    urls = [post.headimg or "", *in_body, *(e.url for e in post.enclosures if _is_image_enclosure(e))]
    return [url for url in dict.fromkeys(urls) if url and is_remote(url)]


def rewrite_post(post: Post, copies: Mapping[str, str]) -> Post:
    """The post with each image in ``copies`` (original URL -> local address) pointing at its copy.

    ``media`` (the front matter's map, sorted by URL) keeps what the post had plus these: the
    originals are never lost. A post rewritten with the same copies comes out byte for byte
    the same.
    """
    body, _ = rewrite_html(post.body, copies.get)
    headimg = copies.get(post.headimg, post.headimg) if post.headimg else post.headimg
    enclosures = tuple(
        replace(e, url=copies[e.url]) if e.url in copies and _is_image_enclosure(e) else e
        for e in post.enclosures
    )
    media = dict(post.media or ())
    media.update(copies)
    return replace(
        post, body=body, headimg=headimg, enclosures=enclosures, media=tuple(sorted(media.items()))
    )


def absolute_media(markup: str, base: str) -> str:
    """Archived copies' site-root addresses as absolute URLs under ``base`` (for published feeds)."""
    if MEDIA_PREFIX not in markup:
        return markup
    return rewrite_html(
        markup, lambda url: absolute_url(url, base) if url.startswith(MEDIA_PREFIX) else None
    )[0]


def absolute_url(url: str, base: str) -> str:
    """One address: an archived copy's under ``base`` (ending in /); any other URL as it is."""
    return base + url[1:] if url.startswith(MEDIA_PREFIX) else url


def original_post(post: Post) -> Post:
    """The post as upstream sent it: each copy it points at back to its original URL.

    What ``reindex`` hashes as upstream's content, so an archived post is not taken for one
    changed upstream. (Two URLs of one image point at one copy; the first URL is taken.)
    """
    if not post.media:
        return post
    back: dict[str, str] = {}
    for url, local in post.media:
        back.setdefault(local, url)
    body, _ = rewrite_html(post.body, back.get)
    headimg = back.get(post.headimg, post.headimg) if post.headimg else post.headimg
    enclosures = tuple(replace(e, url=back[e.url]) if e.url in back else e for e in post.enclosures)
    return replace(post, body=body, headimg=headimg, enclosures=enclosures)
