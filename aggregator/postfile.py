"""The post file: the one module that names, renders and reads it.

A post is one Markdown file with YAML front matter, in the shape of the
reference post (``title, categories, headimg, author, comments, date,
thumbnail``) plus ``link, id, source, tags, updated, first_seen, enclosures``
(and ``merged``, for a post other sources' copies were folded into).
``first_seen`` (RFC 822, GMT) is the moment the entry was first seen, the date
of an entry that has none; it is kept in the file so ``reindex`` restores it.

python-frontmatter does the format, through a handler that uses libyaml's C
dumper and loader: its serializer quotes every string that would read back as
another type (``no``, ``0123``, a date), so front matter always reads back as
written. The handler keeps the body byte for byte (python-frontmatter's own
``loads`` strips it), which is what lets a post's content hash survive a
reindex.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

import frontmatter
import yaml
from frontmatter.default_handlers import YAMLHandler
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from aggregator.errors import StoreError
from aggregator.keys import slugify
from aggregator.model import Enclosure, MergedEntry, Post

MAX_FILENAME_BYTES = 255
_SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SURROGATE = re.compile("[\ud800-\udfff]")
_TAG = "tag:yaml.org,2002:"


class FrontMatterDumper(_SAFE_DUMPER):  # type: ignore[misc]
    """libyaml's safe dumper, with its Python half cut to what front matter holds.

    Front matter is plain data (text, lists, mappings, booleans, None, ints),
    never an object met twice, so nodes are made directly (no alias bookkeeping,
    no representer lookup by type) and the scalar resolver the C emitter calls
    back twice a value checks only the implicit types a first character can
    start. Same bytes as the stock dumper (a property test holds it); 40% less
    CPU a post (``python -m bench.render_cpu``: about 100 -> 60 us).
    """

    _resolvers_by_first: ClassVar[dict[str | None, tuple[Any, ...]]] = {
        first: tuple(pairs) for first, pairs in _SAFE_DUMPER.yaml_implicit_resolvers.items()
    }

    def represent_data(self, data: Any) -> Node:
        kind = type(data)
        if kind is str:
            return ScalarNode(_TAG + "str", data)
        if kind is list:
            return SequenceNode(_TAG + "seq", [self.represent_data(item) for item in data], flow_style=False)
        if kind is dict:
            pairs = [(self.represent_data(k), self.represent_data(v)) for k, v in data.items()]
            return MappingNode(_TAG + "map", pairs, flow_style=False)
        if kind is bool:
            return ScalarNode(_TAG + "bool", "true" if data else "false")
        if data is None:
            return ScalarNode(_TAG + "null", "null")
        if kind is int:
            return ScalarNode(_TAG + "int", str(data))
        node: Node = super().represent_data(data)
        return node

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        # No path resolvers and no wildcard implicit ones in the safe resolver: the stock
        # method's remaining steps all end in the default tag.
        if kind is ScalarNode:
            if implicit[0]:
                for tag, pattern in self._resolvers_by_first.get(value[:1], ()):
                    if pattern.match(value):
                        return str(tag)
            return str(self.DEFAULT_SCALAR_TAG)
        return str(super().resolve(kind, value, implicit))

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """No path resolvers: nothing to track."""

    def ascend_resolver(self) -> None:
        """No path resolvers: nothing to track."""


class PostFileHandler(YAMLHandler):
    """YAML front matter between ``---`` lines, a blank line, the body, a newline.

    Unlike the stock handler, it keeps key order, never folds a long line, and
    strips neither the body's nor the last value's own leading or trailing whitespace.
    """

    FM_BOUNDARY = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)

    def split(self, text: str) -> tuple[str, str]:
        match = self.FM_BOUNDARY.match(text)
        if match is None:
            raise ValueError("no YAML front matter between --- lines")
        body = text[match.end() :]
        body = body[1:] if body.startswith("\n") else body
        body = body[:-1] if body.endswith("\n") else body
        return match.group(1), body

    def load(self, fm: str, **kwargs: object) -> Any:
        kwargs.setdefault("Loader", _LOADER)
        return super().load(fm, **kwargs)

    def export(self, metadata: dict[str, object], **kwargs: object) -> str:
        # Not the stock export: its ``str.strip()`` also strips a last value's own
        # trailing U+00A0 (Unicode whitespace), which then reads back as null.
        kwargs.setdefault("Dumper", FrontMatterDumper)
        kwargs.setdefault("sort_keys", False)
        kwargs.setdefault("width", 2**31 - 1)
        kwargs.setdefault("allow_unicode", True)
        kwargs.setdefault("default_flow_style", False)
        text: str = yaml.dump(metadata, **kwargs)  # type: ignore[call-overload]
        return text.removesuffix("\n")

    def format(self, post: frontmatter.Post, **kwargs: object) -> str:
        return f"---\n{self.export(post.metadata, **kwargs)}\n---\n\n{post.content}\n"


HANDLER = PostFileHandler()


def relpath(post: Post) -> Path:
    """``<source>/<yyyy>/<mm>/<slug>-<hash>.md``: deterministic, safe, under 255 bytes.

    The hash is of (source, id), so two entries with the same title never share
    a file and an entry keeps its name whatever its title becomes.
    """
    digest = hashlib.sha1(f"{post.source}\x00{post.id}".encode("utf-8", "replace")).hexdigest()[:10]
    name = f"{slugify(post.title)}-{digest}.md"
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    return Path(slugify(post.source), f"{post.date.year:04d}", f"{post.date.month:02d}", name)


def rfc822(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_date(value: Any) -> datetime | None:
    """RFC 822 as we write it; also what a person may type by hand (ISO dates, YAML dates)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def front_matter(post: Post) -> dict[str, Any]:
    """The post's front matter, in the file's key order."""
    matter: dict[str, Any] = {
        "title": post.title,
        "categories": list(post.categories),
        "headimg": post.headimg,
        "author": post.author,
        "comments": post.comments,
        "date": rfc822(post.date),
        "thumbnail": post.headimg,
        "link": post.link,
        "id": post.id,
        "source": post.source,
        "tags": list(post.tags),
        "updated": rfc822(post.updated) if post.updated else None,
        "first_seen": rfc822(post.first_seen) if post.first_seen else None,
        "enclosures": [{"url": e.url, "type": e.type, "length": e.length} for e in post.enclosures],
    }
    # The reference leaves a key out rather than writing it empty.
    for key in ("headimg", "thumbnail", "updated", "first_seen"):
        if matter[key] is None:
            del matter[key]
    if not matter["enclosures"]:
        del matter["enclosures"]
    if post.merged:
        # Hexo's form for several category hierarchies: a list of lists.
        matter["categories"] = [list(post.categories), *(list(m.categories) for m in post.merged)]
        matter["merged"] = [
            {"source": m.source, "id": m.id, "categories": list(m.categories)} for m in post.merged
        ]
    return matter


def render(post: Post) -> bytes:
    """The post file's bytes: front matter, a blank line, the body."""
    matter = front_matter(post)
    try:
        return frontmatter.dumps(frontmatter.Post(post.body, **matter), handler=HANDLER).encode()
    except UnicodeEncodeError:
        # A lone surrogate (normalize removes them; a caller might not) has no UTF-8:
        # it is written as U+FFFD rather than failing the whole batch.
        text = _SURROGATE.sub("\ufffd", post.body)
        clean = frontmatter.Post(text, **_replace_surrogates(matter))
        return frontmatter.dumps(clean, handler=HANDLER).encode()


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {key: _replace_surrogates(item) for key, item in value.items()}
    return value


def split(text: str) -> tuple[dict[str, Any], str]:
    """Front matter and body of a post file; the body exactly as ``render`` wrote it."""
    fm, body = HANDLER.split(text)
    meta = HANDLER.load(fm)
    if not isinstance(meta, dict):
        raise ValueError("the front matter is not a mapping")
    return meta, body


def read(path: Path) -> Post:
    """Read a post file back; raise StoreError when it is not one of ours."""
    try:
        # Bytes, then decode: no newline translation, so the body reads back exactly.
        meta, body = split(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as error:
        raise StoreError(f"{path}: unreadable post file: {error}") from error
    moment = parse_date(meta.get("date"))
    if not meta.get("source") or meta.get("id") is None or moment is None:
        raise StoreError(f"{path}: not a post file (needs source, id and date)")
    enclosures = meta.get("enclosures") or ()
    return Post(
        source=_text(meta["source"]),
        id=_text(meta["id"]),
        title=_text(meta.get("title")),
        link=_text(meta.get("link")),
        categories=_own_categories(meta.get("categories")),
        author=_text(meta.get("author")),
        comments=meta.get("comments") is True,
        date=moment,
        updated=parse_date(meta.get("updated")),
        headimg=_text(meta["headimg"]) if meta.get("headimg") else None,
        tags=tuple(_text(t) for t in _list(meta.get("tags"))),
        enclosures=tuple(
            Enclosure(url=_text(e.get("url")), type=_text(e.get("type")), length=_length(e.get("length")))
            for e in (enclosures if isinstance(enclosures, list) else ())
            if isinstance(e, dict) and e.get("url")
        ),
        body=body,
        first_seen=parse_date(meta.get("first_seen")),
        merged=tuple(
            MergedEntry(
                _text(m.get("source")),
                _text(m.get("id")),
                tuple(_text(c) for c in _list(m.get("categories"))),
            )
            for m in _list(meta.get("merged"))
            if isinstance(m, dict) and m.get("source") and m.get("id") is not None
        ),
    )


def _own_categories(value: Any) -> tuple[str, ...]:
    """A flat list, or (for a merged post) the first of several hierarchies."""
    items = _list(value)
    if items and isinstance(items[0], list):
        items = items[0]
    return tuple(_text(c) for c in items)


def _text(value: Any) -> str:
    """A front-matter scalar as text; a hand-typed ``yes`` stays ``yes``-ish, None becomes ''."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _length(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0
