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
        ("PyPI blog", ("Tech", "Python")),  # written xmlurl: attribute names are case-insensitive
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
