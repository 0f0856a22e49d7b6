"""Hostile XML: entity bombs, external entities, huge and deep documents, truncation, encodings.

Each document must give a clear per-source error or a correct result, in
bounded time and memory, and leave the other sources alone. The per-document
tests go through the real parser pool (worker processes with limits) and the
normalize stage; the end-to-end test fetches all of them at once over HTTP
with ``aggregator fetch`` and checks the healthy sources, the published feeds,
``aggregator verify`` and the peak memory of the whole process tree.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relsupport import (
    HOSTILE,
    Ledger,
    healthy_feed,
    problems_text,
    rss_document,
    rss_item,
    run_measured,
    scan_feeds,
    scan_posts,
)
from support.faultserver import FaultServer
from support.helpers import run_cli, write_config

from aggregator.errors import ParseError
from aggregator.model import FeedData, SourceRules
from aggregator.normalize import normalize
from aggregator.text import clean_text
from aggregator.workers import ParserPool

PARSE_SECONDS = 60.0  # the 20,000-item feed takes 10-20 s of feedparser on a busy 2-core machine
NORMALIZE_SECONDS = 5.0
# No field may grow past this unless the document itself carried that much text.
MAX_FIELD_CHARS = 200_000
SECRETS = ("root:x:0:0", "/bin/bash", "/usr/sbin/nologin")
TITLE = "Grüße 你好 — ok"


@dataclass(frozen=True)
class Hostile:
    """One hostile document, how it is served, and what a correct result is, if one is expected."""

    body: bytes
    content_type: str = "application/rss+xml"
    title: str | None = None  # the first entry's exact title, when the document has a correct reading
    entries: int | None = None  # the exact number of entries, when known
    may_fail: bool = True  # a clear ParseError is an acceptable answer


def _encoded(encoding: str, declared: str | None, *, bom: bytes = b"", title: str = TITLE) -> bytes:
    declaration = f'<?xml version="1.0" encoding="{declared}"?>' if declared else '<?xml version="1.0"?>'
    text = rss_document(
        [f"<item><title>{title}</title><guid>enc-1</guid><description>x</description></item>"]
    )
    text = text.replace('<?xml version="1.0" encoding="utf-8"?>', declaration)
    return bom + text.encode(encoding)


def _truncations() -> Iterator[tuple[str, Hostile]]:
    whole = rss_document(
        [rss_item(i, prefix="cut") for i in range(10)]
        + [
            "<item><title>中文标题</title><guid>cut-zh</guid><description><![CDATA[<p>cdata body</p>]]>"
            "&amp; more</description></item>"
        ]
    ).encode()
    for fraction in (0.02, 0.3, 0.5, 0.75, 0.97):
        yield f"truncated-{int(fraction * 100)}pct", Hostile(whole[: int(len(whole) * fraction)])
    middle_of_char = whole.index("中文".encode()) + 1
    yield "truncated-mid-utf8-char", Hostile(whole[:middle_of_char])
    yield "truncated-mid-cdata", Hostile(whole[: whole.index(b"cdata body") + 3])
    yield "truncated-mid-entity", Hostile(whole[: whole.index(b"&amp; more") + 3])
    yield "truncated-mid-tag", Hostile(whole[: whole.index(b"<guid>cut-5") + 3])


def hostile_documents(server: str) -> dict[str, Hostile]:
    """Every hostile input, by name; ``server`` is where network entities would point."""
    docs: dict[str, Hostile] = {}
    for path in sorted(HOSTILE.glob("*.xml")):
        docs[path.stem] = Hostile(path.read_bytes().replace(b"{SERVER}", server.encode()))
    docs["items-20000"] = Hostile(
        healthy_feed(20_000, prefix="many"), title="many 0", entries=20_000, may_fail=False
    )
    nested = "<x>" * 100_000 + "deep" + "</x>" * 100_000
    docs["deep-xml-elements"] = Hostile(
        rss_document(
            [f"<item><title>Deep</title><guid>deep-1</guid><description>ok</description>{nested}</item>"]
        ).encode()
    )
    # 100,000 nested <div>s in the HTML of an entry: quadratic for an HTML5 tree builder.
    escaped_divs = "&lt;div&gt;" * 100_000 + "deep" + "&lt;/div&gt;" * 100_000
    docs["deep-html-content"] = Hostile(
        rss_document(
            [
                f"<item><title>Deep HTML</title><guid>deep-2</guid><description>{escaped_divs}"
                "</description></item>"
            ]
        ).encode(),
        title="Deep HTML",
    )
    docs["huge-single-title"] = Hostile(
        rss_document([f"<item><title>{'T' * 3_000_000}</title><guid>huge-1</guid></item>"]).encode()
    )
    docs.update(_truncations())
    # Encoding mix-ups: where the bytes have one correct reading, it must be found.
    docs["utf16-bom-declared-utf8"] = Hostile(_encoded("utf-16-le", "utf-8", bom=b"\xff\xfe"), title=TITLE)
    docs["utf32-bom"] = Hostile(_encoded("utf-32", "utf-32"), title=TITLE)
    docs["utf8-bom-declared-windows1252"] = Hostile(_encoded("utf-8", "windows-1252", bom=b"\xef\xbb\xbf"))
    docs["utf16le-no-bom"] = Hostile(_encoded("utf-16-le", "utf-16"))
    docs["utf16be-no-bom-no-declaration"] = Hostile(_encoded("utf-16-be", None))
    docs["gb18030-declared"] = Hostile(_encoded("gb18030", "gb18030"), title=TITLE)
    docs["gb18030-declared-utf8"] = Hostile(_encoded("gb18030", "utf-8"))
    docs["latin1-declared-utf8"] = Hostile(_encoded("latin-1", "utf-8", title="Größe café"))
    docs["header-utf8-body-latin1"] = Hostile(
        _encoded("latin-1", "iso-8859-1", title="Größe café"), content_type="application/xml; charset=utf-8"
    )
    docs["header-ascii-body-utf8"] = Hostile(
        _encoded("utf-8", "utf-8"), content_type="text/xml; charset=us-ascii"
    )
    docs["unknown-encoding-name"] = Hostile(_encoded("utf-8", "x-klingon"))
    docs["ebcdic-cp037"] = Hostile(_encoded("cp037", "cp037", title="EBCDIC ok"))
    half = rss_document([f"<item><title>{TITLE}</title><guid>mix-1</guid></item>"]).encode()
    docs["mixed-utf8-and-latin1"] = Hostile(half.replace(b"ok</title>", "olé</title>".encode("latin-1")))
    mojibake = TITLE.encode().decode("latin-1")
    # feedparser may undo the double encoding; either reading is a correct one.
    docs["double-encoded-utf8"] = Hostile(_encoded("utf-8", "utf-8", title=mojibake), may_fail=False)
    docs["nul-and-control-bytes"] = Hostile(_encoded("utf-8", "utf-8", title="a\x00b\x01c\x1fd"))
    docs["binary-garbage"] = Hostile(bytes(range(256)) * 64)
    return docs


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    parser = ParserPool(processes=1, seconds=PARSE_SECONDS, memory=768 * 1024**2)
    yield parser
    parser.close()


SLOW_DOCUMENTS = {"items-20000", "deep-xml-elements"}
NAMES = [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_DOCUMENTS else name
    for name in sorted(hostile_documents("http://127.0.0.1:9"))
]


@pytest.mark.parametrize("name", NAMES)
def test_each_hostile_document_gives_a_result_or_a_clear_error(
    name: str, pool: ParserPool, ledger: Ledger
) -> None:
    doc = hostile_documents("http://127.0.0.1:9")[name]
    started = time.monotonic()
    try:
        feed: FeedData | None = asyncio.run(
            pool.parse(doc.body, {"content-type": doc.content_type}, "https://h.example.org/")
        )
    except ParseError as error:
        feed = None
        assert doc.may_fail, f"{name}: {error}"
        assert str(error).strip(), "the error names what is wrong"
    parse_seconds = time.monotonic() - started
    ledger.record(inputs=1, faults=1)
    assert parse_seconds < PARSE_SECONDS + 5
    if feed is None:
        return
    if doc.entries is not None:
        assert len(feed.entries) == doc.entries
    if doc.title is not None:
        assert feed.entries and feed.entries[0].title == doc.title
    input_chars = len(doc.body)
    for entry in feed.entries[:500]:
        for value in (entry.title, entry.summary, entry.content):
            text = value or ""
            assert len(text) <= max(MAX_FIELD_CHARS, input_chars), (
                f"{name}: a field grew to {len(text)} chars"
            )
            assert not any(secret in text for secret in SECRETS), f"{name}: a local file leaked"
    # The posts made from it are bounded in time and clean.
    rules = SourceRules(name="hostile", categories=("Hostile",))
    started = time.monotonic()
    posts = [normalize(e, rules, datetime(2026, 1, 1, tzinfo=UTC)) for e in feed.entries[:500]]
    assert time.monotonic() - started < NORMALIZE_SECONDS, f"{name}: normalize took too long"
    for post in posts:
        for text in (post.title, post.body, post.author, post.id):
            assert clean_text(text) == text, f"{name}: XML-forbidden characters survived"
        assert post.title


@pytest.mark.slow
def test_fetching_every_hostile_document_at_once_spares_the_healthy_sources(
    tmp_path: Path, ledger: Ledger
) -> None:
    with FaultServer() as server:
        docs = hostile_documents(server.base_url)
        sources = []
        for name, doc in docs.items():
            server.feed(f"/hostile/{name}", doc.body, content_type=doc.content_type)
            sources.append({"name": name, "url": server.url(f"/hostile/{name}"), "categories": ["Hostile"]})
        for index in range(2):
            server.feed(f"/healthy/{index}.xml", healthy_feed(30, prefix=f"healthy{index}"))
            sources.append(
                {"name": f"healthy-{index}", "url": server.url(f"/healthy/{index}.xml"), "categories": ["Ok"]}
            )
        config = write_config(
            tmp_path / "site",
            sources,
            defaults={
                "interval": "30m",
                "fsync": "off",
                "concurrency": 16,
                "per_host": 16,
                "max_body": "10MiB",
                "deadline": "60s",
            },
        )
        started = time.monotonic()
        result = run_measured("fetch", "--json", config=config, timeout=150)
        elapsed = time.monotonic() - started
        network_entity_requests = server.count("/evil.dtd") + server.count("/secret.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    report = {s["name"]: s for s in json.loads(result.stdout)["sources"]}
    site = tmp_path / "site"
    healthy_posts = sum(1 for _ in (site / "posts").glob("healthy-*/*/*/*.md"))
    ledger.record(inputs=len(docs), faults=len(docs), lost=60 - healthy_posts)
    assert healthy_posts == 60
    assert report["healthy-0"]["outcome"] == report["healthy-1"]["outcome"] == "ok"
    for name in docs:
        outcome = report[name]
        assert outcome["outcome"] in ("ok", "error"), outcome
        if outcome["outcome"] == "error":
            assert outcome["error"], f"{name}: an error without a reason"
    assert network_entity_requests == 0, "an external entity or DTD was fetched"
    assert result.peak_mib < 900, f"peak memory {result.peak_mib:.0f} MiB"
    assert elapsed < 120
    files, problems = scan_posts(site / "posts")
    assert files >= 60
    assert not problems, problems_text(problems)
    for path in (site / "posts").rglob("*.md"):
        text = path.read_text(encoding="utf-8")
        assert not any(secret in text for secret in SECRETS), path
    feeds, problems = scan_feeds(site / "feeds")
    assert feeds > 0 and not problems, problems_text(problems)
    verified = run_cli("verify", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
