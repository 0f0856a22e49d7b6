"""Turn one feed entry into a ``Post``: the fixed shape of a post file.

Pure: no I/O, ``first_seen`` is passed in. What is derived here, and from what:

- ``title``: plain text (tags removed, entities decoded, whitespace collapsed),
  else the start of the text, else the link; never empty.
- ``body``: the content, else the summary; cleaned with nh3 (an allowlist
  sanitizer) unless the source is trusted; relative URLs made absolute; ``{``
  and ``}`` written as ``&#123;``/``&#125;`` so Hexo leaves them alone.
- ``date``: published, else updated, else ``first_seen`` (the first time we saw
  the entry, recorded once by the store and kept in the file). Every moment is
  cut to whole seconds in UTC, the precision of the file, so a post read back
  from its file hashes the same as when it was written.
- ``author``: the source's override, else the entry's, else the feed's title.
- ``headimg``: media:thumbnail, media:content image, image enclosure, else the
  body's first ``<img>``; always an absolute http(s) URL.
- ``id``: the guid/Atom id, else the link, else a hash of title and content.

Every text field is stripped of characters XML 1.0 forbids (NUL, control
characters, lone surrogates), so no later stage (YAML, feed XML) can fail on them.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import nh3

from aggregator.model import Enclosure, EntryData, FeedData, NormalizedFeed, Post, SourceRules
from aggregator.text import WHITESPACE, clean_text, no_markup, plain_text

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
TITLE_FALLBACK_CHARS = 80

# What feed readers render: text formatting, links, images, lists, tables,
# figures, code, media. No script, style, frames, forms or event handlers.
_TAGS = {
    "a", "abbr", "acronym", "address", "article", "aside", "audio", "b", "bdi", "bdo",
    "big", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup",
    "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure",
    "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "i",
    "img", "ins", "kbd", "li", "mark", "ol", "p", "picture", "pre", "q", "rp", "rt",
    "ruby", "s", "samp", "section", "small", "source", "span", "strike", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr",
    "track", "tt", "u", "ul", "var", "video", "wbr",
}  # fmt: skip
_GENERIC_ATTRIBUTES = {"title", "lang", "dir"}
_ATTRIBUTES = {
    "a": {"href", "hreflang"},
    "img": {"src", "srcset", "alt", "width", "height", "sizes"},
    "source": {"src", "srcset", "type", "media", "sizes"},
    "video": {"src", "poster", "controls", "width", "height", "loop", "muted"},
    "audio": {"src", "controls", "loop", "muted"},
    "track": {"src", "kind", "srclang", "label"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "reversed", "type"},
    "li": {"value"},
    "time": {"datetime"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "del": {"cite", "datetime"},
    "ins": {"cite", "datetime"},
    "abbr": {"title"},
    "details": {"open"},
    "font": {"color"},
}
# Allowed URL attributes that ammonia does not check (it checks href, src and poster).
_UNCHECKED_URL_ATTRIBUTES = frozenset({"cite", "srcset"})
_FIRST_IMG = re.compile(r"<img\b[^<>]*?\bsrc\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))", re.I)
# HTML5 tree building is quadratic in the nesting depth (100,000 nested <div>s kept
# nh3 busy for a minute); articles nest a few dozen levels. Deeper markup becomes text.
MAX_HTML_DEPTH = 512
_START_OR_END_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*?(/?)>")
_NEVER_NESTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
     "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "rp", "rt", "thead", "tbody",
     "tfoot", "colgroup"}
)  # fmt: skip


def normalize_feed(
    feed: FeedData, rules: SourceRules, seen: datetime, *, max_entries: int | None = None
) -> NormalizedFeed:
    """Every entry of a parsed feed as a post; within one document the first entry of an id wins.

    ``seen`` is the first-seen date of every entry here; the caller swaps in the
    stored one for entries it already knows (see ``NormalizedFeed.undated``).
    """
    rules = replace(rules, feed_title=feed.title)
    posts: dict[str, Post] = {}
    undated: set[str] = set()
    for entry in feed.entries[:max_entries]:
        post = normalize(entry, rules, seen)
        if post.id in posts:
            continue
        posts[post.id] = post
        if moment(entry.published) is None and moment(entry.updated) is None:
            undated.add(post.id)
    return NormalizedFeed(
        title=feed.title,
        version=feed.version,
        posts=tuple(posts.values()),
        undated=frozenset(undated),
        ttl=feed.ttl,
        warning=feed.warning,
    )


def with_first_seen(post: Post, first_seen: datetime, *, undated: bool) -> Post:
    """``post`` as first seen at ``first_seen`` (an undated post takes it as its date too)."""
    first_seen = first_seen.astimezone(UTC).replace(microsecond=0)
    if post.first_seen == first_seen:
        return post
    return replace(post, first_seen=first_seen, date=first_seen if undated else post.date)


def prepared(posts: Sequence[Post]) -> None:
    """Compute what the store will ask of each post (hash, summary) now, in this process.

    A parser worker calls it: pickling carries a computed property along, so the
    main process does not redo them. The file itself is rendered by the store,
    once, after first sight, transforms and merging have had their say.
    """
    for post in posts:
        _ = post.content_hash, post.summary


# Query parameters that track the reader rather than name the article.
_TRACKING = re.compile(
    r"^(utm_\w*|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|mc_cid|mc_eid|igshid|_hsenc|_hsmi|"
    r"mkt_tok|ref_src)$",
    re.IGNORECASE,
)


def canonical_link(url: str) -> str:
    """What two copies of one article's link have in common; '' for a non-web link.

    Scheme (http and https alike), host case, default port, fragment, user
    info and tracking parameters (``utm_*``, ``fbclid``...) are dropped; the
    remaining parameters are sorted.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("http", "https") or not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    query = sorted(
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not _TRACKING.match(key)
    )
    return urlunsplit(("https", netloc, parts.path or "/", urlencode(query), ""))


def entry_id(entry: EntryData) -> str:
    """The guid or Atom id, else the link, else a hash of title and content."""
    for candidate in (entry.id, entry.link):
        if candidate and clean_text(candidate).strip():
            return clean_text(candidate).strip()
    material = json.dumps([entry.title, entry.content or entry.summary], ensure_ascii=False)
    return "urn:sha256:" + hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()


def safe_url(url: str | None, base: str = "") -> str | None:
    """An absolute http(s)/mailto URL, or None for anything else (javascript:, data:...)."""
    if not url:
        return None
    url = clean_text(url).strip()
    if _PLAIN_WEB_URL.fullmatch(url) and not _EMPTY_URL_PART.search(url):
        return url  # what the general path gives for it, without parsing it twice
    return _joined_if_safe(url, base)


def _joined_if_safe(url: str, base: str) -> str | None:
    try:
        absolute = urljoin(base, url) if base else url
        scheme = urlsplit(absolute).scheme.lower()
    except ValueError:
        return None
    if scheme not in SAFE_SCHEMES:
        return None
    return absolute


# An absolute web URL that joining and splitting leave as it is: a host after "//", printable
# ASCII, no brackets (IPv6 hosts can be malformed) and no ";" parameters; _EMPTY_URL_PART
# finds the empty query or fragment that ``urljoin`` would drop.
_PLAIN_WEB_URL = re.compile(r"https?://[^/?#\[\];\s][^\[\];\s\x7f-\U0010ffff]*")
_EMPTY_URL_PART = re.compile(r"\?(?:#|\Z)|#\Z")


def sanitize_html(markup: str, base: str) -> str:
    """Allowlist-clean HTML with nh3; relative URLs resolved against ``base``.

    ammonia itself checks the scheme of ``href``, ``src`` and ``poster`` and
    resolves them when relative; a Python filter runs only for a body that has
    a URL attribute it leaves alone (``srcset``, ``cite``), since calling back
    into Python for every attribute cost a fifth of the cleaning.
    """
    if _too_deep(markup, MAX_HTML_DEPTH):
        return f"<p>{html.escape(plain_text(markup), quote=False)}</p>"
    # Without an absolute web base a relative URL cannot be resolved, so it is dropped.
    base = base if (safe_url(base) or "").startswith(("http:", "https:")) else ""

    def filter_attribute(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "srcset":
            return _clean_srcset(value, base)
        if attribute in _UNCHECKED_URL_ATTRIBUTES:
            return safe_url(value, base)
        return value

    return nh3.clean(
        markup,
        tags=_TAGS,
        attributes={**_ATTRIBUTES, "*": _GENERIC_ATTRIBUTES},
        attribute_filter=filter_attribute if _may_have_unchecked_urls(markup) else None,
        url_schemes=set(SAFE_SCHEMES),
        url_relative=("rewrite_with_base", base) if base else "deny",
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def _may_have_unchecked_urls(markup: str) -> bool:
    # A plain substring test: a regular expression for the attributes cost as much as nh3.
    lowered = markup.lower()
    return "cite" in lowered or "srcset" in lowered


def _too_deep(markup: str, limit: int) -> bool:
    """Whether elements nest more than ``limit`` deep (a linear scan of the tags)."""
    if markup.count("<") <= limit:
        return False  # too few tags to nest that deep
    depth = 0
    for match in _START_OR_END_TAG.finditer(markup):
        closing, name, self_closing = match.groups()
        if name.lower() in _NEVER_NESTS or self_closing:
            continue
        if closing:
            depth = max(depth - 1, 0)
        else:
            depth += 1
            if depth > limit:
                return True
    return False


def _clean_srcset(value: str, base: str) -> str | None:
    candidates = []
    for candidate in value.split(","):
        parts = candidate.strip().split()
        if not parts:
            continue
        url = safe_url(parts[0], base)
        if url:
            candidates.append(" ".join([url, *parts[1:2]]))
    return ", ".join(candidates) or None


def escape_braces(markup: str) -> str:
    return markup.replace("{", "&#123;").replace("}", "&#125;")


def _title(entry: EntryData, body_text: str, link: str) -> str:
    raw = clean_text(entry.title or "")
    # A text-typed title's markup is literal text, but templates print titles unescaped: it goes too.
    text_title = clean_text(WHITESPACE.sub(" ", no_markup(raw)).strip())
    title = plain_text(raw) if entry.title_is_html else text_title
    if not title:
        title = plain_text(body_text, limit=TITLE_FALLBACK_CHARS)
    return title or link or "(untitled)"


def lead_image(entry: EntryData, body: str) -> str | None:
    """media:thumbnail, media:content, an image enclosure, else the body's first <img>."""
    candidates = list(entry.images)
    candidates += [e.url for e in entry.enclosures if e.type.startswith("image/")]
    for match in _FIRST_IMG.finditer(body):
        candidates.append(html.unescape(next(g for g in match.groups() if g is not None)))
    for candidate in candidates:
        url = safe_url(candidate, entry.base)
        if url and url[:6].lower().startswith(("http:", "https:")):
            return url
    return None


def moment(value: datetime | None) -> datetime | None:
    """UTC, whole seconds; None for what a post file cannot hold (years before 100)."""
    if value is None:
        return None
    try:
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    # RFC 822 readers take a two-digit year as 19xx/20xx.
    return value.replace(microsecond=0) if value.year >= 100 else None


def normalize(entry: EntryData, rules: SourceRules, first_seen: datetime) -> Post:
    """One entry to one post; see the module docstring for each field's rule."""
    seen = moment(first_seen) or first_seen.replace(microsecond=0)
    published, updated = moment(entry.published), moment(entry.updated)
    link = safe_url(entry.link, entry.base) or ""
    raw_body = clean_text(entry.content or entry.summary or "")
    body = raw_body if rules.trusted else sanitize_html(raw_body, entry.base)
    headimg = lead_image(entry, body)
    enclosures = tuple(
        Enclosure(url=url, type=clean_text(e.type), length=e.length)
        for e in entry.enclosures
        if (url := safe_url(e.url, entry.base)) and not url.startswith("mailto:")
    )
    author = (
        clean_text(rules.author or "").strip()
        or plain_text(entry.author or "")
        or plain_text(rules.feed_title)
        or rules.name
    )
    return Post(
        source=rules.name,
        id=entry_id(entry),
        title=_title(entry, raw_body, link),
        link=link,
        categories=tuple(clean_text(c) for c in rules.categories),
        author=author,
        comments=rules.comments,
        date=published or updated or seen,
        updated=updated,
        headimg=headimg,
        tags=tuple(dict.fromkeys(t for tag in entry.tags if (t := plain_text(tag)))),
        enclosures=enclosures,
        body=escape_braces(body) if rules.escape_braces else body,
        first_seen=seen,
    )
