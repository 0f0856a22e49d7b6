"""A fast path for plain RSS 2.0, RSS 1.0 and Atom 1.0: lxml instead of feedparser's SAX handler.

feedparser spends most of its time in Python callbacks for every element and
every text chunk; lxml builds the tree in C. ``parse`` returns what
``feedparser.parse`` would return for the fields ``aggregator.parse`` reads
(feed title/link/author/ttl, version, bozo; per entry id, link, links, title,
content, summary, author, dates, tags, media), so one piece of code turns
either result into ``FeedData`` and the two paths cannot drift apart there.

It answers ``None`` (decline) for anything it is not sure to read exactly as
feedparser does, and the caller falls back to feedparser: a document lxml
cannot read strictly (feedparser reads it leniently and warns), a DOCTYPE,
an encoding feedparser could not decide, an unknown root, xhtml or base64
content, elements feedparser would turn into a field we use but this module
does not handle (``textinput``, ``source`` in Atom, ``media:keywords``,
``itunes:keywords``, ...), an unknown namespace bound to more
than one prefix, or any element with children where a leaf is expected.

Faithfulness is by construction: the encoding is decided by feedparser's own
``convert_to_utf8`` (so it, and the bozo flag for a non-XML content type, are
feedparser's; see ``_utf8_shortcut``), lxml reads the UTF-8 bytes feedparser's
SAX parser would get, dates go through feedparser's date parser, and the
state feedparser keeps while it reads (the xml:base stack with its quirks,
the title depth, the depth map that decides which duplicate element wins,
author details, the guid-as-link rule, tag deduplication) is replayed in
document order. ``tests/test_fastparse.py`` holds it to feedparser
differentially.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from feedparser.datetimes import _parse_date
from feedparser.encodings import convert_to_utf8
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin, make_safe_absolute_uri
from feedparser.util import FeedParserDict
from lxml import etree

__all__ = ["parse"]

_ATOM_NS = "http://www.w3.org/2005/atom"
_RSS10_NS = "http://purl.org/rss/1.0/"
_RSS090_NS = "http://my.netscape.com/rdf/simple/0.9/"
_NAMESPACES: dict[str, str] = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
_RSS_VERSIONS = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}
_CAN_BE_RELATIVE = _FeedParserMixin.can_be_relative_uri
_HTML_TYPES = _FeedParserMixin.html_types
_TEXT_TYPES = {"text/plain", "text/html"}  # content types read here; others (xhtml, base64) decline
_C1_CONTROLS = re.compile("[\x80-\x9f]")
_HIGH_CHARREF = re.compile(  # a character reference to U+0080 or above
    rb"&#(?:[xX]0*+(?:[89a-fA-F][0-9a-fA-F]|[0-9a-fA-F]{3,})|0*+(?:12[89]|1[3-9][0-9]|[2-9][0-9]{2}|[0-9]{4,}));"
)
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_EMAIL = re.compile(
    r"""(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))"""
    r"""([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?"""
)
_looks_like_html: Callable[[str], bool] = _FeedParserMixin.looks_like_html
_map_content_type: Callable[[str], str] = _FeedParserMixin.map_content_type

# Keys aggregator.parse reads or this module relies on: an element feedparser
# stores under one of these names by default is not harmless.
_USED_KEYS = {
    "id", "link", "links", "title", "title_detail", "content", "summary", "summary_detail",
    "author", "author_detail", "authors", "published_parsed", "updated_parsed", "tags",
    "media_thumbnail", "media_content", "ttl", "guidislink", "image", "textinput",
}  # fmt: skip
# Elements with a feedparser handler that only fills fields nobody reads here
# (rights, generator, language, ...). Read as leaves and skipped.
_HARMLESS = {
    "language", "dc_language", "rights", "copyright", "dc_rights", "generator", "webmaster",
    "dc_publisher", "created", "dcterms_created", "expirationdate", "subtitle", "tagline",
    "info", "cloud", "media_credit", "media_rating", "media_restriction", "media_license",
    "itunes_block", "itunes_explicit", "itunes_image", "itunes_subtitle", "newlocation",
    "admin_generatoragent", "admin_errorreportsto", "feedburner_browserfriendly",
}  # fmt: skip
_PUBLISHED = {"published", "pubdate", "issued", "dcterms_issued"}
_UPDATED = {"updated", "modified", "lastbuilddate", "dc_date", "dcterms_modified"}
_AUTHORS = {"author", "managingeditor", "dc_author", "dc_creator", "itunes_author"}
_CATEGORIES = {"category", "keywords", "dc_subject", "media_category"}
_IMAGE_CHILDREN = {"title", "link", "url", "width", "height", "description"}
_PERSON_CHILDREN = {"name", "email", "uri", "url", "homepage"}

_FIRST_ELEMENT = re.compile(rb"<\w")
_XML_DECLARATION = re.compile(rb"<\?xml[^>]*?>")  # feedparser's RE_XML_DECLARATION, on bytes
_UTF8_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>"
_PLAIN_UTF8_DECLARATION = re.compile(  # XML 1.0 in UTF-8: lxml reads it as feedparser's rewritten one
    rb"""<\?xml\s+version\s*=\s*["']1\.0["']\s+encoding\s*=\s*["']utf-?8["']"""
    rb"""(?:\s+standalone\s*=\s*["'](?:yes|no)["'])?\s*\?>""",
    re.IGNORECASE,
)
# An absolute http(s) URL that urljoin (and feedparser's _urljoin) gives back
# unchanged whatever the base: lower-case scheme, plain host, no params,
# query or fragment, no dot segments. Joining costs a fifth of the read.
_PLAIN_URL = re.compile(
    r"https?://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?(?:/(?:[A-Za-z0-9_~%!$&'()*+,=:@-]|\.(?![./]|$))*)*"
)
_NAME_CACHE: dict[str, str] = {}
_THREAD = threading.local()  # an lxml parser is not to be shared between threads (asyncio.to_thread)


class Decline(Exception):
    """The document holds something this module does not read exactly as feedparser would."""


def _parser() -> Any:
    parser = getattr(_THREAD, "parser", None)
    if parser is None:
        parser = _THREAD.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            recover=False,
            remove_comments=True,  # SAX reports no comments either: text around one is one string
            remove_pis=True,  # so iterating an element yields elements only (no DTD: no entity nodes)
            collect_ids=False,
        )
    return parser


def parse(body: bytes, headers: Mapping[str, str]) -> FeedParserDict | None:
    """feedparser's result for ``body`` (fields we read only), or None to let feedparser read it.

    ``headers`` are the response headers with lower-case names, as given to
    ``feedparser.parse(response_headers=...)``.
    """
    result = FeedParserDict(bozo=False, entries=[], feed=FeedParserDict(), headers={})
    result["headers"].update(headers)
    data = _utf8_shortcut(body, result)
    if data is None:
        data = convert_to_utf8(result["headers"], body, result)
    if not result["encoding"]:
        return None  # feedparser falls back to its loose parser
    first_element = _FIRST_ELEMENT.search(data)
    head = data[: first_element.start() if first_element else len(data)].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        return None  # feedparser rewrites the DOCTYPE (and may call it rss091n): not ours
    try:
        root = etree.fromstring(data, _parser())
    except etree.LxmlError:
        if data is body or data.startswith(_UTF8_DECLARATION):
            # Perhaps not UTF-8 after all (feedparser then tries other
            # encodings): decide on the whole document, as feedparser does.
            result = FeedParserDict(bozo=False, entries=[], feed=FeedParserDict(), headers=result["headers"])
            data = convert_to_utf8(result["headers"], body, result)
            try:
                root = etree.fromstring(data, _parser())
            except etree.LxmlError:
                return None
        else:
            return None  # feedparser's strict parser fails as well, and it reads leniently
    contentloc = result["headers"].get("content-location", "")
    baseuri = make_safe_absolute_uri("", contentloc) or make_safe_absolute_uri(contentloc) or ""
    reader = _Reader(baseuri, data)
    try:
        reader.read(root)
    except Decline:
        return None
    result["feed"] = reader.feed
    result["entries"] = reader.entries
    result["version"] = reader.version
    return result


def _utf8_shortcut(body: bytes, result: FeedParserDict) -> bytes | None:
    """The bytes to give lxml when feedparser's encoding verdict is UTF-8, else None.

    feedparser decides from the BOM, the XML declaration (first line) and the
    Content-Type, then decodes the whole document and re-encodes it as UTF-8.
    When its verdict on the first line alone is UTF-8, the whole document gets
    the same verdict if it is valid UTF-8, which lxml checks strictly as it
    parses; ``parse`` retries with the whole decision when lxml fails. So only
    the declaration is rewritten, and the decode/encode round trip (a fifth of
    the time) is saved. The verdict goes into ``result`` as feedparser's would.
    """
    skip = 3 if body.startswith(codecs.BOM_UTF8) else 0
    newline = body.find(b"\n", skip, skip + 65536)
    if newline < 0:
        return None
    verdict = FeedParserDict(result)
    convert_to_utf8(verdict["headers"], body[: newline + 1], verdict)
    try:
        encoding = codecs.lookup(verdict["encoding"]).name
    except LookupError:
        return None
    # text/xml without a charset is US-ASCII to feedparser: the same reading when it is.
    if encoding != "utf-8" and not (encoding == "ascii" and body.isascii()):
        return None
    result.update(verdict)
    declaration = _XML_DECLARATION.match(body, skip)
    if declaration is None or _PLAIN_UTF8_DECLARATION.fullmatch(declaration.group()):
        return body  # lxml reads it as UTF-8 as it stands (a UTF-8 BOM included)
    return _UTF8_DECLARATION + body[declaration.end() :]


def _declared_version(root: Any) -> str:
    """The version feedparser infers from the root's namespace declarations, in their order."""
    for prefix, uri in root.nsmap.items():
        lower = uri.lower()
        if prefix is None and lower == _RSS090_NS:
            return "rss090"
        if lower == _RSS10_NS:
            return "rss10"
        if lower == _ATOM_NS:
            return "atom10"
    return ""


def _element_name(element: Any) -> str | None:
    """feedparser's name for an element (``title``, ``content_encoded``...); None for an unknown namespace."""
    tag = element.tag
    name = _NAME_CACHE.get(tag)
    if name is None:
        known = _map_name(tag)
        if known is None:
            return None
        if len(_NAME_CACHE) > 4096:
            _NAME_CACHE.clear()
        _NAME_CACHE[tag] = name = known
    return name


def _map_name(tag: str) -> str | None:
    if tag[0] != "{":
        return tag.lower()
    namespace, local = tag[1:].split("}", 1)
    lower = namespace.lower()
    if "backend.userland.com/rss" in lower:
        lower = "http://backend.userland.com/rss"
    prefix = _NAMESPACES.get(lower)
    if prefix is None:
        return None
    local = local.lower()
    return f"{prefix}_{local}" if prefix else local


def _attributes(element: Any) -> dict[str, str]:
    """The attribute dict feedparser's strict parser builds (expat names, rel/type lower-cased)."""
    items = element.items()
    if not items:
        return {}
    mapped: dict[str, str] = {}
    local_names: dict[str, str] = {}
    for name, value in items:
        if name[0] == "{":
            namespace, local = name[1:].split("}", 1)
            prefix = _NAMESPACES.get(namespace.lower(), "")
            mapped[f"{prefix}:{local}".lower() if prefix else local.lower()] = value
            local_names[local.lower()] = value
        else:
            mapped[name.lower()] = value
            local_names[name.lower()] = value
    mapped.update(local_names)
    for key in ("rel", "type"):
        if key in mapped:
            mapped[key] = mapped[key].lower()
    return mapped


def _join(base: str, uri: str) -> str:
    """feedparser's ``_urljoin``, skipped for URLs it would give back unchanged."""
    if _PLAIN_URL.fullmatch(uri):
        return uri
    joined: str = _urljoin(base, uri)
    return joined


def _fix_text(output: str) -> str:
    """feedparser's last touches on every text value (its parser always works in UTF-8).

    Both only change characters U+0080-U+00FF: the reader skips them for a
    document without any (``_may_have_latin1``).
    """
    if output.isascii():
        return output
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        # text that was UTF-8, read as ISO-8859-1 and re-encoded
        output = output.encode("iso-8859-1").decode("utf-8")
    if _C1_CONTROLS.search(output):
        output = output.translate(_cp1252)
    return output


def _may_have_latin1(data: bytes) -> bool:
    """Whether a UTF-8 document can hold a character U+0080-U+00FF (bytes C2/C3, or a reference)."""
    if b"\xc2" in data or b"\xc3" in data:
        return True
    return b"&#" in data and _HIGH_CHARREF.search(data) is not None


def _leaf_text(element: Any) -> str:
    if len(element):
        raise Decline(f"element {element.tag} has children where text is expected")
    return element.text or ""


class _Reader:
    """Replays feedparser's reading state over the tree, in document order.

    Each handler is named after the feedparser one it stands for; the state
    (flags, base stack, title depth, depth map) changes where feedparser's does.
    Contexts are plain dicts: none of the keys used here is one of
    ``FeedParserDict``'s aliases, so it would store and answer them the same.
    """

    def __init__(self, baseuri: str, data: bytes) -> None:
        self.baseuri = baseuri
        self.data = data
        self.latin1: bool | None = None  # whether _fix_text can change anything, known when needed
        self.basestack: list[str] = []
        self.join_cache: dict[tuple[str, str], str] = {}
        self.depth = 0
        self.version = ""
        self.feed: dict[str, Any] = {}
        self.entries: list[dict[str, Any]] = []
        self.infeed = False
        self.inentry = False
        self.inimage = False
        self.has_content = False
        self.guidislink = False
        self.title_depth = -1
        self.depth_map: dict[str, int] = {}
        self.bindings: set[tuple[str | None, str]] | None = None
        handlers: dict[str, Callable[[Any, dict[str, str], str], None]] = {
            "title": self._title,
            "link": self._link,
            "id": self._guid,
            "guid": self._guid,
            "description": self._summary,
            "summary": self._summary,
            "itunes_summary": self._summary,
            "media_description": self._summary,
            "media_title": self._media_title,
            "dc_title": self._title,
            "dc_description": self._summary,
            "itunes_owner": self._itunes_owner,
            "itunes_category": self._itunes_category,
            "content": self._content,
            "content_encoded": self._content,
            "contributor": self._contributor,
            "enclosure": self._enclosure,
            "media_thumbnail": self._thumbnail,
            "ttl": self._ttl,
            "source": self._source,
        }
        handlers.update(dict.fromkeys(_AUTHORS, self._author))
        handlers.update(dict.fromkeys(_CATEGORIES, self._category))
        handlers.update(dict.fromkeys(_PUBLISHED | _UPDATED, self._date))
        handlers.update(dict.fromkeys(_HARMLESS, self._harmless))
        self.handlers = handlers

    # -- document structure -------------------------------------------------

    def _name(self, element: Any) -> str:
        name = _element_name(element)
        if name is not None:
            return name
        # A namespace feedparser does not know: it names the element by the
        # first prefix the document bound to that namespace, and by the bare
        # local name when there is none (a default namespace). Read only the
        # unambiguous case: one prefix for the namespace, one namespace for it.
        tag, prefix = element.tag, element.prefix
        if not prefix:
            raise Decline(f"element {tag} in an unknown default namespace")
        if self.bindings is None:
            self.bindings = set(element.getroottree().getroot().xpath("//namespace::*"))
        uri = tag[1:].split("}", 1)[0]
        if {(p, u) for p, u in self.bindings if p == prefix or u == uri} != {(prefix, uri)}:
            raise Decline(f"namespace {uri} or prefix {prefix} bound more than once")
        return f"{prefix.lower()}_{tag.rsplit('}', 1)[1].lower()}"

    def read(self, root: Any) -> None:
        name = self._name(root)
        declared = _declared_version(root)
        if name == "rss" and not declared.startswith("rss"):
            version = _attributes(root).get("version", "")
            self.version = _RSS_VERSIONS.get(version) or ("rss20" if version.startswith("2.") else "rss")
            self._element(root, self._rss)
        elif name == "feed" and declared == "atom10" and root.tag[1:].lower().startswith(_ATOM_NS + "}"):
            self.version = declared
            self._element(root, self._feed)
        elif name == "rdf_rdf" and declared == "rss10":
            self.version = declared
            self._element(root, self._rdf)
        else:
            raise Decline(f"root element {root.tag} in a document of version {declared!r}")

    def _element(self, element: Any, handle: Callable[[Any, dict[str, str]], None]) -> None:
        attrs = _attributes(element)
        self._enter(attrs)
        handle(element, attrs)
        self._leave()

    def _enter(self, attrs: dict[str, str]) -> None:
        """feedparser's xml:base tracking at an element's start."""
        self.depth += 1
        current = self.baseuri
        target = (attrs.get("xml:base", attrs.get("base")) if attrs else None) or current
        key = (current, target)
        joined = self.join_cache.get(key)
        if joined is None:
            if current:
                joined = make_safe_absolute_uri(current, target) or current
            else:
                joined = _urljoin(current, target)
            self.join_cache[key] = joined
        self.baseuri = joined
        self.basestack.append(joined)

    def _leave(self) -> None:
        # As feedparser: an ancestor without a base does not restore it.
        stack = self.basestack
        stack.pop()
        if stack and stack[-1]:
            self.baseuri = stack[-1]
        self.depth -= 1

    def _rss(self, element: Any, attrs: dict[str, str]) -> None:
        for child in element:
            if self._name(child) != "channel":
                raise Decline(f"{child.tag} outside the channel")
            self._element(child, self._channel)

    def _rdf(self, element: Any, attrs: dict[str, str]) -> None:
        for child in element:
            name = _NAME_CACHE.get(child.tag) or self._name(child)
            if name == "channel":
                self._element(child, self._channel)
            elif name in ("item", "entry"):
                self._element(child, self._item)
            elif name == "image":
                self._element(child, self._image)
            else:
                self._dispatch(child, name)

    def _channel(self, element: Any, attrs: dict[str, str]) -> None:
        if "lastmod" in attrs or "href" in attrs:
            raise Decline("CDF attributes on the channel")
        self._feed(element, attrs)

    def _feed(self, element: Any, attrs: dict[str, str]) -> None:
        self.infeed = True
        for child in element:
            name = _NAME_CACHE.get(child.tag) or self._name(child)
            if name in ("item", "entry"):
                self._element(child, self._item)
            elif name == "image":
                self._element(child, self._image)
            else:
                self._dispatch(child, name)
        self.infeed = False

    def _item(self, element: Any, attrs: dict[str, str]) -> None:
        if "lastmod" in attrs or "href" in attrs:
            raise Decline("CDF attributes on an item")
        entry: dict[str, Any] = {}
        self.entries.append(entry)
        self.inentry = True
        self.guidislink = False
        self.title_depth = -1
        self.depth_map = {}
        about = attrs.get("rdf:about")
        if about:
            entry["id"] = about
        self._entry_children(element)
        self.inentry = False
        self.has_content = False

    def _entry_children(self, element: Any) -> None:
        for child in element:
            name = _NAME_CACHE.get(child.tag) or self._name(child)
            if name == "media_content" or name == "media_group":
                self._element(child, self._media_container)
            else:
                self._dispatch(child, name)

    def _media_container(self, element: Any, attrs: dict[str, str]) -> None:
        # feedparser reads what is inside media:group / media:content as if it were in the item.
        if self._name(element) == "media_content":
            self._context().setdefault("media_content", []).append(attrs)
        self._entry_children(element)

    def _image(self, element: Any, attrs: dict[str, str]) -> None:
        if self.inentry:
            raise Decline("image inside an item")
        self._context().setdefault("image", {})
        self.inimage = True
        self.title_depth = -1
        for child in element:
            name = _NAME_CACHE.get(child.tag) or self._name(child)
            if name not in _IMAGE_CHILDREN:
                raise Decline(f"{child.tag} in an image")
            if name in ("url", "width", "height"):
                self._element(child, _image_part)  # stored in the image only
            else:
                self._dispatch(child, name)
        self.inimage = False

    def _dispatch(self, element: Any, name: str) -> None:
        attrs = _attributes(element)
        self._enter(attrs)
        self.handlers.get(name, self._generic)(element, attrs, name)
        self._leave()

    def _generic(self, element: Any, attrs: dict[str, str], name: str) -> None:
        """An element feedparser has no handler for: it only stores it under its own name."""
        if hasattr(_FeedParserMixin, "_start_" + name) or hasattr(_FeedParserMixin, "_end_" + name):
            raise Decline(f"element {element.tag} is read by feedparser")
        key = FeedParserDict.keymap.get(name, name)
        if (key[0] if isinstance(key, list) else key) in _USED_KEYS or name in _USED_KEYS:
            raise Decline(f"element {element.tag} would be stored as a field we read")
        for child in element:
            self._dispatch(child, self._name(child))

    def _harmless(self, element: Any, attrs: dict[str, str], name: str) -> None:
        _leaf_text(element)

    # -- feedparser's pop, and the contexts it stores into ----------------------

    def _context(self) -> dict[str, Any]:
        if self.inimage and "image" in self.feed:
            context: dict[str, Any] = self.feed["image"]
            return context
        if self.inentry:
            return self.entries[-1]
        return self.feed

    def _content_params(self, attrs: dict[str, str], default_type: str) -> dict[str, Any]:
        if "mode" in attrs or "src" in attrs:
            raise Decline("content by mode or src")
        content_type = _map_content_type(attrs.get("type", default_type))
        if content_type not in _TEXT_TYPES:
            raise Decline(f"content of type {content_type}")
        return {"type": content_type, "language": None, "base": self.baseuri}

    def _pop(
        self, element: str, text: str, expecting_text: bool = True, params: dict[str, Any] | None = None
    ) -> str:
        """feedparser's ``pop``: strip, resolve, guess the type, fix the text, store it."""
        output = text.strip()
        if not expecting_text:
            return output
        if output and element in _CAN_BE_RELATIVE and (element != "id" or self.guidislink):
            output = _join(self.baseuri or "", output)
        if (
            params is not None
            and params["type"] == "text/plain"
            and not self.version.startswith("atom")
            and _looks_like_html(output)
        ):
            params["type"] = "text/html"
        if not output.isascii():
            if self.latin1 is None:
                self.latin1 = _may_have_latin1(self.data)
            if self.latin1:
                output = _fix_text(output)
        if element == "category":
            return output
        if element == "title" and -1 < self.title_depth <= self.depth:
            return output
        if self.inentry:
            entry = self.entries[-1]
            if element == "content":
                entry.setdefault("content", []).append({**(params or {}), "value": output})
            elif element == "link":
                if not self.inimage:
                    if "&" in output:
                        output = _LINK_ENTITY.sub(r"&\g<1>", output.replace("&amp;", "&"))
                    entry["link"] = output
                    if output:
                        entry["links"][-1]["href"] = output
            else:
                if element == "description":
                    element = "summary"
                old_depth = self.depth_map.get(element)
                if old_depth is None or self.depth <= old_depth:
                    self.depth_map[element] = self.depth
                    entry[element] = output
                if params is not None:
                    entry[element + "_detail"] = {**params, "value": output}
        elif self.infeed:
            context = self._context()
            if element == "description":
                element = "subtitle"
            context[element] = output
            if element == "link":
                if "&" in output:
                    output = _LINK_ENTITY.sub(r"&\g<1>", output)
                context[element] = output
                context["links"][-1]["href"] = output
            elif params is not None:
                context[element + "_detail"] = {**params, "value": output}
        return output

    # -- feedparser's element handlers, replayed --------------------------------

    def _title(self, element: Any, attrs: dict[str, str], name: str) -> None:
        params = self._content_params(attrs, "text/plain")
        value = self._pop("title", _leaf_text(element), self.infeed or self.inentry, params)
        if value:
            self.title_depth = self.depth

    def _media_title(self, element: Any, attrs: dict[str, str], name: str) -> None:
        title_depth = self.title_depth
        self._title(element, attrs, name)
        self.title_depth = title_depth

    def _summary(self, element: Any, attrs: dict[str, str], name: str) -> None:
        if "summary" in self._context() and not self.has_content:
            self._content(element, attrs, "content")  # a second summary is read as content
        elif self.inimage:
            _leaf_text(element)  # stored in the image only
        elif name in ("description", "media_description", "dc_description"):
            params = self._content_params(attrs, "text/html")
            self._pop("description", _leaf_text(element), self.infeed or self.inentry, params)
        else:
            params = self._content_params(attrs, "text/plain")
            self._pop("summary", _leaf_text(element), True, params)

    def _content(self, element: Any, attrs: dict[str, str], name: str) -> None:
        self.has_content = True
        params = self._content_params(attrs, "text/html" if name == "content_encoded" else "text/plain")
        copy_to_summary = params["type"] in _TEXT_TYPES  # text/plain or an HTML type
        value = self._pop("content", _leaf_text(element), True, params)
        if copy_to_summary:
            self._context().setdefault("summary", value)

    def _link(self, element: Any, attrs: dict[str, str], name: str) -> None:
        attrs.setdefault("rel", "alternate")
        attrs.setdefault("type", "application/atom+xml" if attrs["rel"] == "self" else "text/html")
        context = self._context()
        _enforce_href(attrs)
        if "href" in attrs:
            attrs["href"] = _join(self.baseuri or "", attrs["href"])
        context.setdefault("links", []).append(attrs)
        if "href" not in attrs:
            self._pop("link", _leaf_text(element), self.infeed or self.inentry)
            return
        if len(element) or (element.text or "").strip():
            raise Decline("a link with both href and text")
        if attrs["rel"] == "alternate" and _map_content_type(attrs["type"]) in _HTML_TYPES:
            context["link"] = attrs["href"]

    def _guid(self, element: Any, attrs: dict[str, str], name: str) -> None:
        self.guidislink = attrs.get("ispermalink", "true") == "true"
        value = self._pop("id", _leaf_text(element))
        context = self._context()
        context.setdefault("guidislink", self.guidislink and "link" not in context)
        if self.guidislink:
            context.setdefault("link", value)

    def _date(self, element: Any, attrs: dict[str, str], name: str) -> None:
        published = name in _PUBLISHED
        value = self._pop("published" if published else "updated", _leaf_text(element))
        self._context()["published_parsed" if published else "updated_parsed"] = _parse_date(value)

    def _ttl(self, element: Any, attrs: dict[str, str], name: str) -> None:
        if not self.infeed or self.inentry:
            raise Decline("ttl outside the channel")
        self._pop("ttl", _leaf_text(element))

    def _source(self, element: Any, attrs: dict[str, str], name: str) -> None:
        if not self.inentry or self.version.startswith("atom"):
            raise Decline("source outside an RSS item")
        _leaf_text(element)
        self.title_depth = -1  # _start_source

    def _author(self, element: Any, attrs: dict[str, str], name: str) -> None:
        context = self._context()
        context.setdefault("authors", []).append({})
        own_text = element.text or ""
        for child in element:
            self._person_part(child, save=True)
            own_text += child.tail or ""
        self._pop("author", own_text)
        self._sync_author_detail()

    def _contributor(self, element: Any, attrs: dict[str, str], name: str) -> None:
        context = self._context()
        context.setdefault("contributors", []).append({})
        for child in element:
            self._person_part(child, save=False)

    def _person_part(self, element: Any, save: bool) -> None:
        name = self._name(element)
        if name not in _PERSON_CHILDREN:
            raise Decline(f"{element.tag} in a person construct")
        self._enter(_attributes(element))
        text = _leaf_text(element)
        if name in ("name", "email"):
            key, value = name, self._pop(name, text, expecting_text=False)
        else:
            key, value = "href", self._pop("href", text)
        if save:
            self._save_author(key, value)
        self._leave()

    def _itunes_owner(self, element: Any, attrs: dict[str, str], name: str) -> None:
        # The owner's name and e-mail are saved as the publisher's, and (feedparser's
        # quirk) into the last author's details as well.
        for child in element:
            part = self._name(child)
            if part not in ("itunes_name", "itunes_email", "name", "email"):
                raise Decline(f"{child.tag} in itunes:owner")
            self._enter(_attributes(child))
            key = part.removeprefix("itunes_")
            self._save_author(key, self._pop(key, _leaf_text(child), expecting_text=False), "publisher")
            self._leave()

    def _save_author(self, key: str, value: str, prefix: str = "author") -> None:
        context = self._context()
        context.setdefault(prefix + "_detail", {})[key] = value
        self._sync_author_detail()
        context.setdefault("authors", [{}])
        context["authors"][-1][key] = value

    def _sync_author_detail(self) -> None:
        """feedparser's ``_sync_author_detail`` for authors, line by line."""
        context = self._context()
        detail = context.get("authors", [{}])[-1]
        if detail:
            name = detail.get("name")
            email = detail.get("email")
            if name and email:
                context["author"] = f"{name} ({email})"
            elif name:
                context["author"] = name
            elif email:
                context["author"] = email
            return
        author, email = context.get("author"), None
        if not author:
            return
        match = _EMAIL.search(author)
        if match:
            email = match.group(0)
            author = author.replace(email, "").replace("()", "").replace("<>", "").replace("&lt;&gt;", "")
            author = author.strip()
            if author and author[0] == "(":
                author = author[1:]
            if author and author[-1] == ")":
                author = author[:-1]
            author = author.strip()
        if author or email:
            context.setdefault("author_detail", detail)
        if author:
            detail["name"] = author
        if email:
            detail["email"] = email

    def _category(self, element: Any, attrs: dict[str, str], name: str) -> None:
        if name == "media_category":
            attrs.setdefault("scheme", "http://search.yahoo.com/mrss/category_schema")
        self._add_tag(attrs.get("term"), attrs.get("scheme", attrs.get("domain")), attrs.get("label"))
        self._end_category(self._pop("category", _leaf_text(element)))

    def _itunes_category(self, element: Any, attrs: dict[str, str], name: str) -> None:
        self._add_tag(attrs.get("text"), "http://www.itunes.com/", None)
        own_text = element.text or ""
        for child in element:  # subcategories
            if self._name(child) != "itunes_category":
                raise Decline(f"{child.tag} in itunes:category")
            self._dispatch(child, "itunes_category")
            own_text += child.tail or ""
        self._end_category(self._pop("category", own_text))

    def _end_category(self, value: str) -> None:
        if not value:
            return
        tags = self._context()["tags"]
        if len(tags) and not tags[-1]["term"]:
            tags[-1]["term"] = value
        else:
            self._add_tag(value, None, None)

    def _add_tag(self, term: str | None, scheme: str | None, label: str | None) -> None:
        tags = self._context().setdefault("tags", [])
        if not term and not scheme and not label:
            return
        value = {"term": term, "scheme": scheme, "label": label}
        if value not in tags:
            tags.append(value)

    def _enclosure(self, element: Any, attrs: dict[str, str], name: str) -> None:
        if len(element):
            raise Decline("an enclosure with children")
        _enforce_href(attrs)
        attrs["rel"] = "enclosure"
        self._context().setdefault("links", []).append(attrs)

    def _thumbnail(self, element: Any, attrs: dict[str, str], name: str) -> None:
        thumbnails = self._context().setdefault("media_thumbnail", [])
        thumbnails.append(attrs)
        url = self._pop("url", _leaf_text(element))
        if url.strip() and "url" not in thumbnails[-1]:
            thumbnails[-1]["url"] = url


def _image_part(element: Any, attrs: dict[str, str]) -> None:
    _leaf_text(element)


def _enforce_href(attrs: dict[str, str]) -> None:
    href = attrs.get("url", attrs.get("uri", attrs.get("href")))
    if href:
        attrs.pop("url", None)
        attrs.pop("uri", None)
        attrs["href"] = href
