"""Guesses at what a mistyped config meant: the nearest known key, the web address a "path" spells.

Pure functions of text (and of the config models' field names), so ``aggregator check`` can turn a
typo into an error that says what to write instead, rather than a fetch that fails later with "no
such file". The config's error messages take their hints from here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from pydantic import BaseModel

from aggregator.keys import source_folder

# A leading "scheme:" with any number of slashes after it: "htp:/example.org", "https:example.org".
_SCHEME_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/*(.*)$", re.DOTALL)
# A colon forgotten: "http//example.org", "https//example.org".
_NO_COLON = re.compile(r"^(https?)//+(.*)$", re.IGNORECASE | re.DOTALL)
# A host name with at least one dot and a top-level domain of letters, then the rest of a URL.
_HOST_FIRST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?::\d{1,5})?(?:[/?#].*)?$",
    re.DOTALL,
)
_WEB_SCHEMES = ("http", "https")
# "welcome.xml" has the shape of a host name too; these endings say it is a file.
_FILE_ENDINGS = frozenset({"xml", "rss", "atom", "rdf", "json", "html", "htm", "txt", "yaml", "yml"})


def _looks_like_host(text: str) -> bool:
    if not _HOST_FIRST.match(text):
        return False
    host = re.split(r"[:/?#]", text, maxsplit=1)[0]
    return host.rsplit(".", 1)[-1].lower() not in _FILE_ENDINGS


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The known word closest to ``word``, when one is close enough to be the one meant."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def probable_url(text: str) -> str | None:
    """The http(s) URL that ``text`` most likely meant, or None when it does not look like one.

    ``htp:/example.org/feed.xml`` and ``example.org/feed.xml`` give
    ``https://example.org/feed.xml``; ``http:/example.org`` keeps its plain http.
    """
    text = text.strip()
    if (match := _NO_COLON.match(text)) is not None:
        return f"{match.group(1).lower()}://{match.group(2)}"
    if text.startswith("//") and _looks_like_host(text[2:]):
        return f"https:{text}"
    if (match := _SCHEME_LIKE.match(text)) is not None:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme in _WEB_SCHEMES and _looks_like_host(rest):
            return f"{scheme}://{rest}"  # slashes wrong: "http:/host", "https:host"
        if nearest(scheme, _WEB_SCHEMES) is not None and _looks_like_host(rest):
            return f"https://{rest}"  # "htp", "htps", "hhtp", "httsp"
        if _looks_like_host(text):
            return f"https://{text}"  # "example.org:8080/feed" reads as scheme "example.org"
        return None
    if _looks_like_host(text):
        return f"https://{text}"
    return None


def did_you_mean(url: str) -> str:
    guess = probable_url(url)
    return f" (did you mean {guess}?)" if guess else ""


def unknown_key(key: str, known: Iterable[str]) -> str:
    close = nearest(key, known)
    return f"unknown key (did you mean {close!r}?)" if close else "unknown key (check its spelling)"


def known_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the model nested at ``loc`` accepts (list indexes skipped); none if loc leaves the models."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None``, ``tuple[X, ...]`` or ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        if (found := _model_in(argument)) is not None:
            return found
    return None


def same_folder(first: str, second: str) -> str:
    """For two names that differ beyond case yet make the same folder: say which folder."""
    if first.strip().casefold() == second.strip().casefold():
        return ""
    return f" (both make the folder {source_folder(second)!r})"
