"""Config faults: every kind of invalid config names file:line: key.path; YAML 1.1 traps stay
strings all the way to the post files; duplicates are refused; credentials are never printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import frontmatter
import pytest
from relsupport import Ledger, healthy_feed
from support.faultserver import FaultServer
from support.helpers import run_cli

from aggregator.config import load_config
from aggregator.errors import ConfigError

HEAD = "site:\n  title: T\npaths: {posts: posts, feeds: feeds, data: data}\nsources:\n"
ONE = "  - name: one\n    url: https://one.example.org/feed.xml\n"

# (config text, what the message must contain after "<file>")
INVALID = [
    (HEAD + ONE + "    interval: [1, 2]\n", ":7: sources[0].interval:"),
    (HEAD + ONE + "    interval: -5m\n", ":7: sources[0].interval:"),
    (HEAD + ONE + "    trusted: maybe\n", ":7: sources[0].trusted:"),
    (HEAD + ONE + "    categories: [a, [b, c]]\n", ":7: sources[0].categories"),
    (HEAD + ONE + "    categories: [a, '']\n", ":7: sources[0].categories"),
    (HEAD + ONE + "    name2: x\n", ":7: sources[0].name2: unknown key"),
    (HEAD + ONE + "    headers: {'Bad Header': x}\n", ":7: sources[0].headers"),
    (HEAD + ONE + '    headers: {X-Ok: "two\\nlines"}\n', ":7: sources[0].headers"),
    (HEAD + ONE + "    proxy: not-a-proxy\n", ":7: sources[0].proxy"),
    (HEAD + ONE + "    auth: {username: u}\n", ":7: sources[0].auth.password"),
    (HEAD + ONE + "    cron: '99 * * * *'\n", ":7: sources[0].cron"),
    (HEAD + "  - name: ''\n    url: https://x.example.org/\n", ":5: sources[0].name"),
    (HEAD + "  - name: '   '\n    url: https://x.example.org/\n", ":5: sources[0].name"),
    (HEAD + "  - name: a\n    url: ftp://a.example.org/feed\n", ":6: sources[0].url"),
    (HEAD + "  - name: a\n    url: ''\n", ":6: sources[0].url"),
    (HEAD + ONE + "  - name: one\n    url: https://two.example.org/\n", ":7: sources[1].name: duplicate"),
    (HEAD + ONE + "  - name: One\n    url: https://two.example.org/\n", ":7: sources[1].name: duplicate"),
    (
        HEAD + ONE + "  - name: two\n    url: https://one.example.org/feed.xml\n",
        ":8: sources[1].url: duplicate",
    ),
    (HEAD + ONE + "defaults:\n  max_body: lots\n", ":8: defaults.max_body:"),
    (HEAD + ONE + "defaults:\n  max_entries: 0\n", ":8: defaults.max_entries:"),
    (HEAD + ONE + "defaults:\n  fsync: sometimes\n", ":8: defaults.fsync:"),
    (HEAD + ONE + "defaults:\n  concurrency: many\n", ":8: defaults.concurrency:"),
    (HEAD + ONE + "server:\n  port: -1\n", ":8: server.port:"),
    (HEAD + ONE + "server:\n  port: '8080x'\n", ":8: server.port:"),
    (HEAD + ONE + "build:\n  formats: [rss, pdf]\n", ":8: build.formats"),
    (HEAD + ONE + "build:\n  max_items: none\n", ":8: build.max_items:"),
    (HEAD + ONE + "bogus_section: {}\n", ":7: bogus_section: unknown key"),
    (HEAD + ONE + "site:\n  base_url: ftp://x/\n", "duplicate key 'site'"),
    ("site: {base_url: 'ftp://x/'}\n", ":1: site.base_url:"),
    ("paths: [posts, feeds]\n", ":1: paths:"),
    ("sources: {name: a}\n", ":1: sources:"),
    ("site:\n\ttitle: tabs\n", ": invalid YAML"),
    ("sources:\n  - &a {name: a, url: 'https://a.example.org/'}\n  - *a\n", "sources[1].name: duplicate"),
    ("sources: [\n", ": invalid YAML"),
    ("42\n", "the config must be a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), INVALID, ids=[f"case{i}" for i in range(len(INVALID))])
def test_every_invalid_config_names_file_line_and_key(
    tmp_path: Path, text: str, expected: str, ledger: Ledger
) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    ledger.record(inputs=1, faults=1)
    message = str(caught.value)
    assert message.startswith(f"{path}"), message
    assert expected in message, message
    assert "\n" not in message.strip() or message.count(str(path)) >= 1


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00garbage",
        "site:\n  title: caf\xe9\n".encode("latin-1"),
        b"",
        b"\x00\x00\x00",
        b"site:\n  title: a\x07b\n",
    ],
    ids=["utf16-bytes", "latin1", "empty", "nul", "control-character"],
)
def test_unreadable_config_bytes_give_one_line_and_no_traceback(
    tmp_path: Path, content: bytes, ledger: Ledger
) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_bytes(content)
    result = run_cli("check", config=path)
    ledger.record(inputs=1, faults=1)
    assert "Traceback" not in result.stderr
    if result.returncode != 0:
        assert result.returncode == 2
        assert result.stderr.startswith(f"aggregator: {path}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_directory_or_missing_file_as_config(tmp_path: Path, ledger: Ledger) -> None:
    for path in (tmp_path, tmp_path / "missing.yaml"):
        result = run_cli("check", config=path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert str(path) in result.stderr
    ledger.record(inputs=2, faults=2)


# (null and ~ are null in YAML 1.2 too: a null category is an error that names its line.)
TRAPS = ["no", "on", "0123", "1e3", "yes", "off", "2026-01-01", "0x1F", ".inf", "12:30", "0o17", "+1"]


def test_yaml_11_traps_stay_strings_from_config_to_post_files_and_feeds(
    tmp_path: Path, ledger: Ledger
) -> None:
    lines = ["sources:"]
    for index, trap in enumerate(TRAPS[:4]):
        # Each source its own copy of the feed (sources must differ by URL).
        (tmp_path / f"feed{index}.xml").write_bytes(healthy_feed(2, prefix=f"trap{index}"))
        categories = ", ".join(TRAPS) if index == 0 else trap
        lines += [f"  - name: {trap}", f"    url: feed{index}.xml", f"    categories: [{categories}]"]
    text = "\n".join(lines) + "\n"
    text += "paths: {posts: posts, feeds: feeds, data: data}\ndefaults: {fsync: 'off'}\n"
    config = tmp_path / "aggregator.yaml"
    config.write_text(text, encoding="utf-8")
    loaded = load_config(config)
    assert [s.name for s in loaded.sources] == TRAPS[:4]
    assert loaded.sources[0].categories == tuple(TRAPS)
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    posts = sorted((tmp_path / "posts").rglob("*.md"))
    ledger.record(inputs=len(TRAPS), faults=len(TRAPS), lost=8 - len(posts))
    assert len(posts) == 8
    for path in posts:
        # Read back as YAML 1.1 (PyYAML), the way Hexo's parser reads it: still strings.
        meta = frontmatter.load(path).metadata
        assert isinstance(meta["source"], str) and meta["source"] in TRAPS[:4]
        assert all(isinstance(c, str) for c in meta["categories"]), meta["categories"]
        if meta["source"] == "no":
            assert meta["categories"] == TRAPS
    status = run_cli("status", "--json", config=config)
    assert {s["name"] for s in json.loads(status.stdout)} == set(TRAPS[:4])
    assert (tmp_path / "feeds" / "category" / "0123").is_dir()


SECRET = "s3cr3t-Pa55"


def test_credentials_are_never_printed_or_logged(tmp_path: Path, ledger: Ledger) -> None:
    with FaultServer() as server:
        server.feed("/ok.xml", healthy_feed(3, prefix="cred"))
        server.redirect("/moved.xml", server.url("/ok.xml"), status=301)
        base = server.base_url.replace("http://", "")
        config = tmp_path / "aggregator.yaml"
        config.write_text(
            "paths: {posts: posts, feeds: feeds, data: data}\ndefaults: {fsync: 'off'}\nsources:\n"
            f"  - name: in-url\n    url: http://user:{SECRET}@{base}/ok.xml\n"
            f"  - name: in-url-failing\n    url: http://user:{SECRET}@{base}/status/500\n"
            f"  - name: in-url-moved\n    url: http://user:{SECRET}@{base}/moved.xml\n"
            f"  - name: basic-auth\n    url: http://{base}/status/404\n"
            f"    auth: {{username: u, password: {SECRET}}}\n"
            f"  - name: header\n    url: http://{base}/status/404?h\n"
            f"    headers: {{Authorization: 'Bearer {SECRET}'}}\n"
            f"  - name: proxy\n    url: http://proxied.example.org/feed.xml\n"
            f"    proxy: http://user:{SECRET}@127.0.0.1:9\n",
            encoding="utf-8",
        )
        outputs = []
        for args in (("check",), ("--log-level", "debug", "fetch"), ("fetch", "--json"), ("status",),
                     ("status", "--json"), ("--json-logs", "fetch", "proxy")):  # fmt: skip
            result = run_cli(*args, config=config, timeout=60)
            outputs.append((args, result.stdout + result.stderr))
        # An invalid config that carries a password must not echo it either.
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            f"sources:\n  - name: x\n    url: ftp://user:{SECRET}@example.org/\n", encoding="utf-8"
        )
        result = run_cli("check", config=bad)
        outputs.append((("check", "bad"), result.stdout + result.stderr))
    leaks = [args for args, text in outputs if SECRET in text]
    ledger.record(inputs=len(outputs), faults=len(outputs))
    assert not leaks, leaks
    assert any("in-url-failing" in text for _args, text in outputs), "the outputs did cover the sources"
    assert result.returncode == 2
