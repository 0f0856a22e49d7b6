"""Filters (each kind, global and per source), the dry-run report, and category rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import frontmatter
import pytest
from support.helpers import FIXTURES, run_cli, write_config

from aggregator.config import CategoryRule, FiltersConfig
from aggregator.filters import FilterStage, select_posts
from aggregator.model import Post, SourceRules
from aggregator.normalize import normalize
from aggregator.parse import parse_document

FEED = FIXTURES / "sources" / "filters.xml"
NOW = datetime(2026, 10, 10, tzinfo=UTC)
RELEASE, SPONSORED, RUST = "Python 3.14 released", "Sponsored: buy our widgets", "Rust and Python together"
GARDEN, OLD = "Gardening notes", "An old Python post"


def _posts(categories: tuple[str, ...] = ("Tech",)) -> list[Post]:
    feed = parse_document(FEED.read_bytes(), {"content-type": "application/rss+xml"}, FEED.as_uri())
    rules = SourceRules(name="filters", categories=categories, feed_title=feed.title)
    return [normalize(entry, rules, NOW) for entry in feed.entries]


def _stage(settings: dict[str, Any], name: str = "source filters") -> FilterStage:
    return FilterStage(name, FiltersConfig.model_validate(settings))


@pytest.mark.parametrize(
    ("settings", "kept", "dropped_title", "why"),
    [
        (
            {"exclude": {"title": "sponsored"}},
            [RELEASE, RUST, GARDEN, OLD],
            SPONSORED,
            "dropped by source filters: exclude.title /sponsored/ matched 'Sponsored'",
        ),
        (
            {"include": {"tags": "^python$"}},
            [RELEASE, OLD],
            RUST,
            "dropped by source filters: no include pattern matched",
        ),
        (
            {"include": {"content": "pyo3|tomatoes"}},
            [RUST, GARDEN],
            RELEASE,
            "dropped by source filters: no include pattern matched",
        ),
        (
            {"exclude": {"author": "^marketing$"}},
            [RELEASE, RUST, GARDEN, OLD],
            SPONSORED,
            "dropped by source filters: exclude.author /^marketing$/ matched 'Marketing'",
        ),
        (
            {"exclude": {"any": ["garden", "widget"]}},
            [RELEASE, RUST, OLD],
            GARDEN,
            "dropped by source filters: exclude.any /garden/ matched 'Garden' in the title",
        ),
        (
            {"max_age": "30d"},
            [RELEASE, SPONSORED, RUST, GARDEN],
            OLD,
            "dropped by source filters: max_age 30d: dated 2020-01-01 08:00",
        ),
        (
            {"max_entries": 2},
            [RELEASE, SPONSORED],
            RUST,
            "dropped by source filters: beyond max_entries 2 (newest kept)",
        ),
    ],
)
def test_each_filter_keeps_and_drops_with_a_reason(
    settings: dict[str, Any], kept: list[str], dropped_title: str, why: str
) -> None:
    selection = select_posts(_posts(), [_stage(settings)], [], NOW)
    assert [p.title for p in selection.kept] == kept
    decision = next(d for d in selection.decisions if d.post.title == dropped_title)
    assert not decision.kept
    assert decision.reasons == (why,)


def test_include_reasons_and_stages_run_global_then_source() -> None:
    stages = [
        _stage({"include": {"any": "python"}}, "global filters"),
        _stage({"max_age": "30d", "max_entries": 1}),
    ]
    decisions = {d.post.title: d for d in select_posts(_posts(), stages, [], NOW).decisions}
    assert [t for t, d in decisions.items() if d.kept] == [RELEASE]
    assert decisions[RELEASE].reasons == (
        "kept by global filters: include.any /python/ matched 'Python' in the title",
    )
    assert decisions[SPONSORED].reasons == ("dropped by global filters: no include pattern matched",)
    assert decisions[RUST].reasons[-1] == "dropped by source filters: beyond max_entries 1 (newest kept)"
    assert decisions[OLD].reasons[-1].startswith("dropped by source filters: max_age 30d")


def test_category_rules_file_posts_under_the_source_hierarchy() -> None:
    rules = [
        CategoryRule.model_validate({"tag": "release", "category": "Releases"}),
        CategoryRule.model_validate({"tag": "py", "category": "Never"}),  # a tag matches as a whole
        CategoryRule.model_validate({"title": r"\brust\b", "category": ["Languages", "Rust"]}),
        CategoryRule.model_validate({"tag": "GARDEN", "category": "Outdoors"}),
    ]
    selection = select_posts(_posts(("Tech", "Blogs")), [], rules, NOW)
    categories = {d.post.title: d.post.categories for d in selection.decisions}
    assert categories == {
        RELEASE: ("Tech", "Blogs", "Releases"),  # first matching rule wins
        SPONSORED: ("Tech", "Blogs"),
        RUST: ("Tech", "Blogs", "Languages", "Rust"),
        GARDEN: ("Tech", "Blogs", "Outdoors"),
        OLD: ("Tech", "Blogs"),
    }
    reasons = {d.post.title: d.reasons for d in selection.decisions}
    assert reasons[RUST] == (
        "category rule 3: title /\\brust\\b/ matched 'Rust': filed under Tech / Blogs / Languages / Rust",
    )


def test_tag_rules_reach_post_files_and_category_feeds(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "site",
        [{
            "name": "filters", "url": str(FEED), "categories": ["Tech"],
            "rules": [{"tag": "release", "category": "Releases"}],
        }],
        rules=[{"title": "garden", "category": ["Outdoors"]}],
    )  # fmt: skip
    result = run_cli("fetch", config=config)
    assert result.returncode == 0, result.stderr
    posts = {p["title"]: p for p in map(frontmatter.load, (tmp_path / "site" / "posts").rglob("*.md"))}
    assert posts[RELEASE]["categories"] == ["Tech", "Releases"]
    assert posts[GARDEN]["categories"] == ["Tech", "Outdoors"]
    assert posts[RUST]["categories"] == ["Tech"]
    releases = tmp_path / "site" / "feeds" / "category" / "tech" / "releases" / "rss.xml"
    assert releases.exists()
    assert RELEASE in releases.read_text(encoding="utf-8")
    assert RUST not in releases.read_text(encoding="utf-8")


def test_dry_run_reports_every_rule_decision_and_saves_nothing(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "site",
        [{
            "name": "filters", "url": str(FEED), "categories": ["Tech"],
            "filters": {"exclude": {"author": "marketing"}, "max_entries": 2},
            "rules": [{"tag": "release", "category": "Releases"}],
        }],
        filters={"exclude": {"title": "^gardening"}},
    )  # fmt: skip
    result = run_cli("fetch", "--dry-run", "filters", "--json", config=config)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    entries = {e["title"]: e for e in report["sources"][0]["entries"]}
    assert {t: e["kept"] for t, e in entries.items()} == {
        RELEASE: True, SPONSORED: False, RUST: True, GARDEN: False, OLD: False,
    }  # fmt: skip
    assert entries[GARDEN]["reasons"] == [
        "dropped by global filters: exclude.title /^gardening/ matched 'Gardening'"
    ]
    assert entries[SPONSORED]["reasons"] == [
        "dropped by source filters: exclude.author /marketing/ matched 'Marketing'"
    ]
    assert entries[OLD]["reasons"] == ["dropped by source filters: beyond max_entries 2 (newest kept)"]
    assert entries[RELEASE]["categories"] == ["Tech", "Releases"]
    assert not list((tmp_path / "site").glob("posts/**/*.md"))

    # The table form says the same for people; then a real fetch saves exactly the kept entries.
    table = run_cli("fetch", "--dry-run", "filters", config=config)
    assert "filters: 2 kept, 3 dropped" in table.stdout
    assert "exclude.author /marketing/ matched 'Marketing'" in table.stdout
    assert run_cli("fetch", config=config).returncode == 0
    saved = sorted(p["title"] for p in map(frontmatter.load, (tmp_path / "site" / "posts").rglob("*.md")))
    assert saved == sorted([RELEASE, RUST])
