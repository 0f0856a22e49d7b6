"""Config errors name the file, the line and the key path, and exit non-zero without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.helpers import run_cli

from aggregator.config import load_config, parse_duration, parse_size
from aggregator.errors import ConfigError

VALID_HEAD = """\
site:
  title: Test
paths: {posts: posts, feeds: feeds, data: data}
sources:
  - name: one
    url: https://one.example.org/feed.xml
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID_HEAD + "  - name: two\n    url: ftp://two.example.org/\n",
            ":8: sources[1].url: not an http(s) URL or file path",
        ),
        (VALID_HEAD + "    intervl: 5m\n", ":7: sources[0].intervl: unknown key (did you mean 'interval'?)"),
        (VALID_HEAD + "    interval: soon\n", ":7: sources[0].interval: 'soon' is not a duration"),
        (
            VALID_HEAD + "  - name: ONE\n    url: https://other.example.org/\n",
            ":7: sources[1].name: duplicate of sources[0].name",
        ),
        (
            VALID_HEAD + "  - name: ' One!'\n    url: https://other.example.org/\n",
            ":7: sources[1].name: duplicate of sources[0].name at",  # the same feed folder
        ),
        (
            VALID_HEAD.replace("one\n", "新浪财经－国內\n")
            + "  - name: 新浪财经-国內\n    url: https://x.example.org/\n",
            "(both make the folder '新浪财经-国內')",
        ),
        (
            VALID_HEAD + "  - name: two\n    url: https://one.example.org/feed.xml\n",
            ":8: sources[1].url: duplicate of sources[0].url",
        ),
        (VALID_HEAD + "    categories: News\n", ":7: sources[0].categories: categories must be a list"),
        (VALID_HEAD + "  - url: https://x.example.org/\n", ":7: sources[1].name: Field required"),
        ("server:\n  port: 99999\n", ":2: server.port: Input should be less than or equal to 65535"),
        ("site:\n  base_url: not-a-url\n", ":2: site.base_url: not an http(s) URL"),
        ("sources: [\n", ": invalid YAML"),
        ("- just\n- a list\n", ":1: the config must be a mapping"),
        ("site:\n  title: a\n  title: b\n", ":3: duplicate key 'title'"),
    ],
)
def test_each_kind_of_error_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_cli_check_reports_one_line_and_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(VALID_HEAD + "    intervl: 5m\n", encoding="utf-8")
    result = run_cli("check", config=path)
    assert result.returncode == 2
    expected = f"aggregator: {path}:7: sources[0].intervl: unknown key (did you mean 'interval'?)"
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.stderr


def test_cli_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("fetch", config=tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "no such config file" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_accepts_the_shipped_config() -> None:
    result = run_cli("check", config=Path("config/aggregator.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_yaml_traps_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.yaml"
    (tmp_path / "feed.xml").write_text("<rss/>", encoding="utf-8")
    path.write_text(
        "sources:\n  - name: no\n    url: feed.xml\n    categories: [on, 0123, 1e3, 2021-01-01, null-ish]\n",
        encoding="utf-8",
    )
    source = load_config(path).sources[0]
    assert source.name == "no"
    assert source.categories == ("on", "0123", "1e3", "2021-01-01", "null-ish")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "aggregator.yaml"
    path.parent.mkdir()
    (path.parent / "local.xml").write_text("<rss/>", encoding="utf-8")
    path.write_text("paths: {feeds: ../out}\nsources: [{name: a, url: local.xml}]\n", encoding="utf-8")
    config = load_config(path)
    assert config.feeds_dir == (tmp_path / "out").resolve()
    assert config.source_location(config.sources[0]) == str((path.parent / "local.xml").resolve())


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (30, 30)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "-3m", "0s", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_sizes() -> None:
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("500KB") == 500_000
    with pytest.raises(ValueError):
        parse_size("lots")


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("htp:/example.org/feed.xml", "(did you mean https://example.org/feed.xml?)"),
        ("example.org/feed.xml", "(did you mean https://example.org/feed.xml?)"),
        ("htps://example.org/feed.xml", "(did you mean https://example.org/feed.xml?)"),
    ],
)
def test_check_refuses_a_url_typo_with_the_url_it_meant(tmp_path: Path, url: str, hint: str) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(VALID_HEAD + f"  - name: two\n    url: {url}\n", encoding="utf-8")
    result = run_cli("check", config=path)
    assert result.returncode == 2, result.stdout
    where = f"aggregator: {path}:8: sources[1].url: not an http(s) URL"
    assert result.stderr.startswith(where), result.stderr
    assert hint in result.stderr
    assert "Traceback" not in result.stderr


def test_a_local_source_must_name_an_existing_file_unless_a_file_url(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(VALID_HEAD + "  - name: two\n    url: feeds/missing.xml\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"no such file: {tmp_path / 'feeds' / 'missing.xml'}" in str(caught.value)
    assert "did you mean" not in str(caught.value)  # a path, not a mistyped address
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "missing.xml").write_text("<rss/>", encoding="utf-8")
    assert load_config(path).sources[1].is_local
    # A file: URL says a local file is meant, so it may be one not written yet.
    path.write_text(VALID_HEAD + "  - name: two\n    url: file:///srv/later.xml\n", encoding="utf-8")
    assert load_config(path).sources[1].url == "file:///srv/later.xml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defualts: {interval: 5m}\n" + VALID_HEAD, ":1: defualts: unknown key (did you mean 'defaults'?)"),
        (
            "defaults: {intervall: 5m}\n" + VALID_HEAD,
            ":1: defaults.intervall: unknown key (did you mean 'interval'?)",
        ),
        (
            VALID_HEAD + "    categories: [News]\ncategory_defaults:\n  - path: [News]\n    intervl: 5m\n",
            ":10: category_defaults[0].intervl: unknown key (did you mean 'interval'?)",
        ),
        (VALID_HEAD + "    zzzz: 1\n", ":7: sources[0].zzzz: unknown key (check its spelling)"),
    ],
)
def test_an_unknown_key_gets_the_nearest_known_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value), str(caught.value)
