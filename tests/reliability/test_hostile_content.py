"""Hostile content: nothing unsafe reaches a post file or a published feed, no bad entry breaks a feed.

Two feeds (RSS 2.0 and Atom) carry script and style injection in every field,
off-scheme URLs (``javascript:``, ``data:``, ``vbscript:``, ``file:``, obfuscated
variants) in every URL-carrying element and attribute, text-typed titles with
markup, YAML-breaking titles, path-breaking ids, oversized fields and
characters XML forbids. After ``aggregator fetch`` every post file and every
published feed is scanned: every file parses whole, every URL is http(s) or
mailto, no executable markup survives, and every entry became a post.
"""

from __future__ import annotations

import json
from pathlib import Path

from relsupport import Ledger, problems_text, scan_feeds, scan_posts
from support.faultserver import FaultServer
from support.helpers import run_cli, write_config

BAD_URLS = (
    "javascript:alert(1)",
    "JaVaScRiPt:alert(2)",
    " javascript:alert(3)",
    "java&#x09;script:alert(4)",
    "jav&#x0A;ascript:alert(5)",
    "&#106;avascript:alert(6)",
    "vbscript:msgbox(7)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCg4KTwvc2NyaXB0Pg==",
    "data:image/svg+xml,<svg onload=alert(9)>",
    "file:///etc/passwd",
    "feed:javascript:alert(10)",
    "//evil.example.org/x.js",  # protocol-relative: resolved against the entry, stays http(s)
)
INJECTIONS = (
    "<script>alert('x')</script>",
    "<style>body{display:none}</style>",
    '<img src="x" onerror="alert(1)">',
    "<svg><script>alert(1)</script></svg>",
    '<iframe src="https://evil.example.org/"></iframe>',
    '<a href="#" onclick="steal()">click</a>',
    "<object data='x.swf'></object><embed src='x.swf'>",
    "<form action='https://evil.example.org/'><input name=p></form>",
    '<div style="background:url(javascript:alert(1))">styled</div>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<<script>script>alert(1)<</script>/script>",
    "<template><script>alert(1)</script></template>",
    '<base href="javascript:alert(1)//">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "<link rel=stylesheet href='https://evil.example.org/x.css'>",
)
YAML_TITLES = (
    "---",
    "--- \n...",
    "key: value",
    "!!python/object/apply:os.system ['echo pwned']",
    "&anchor *alias",
    "| literal",
    "> folded",
    "%YAML 1.1",
    "'single' \"double\"",
    "yes",
    "no",
    "null",
    "~",
    "0123",
    "1e3",
    "2026-01-01",
    "@at `backtick`",
    "{flow: mapping}",
    "[flow, sequence]",
    "# comment",
    "title\n---\nsource: evil",
)
PATH_IDS = (
    "../../../etc/passwd",
    "/absolute/path",
    "..\\..\\windows\\system32",
    "CON",
    "nul.txt",
    "a/b/c/../../..",
    "id with\ttab and\nnewline",
    "x" * 600,
    "中文" * 200,
    ".",
    "..",
    "~root",
    "%2e%2e%2f%2e%2e%2f",
)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _rss_items() -> list[str]:
    items = []
    n = 0

    def item(
        title: str, body: str, *, guid: str | None = None, link: str | None = None, extra: str = ""
    ) -> None:
        nonlocal n
        n += 1
        items.append(
            f"<item><title>{title}</title>"
            f"<link>{link if link is not None else f'https://content.example.org/{n}'}</link>"
            f'<guid isPermaLink="false">{guid if guid is not None else f"rss-{n}"}</guid>'
            f"<pubDate>Mon, 05 Oct 2026 08:{n % 60:02d}:00 GMT</pubDate>"
            f"<description>{_esc(body)}</description>{extra}</item>\n"
        )

    for injection in INJECTIONS:
        # In the title (RSS titles are HTML to many readers), the body, the author and a category.
        item(_esc(injection), f"<p>before</p>{injection}<p>after</p>",
             extra=f"<author>{_esc(injection)}</author><category>{_esc(injection)}</category>"
                   f"<content:encoded><![CDATA[{injection}]]></content:encoded>")  # fmt: skip
    for url in BAD_URLS:
        quoted = _esc(url)
        body = (
            f'<a href="{url}">a</a><img src="{url}"><img srcset="{url} 1x, https://ok.example.org/i.png 2x">'
            f'<video poster="{url}" src="{url}"></video><blockquote cite="{url}">q</blockquote>'
            f'<source srcset="{url}"><audio src="{url}"></audio><area href="{url}">'
        )
        item(
            f"URL {quoted}",
            body,
            link=quoted,
            guid=None,
            extra=(
                f'<enclosure url="{quoted}" type="audio/mpeg" length="1"/>'
                f'<media:thumbnail url="{quoted}"/><media:content url="{quoted}" medium="image"/>'
                f'<comments>{quoted}</comments><source url="{quoted}">s</source>'
            ),
        )
    for title in YAML_TITLES:
        item(_esc(title), "<p>yaml</p>")
    for ident in PATH_IDS:
        item(f"Path {_esc(ident[:20])}", "<p>path</p>", guid=_esc(ident))
    # Oversized fields: a 1 MB title, a 4 MB body, 2,000 categories.
    item(
        "T" * 1_000_000,
        "<p>" + "B" * 4_000_000 + "</p>",
        extra="".join(f"<category>c{i}</category>" for i in range(2000)),
    )
    # Characters XML forbids, as character references (the strict parser refuses them, the loose one not).
    item("bad &#1;&#8;&#11;&#x1F; chars", "<p>nul &#0; and &#xFFFE; &#xD800;</p>", guid="rss-forbidden&#1;")
    return items


def rss_document() -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:media="http://search.yahoo.com/mrss/"><channel>'
        "<title>Hostile &lt;script&gt;alert(1)&lt;/script&gt; RSS</title><link>https://content.example.org/</link>"
        "<description>d</description>\n" + "".join(_rss_items()) + "</channel></rss>\n"
    ).encode()


def atom_document() -> bytes:
    entries = []
    for n, injection in enumerate(INJECTIONS):
        entries.append(
            f"<entry><id>urn:atom:{n}</id>"
            # A text-typed title: the markup is literal text, never to be executed.
            f'<title type="text">{_esc(injection)} literal</title>'
            f'<link rel="alternate" href="javascript:alert({n})"/>'
            f'<link rel="enclosure" href="data:audio/mpeg;base64,AAAA" type="audio/mpeg" length="4"/>'
            f"<updated>2026-10-0{1 + n % 9}T08:00:00Z</updated>"
            f"<author><name>{_esc(injection)}</name><uri>javascript:alert(1)</uri></author>"
            f'<summary type="html">{_esc(injection)}</summary>'
            f'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
            f'<a href="javascript:alert({n})">x</a><img src="data:image/png;base64,AAAA"/></div></content>'
            f"</entry>\n"
        )
    entries.append(
        '<entry><id>urn:atom:html-title</id><title type="html">&lt;b&gt;bold&lt;/b&gt;&lt;script&gt;alert(1)'
        "&lt;/script&gt; html title</title><updated>2026-10-01T08:00:00Z</updated>"
        '<content type="html">&lt;p onmouseover="x()"&gt;hi&lt;/p&gt;</content></entry>\n'
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>Hostile Atom</title><id>urn:hostile</id><updated>2026-10-01T08:00:00Z</updated>"
        '<link rel="alternate" href="https://atom.example.org/"/>\n' + "".join(entries) + "</feed>\n"
    ).encode()


def json_document() -> bytes:
    items = [
        {
            "id": f"json-{n}",
            "url": url,
            "external_url": url,
            "title": f"<script>alert({n})</script> json",
            "content_html": f'<a href="{url}">x</a><img src="{url}">',
            "image": url,
            "banner_image": url,
            "attachments": [{"url": url, "mime_type": "audio/mpeg"}],
            "authors": [{"name": "<img src=x onerror=alert(1)>", "url": url}],
            "tags": ["<script>", "ok"],
            "date_published": "2026-10-01T08:00:00Z",
        }
        for n, url in enumerate(BAD_URLS)
    ]
    return json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "Hostile JSON", "items": items}
    ).encode()


def test_nothing_unsafe_reaches_a_post_or_a_feed(tmp_path: Path, ledger: Ledger) -> None:
    rss, atom, feed_json = rss_document(), atom_document(), json_document()
    expected = {"hostile-rss": len(_rss_items()), "hostile-atom": len(INJECTIONS) + 1,
                "hostile-json": len(BAD_URLS)}  # fmt: skip
    with FaultServer() as server:
        server.feed("/rss.xml", rss)
        server.feed("/atom.xml", atom, content_type="application/atom+xml")
        server.feed("/feed.json", feed_json, content_type="application/feed+json")
        config = write_config(
            tmp_path / "site",
            [
                {
                    "name": "hostile-rss",
                    "url": server.url("/rss.xml"),
                    "categories": ["../up", "Hostile"],
                },
                {"name": "hostile-atom", "url": server.url("/atom.xml"), "categories": ["Atom"]},
                {"name": "hostile-json", "url": server.url("/feed.json"), "categories": ["Json"]},
            ],
            build={"max_items": 500},
        )
        result = run_cli("fetch", "--json", config=config, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = {s["name"]: s for s in json.loads(result.stdout)["sources"]}
    site = tmp_path / "site"
    counts = {name: sum(1 for _ in (site / "posts").glob(f"{name}/*/*/*.md")) for name in expected}
    lost = sum(max(expected[name] - counts[name], 0) for name in expected)
    _files, post_problems = scan_posts(site / "posts")
    feeds, feed_problems = scan_feeds(site / "feeds")
    ledger.record(inputs=sum(expected.values()), faults=sum(expected.values()), lost=lost)
    assert all(o["outcome"] == "ok" for o in outcomes.values()), outcomes
    assert counts == expected, "every hostile entry becomes exactly one post"
    assert not post_problems, problems_text(post_problems)
    assert feeds >= 3 * 5 and not feed_problems, problems_text(feed_problems)
    # Every post stays inside the posts folder, with a name a file system takes.
    root = (site / "posts").resolve()
    for path in (site / "posts").rglob("*.md"):
        assert path.resolve().is_relative_to(root)
        assert len(path.name.encode()) <= 255
    verified = run_cli("verify", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
