"""The configuration's typed models, and ``load_config``: read, merge, validate.

Pydantic models that forbid unknown keys convert what is typed; the YAML under them is read with
every scalar kept as the text the user wrote (``config_yaml``), and the ``sources.d`` files and
``category_defaults`` are merged in before validation (``config_merge``). Every error names the
file, the line where it can, and the key path::

    config/aggregator.yaml:14: sources[3].url: not an http(s) URL or file path

Relative paths in the file (output directories, local sources) are resolved
against the directory that holds the config file, so the result does not
depend on the working directory.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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

from aggregator import optional
from aggregator.config_merge import apply_category_defaults, check_unique_sources, merge_sources_d
from aggregator.config_yaml import Places, read_yaml
from aggregator.dburl import check_postgres_url
from aggregator.errors import ConfigError
from aggregator.keys import source_folder
from aggregator.suggest import did_you_mean, same_folder

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


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class FleetConfig(_Strict):
    """Several daemons sharing one PostgreSQL ``index:`` (aggregator.fleet)."""

    lease: Duration = 120.0  # a dead node's sources go to the others after this long (> defaults.deadline)
    heartbeat: Duration | None = None  # how often a node renews its leases; None: a quarter of the lease

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> FleetConfig:
        if self.heartbeat is not None and self.heartbeat > self.lease / 2:
            raise ValueError("heartbeat: must be at most half of fleet.lease, or a late beat loses leases")
        return self


PostgresURL = Annotated[str, AfterValidator(check_postgres_url)]


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
                raise ValueError(f"not an http(s) URL or file path{did_you_mean(value)}")
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
    # A validation error's text would quote the rejected value: an index URL's password among them.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

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
    # PostgreSQL instead of the SQLite files under paths.data; repr hides its password.
    index: PostgresURL | None = Field(default=None, repr=False)
    fleet: FleetConfig = FleetConfig()
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
                    note = same_folder(first.name, source.name) if what == "name" else ""
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
                    f"{self.source_location(source)}{did_you_mean(source.url)}"
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


def load_placed_config(path: Path) -> tuple[Config, Places, list[Any]]:
    """``load_config``, with what warnings that point at a line need: where each key was written,
    and the ``category_defaults`` entries (valid)."""
    return _parse_config(_read_config(path), path)


def parse_config(text: str, path: Path) -> Config:
    """Validate the main file's text, merged with ``sources.d/*.yaml`` beside it."""
    return _parse_config(text, path)[0]


def _parse_config(text: str, path: Path) -> tuple[Config, Places, list[Any]]:
    """The config, where each key was written, and the ``category_defaults`` entries (valid)."""
    data, lines = read_yaml(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of settings")
    data.pop("base_dir", None)
    places = Places(path, lines)
    merge_sources_d(data, places)
    category_defaults = data.get("category_defaults")
    apply_category_defaults(data, places, SourceConfig)
    check_unique_sources(data, places)
    try:
        config = Config.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as error:
        raise places.error(error, Config) from error
    return config, places, category_defaults if isinstance(category_defaults, list) else []
