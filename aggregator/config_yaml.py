"""Reading the config's YAML: every scalar kept as the text the user wrote, every key's line kept.

The YAML is only composed (libyaml's node tree, with line numbers), never resolved, so ``no``
stays a string and ``0123`` stays ``0123``; the typed models in ``aggregator.config`` convert
what is typed. ``Places`` turns a key path into ``file:line: key.path`` for every error message,
across the main file and the ``sources.d`` files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from yaml import MarkedYAMLError, YAMLError
from yaml import compose as compose_yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:  # libyaml's composer is 25x faster than the pure-Python one on a 1,000-source file
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from aggregator.errors import ConfigError
from aggregator.suggest import known_keys, unknown_key

_NULLS = {"", "~", "null", "Null", "NULL"}


def read_yaml(text: str, path: Path) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """The data as plain Python (every scalar its text, blank ones None) and the line of each key path."""
    try:
        root = compose_yaml(text, Loader=_Loader)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {error.problem or error}") from error
    except YAMLError as error:  # characters YAML refuses (NUL, control characters)
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from error
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        data = _to_python(root, (), lines) if root is not None else {}
    except ConfigError as error:
        raise ConfigError(str(error).replace("{line}", str(path))) from None
    return data, lines


def _to_python(node: Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> Any:
    """A composed YAML node to plain Python, every scalar kept as its text.

    Keeping the text (``0123``, ``1e3``, ``no``, ``2021-01-01``) and letting the
    typed models convert it avoids every YAML 1.1/1.2 guessing trap: a name or a
    category is exactly what the user wrote.
    """
    lines[path] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            if key in mapping:
                raise ConfigError(f"{{line}}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            mapping[key] = _to_python(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return mapping
    if isinstance(node, SequenceNode):
        return [_to_python(item, (*path, i), lines) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    if node.style is None and node.value in _NULLS:
        return None
    return str(node.value)


def _format_path(path: Sequence[str | int]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "(top level)"


class Places:
    """Where each key path was written, across the main file and the sources.d files."""

    def __init__(self, path: Path, lines: dict[tuple[str | int, ...], int]) -> None:
        self.path = path
        self.lines = lines
        # merged source index -> (file, index in that file, that file's lines, key prefix in that file)
        self.origins: dict[int, tuple[Path, int, dict[tuple[str | int, ...], int], tuple[str, ...]]] = {}

    def locate(self, loc: Sequence[str | int]) -> tuple[str, str]:
        """``file:line`` and the key path as written in that file."""
        path, lines, local = self.path, self.lines, tuple(loc)
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int) and loc[1] in self.origins:
            path, index, lines, prefix = self.origins[loc[1]]
            local = (*prefix, index, *loc[2:])
            loc = ("sources", index, *loc[2:])
        line = _deepest_line(lines, local)
        return (f"{path}:{line}" if line else str(path)), _format_path(loc)

    def fail(self, loc: Sequence[str | int], message: str) -> ConfigError:
        where, dotted = self.locate(loc)
        return ConfigError(f"{where}: {dotted}: {message}")

    def error(
        self, error: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
    ) -> ConfigError:
        """The first validation error of ``model``, located (``prefix``: where that model's data sits)."""
        first = error.errors()[0]
        loc = [part for part in first["loc"] if isinstance(part, str | int)]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = unknown_key(str(loc[-1]), known_keys(model, loc[:-1]))
        if not loc and (match := re.match(r"^([\w.\[\]]+): (.*)$", message)):
            # A cross-field error that names its own key path.
            dotted, message = match.groups()
            loc = [int(p) if p.isdigit() else p for p in re.findall(r"\w+", dotted)]
        return self.fail([*prefix, *loc], message)


def _deepest_line(lines: dict[tuple[str | int, ...], int], loc: Sequence[str | int]) -> int | None:
    for depth in range(len(loc), 0, -1):
        if (line := lines.get(tuple(loc[:depth]))) is not None:
            return line
    return None
