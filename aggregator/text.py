"""Plain text from HTML, and text XML can carry: pure functions the post, the index and the feeds share.

Every pattern here scans in linear time on hostile text: a tag stops at the next "<"
([^<>]), and blocks are cut by ``_without_blocks``, not by a lazy ".*?" (which took a
minute on 160 KB of "<script>" and hours on a large body of "<!--" or "<").
"""

from __future__ import annotations

import html
import re

SUMMARY_CHARS = 280
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_TAG = re.compile(r"<[^<>]*>")
_BLOCK_START = re.compile(r"<!--|<!\[CDATA\[|<(script|style|template)\b", re.IGNORECASE)
_COMMENT_END = re.compile(r"-->")
_CDATA_END = re.compile(r"\]\]>")


# What a template could still take for markup once entities are decoded (``&lt;script&gt;``
# in a text field): a tag starts with "<" and a letter; an unclosed dangerous one runs to the end.
_DECODED_TAG = re.compile(
    r"</?[a-zA-Z][^<>]*>|</?(?:script|style|iframe|frame|svg|math|img|object|embed|a|form|base|link|meta)"
    r"\b[^<>]*$",
    re.IGNORECASE,
)
WHITESPACE = re.compile(r"\s+")


def clean_text(value: str) -> str:
    """Remove what XML 1.0 forbids; everything else is kept."""
    return _XML_FORBIDDEN.sub("", value)


def plain_text(markup: str, *, limit: int | None = None) -> str:
    """HTML to one line of text: tags dropped, entities decoded, whitespace collapsed."""
    text = _without_blocks(markup)
    text = html.unescape(_TAG.sub(" ", text)).replace("&#123;", "{").replace("&#125;", "}")
    text = clean_text(WHITESPACE.sub(" ", no_markup(text)).strip())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def summary_of(markup: str, limit: int = SUMMARY_CHARS) -> str:
    """``plain_text(markup, limit=limit)``, reading only as much of the markup as the summary needs.

    Bodies run to megabytes and a summary is 280 characters: the text of a
    growing prefix (cut before an unfinished tag) is used once it runs well
    past the limit, so the end of the prefix cannot reach the summary.
    """
    size = limit * 2  # enough for nine bodies in ten; the rest take a second, longer prefix
    while size < len(markup):
        head = markup[:size]
        if head.rfind("<") > head.rfind(">"):
            head = head[: head.rfind("<")]
        text = _plain_text(head)
        if len(text) >= limit + _SUMMARY_MARGIN:
            return text[: limit - 1].rstrip() + "…"  # as plain_text cuts
        size *= 2
    return plain_text(markup, limit=limit)


def _plain_text(markup: str) -> str:
    """``plain_text(markup)``, with the whitespace collapsed by ``str.split`` (a third of its time
    went to the ``\\s+`` substitution). Both use Python's own notion of whitespace
    (``Py_UNICODE_ISSPACE``), so the text is the same (a property test holds this)."""
    text = _without_blocks(markup)
    text = html.unescape(_TAG.sub(" ", text)).replace("&#123;", "{").replace("&#125;", "}")
    return clean_text(" ".join(no_markup(text).split()))


# More than the longest HTML entity name, so a cut entity never reaches the summary.
_SUMMARY_MARGIN = 64


def _without_blocks(markup: str) -> str:
    """Comments, CDATA sections and script/style/template elements cut out, in one linear pass.

    An unclosed one runs to the end of the text, as it would in a browser.
    """
    parts = []
    position = 0
    while (start := _BLOCK_START.search(markup, position)) is not None:
        parts.append(markup[position : start.start()])
        if start.group(1):
            end = re.compile(rf"</{start.group(1)}\s*>", re.IGNORECASE).search(markup, start.end())
        else:
            end = (_COMMENT_END if start.group(0) == "<!--" else _CDATA_END).search(markup, start.end())
        parts.append(" ")
        if end is None:
            return "".join(parts)
        position = end.end()
    parts.append(markup[position:])
    return "".join(parts)


def no_markup(text: str) -> str:
    """Text no HTML template can execute: what would parse as a tag or a script is removed."""
    return _DECODED_TAG.sub(" ", _without_blocks(text))
