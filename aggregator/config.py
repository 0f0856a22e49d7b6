"""Load and validate the YAML configuration.

The YAML is only composed (libyaml's node tree, with line numbers), never
resolved: every scalar is kept as the text the user wrote, so ``no`` stays a
string and ``0123`` stays ``0123``, and pydantic models that forbid unknown
keys convert what is typed. Every error names the file, the line where it can, and the key path::

    config/aggregator.yaml:14: sources[3].url: not an http(s) URL or file path

Relative paths in the file (output directories, local sources) are resolved
against the directory that holds the config file, so the result does not
depend on the working directory.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from yaml import MarkedYAMLError, YAMLError
from yaml import compose as compose_yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:  # libyaml's composer is 25x faster than the pure-Python one on a 1,000-source file
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from aggregator import optional
from aggregator.categories import spelling_clashes
from aggregator.errors import ConfigError
from aggregator.keys import category_slugs, slugify
from aggregator.suggest import nearest, probable_url

if TYPE_CHECKING:
    from aggregator.store import PostStore

DEFAULT_CONFIG = Path("config/aggregator.yaml")
USER_AGENT = "aggregator/0.1 (+https://github.com/aggregator-project/aggregator)"
# An unknown source name lists the configured ones up to this many.
MAX_NAMES_LISTED = 20

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` (or a bare number of seconds) to seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 90s, 15m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 90s, 15m, 2h or 1d")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_size(value: object) -> int:
    """``10MiB``, ``500KB`` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError("a size such as 10MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    else:
        raise ValueError(f"{value!r} is not a size such as 10MiB or 500KB")
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
NonBlank = Annotated[str, AfterValidator(_non_blank)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Strict):
    title: NonBlank = "aggregator"
    description: str = "Posts gathered by aggregator"
    base_url: str = "http://127.0.0.1:8080/"
    language: str = "en"
    author: str = "aggregator"

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("not an http(s) URL")
        return value if value.endswith("/") else value + "/"


class PathsConfig(_Strict):
    posts: Path = Path("../posts")
    feeds: Path = Path("../feeds")
    data: Path = Path("../data")


class DefaultsConfig(_Strict):
    interval: Duration = 1800.0
    timeout: Duration = 20.0
    deadline: Duration = 60.0
    user_agent: NonBlank = USER_AGENT
    max_body: Size = 10 * 1024**2
    max_entries: int = Field(default=500, gt=0)
    concurrency: int = Field(default=16, gt=0)
    per_host: int = Field(default=2, gt=0)
    # Adaptive polling (opt-in): busy sources are polled more often, quiet ones less, within bounds.
    adaptive: bool = False
    min_interval: Duration = 300.0
    max_interval: Duration = 21600.0
    backoff_cap: Duration = 86400.0
    escape_braces: bool = True
    fsync: Literal["file", "batch", "off"] = "batch"
    # One post for one article found in several sources (same link, tracking parameters ignored).
    merge_by_link: bool = False
    # RSS <ttl>, Cache-Control max-age and Expires may lengthen (never shorten) the interval.
    respect_cache_headers: bool = False


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"  # --log-level overrides it
    format: Literal["text", "json"] = "text"  # json: one JSON object per line (--json-logs)
    summary_interval: Duration = 60.0  # the daemon's INFO line summing up the polls since the last one


class DashboardAuthConfig(_Strict):
    """Basic auth for the dashboard's /status and post pages (``aggregator.dashboard.auth``)."""

    username: NonBlank
    password: str | None = Field(default=None, repr=False, min_length=1)
    password_env: NonBlank | None = None  # the environment variable that holds the password

    @model_validator(mode="after")
    def _one_password(self) -> DashboardAuthConfig:
        if (self.password is None) == (self.password_env is None):
            raise ValueError("give either password or password_env")
        return self


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    dashboard_auth: DashboardAuthConfig | None = None


class CategoryFeedConfig(_Strict):
    """Title and description of one category's feed, instead of the generated ones."""

    path: tuple[NonBlank, ...] = Field(min_length=1)
    title: NonBlank | None = None
    description: str | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError("path must be a list, for example [News, World]")
        return value


class BuildConfig(_Strict):
    max_items: int = Field(default=50, gt=0)
    formats: tuple[Literal["rss", "atom", "json"], ...] = Field(default=("rss", "atom", "json"), min_length=1)
    full_content: bool = True  # false: summaries only
    max_content_chars: int | None = Field(default=None, gt=0)  # longer HTML is cut at a tag boundary
    categories: tuple[CategoryFeedConfig, ...] = ()
    websub_hub: str | None = None  # advertised in every feed and told of every changed feed

    @field_validator("websub_hub")
    @classmethod
    def _http_hub(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("not an http(s) URL")
        return value


class RetentionLimits(_Strict):
    """At most ``max_posts`` posts, none older than ``max_age`` (by post date); unset: no limit."""

    max_age: Duration | None = None
    max_posts: int | None = Field(default=None, gt=0)


class RetentionConfig(_Strict):
    """Pruning of old posts, file and index together; every limit is off by default."""

    max_age: Duration | None = None  # over all posts together
    max_posts: int | None = Field(default=None, gt=0)
    per_source: RetentionLimits = RetentionLimits()  # each source's, unless it sets its own


class AuthConfig(_Strict):
    """HTTP basic auth for one source; the password is never printed or logged."""

    username: str
    password: str = Field(repr=False)


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"{value!r} is not a regular expression: {error}") from None
    return value


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


Regex = Annotated[str, AfterValidator(_valid_regex)]
Regexes = Annotated[tuple[Regex, ...], BeforeValidator(_one_or_many)]
# OpenCC conversions shipped by opencc-python-reimplemented (s: Simplified, t: Traditional, tw/hk: regional).
OPENCC_CONVERSIONS = ("s2t", "t2s", "s2tw", "tw2s", "s2hk", "hk2s", "s2twp", "tw2sp", "t2tw", "t2hk")


class PatternSet(_Strict):
    """Regular expressions (case-insensitive, searched anywhere) per entry field; see aggregator.filters."""

    title: Regexes = ()
    content: Regexes = ()
    author: Regexes = ()
    tags: Regexes = ()
    any: Regexes = ()  # title, content, author or a tag


class FiltersConfig(_Strict):
    """Which entries become posts: include/exclude patterns, a maximum age, a maximum count per fetch."""

    include: PatternSet = PatternSet()  # when any is given, an entry must match one of them
    exclude: PatternSet = PatternSet()
    max_age: Duration | None = None
    max_entries: int | None = Field(default=None, gt=0)  # the newest N that passed the patterns


class CategoryRule(_Strict):
    """An entry whose tag matches ``tag`` or whose title matches ``title`` goes one level deeper."""

    tag: Regex | None = None  # matched against each of the entry's own tags as a whole
    title: Regex | None = None  # searched in the title
    category: Annotated[tuple[NonBlank, ...], BeforeValidator(_one_or_many)] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_condition(self) -> CategoryRule:
        if self.tag is None and self.title is None:
            raise ValueError("a rule needs a tag or a title pattern")
        return self


class RewriteRule(_Strict):
    field: Literal["title", "content"]
    pattern: Regex
    replace: str = ""  # may refer to groups: \1 or \g<name>


class TransformsConfig(_Strict):
    """Opt-in changes to posts after filtering: full text, then OpenCC conversion, then regex rewrites."""

    full_text: bool = False  # replace the body with the article extracted from the entry's page
    opencc: str | None = None  # s2t, t2s, s2tw, ...: convert title and body between Chinese scripts
    rewrite: tuple[RewriteRule, ...] = ()

    @field_validator("full_text")
    @classmethod
    def _has_trafilatura(cls, value: bool) -> bool:
        if value and (missing := optional.installed("full_text")):
            raise ValueError(missing.removeprefix("full_text "))
        return value

    @field_validator("opencc")
    @classmethod
    def _known_conversion(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in OPENCC_CONVERSIONS:
            raise ValueError(f"{value!r} is not one of {', '.join(OPENCC_CONVERSIONS)}")
        if missing := optional.installed("opencc"):
            raise ValueError(missing.removeprefix("opencc "))
        return value


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class SourceConfig(_Strict):
    name: NonBlank
    url: NonBlank
    categories: tuple[NonBlank, ...] = ()
    author: str | None = None
    interval: Duration | None = None
    cron: str | None = None  # a crontab expression (UTC), instead of an interval
    adaptive: bool | None = None  # None: the defaults' setting
    trusted: bool = False
    comments: bool = False
    # Extra request headers, as (name, value) pairs; written as a mapping in the YAML.
    headers: tuple[tuple[str, str], ...] = Field(default=(), repr=False)
    auth: AuthConfig | None = Field(default=None, repr=False)
    proxy: str | None = Field(default=None, repr=False)  # http://[user:pass@]host:port
    allow_private_redirects: bool = False  # may a public URL redirect into the LAN/loopback?
    respect_cache_headers: bool | None = None  # None: the defaults' setting
    retention: RetentionLimits | None = None  # None: retention.per_source
    filters: FiltersConfig | None = None  # applied after the global filters
    rules: tuple[CategoryRule, ...] = ()  # tried before the global rules; the first match wins
    transforms: TransformsConfig | None = None  # keys given here override the global ones

    @field_validator("headers", mode="before")
    @classmethod
    def _header_pairs(cls, value: object) -> object:
        if isinstance(value, dict):
            value = list(value.items())
        if not isinstance(value, list | tuple):
            raise ValueError("headers must be a mapping of header name to value")
        for pair in value:
            name, text = pair
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if not isinstance(text, str) or any(ch in text for ch in "\r\n\0"):
                raise ValueError(f"header {name}: the value must be one line of text")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|socks5h?)://[^/\s]+", value):
            raise ValueError("not a proxy URL such as http://proxy.example:3128")
        return value

    @field_validator("url")
    @classmethod
    def _url_or_path(cls, value: str) -> str:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value):
            if not re.match(r"^(https?://[^/\s]+|file://)", value):
                raise ValueError(f"not an http(s) URL or file path{_did_you_mean(value)}")
        elif any(ch in value for ch in "\n\r\0"):
            raise ValueError("not an http(s) URL or file path")
        return value

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_list(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError("categories must be a list, for example [News, World]")
        return value

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as error:
            raise ValueError(f"{value!r} is not a crontab expression such as */15 * * * *: {error}") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> SourceConfig:
        if self.cron is not None and self.interval is not None:
            raise ValueError("give either interval or cron, not both")
        if self.cron is not None and self.adaptive:
            raise ValueError("adaptive polling needs an interval, not a cron expression")
        return self

    @property
    def is_local(self) -> bool:
        return not self.url.startswith(("http://", "https://"))


class Config(_Strict):
    site: SiteConfig = SiteConfig()
    paths: PathsConfig = PathsConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    server: ServerConfig = ServerConfig()
    build: BuildConfig = BuildConfig()
    logging: LoggingConfig = LoggingConfig()
    retention: RetentionConfig = RetentionConfig()
    sources: tuple[SourceConfig, ...] = ()
    filters: FiltersConfig = FiltersConfig()  # for every source
    rules: tuple[CategoryRule, ...] = ()  # for every source, after its own
    transforms: TransformsConfig = TransformsConfig()  # for every source
    # Where the config was read from; relative paths resolve against its folder.
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _unique_sources(self) -> Config:
        seen_names: dict[str, int] = {}
        seen_urls: dict[str, int] = {}
        for index, source in enumerate(self.sources):
            for key, seen in ((source_folder(source.name), seen_names), (source.url, seen_urls)):
                if key in seen:
                    what = "name" if seen is seen_names else "url"
                    first = self.sources[seen[key]]
                    note = _same_folder(first.name, source.name) if what == "name" else ""
                    where = f"sources[{seen[key]}].{what}{note}"
                    raise ValueError(f"sources[{index}].{what}: duplicate of {where}")
                seen[key] = index
        return self

    @model_validator(mode="after")
    def _local_sources_exist(self) -> Config:
        """A plain path must name a file: one that names none is most often a mistyped URL.

        A ``file:`` URL says plainly that a local file is meant, so it may name one not made yet.
        """
        for index, source in enumerate(self.sources):
            if (
                source.is_local
                and not source.url.startswith("file:")
                and not Path(self.source_location(source)).is_file()
            ):
                raise ValueError(
                    f"sources[{index}].url: not an http(s) URL, and no such file: "
                    f"{self.source_location(source)}{_did_you_mean(source.url)}"
                )
        return self

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def posts_dir(self) -> Path:
        return self.resolve(self.paths.posts)

    @property
    def feeds_dir(self) -> Path:
        return self.resolve(self.paths.feeds)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.paths.data)

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def state_path(self) -> Path:
        """Source states and tombstones: not a cache, unlike the index beside it."""
        return self.data_dir / "state.sqlite3"

    def open_store(self) -> PostStore:
        """The post store (files, index and state database) this config points at."""
        from aggregator.store import PostStore

        return PostStore(
            self.posts_dir, self.index_path, fsync=self.defaults.fsync, state_path=self.state_path
        )

    def source_location(self, source: SourceConfig) -> str:
        """An http(s) URL as given, or the absolute path of a local source."""
        if not source.is_local:
            return source.url
        raw = source.url.removeprefix("file://")
        return str(self.resolve(Path(raw)))

    def interval_of(self, source: SourceConfig) -> float:
        return source.interval if source.interval is not None else self.defaults.interval

    def is_adaptive(self, source: SourceConfig) -> bool:
        if source.cron is not None:
            return False
        return source.adaptive if source.adaptive is not None else self.defaults.adaptive

    def respects_cache_headers(self, source: SourceConfig) -> bool:
        if source.respect_cache_headers is not None:
            return source.respect_cache_headers
        return self.defaults.respect_cache_headers

    def source_named(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        names = [s.name for s in self.sources]
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hint = "did you mean " + " or ".join(repr(n) for n in close) + "?"
        elif len(names) <= MAX_NAMES_LISTED:
            hint = "configured: " + (", ".join(names) or "none")
        else:  # a thousand names would drown the message
            hint = f"{len(names)} configured; `aggregator status` lists them"
        raise ConfigError(f"no source named {name!r} ({hint})")


_NULLS = {"", "~", "null", "Null", "NULL"}


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


def load_config(path: Path | str = DEFAULT_CONFIG) -> Config:
    path = Path(path)
    return parse_config(_read_config(path), path)


def _read_config(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such config file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error


def parse_config(text: str, path: Path) -> Config:
    """Validate the main file's text, merged with ``sources.d/*.yaml`` beside it."""
    return _parse_config(text, path)[0]


def _parse_config(text: str, path: Path) -> tuple[Config, _Places, list[Any]]:
    """The config, where each key was written, and the ``category_defaults`` entries (valid)."""
    data, lines = _read_yaml(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of settings")
    data.pop("base_dir", None)
    places = _Places(path, lines)
    _merge_sources_d(data, places)
    category_defaults = data.get("category_defaults")
    _apply_category_defaults(data, places)
    _check_unique_sources(data, places)
    try:
        config = Config.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as error:
        raise places.error(error) from error
    return config, places, category_defaults if isinstance(category_defaults, list) else []


SOURCES_DIR = "sources.d"
# Settings a category_defaults entry may give; a source's own value always wins.
_SCHEDULE_KEYS = frozenset({"interval", "cron"})


def config_files(path: Path) -> list[Path]:
    """The main config file, then ``sources.d/*.yaml`` beside it, in name order."""
    folder = path.parent / SOURCES_DIR
    extra = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []
    return [path, *extra]


def _read_yaml(text: str, path: Path) -> tuple[Any, dict[tuple[str | int, ...], int]]:
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


class _Places:
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
        self, error: ValidationError, prefix: tuple[str | int, ...] = (), model: type[BaseModel] | None = None
    ) -> ConfigError:
        """The first validation error, located; ``model`` is the one validated (default: Config)."""
        model = model or Config
        first = error.errors()[0]
        loc = [part for part in first["loc"] if isinstance(part, str | int)]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = _unknown_key(str(loc[-1]), _known_keys(model, loc[:-1]))
        if not loc and (match := re.match(r"^([\w.\[\]]+): (.*)$", message)):
            # A cross-field error that names its own key path.
            dotted, message = match.groups()
            loc = [int(p) if p.isdigit() else p for p in re.findall(r"\w+", dotted)]
        return self.fail([*prefix, *loc], message)


def _merge_sources_d(data: dict[str, Any], places: _Places) -> None:
    """Append the sources of every ``sources.d`` file (a list, or a mapping with ``sources``)."""
    merged = data.get("sources")
    if merged is None:
        merged = []
    if not isinstance(merged, list):
        return  # the model reports the wrong type at its own line
    for file in config_files(places.path)[1:]:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{file}: cannot read: {error}") from error
        part, lines = _read_yaml(text, file)
        prefix: tuple[str, ...] = ()
        if isinstance(part, dict):
            for key in part:
                if key != "sources":
                    line = lines.get((key,), 1)
                    hint = " (did you mean 'sources'?)" if nearest(key, ["sources"]) else ""
                    raise ConfigError(
                        f"{file}:{line}: {key}: unknown key{hint} (a sources.d file holds sources)"
                    )
            part, prefix = part.get("sources") or [], ("sources",)
        if part is None:
            continue
        if not isinstance(part, list):
            raise ConfigError(f"{file}:1: sources: must be a list of sources")
        for index, source in enumerate(part):
            places.origins[len(merged)] = (file, index, lines, prefix)
            merged.append(source)
    if merged or "sources" in data:
        data["sources"] = merged


def _apply_category_defaults(data: dict[str, Any], places: _Places) -> None:
    """Fill each source's missing settings from ``category_defaults`` along its category path.

    A deeper category's setting wins over a shallower one; the source's own wins over both.
    ``interval`` and ``cron`` go together: a source that sets either inherits neither.
    """
    entries = data.pop("category_defaults", None)
    if entries is None:
        return
    if not isinstance(entries, list):
        raise places.fail(["category_defaults"], "must be a list of {path: [...], setting: value}")
    inheritable = set(SourceConfig.model_fields) - {"name", "url", "categories"}
    defaults: dict[tuple[str, ...], dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        where: list[str | int] = ["category_defaults", index]
        if not isinstance(entry, dict):
            raise places.fail(where, "must be a mapping with a path and settings")
        raw_path = entry.get("path")
        if not isinstance(raw_path, list) or not raw_path or not all(isinstance(p, str) for p in raw_path):
            raise places.fail([*where, "path"], "a list of category names is required, e.g. [News, World]")
        settings = {k: v for k, v in entry.items() if k != "path"}
        for key in settings:
            if key not in inheritable:
                raise places.fail([*where, key], _unknown_key(key, inheritable))
        try:
            SourceConfig.model_validate({"name": "defaults", "url": "defaults", **settings})
        except ValidationError as error:
            raise places.error(error, tuple(where), SourceConfig) from error
        # A category is its folder: [Tech] and [tech] are one (see aggregator.categories).
        defaults.setdefault(category_slugs([p.strip() for p in raw_path]), {}).update(settings)
    for source in data.get("sources") or []:
        categories = source.get("categories") if isinstance(source, dict) else None
        if not isinstance(categories, list):
            continue
        inherited: dict[str, Any] = {}
        for depth in range(1, len(categories) + 1):
            key = category_slugs([str(c).strip() for c in categories[:depth]])
            inherited.update(defaults.get(key, {}))
        own_schedule = _SCHEDULE_KEYS & source.keys()
        for key, value in inherited.items():
            if key not in source and not (key in _SCHEDULE_KEYS and own_schedule):
                source[key] = value


def source_folder(name: str) -> str:
    """The folder a source's posts and feed go to: two names that make the same one would collide."""
    return slugify(name.strip())


def _same_folder(first: str, second: str) -> str:
    """For two names that differ beyond case yet make the same folder: say which folder."""
    if first.strip().casefold() == second.strip().casefold():
        return ""
    return f" (both make the folder {source_folder(second)!r})"


def _check_unique_sources(data: dict[str, Any], places: _Places) -> None:
    """Names (as folders: case, spacing and punctuation aside) and URLs are unique across all files."""
    sources = data.get("sources")
    if not isinstance(sources, list):
        return
    for key in ("name", "url"):
        seen: dict[str, int] = {}
        for index, source in enumerate(sources):
            value = source.get(key) if isinstance(source, dict) else None
            if not isinstance(value, str) or not value.strip():
                continue
            folded = source_folder(value) if key == "name" else value.strip()
            if folded in seen:
                first_where, first_path = places.locate(["sources", seen[folded], key])
                note = _same_folder(sources[seen[folded]][key], value) if key == "name" else ""
                where = f"{first_path} at {first_where}{note}"
                raise places.fail(["sources", index, key], f"duplicate of {where}")
            seen[folded] = index


def _did_you_mean(url: str) -> str:
    guess = probable_url(url)
    return f" (did you mean {guess}?)" if guess else ""


def _unknown_key(key: str, known: Iterable[str]) -> str:
    close = nearest(key, known)
    return f"unknown key (did you mean {close!r}?)" if close else "unknown key (check its spelling)"


def _known_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
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


def _deepest_line(lines: dict[tuple[str | int, ...], int], loc: Sequence[str | int]) -> int | None:
    for depth in range(len(loc), 0, -1):
        if (line := lines.get(tuple(loc[:depth]))) is not None:
            return line
    return None


def category_paths(config: Config) -> Iterator[tuple[str, ...]]:
    """Every category path the config spells, in config order: each source's categories, then
    those its rules (its own, then the global ones) file under them; then ``build.categories``.
    The first spelling of a level titles its feed (see ``aggregator.categories``)."""
    for path, _places in _placed_category_paths(config, []):
        yield path


_Place = tuple[str | int, ...]


def _placed_category_paths(
    config: Config, category_defaults: Sequence[Any]
) -> Iterator[tuple[tuple[str, ...], list[_Place | None]]]:
    """Each category path in config order, with where each of its levels was written."""
    for index, source in enumerate(config.sources):
        own: _Place = ("sources", index, "categories")
        inherited: list[_Place | None] = [None] * len(source.categories)
        yield source.categories, [(*own, depth) for depth in range(len(source.categories))]
        for where, rules in ((("sources", index, "rules"), source.rules), (("rules",), config.rules)):
            for number, rule in enumerate(rules):
                placed = [(*where, number, "category", depth) for depth in range(len(rule.category))]
                yield (*source.categories, *rule.category), [*inherited, *placed]
    for number, entry in enumerate(category_defaults):
        path = tuple(str(part).strip() for part in entry["path"])
        yield path, [("category_defaults", number, "path", depth) for depth in range(len(path))]
    for number, custom in enumerate(config.build.categories):
        places: list[_Place | None] = [
            ("build", "categories", number, "path", depth) for depth in range(len(custom.path))
        ]
        yield custom.path, places


def config_warnings(path: Path | str = DEFAULT_CONFIG) -> list[str]:
    """What ``check`` warns of: valid settings that likely say something not meant.

    Two spellings of one category (they make one folder, so one feed, titled by the
    first): each later spelling, naming where the first was written.
    """
    path = Path(path)
    config, places, category_defaults = _parse_config(_read_config(path), path)
    warnings = []
    for clash in spelling_clashes(_placed_category_paths(config, category_defaults)):
        where, dotted = places.locate(clash.place)
        first_where, first_dotted = places.locate(clash.first_place)
        warnings.append(
            f"{where}: {dotted}: {clash.spelling!r} is the category {clash.first_spelling!r} of "
            f"{first_dotted} at {first_where} spelt another way (both make the folder {clash.folder}): "
            f"one category, whose feed is titled {clash.first_spelling!r}"
        )
    return warnings
