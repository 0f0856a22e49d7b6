"""The post file: the one module that names, renders and reads it.

A post is one Markdown file with YAML front matter, in the shape of the
reference post (``title, categories, headimg, author, comments, date,
thumbnail``) plus ``link, id, source, tags, updated, first_seen, enclosures``
(and ``merged``, for a post other sources' copies were folded into, and ``media``, the
media archive's map from each original image URL to its local copy).
``first_seen`` (RFC 822, GMT) is the moment the entry was first seen, the date
of an entry that has none; it is kept in the file so ``reindex`` restores it.

python-frontmatter does the format, through a handler that uses libyaml's C
emitter and loader. Every string that would read back as another type (``no``,
``0123``, a date) is quoted, as PyYAML's safe dumper quotes it, so front matter
always reads back as written. The handler keeps the body byte for byte (python-frontmatter's own
``loads`` strips it), which is what lets a post's content hash survive a
reindex.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import io
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from frontmatter.default_handlers import YAMLHandler
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from aggregator.errors import StoreError
from aggregator.keys import slugify
from aggregator.model import Enclosure, MergedEntry, Post

MAX_FILENAME_BYTES = 255
# libyaml's C emitter where PyYAML was built with it, else PyYAML's own (the same output).
_EMITTER: Any = yaml.cyaml.CEmitter if yaml.__with_libyaml__ else yaml.emitter.Emitter  # type: ignore[attr-defined]
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SURROGATE = re.compile("[\ud800-\udfff]")
# The safe resolver's implicit types (bool, int, float, null, timestamp...) by the first
# character they can start with, and those that can start with any (none in PyYAML's safe
# resolver, kept for exactness).
_IMPLICIT = yaml.SafeDumper.yaml_implicit_resolvers
_ANY_FIRST = tuple(pattern for _tag, pattern in _IMPLICIT.get(None, ()))
_IMPLICIT_BY_FIRST: dict[str, tuple[re.Pattern[str], ...]] = {
    first: tuple(pattern for _tag, pattern in pairs) + _ANY_FIRST
    for first, pairs in _IMPLICIT.items()
    if first is not None
}
# (plain allowed, quoted allowed): a string that would read back as another type is quoted;
# true, false, null and integers are written plain.
_AS_TEXT, _QUOTED_TEXT, _PLAIN_SCALAR = (True, True), (False, True), (True, False)


def _text_event(value: str) -> ScalarEvent:
    """A string's event: quoted if plain it would read back as another type (``no``, ``0123``, ``~``)."""
    for pattern in _IMPLICIT_BY_FIRST.get(value[:1], _ANY_FIRST):
        if pattern.match(value):
            return ScalarEvent(None, None, _QUOTED_TEXT, value)
    return ScalarEvent(None, None, _AS_TEXT, value)


_STREAM_START = (StreamStartEvent(), DocumentStartEvent(explicit=False))
_STREAM_END = (DocumentEndEvent(explicit=False), StreamEndEvent())
_MAPPING_START, _MAPPING_END = MappingStartEvent(None, None, True, flow_style=False), MappingEndEvent()
_SEQUENCE_START, _SEQUENCE_END = SequenceStartEvent(None, None, True, flow_style=False), SequenceEndEvent()
_TRUE, _FALSE, _NULL = (ScalarEvent(None, None, _PLAIN_SCALAR, text) for text in ("true", "false", "null"))
# The keys ``front_matter`` writes, their events made once.
_KEY_EVENTS = {
    key: _text_event(key)
    for key in (
        *("title", "categories", "headimg", "author", "comments", "date", "thumbnail", "link"),
        *("id", "source", "tags", "updated", "first_seen", "enclosures", "merged", "media"),
        *("url", "type", "length"),
    )
}


def _emit(value: Any, emit: Callable[[Event], None]) -> None:
    """Emit the YAML events of front matter, as PyYAML's safe dumper would.

    Front matter is plain data (text, lists, mappings, booleans, None, ints), so the
    events are made directly, without PyYAML's representer, nodes and serializer,
    which called back into Python twice a scalar to resolve its tag: the same bytes
    (a property test holds it against ``yaml.dump``) for a third of the CPU
    (``python -m bench.render_cpu``).
    """
    kind = type(value)
    if kind is str:
        emit(_text_event(value))
    elif kind is dict:
        emit(_MAPPING_START)
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"front matter keys are text, not {type(key).__name__}")
            emit(_KEY_EVENTS.get(key) or _text_event(key))
            if type(item) is str:
                emit(_text_event(item))
            else:
                _emit(item, emit)
        emit(_MAPPING_END)
    elif kind is list:
        emit(_SEQUENCE_START)
        for item in value:
            if type(item) is str:
                emit(_text_event(item))
            else:
                _emit(item, emit)
        emit(_SEQUENCE_END)
    elif kind is bool:
        emit(_TRUE if value else _FALSE)
    elif value is None:
        emit(_NULL)
    elif kind is int:
        emit(ScalarEvent(None, None, _PLAIN_SCALAR, str(value)))
    else:
        raise TypeError(f"front matter holds no {kind.__name__}")


def dump_front_matter(metadata: dict[str, Any]) -> str:
    """``metadata`` as block YAML: key order kept, no line folded, Unicode as is."""
    stream = io.StringIO()
    emit = _EMITTER(stream, width=2**31 - 1, allow_unicode=True).emit
    for start in _STREAM_START:
        emit(start)
    _emit(metadata, emit)
    for end in _STREAM_END:
        emit(end)
    return stream.getvalue()


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

    def export(self, metadata: dict[str, Any], **kwargs: object) -> str:
        # Not the stock export: its ``str.strip()`` also strips a last value's own
        # trailing U+00A0 (Unicode whitespace), which then reads back as null.
        return dump_front_matter(metadata).removesuffix("\n")

    def format(self, post: frontmatter.Post, **kwargs: object) -> str:
        return f"---\n{self.export(post.metadata, **kwargs)}\n---\n\n{post.content}\n"


HANDLER = PostFileHandler()


def relpath(post: Post) -> str:
    """``<source>/<yyyy>/<mm>/<slug>-<hash>.md``: deterministic, safe, under 255 bytes.

    The hash is of (source, id), so two entries with the same title never share
    a file and an entry keeps its name whatever its title becomes. Text with ``/``
    (as the index keeps it), not a Path: made once a new post, where a Path's
    parsing was a third of the cost.
    """
    digest = hashlib.sha1(f"{post.source}\x00{post.id}".encode("utf-8", "replace")).hexdigest()[:10]
    name = f"{slugify(post.title)}-{digest}.md"
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    return f"{_source_slug(post.source)}/{post.date.year:04d}/{post.date.month:02d}/{name}"


@functools.lru_cache(maxsize=4096)
def _source_slug(source: str) -> str:
    """A source's folder name: the same for each of its posts, so made once."""
    return slugify(source)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc822(moment: datetime) -> str:
    """``email.utils.format_datetime(moment, usegmt=True)`` in UTC (a test holds them equal),
    made directly: the library's goes through a time tuple, 2.8 us against 0.9 us, twice a post."""
    m = moment.astimezone(UTC)
    clock = f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    return f"{_DAYS[m.weekday()]}, {m.day:02d} {_MONTHS[m.month - 1]} {m.year:04d} {clock} GMT"


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
    if post.media is not None:
        # The media archive: each original image URL and its local copy (the body points at the copy).
        matter["media"] = dict(post.media)
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
        media=_media_map(meta.get("media")),
    )


def _media_map(value: Any) -> tuple[tuple[str, str], ...] | None:
    """The ``media:`` map as (original URL, local copy) pairs sorted by URL; None when absent."""
    if not isinstance(value, dict):
        return None
    return tuple(sorted((_text(url), _text(copy)) for url, copy in value.items() if url and copy))


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
