"""Shared pieces of the reliability suite: the ledger of counts, output scanners, feed builders.

(A plain module rather than conftest.py: ``from conftest import`` is ambiguous with two conftests.)

Each test records what it tried in the ledger (inputs tried, faults survived,
items lost) before asserting, so ``scripts/reliability_report.py`` can print
the totals of a run, including the items a failing test lost. The ledger is a
JSON-lines file named by ``RELIABILITY_LEDGER``; without it nothing is written.
"""

from __future__ import annotations

import html
import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from lxml import etree

HERE = Path(__file__).resolve().parent
HOSTILE = HERE / "fixtures"
REPO = HERE.parents[1]
SAFE_URL = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass
class Ledger:
    test: str

    def record(self, *, inputs: int = 0, faults: int = 0, lost: int = 0) -> None:
        self._write({"test": self.test, "inputs": inputs, "faults": faults, "lost": lost})

    def record_outcome(self, outcome: str) -> None:
        self._write({"test": self.test, "outcome": outcome})

    def _write(self, record: dict[str, object]) -> None:
        path = os.environ.get("RELIABILITY_LEDGER")
        if not path:
            return
        line = json.dumps(record)
        # One short O_APPEND write per record: safe with several xdist workers.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


# Feeds written on the fly ------------------------------------------------------

BASE_DATE = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)


def rss_item(index: int, *, prefix: str = "item", host: str = "healthy.example.org") -> str:
    date = format_datetime(BASE_DATE - timedelta(minutes=index), usegmt=True)
    return (
        f"<item><title>{prefix} {index}</title><link>https://{host}/{prefix}/{index}</link>"
        f"<guid>{prefix}-{index}</guid><pubDate>{date}</pubDate>"
        f"<description>&lt;p&gt;Body of {prefix} {index}&lt;/p&gt;</description></item>\n"
    )


def rss_document(items: Iterable[str], *, title: str = "Healthy feed", encoding: str = "utf-8") -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://healthy.example.org/</link><description>d</description>\n"
        + "".join(items)
        + "</channel></rss>\n"
    )


def healthy_feed(count: int, prefix: str = "item") -> bytes:
    return rss_document(rss_item(i, prefix=prefix) for i in range(count)).encode()


# Scanning the outputs -------------------------------------------------------------

DANGEROUS_TAGS = frozenset(
    {"script", "style", "iframe", "frame", "frameset", "object", "embed", "form", "input", "button",
     "textarea", "select", "link", "meta", "base", "svg", "math", "applet", "template", "noscript"}
)  # fmt: skip
URL_ATTRIBUTES = frozenset(
    {"href", "src", "poster", "cite", "action", "formaction", "background", "longdesc", "data", "xlink:href"}
)


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DANGEROUS_TAGS:
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> event handler")
            elif name == "style":
                self.problems.append(f"<{tag} style=...> attribute")
            elif name in URL_ATTRIBUTES and value is not None and value.strip():
                if not SAFE_URL.match(value.strip()):
                    self.problems.append(f"<{tag} {name}={value[:60]!r}> unsafe URL")
            elif name == "srcset" and value:
                for candidate in value.split(","):
                    url = candidate.strip().split(" ")[0]
                    if url and not SAFE_URL.match(url):
                        self.problems.append(f"<{tag} srcset={url[:60]!r}> unsafe URL")


def html_problems(markup: str) -> list[str]:
    """Executable or off-scheme HTML in ``markup``, as readable problems."""
    scanner = _Scanner()
    scanner.feed(markup)
    scanner.close()
    return scanner.problems


def text_problems(text: str, where: str) -> list[str]:
    """A plain-text field must not carry markup a careless template would execute."""
    found = []
    if re.search(r"<\s*(script|style|iframe|object|embed|svg)\b", text, re.IGNORECASE):
        found.append(f"{where}: markup {text[:80]!r}")
    if re.search(r"<[a-z][^>]*\son\w+\s*=", text, re.IGNORECASE):
        found.append(f"{where}: event handler {text[:80]!r}")
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text):
        found.append(f"{where}: control character")
    return found


def url_problem(value: Any, where: str) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, str) or not SAFE_URL.match(value):
        return [f"{where}: unsafe URL {str(value)[:80]!r}"]
    return []


def scan_post_file(path: Path) -> list[str]:
    """Everything unsafe in one post file: front matter keys and body."""
    text = path.read_text(encoding="utf-8")
    problems = [f"{path.name}: {p}" for p in text_problems(text, "file")
                if "control character" in p]  # fmt: skip
    # YAML 1.1 (PyYAML, as Hexo's js-yaml in compat mode) must read it, with no custom tags.
    post = frontmatter.loads(text, handler=frontmatter.YAMLHandler())
    meta = post.metadata
    for key in ("title", "author"):
        if not isinstance(meta.get(key), str):
            problems.append(f"{path.name}: {key} is not a string: {meta.get(key)!r}")
        else:
            problems += text_problems(meta[key], f"{path.name}: {key}")
    for key in ("categories", "tags"):
        for value in meta.get(key) or ():
            if not isinstance(value, str):
                problems.append(f"{path.name}: {key} entry is not a string: {value!r}")
    for key in ("link", "headimg", "thumbnail"):
        problems += url_problem(meta.get(key), f"{path.name}: {key}")
    if not SAFE_URL.match(str(meta.get("link") or "https://")):
        problems.append(f"{path.name}: link {meta.get('link')!r}")
    for enclosure in meta.get("enclosures") or ():
        problems += url_problem(enclosure.get("url"), f"{path.name}: enclosure")
    problems += [f"{path.name}: body: {p}" for p in html_problems(post.content)]
    return problems


def scan_posts(root: Path) -> tuple[int, list[str]]:
    files = sorted(root.rglob("*.md"))
    problems = [p for f in files for p in scan_post_file(f)]
    return len(files), problems


def _scan_xml_feed(path: Path) -> list[str]:
    root = etree.fromstring(path.read_bytes(), _SAFE_XML)  # raises if not whole and well-formed
    problems: list[str] = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        local = etree.QName(element).localname
        if local in ("link", "enclosure", "thumbnail", "content") and element.get("href", element.get("url")):
            problems += url_problem(element.get("href", element.get("url")), f"{path}: <{local}>")
        if local == "link" and element.text and element.text.strip():
            problems += url_problem(element.text.strip(), f"{path}: <link>")
        if local in ("title", "name", "creator", "category") and element.text:
            problems += text_problems(element.text, f"{path}: <{local}>")
        if local == "category" and element.get("term"):
            problems += text_problems(element.get("term", ""), f"{path}: category")
        if local in ("description", "summary", "encoded") or (local == "content" and element.text):
            problems += [f"{path}: <{local}>: {p}" for p in html_problems(element.text or "")]
    return problems


def _scan_json_feed(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    problems: list[str] = []
    for item in document["items"]:
        for key in ("url", "image", "external_url"):
            problems += url_problem(item.get(key), f"{path}: {key}")
        for attachment in item.get("attachments") or ():
            problems += url_problem(attachment.get("url"), f"{path}: attachment")
        problems += text_problems(str(item.get("title", "")), f"{path}: title")
        problems += [f"{path}: content_html: {p}" for p in html_problems(item.get("content_html") or "")]
    return problems


def scan_feeds(root: Path) -> tuple[int, list[str]]:
    """Every published feed parses whole, and carries nothing unsafe."""
    problems: list[str] = []
    count = 0
    for path in sorted(root.rglob("*")):
        if path.name in ("rss.xml", "atom.xml"):
            problems += _scan_xml_feed(path)
            count += 1
        elif path.name == "feed.json":
            problems += _scan_json_feed(path)
            count += 1
        elif path.name == "index.opml":
            etree.fromstring(path.read_bytes(), _SAFE_XML)
    return count, problems


def feed_ids(path: Path) -> list[str]:
    """Item ids of a published RSS feed (guids), in order."""
    root = etree.fromstring(path.read_bytes(), _SAFE_XML)
    return [guid.text or "" for guid in root.iterfind("channel/item/guid")]


def post_ids(root: Path) -> list[tuple[str, str]]:
    ids = []
    for path in sorted(root.rglob("*.md")):
        meta = frontmatter.loads(path.read_text(encoding="utf-8")).metadata
        ids.append((str(meta["source"]), str(meta["id"])))
    return ids


def temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*.aggtmp")]


# Running the command with its peak memory -------------------------------------------

_MEASURE = """
import resource, subprocess, sys, json
completed = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": completed.returncode, "stdout": completed.stdout,
                  "stderr": completed.stderr, "maxrss_kib": usage.ru_maxrss}))
"""


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_mib: float  # the largest resident set of the command or any process it waited for


def run_measured(*args: str, config: Path, timeout: float) -> Measured:
    """``python -m aggregator --config CONFIG ARGS`` with the peak RSS of its process tree."""
    command = [sys.executable, "-m", "aggregator", "--config", str(config), *args]
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        cwd=REPO,
    )
    if completed.returncode != 0:
        raise AssertionError(f"measuring wrapper failed: {completed.stderr}")
    data = json.loads(completed.stdout)
    return Measured(data["code"], data["stdout"], data["stderr"], data["maxrss_kib"] / 1024)


def self_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def load_yaml_11(text: str) -> Any:
    return yaml.safe_load(text)


def problems_text(problems: Sequence[str], limit: int = 20) -> str:
    return "\n".join(problems[:limit]) + (
        f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    )
