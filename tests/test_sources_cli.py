"""`aggregator add` / `remove` against real pages on 127.0.0.1, and the fetch command's output."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from support.helpers import FIXTURES, REPO, run_cli
from support.servers import AppServer

from aggregator.config import load_config

SOURCES = FIXTURES / "sources"

HANDWRITTEN = """\
# My sources, kept by hand.
site:
  title: Test site   # shown in feed titles
paths: {posts: posts, feeds: feeds, data: data}
defaults:
  fsync: "off"

sources:
  # the first one I ever followed
  - name: first
    url: https://first.example.org/feed.xml
    categories: [News]      # world news

  - name: second
    url: "https://second.example.org/rss"
    interval: 2h

  # keep this one last
  - name: third
    url: https://third.example.org/atom.xml
    categories: [Tech, 'no']

server:
  port: 0  # any free port
"""


def _site(tmp_path: Path, text: str = HANDWRITTEN) -> Path:
    config = tmp_path / "site" / "aggregator.yaml"
    config.parent.mkdir()
    config.write_text(text, encoding="utf-8")
    return config


def _serve_blog(feed_dir: Path) -> None:
    (feed_dir / "feeds").mkdir()
    shutil.copy(SOURCES / "blog-page.html", feed_dir / "blog.html")
    shutil.copy(FIXTURES / "formats" / "rss2.xml", feed_dir / "feeds" / "rss2.xml")
    shutil.copy(FIXTURES / "formats" / "atom.xml", feed_dir / "feeds" / "atom.xml")


def test_add_discovers_the_feeds_a_page_advertises(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    _serve_blog(feed_dir)
    config = _site(tmp_path)
    result = run_cli(
        "add", feed_server.url("blog.html"), "--yes", "--category", "Tech/Blogs", "--interval", "15m",
        config=config,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Both working alternates are listed in page order; the broken link is not offered.
    listed = [line for line in result.stdout.splitlines() if line[:2] in ("1.", "2.", "3.")]
    assert [line.split()[1] for line in listed] == [
        feed_server.url("feeds/rss2.xml"),
        feed_server.url("feeds/atom.xml"),
    ]
    assert "'Example RSS 2.0 blog' (2 entries)" in listed[0]
    added = load_config(config).sources[-1]
    assert (added.name, added.url) == ("Example RSS 2.0 blog", feed_server.url("feeds/rss2.xml"))
    assert (added.categories, added.interval) == (("Tech", "Blogs"), 900.0)


def test_add_without_links_tries_the_usual_paths(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    shutil.copy(SOURCES / "plain-page.html", feed_dir / "index.html")
    shutil.copy(FIXTURES / "formats" / "atom.xml", feed_dir / "index.xml")
    config = _site(tmp_path)
    result = run_cli("add", feed_server.url("index.html"), "--name", "plain", config=config)
    assert result.returncode == 0, result.stderr
    added = load_config(config).source_named("plain")
    assert added.url == feed_server.url("index.xml")


def test_add_lists_several_feeds_and_asks_for_yes_without_a_terminal(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    _serve_blog(feed_dir)
    config = _site(tmp_path)
    result = run_cli("add", feed_server.url("blog.html"), config=config)
    assert result.returncode == 2
    assert "2 feeds found; pass --yes" in result.stderr
    assert config.read_text(encoding="utf-8") == HANDWRITTEN


def test_add_and_remove_keep_comments_order_and_formatting(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    shutil.copy(FIXTURES / "formats" / "rss2.xml", feed_dir / "rss2.xml")
    config = _site(tmp_path)
    result = run_cli(
        "add", feed_server.url("rss2.xml"), "--name", "新的", "--category", "Tech/中文", config=config
    )
    assert result.returncode == 0, result.stderr
    text = config.read_text(encoding="utf-8")
    # Everything before the new item is byte for byte what the user wrote; the item follows the
    # file's own style (indentation, blank line between items, flow-style categories).
    head = HANDWRITTEN.split("\nserver:")[0]
    assert text.startswith(head)
    assert text[len(head) :] == (
        f"\n  - name: 新的\n    url: {feed_server.url('rss2.xml')}\n    categories: [Tech, 中文]\n"
        "\nserver:\n  port: 0  # any free port\n"
    )
    assert [s.name for s in load_config(config).sources] == ["first", "second", "third", "新的"]

    result = run_cli("remove", "second", config=config)
    assert result.returncode == 0, result.stderr
    after = config.read_text(encoding="utf-8")
    assert after == text.replace(
        '  - name: second\n    url: "https://second.example.org/rss"\n    interval: 2h\n\n', ""
    )
    assert "# the first one I ever followed" in after and "# keep this one last" in after
    assert [s.name for s in load_config(config).sources] == ["first", "third", "新的"]


def test_add_refuses_duplicates_and_remove_unknown_names(
    tmp_path: Path, feed_dir: Path, feed_server: AppServer
) -> None:
    shutil.copy(FIXTURES / "formats" / "rss2.xml", feed_dir / "rss2.xml")
    config = _site(tmp_path)
    assert run_cli("add", feed_server.url("rss2.xml"), "--name", "mine", config=config).returncode == 0
    before = config.read_text(encoding="utf-8")
    again = run_cli("add", feed_server.url("rss2.xml"), "--name", "other", config=config)
    assert again.returncode == 2
    assert "is configured already, as 'mine'" in again.stderr
    same_name = run_cli("add", feed_server.url("rss2.xml"), "--name", "FIRST", config=config)
    assert same_name.returncode == 2
    assert "a source named 'first' exists already" in same_name.stderr
    missing = run_cli("remove", "nobody", config=config)
    assert missing.returncode == 2
    assert "no source named 'nobody'" in missing.stderr
    assert config.read_text(encoding="utf-8") == before


def _fetch_config(tmp_path: Path) -> Path:
    shutil.copy(FIXTURES / "formats" / "rss2.xml", tmp_path / "rss2.xml")
    text = (
        HANDWRITTEN.split("\nsources:")[0]
        + f"\nsources:\n  - name: local\n    url: {tmp_path / 'rss2.xml'}\n"
    )
    return _site(tmp_path, text)


def test_fetch_shows_no_progress_bar_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    result = run_cli("fetch", config=_fetch_config(tmp_path))
    assert result.returncode == 0, result.stderr
    # The bar goes to stderr (the table to stdout): nothing of it, not even a bar glyph or a count.
    assert "fetching" not in result.stderr + result.stdout
    assert "━" not in result.stderr and "1/1" not in result.stderr
    assert "1 ok (0 not modified), 0 not ok; 2 new and 0 updated posts" in result.stdout


def _on_terminal(args: list[str], answer: bytes = b"") -> str:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; its output without colours."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        stdin=follower, stdout=follower, stderr=follower, cwd=REPO, env=env,
    )  # fmt: skip
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is done
                    break
                if not chunk:
                    break
                output += chunk
                if answer and b"Which one" in output:
                    os.write(leader, answer)
                    answer = b""
            elif process.poll() is not None:
                break
    finally:
        os.close(leader)
        assert process.wait(timeout=30) == 0, output.decode("utf-8", "replace")[-3000:]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))


def test_fetch_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """The counterpart: the same command on a pseudo-terminal draws the bar."""
    text = _on_terminal(["--config", str(_fetch_config(tmp_path)), "fetch"])
    assert "fetching" in text and "1/1" in text, text
    assert "2 new" in text


def test_add_on_a_terminal_asks_which_feed(tmp_path: Path, feed_dir: Path, feed_server: AppServer) -> None:
    _serve_blog(feed_dir)
    config = _site(tmp_path)
    text = _on_terminal(["--config", str(config), "add", feed_server.url("blog.html")], answer=b"2\n")
    assert "Which one" in text
    assert load_config(config).sources[-1].url == feed_server.url("feeds/atom.xml")


def test_an_unknown_source_name_gets_a_suggestion_or_a_short_list(tmp_path: Path) -> None:
    from support.helpers import write_config

    sources = [{"name": f"blog-{n:03d}", "url": f"https://blog-{n}.example.org/feed"} for n in range(39)]
    config = write_config(tmp_path, [*sources, {"name": "hacker-news", "url": "https://hn.example.org/rss"}])
    near = run_cli("fetch", "hackernews", config=config)
    assert near.returncode == 2
    assert near.stderr.strip() == "aggregator: no source named 'hackernews' (did you mean 'hacker-news'?)"
    far = run_cli("fetch", "zzz", config=config)
    expected = "aggregator: no source named 'zzz' (40 configured; `aggregator status` lists them)"
    assert far.stderr.strip() == expected
    few = write_config(
        tmp_path,
        [
            {"name": "one", "url": "https://one.example.org/"},
            {"name": "two", "url": "https://two.example.org/"},
        ],
    )
    assert "(configured: one, two)" in run_cli("fetch", "zzz", config=few).stderr
