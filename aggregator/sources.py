"""Find a site's feeds and add sources to (or remove them from) the YAML files.

Discovery: the URL itself when it is a feed; else, for an HTML page, the
feeds it advertises with ``<link rel="alternate">``; else the usual paths
(``/feed``, ``/rss.xml``, ``/atom.xml``, ``/index.xml``...). Every candidate
is fetched and parsed, so only feeds that work are offered.

Editing keeps the file as the user wrote it: the text is changed only where
a source is added or removed, at the lines ruamel.yaml's composer reports for
the ``sources`` sequence; comments, order, blank lines and quoting elsewhere
stay byte for byte. The new source itself is written by ruamel.yaml's
emitter, in the file's own indentation. Files whose ``sources`` is missing,
empty or in flow style go through a full ruamel.yaml round trip instead.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from lxml import etree
from lxml import html as lxml_html
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from aggregator.config import load_config
from aggregator.config_merge import config_files
from aggregator.errors import AggregatorError, ConfigError, FetchError, NotAFeed, ParseError
from aggregator.fetch import Fetcher, FetchRequest, FetchResult, Validators, read_local, redact_url
from aggregator.files import write_atomic
from aggregator.model import FeedData
from aggregator.parse import parse_document

COMMON_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/index.xml", "/feed.xml", "/rss", "/atom", "/feed.json")
FEED_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/feed+json", "application/json"}
)


@dataclass(frozen=True)
class FeedCandidate:
    url: str
    title: str
    entries: int
    version: str


async def discover(url: str, fetcher: Fetcher, *, max_body: int = 10 * 1024**2) -> list[FeedCandidate]:
    """The feeds at ``url``: itself, or those its page advertises, or those at the usual paths."""
    result = await _retrieve(url, fetcher, max_body)
    try:
        return [await _candidate(url, result)]
    except NotAFeed as error:
        if not urlsplit(result.url).scheme.startswith("http"):
            raise
        page_error = error
    except ParseError as error:
        raise NotAFeed(f"{redact_url(url)}: not a feed: {error}") from error
    advertised = alternate_links(result.body or b"", result.url)
    found = await _working(advertised, fetcher, max_body)
    if not found:
        root = f"{urlsplit(result.url).scheme}://{urlsplit(result.url).netloc}"
        guesses = [urljoin(root, path) for path in COMMON_PATHS]
        found = await _working([g for g in guesses if g not in advertised], fetcher, max_body)
    if not found:
        raise NotAFeed(
            f"{redact_url(url)}: {page_error}; no working feed among its links "
            f"or at {', '.join(COMMON_PATHS)}"
        )
    return found


async def _retrieve(url: str, fetcher: Fetcher, max_body: int) -> FetchResult:
    if urlsplit(url).scheme in ("http", "https"):
        return await fetcher.fetch(FetchRequest(url=url))
    path = Path(url.removeprefix("file://")).expanduser()
    return await asyncio.to_thread(read_local, path, Validators(), max_body)


async def _candidate(url: str, result: FetchResult) -> FeedCandidate:
    feed: FeedData = await asyncio.to_thread(parse_document, result.body or b"", result.headers, result.url)
    return FeedCandidate(url=url, title=feed.title.strip(), entries=len(feed.entries), version=feed.version)


async def _working(urls: Sequence[str], fetcher: Fetcher, max_body: int) -> list[FeedCandidate]:
    async def attempt(url: str) -> FeedCandidate | None:
        try:
            return await _candidate(url, await _retrieve(url, fetcher, max_body))
        except (FetchError, ParseError):
            return None

    found = await asyncio.gather(*(attempt(url) for url in urls))
    return [candidate for candidate in found if candidate is not None]


def alternate_links(page: bytes, base: str) -> list[str]:
    """Feed URLs from ``<link rel="alternate" type="application/rss+xml" href>``, in page order."""
    try:
        document = lxml_html.fromstring(page)
    except (etree.ParserError, ValueError):
        return []
    links: list[str] = []
    for link in document.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        kind = (link.get("type") or "").lower().split(";")[0].strip()
        href = (link.get("href") or "").strip()
        if "alternate" in rel and kind in FEED_TYPES and href:
            absolute = urljoin(base, href)
            if absolute not in links:
                links.append(absolute)
    return links


def comparable_url(url: str) -> str:
    """``url`` as compared to find a feed configured twice.

    Scheme and host are case-insensitive, a default port and a fragment say nothing,
    an empty path is ``/`` (RFC 3986 §6.2.3), and credentials are not part of the
    feed; the path and the query are kept as they are (servers may tell them apart).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return url.strip().removeprefix("file://")
    try:
        port = parts.port
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{host}{parts.path or '/'}{query}"


def configured_as(url: str, known: Mapping[str, Sequence[str]]) -> str | None:
    """The name of the source configured at ``url`` (``known``: each name's URLs), if any."""
    wanted = comparable_url(url)
    for name, urls in known.items():
        if any(comparable_url(candidate) == wanted for candidate in urls):
            return name
    return None


# ---- editing the YAML -------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    return yaml


def _commented(entry: Mapping[str, Any]) -> CommentedMap:
    item = CommentedMap()
    for key, value in entry.items():
        if isinstance(value, list | tuple):
            seq = CommentedSeq(list(value))
            seq.fa.set_flow_style()  # categories: [a, b], as written by hand
            item[key] = seq
        else:
            item[key] = value
    return item


def render_sources(entries: Sequence[Mapping[str, Any]], dash_column: int) -> str:
    """Block-style YAML for ``entries`` as sequence items whose dashes sit at ``dash_column``."""
    yaml = _yaml()
    yaml.indent(mapping=2, sequence=2, offset=0)
    out = io.StringIO()
    yaml.dump([_commented(entry) for entry in entries], out)
    pad = " " * dash_column
    return "".join(pad + line if line.strip() else line for line in out.getvalue().splitlines(True))


def _compose(text: str, path: Path) -> Node | None:
    try:
        node: Node | None = _yaml().compose(text)
    except YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    return node


def _sources_sequence(root: Node | None) -> tuple[SequenceNode | None, Node | None]:
    """The ``sources`` sequence node (or a top-level list), and the node that stands in its place."""
    if isinstance(root, SequenceNode):
        return root, root
    if isinstance(root, MappingNode):
        for key, value in root.value:
            if isinstance(key, ScalarNode) and key.value == "sources":
                return (value if isinstance(value, SequenceNode) else None), value
    return None, None


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _item_span(lines: list[str], item: Node) -> tuple[int, int, int]:
    """(first line, last content line, dash column) of one block-sequence item, 0-based."""
    first = item.start_mark.line
    dash = lines[first][: item.start_mark.column].rfind("-")
    while dash < 0 and first > 0:  # "-" alone on the line above its content
        first -= 1
        dash = lines[first].rfind("-")
    last = first
    for index in range(first + 1, len(lines)):
        line = lines[index]
        if _is_content(line):
            if _indent(line) <= dash:
                break
            last = index
    return first, last, dash


def append_sources(text: str, entries: Sequence[Mapping[str, Any]], path: Path) -> str:
    """``text`` with ``entries`` added at the end of its sources; everything else untouched."""
    root = _compose(text, path)
    if root is None:
        return (
            text
            + ("" if not text or text.endswith("\n") else "\n")
            + "sources:\n"
            + render_sources(entries, 2)
        )
    sequence, _ = _sources_sequence(root)
    if sequence is None or sequence.flow_style or not sequence.value:
        return _round_trip_append(text, entries, path)
    lines = text.splitlines(True)
    items = sequence.value
    first, last, dash = _item_span(lines, items[-1])
    # Items separated by blank lines (comments between them aside) get one before the new item too.
    spaced = len(items) > 1 and any(
        not line.strip() for line in lines[_item_span(lines, items[-2])[1] + 1 : first]
    )
    block = render_sources(entries, dash)
    if spaced:
        block = "\n" + block.replace("\n" + " " * dash + "- ", "\n\n" + " " * dash + "- ")
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines.insert(last + 1, block)
    return "".join(lines)


def _round_trip_append(text: str, entries: Sequence[Mapping[str, Any]], path: Path) -> str:
    yaml = _yaml()
    yaml.indent(mapping=2, sequence=4, offset=2)
    try:
        data = yaml.load(text)
    except YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if isinstance(data, list):
        data.extend(_commented(entry) for entry in entries)
    elif isinstance(data, dict):
        if not data.get("sources"):
            data["sources"] = CommentedSeq()
        data["sources"].extend(_commented(entry) for entry in entries)
    else:
        raise ConfigError(f"{path}: the file must be a mapping of settings")
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def remove_source_text(text: str, name: str, path: Path) -> str | None:
    """``text`` without the source named ``name`` (None when this file does not have it)."""
    root = _compose(text, path)
    sequence, holder = _sources_sequence(root)
    if sequence is None:
        return None
    for item in sequence.value:
        if _item_name(item) != name:
            continue
        if sequence.flow_style:
            raise ConfigError(f"{path}: sources are written in flow style; remove {name!r} by hand")
        lines = text.splitlines(True)
        first, last, _ = _item_span(lines, item)
        del lines[first : last + 1]
        # No doubled blank line where the item was.
        if first < len(lines) and not lines[first].strip() and (first == 0 or not lines[first - 1].strip()):
            del lines[first]
        if len(sequence.value) == 1 and holder is not root:
            # The last source went: "sources:" alone would mean null.
            key_line = sequence.start_mark.line
            for index in range(min(key_line, len(lines) - 1), -1, -1):
                if re.match(r"^\s*sources\s*:\s*(#.*)?$", lines[index]):
                    lines[index] = re.sub(r"sources\s*:", "sources: []", lines[index], count=1)
                    break
        return "".join(lines)
    return None


def _item_name(item: Node) -> str | None:
    if isinstance(item, MappingNode):
        for key, value in item.value:
            if isinstance(key, ScalarNode) and key.value == "name" and isinstance(value, ScalarNode):
                return str(value.value)
    return None


def add_sources(config_path: Path, entries: Sequence[Mapping[str, Any]], target: Path | None = None) -> Path:
    """Append ``entries`` to ``target`` (default: the main file); the whole config must stay valid."""
    target = target or config_path
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    _write_checked(config_path, target, old, append_sources(old, entries, target))
    return target


def remove_source(config_path: Path, name: str) -> Path:
    """Remove the source named ``name`` from whichever config file holds it."""
    for file in config_files(config_path):
        old = file.read_text(encoding="utf-8")
        new = remove_source_text(old, name, file)
        if new is not None:
            _write_checked(config_path, file, old, new)
            return file
    raise ConfigError(f"no source named {name!r} in {config_path} or its {config_path.parent / 'sources.d'}")


def _write_checked(config_path: Path, target: Path, old: str, new: str) -> None:
    """Write ``new`` into ``target``; put ``old`` back if the merged config no longer validates."""
    write_atomic(target, new.encode("utf-8"))
    try:
        load_config(config_path)
    except AggregatorError:
        write_atomic(target, old.encode("utf-8"))
        raise
