"""config/sources.d/*.yaml merged with the main file, and category defaults that cascade."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.errors import ConfigError

MAIN = """\
site: {title: Test}
paths: {posts: posts, feeds: feeds, data: data}
sources:
  - name: main-one
    url: https://main.example.org/feed.xml
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "aggregator.yaml"


def test_sources_d_files_are_merged_after_the_main_file_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "local.xml").write_text("<rss/>", encoding="utf-8")
    config = load_config(
        _write(
            tmp_path,
            {
                "aggregator.yaml": MAIN,
                # A mapping with `sources`, or a bare list: both are accepted.
                "sources.d/20-tech.yaml": "- name: tech-one\n  url: https://tech.example.org/rss\n",
                "sources.d/10-news.yaml": (
                    "# news sites\nsources:\n  - name: news-one\n    url: https://news.example.org/rss\n"
                    "    categories: [News]\n  - name: news-two\n    url: news/local.xml\n"
                ),
                "sources.d/notes.txt": "not yaml: [ at all",  # only *.yaml / *.yml files count
                "sources.d/30-empty.yaml": "# nothing yet\n",
            },
        )
    )
    assert [s.name for s in config.sources] == ["main-one", "news-one", "news-two", "tech-one"]
    assert config.source_named("news-one").categories == ("News",)
    # Relative paths stay relative to the main config's folder, as everywhere else.
    assert config.source_location(config.source_named("news-two")) == str(tmp_path / "news" / "local.xml")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"sources.d/a.yaml": "sources:\n  - name: x\n    url: https://main.example.org/feed.xml\n"},
            "sources.d/a.yaml:3: sources[0].url: duplicate of sources[0].url at {root}/aggregator.yaml:5",
        ),
        (
            {"sources.d/a.yaml": "- name: MAIN-ONE\n  url: https://other.example.org/\n"},
            "sources.d/a.yaml:1: sources[0].name: duplicate of sources[0].name at {root}/aggregator.yaml:4",
        ),
        (
            {
                "sources.d/a.yaml": "- name: a\n  url: https://a.example.org/\n",
                "sources.d/b.yaml": "- name: b\n  url: https://b.example.org/\n- name: A\n  url: https://c.example.org/\n",
            },
            "sources.d/b.yaml:3: sources[1].name: duplicate of sources[0].name at {root}/sources.d/a.yaml:1",
        ),
        (
            {"sources.d/a.yaml": "- name: a\n  url: https://a.example.org/\n  intervl: 5m\n"},
            "sources.d/a.yaml:3: sources[0].intervl: unknown key (did you mean 'interval'?)",
        ),
        (
            {"sources.d/a.yaml": "site: {title: nope}\nsources: []\n"},
            "sources.d/a.yaml:1: site: unknown key (a sources.d file holds sources)",
        ),
    ],
)
def test_errors_in_or_across_sources_d_files_name_both_places(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    path = _write(tmp_path, {"aggregator.yaml": MAIN, **files})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{tmp_path}/" + expected.format(root=tmp_path)


DEFAULTS = """\
site: {title: Test}
paths: {posts: posts, feeds: feeds, data: data}
category_defaults:
  - path: [Tech]
    interval: 1h
    trusted: true
    author: Tech desk
    filters: {exclude: {title: sponsored}}
  - path: [Tech, Python]
    interval: 15m
    comments: true
sources:
  - name: py
    url: https://py.example.org/feed
    categories: [Tech, Python, Releases]
  - name: own
    url: https://own.example.org/feed
    categories: [Tech, Python]
    interval: 2h
    trusted: false
  - name: cron
    url: https://cron.example.org/feed
    categories: [Tech]
    cron: "0 * * * *"
  - name: news
    url: https://news.example.org/feed
    categories: [News, Tech]
"""


def test_category_defaults_cascade_and_the_source_wins(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {"aggregator.yaml": DEFAULTS}))
    py, own, cron, news = config.sources
    # Deeper categories override shallower ones; unset keys come from further up.
    assert (py.interval, py.trusted, py.author, py.comments) == (900.0, True, "Tech desk", True)
    assert py.filters is not None and py.filters.exclude.title == ("sponsored",)
    # The source's own settings win over every category's.
    assert (own.interval, own.trusted, own.author) == (7200.0, False, "Tech desk")
    # interval and cron go together: a source with a cron inherits no interval.
    assert (cron.cron, cron.interval, cron.trusted) == ("0 * * * *", None, True)
    # Matching is by path from the top: [News, Tech] is not under [Tech].
    assert (news.interval, news.trusted, news.author, news.filters) == (None, False, None, None)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("  - path: [Tech]\n    intervl: 1h\n", ":4: category_defaults[0].intervl: unknown key"),
        ("  - path: [Tech]\n    name: x\n", ":4: category_defaults[0].name: unknown key"),
        (
            "  - path: [Tech]\n    interval: soon\n",
            ":4: category_defaults[0].interval: 'soon' is not a duration",
        ),
        ("  - path: Tech\n    interval: 1h\n", ":3: category_defaults[0].path: a list of category names"),
    ],
)
def test_category_defaults_are_validated_with_file_line_and_key(
    tmp_path: Path, entry: str, expected: str
) -> None:
    text = "site: {title: Test}\ncategory_defaults:\n" + entry
    path = _write(tmp_path, {"aggregator.yaml": text})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}{expected}"), str(caught.value)
