"""OPML import and export through the CLI: folders become categories and come back as folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.helpers import FIXTURES, run_cli

from aggregator.config import load_config
from aggregator.errors import ParseError
from aggregator.publish.opml import read_opml

EXPORT = FIXTURES / "sources" / "reader-export.opml"

CONFIG = """\
# hand-written, must survive the import
site: {title: Test}
paths: {posts: posts, feeds: feeds, data: data}
sources:
  - name: already here
    url: https://lwn.net/headlines/rss
    categories: [Tech]
"""


def test_opml_round_trip_keeps_folders(tmp_path: Path) -> None:
    config_path = tmp_path / "aggregator.yaml"
    config_path.write_text(CONFIG, encoding="utf-8")
    result = run_cli("import-opml", str(EXPORT), config=config_path)
    assert result.returncode == 0, result.stderr
    assert "skipped 'LWN': https://lwn.net/headlines/rss is configured already" in result.stdout
    assert "imported 4 sources" in result.stdout
    assert config_path.read_text(encoding="utf-8").startswith(CONFIG)

    config = load_config(config_path)
    assert [(s.name, s.categories) for s in config.sources] == [
        ("already here", ("Tech",)),
        ("Python Insider", ("Tech", "Python")),
        ("Planet Python", ("Tech", "Python")),  # written xmlurl: attribute names are case-insensitive
        ("新浪财经-国内", ("金融", "新浪财经")),
        ("Unfiled feed", ()),
    ]

    exported = run_cli("export-opml", "--output", str(tmp_path / "out.opml"), config=config_path)
    assert exported.returncode == 0, exported.stderr
    # What a reader would import: the same feeds in the same folders as the original export.
    original = {(f.categories, f.url) for f in read_opml(EXPORT.read_bytes())}
    back = {(f.categories, f.url) for f in read_opml((tmp_path / "out.opml").read_bytes())}
    assert back == original
    titles = {f.url: f.title for f in read_opml((tmp_path / "out.opml").read_bytes())}
    assert titles["https://rss.sina.com.cn/roll/finance/hot_roll.xml"] == "新浪财经-国内"

    # Importing the same file again adds nothing.
    again = run_cli("import-opml", str(EXPORT), config=config_path)
    assert again.returncode == 0, again.stderr
    assert "imported 0 sources" in again.stdout
    assert len(load_config(config_path).sources) == 5


def test_import_under_a_category_into_a_sources_d_file(tmp_path: Path) -> None:
    config_path = tmp_path / "aggregator.yaml"
    config_path.write_text("site: {title: Test}\n", encoding="utf-8")
    result = run_cli(
        "import-opml", str(EXPORT), "--category", "Reader", "--to", "reader.yaml", config=config_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sources.d" / "reader.yaml").exists()
    assert config_path.read_text(encoding="utf-8") == "site: {title: Test}\n"
    config = load_config(config_path)
    assert config.source_named("LWN").categories == ("Reader", "Tech")
    assert config.source_named("Unfiled feed").categories == ("Reader",)
    # Removing finds the source in whichever file holds it.
    assert run_cli("remove", "LWN", config=config_path).returncode == 0
    assert "LWN" not in (tmp_path / "sources.d" / "reader.yaml").read_text(encoding="utf-8")


def test_a_file_that_is_not_opml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="not an OPML file"):
        read_opml(b"<rss version='2.0'><channel/></rss>")
    with pytest.raises(ParseError, match="not an OPML file"):
        read_opml(b"<opml><body><outline")


def test_exported_and_published_opml_are_written_alike_by_one_writer(tmp_path: Path) -> None:
    """``export-opml`` (the subscribed sources) and ``index.opml`` (the generated feeds) come from one
    writer: the same prologue, head and outline layout, and text that needs escaping round-trips."""
    config_path = tmp_path / "aggregator.yaml"
    config_path.write_text(
        "site: {title: 'Tom & \"Jerry\"', base_url: 'https://feeds.example.org/'}\n"
        "paths: {posts: posts, feeds: feeds, data: data}\n"
        "sources:\n"
        "  - {name: 'A & \"B\" <c>', url: 'https://a.example.org/feed?x=1&y=2', categories: [Tech, Python]}\n"
        "  - {name: plain, url: 'https://b.example.org/feed'}\n",
        encoding="utf-8",
    )
    exported = run_cli("export-opml", "--output", str(tmp_path / "out.opml"), config=config_path)
    assert exported.returncode == 0, exported.stderr
    built = run_cli("build", config=config_path)
    assert built.returncode == 0, built.stderr
    export = (tmp_path / "out.opml").read_text(encoding="utf-8").splitlines()
    index = (tmp_path / "feeds" / "index.opml").read_text(encoding="utf-8").splitlines()

    assert export[:2] == index[:2] == ['<?xml version="1.0" encoding="UTF-8"?>', '<opml version="2.0">']
    title = "<head><title>Tom &amp; &quot;Jerry&quot;</title>"
    assert export[2].startswith(title) and index[2] == title + "</head>"
    assert export[3] == index[3] == "<body>"
    assert export[-2:] == index[-2:] == ["</body>", "</opml>"]
    # Two spaces a level, a folder per category level, feeds as type="rss" outlines.
    quoted = "'A &amp; \"B\" &lt;c&gt;'"
    assert export[4:7] == [
        '  <outline text="Tech" title="Tech">',
        '    <outline text="Python" title="Python">',
        f'      <outline type="rss" text={quoted} title={quoted} xmlUrl="https://a.example.org/feed?x=1&amp;y=2"/>',
    ]
    assert len(index) == 6  # nothing fetched yet, so no feed is published (tests/golden/ has a full one)
    feeds = {(f.categories, f.title, f.url) for f in read_opml((tmp_path / "out.opml").read_bytes())}
    assert feeds == {
        (("Tech", "Python"), 'A & "B" <c>', "https://a.example.org/feed?x=1&y=2"),
        ((), "plain", "https://b.example.org/feed"),
    }
