"""The publishing package's shape: one module per concern, none large, no shadow of feedgen shipped."""

from __future__ import annotations

import ast
from pathlib import Path

import aggregator

PACKAGE = Path(aggregator.__file__).resolve().parent
PUBLISH = PACKAGE / "publish"
# The feedgen path that writes every item, which only tests call (tests/support/feedgen_reference.py).
REFERENCE_ONLY = {
    "render_fragments_with_feedgen",
    "render_feed_directly",
    "_render_batch",
    "_ItemExtension",
    "_fill_rss",
    "_switch_to_atom",
    "_json_item",
}


def test_each_publishing_concern_has_a_module_of_at_most_600_lines() -> None:
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in PUBLISH.glob("*.py")}
    for concern in ("specs", "items", "formats", "skeleton", "renderer", "parallel", "builder", "pages",
                    "opml", "status"):  # fmt: skip
        assert f"{concern}.py" in sizes
    assert {name: size for name, size in sizes.items() if size > 600} == {}
    assert not (PACKAGE / "build.py").exists()


def test_the_feedgen_reference_path_ships_in_tests_not_in_the_package() -> None:
    defined = {
        (path.relative_to(PACKAGE).as_posix(), node.name)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in REFERENCE_ONLY
    }
    assert defined == set()
    support = Path(__file__).resolve().parent / "support" / "feedgen_reference.py"
    tree = ast.parse(support.read_text(encoding="utf-8"))
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    assert names >= REFERENCE_ONLY
