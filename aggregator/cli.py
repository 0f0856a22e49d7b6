"""The ``aggregator`` command line.

User errors (a bad config, a store that cannot be opened, a second daemon)
end with a one-line reason on stderr and a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aggregator.build import FeedBuilder
from aggregator.config import DEFAULT_CONFIG, Config, load_config
from aggregator.errors import AggregatorError
from aggregator.fetch import redact_url
from aggregator.pipeline import Updater, UpdateResult, retention_policy
from aggregator.state import utcnow
from aggregator.store import PostStore

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Poll RSS/Atom/JSON feeds, keep every entry as a Markdown post, republish per-category feeds.",
)
err = Console(stderr=True)
EXIT_USER_ERROR = 2


class _State:
    config_path: Path = DEFAULT_CONFIG
    log_level: str = "INFO"
    json_logs: bool = False
    log_level_given: bool = False  # else the config's logging section decides


state = _State()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if state.json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(state.log_level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    err.print(f"aggregator: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USER_ERROR)


def _load() -> Config:
    try:
        config = load_config(state.config_path)
    except AggregatorError as error:
        raise _fail(str(error)) from None
    if not state.log_level_given or (config.logging.format == "json" and not state.json_logs):
        if not state.log_level_given:
            state.log_level = config.logging.level
        state.json_logs = state.json_logs or config.logging.format == "json"
        _setup_logging()
    return config


@app.callback()
def main_options(
    config: Annotated[Path, typer.Option("--config", "-c", help="The YAML config file.")] = DEFAULT_CONFIG,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error (default: the config's logging.level).")
    ] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log one JSON object per line.")] = False,
) -> None:
    state.config_path = config
    state.log_level_given = log_level is not None
    log_level = log_level or "info"
    state.log_level = log_level
    state.json_logs = json_logs
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise _fail(f"--log-level: {log_level!r} is not one of debug, info, warning, error")
    _setup_logging()


@app.command()
def check() -> None:
    """Validate the config and print what it configures."""
    config = _load()
    typer.echo(f"{state.config_path}: ok, {len(config.sources)} sources")


@app.command()
def run() -> None:
    """Run the daemon: poll every source on its schedule, rebuild and serve the feeds."""
    from aggregator.daemon import Daemon

    config = _load()
    try:
        code = asyncio.run(Daemon(state.config_path, config).run())
    except AggregatorError as error:
        raise _fail(str(error)) from None
    raise typer.Exit(code)


@app.command()
def fetch(
    sources: Annotated[list[str] | None, typer.Argument(help="Source names; all when none.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Poll sources once now (ignoring their schedule), then rebuild the affected feeds."""
    config = _load()
    try:
        selected = [config.source_named(name) for name in sources] if sources else list(config.sources)
        with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
            # A gone source (HTTP 410) is polled only when named explicitly.
            results = asyncio.run(_fetch_all(config, store, selected, force=bool(sources)))
            # Also feeds an interrupted earlier run changed but never built.
            keys = {key for result in results for key in result.touched_keys} | store.pending_feed_keys()
            report = FeedBuilder(config, store).build(keys)
            store.clear_pending_feed_keys(keys)
    except AggregatorError as error:
        raise _fail(str(error)) from None
    _print_fetch_report(results, len(report.rendered), as_json)
    failed = sum(1 for r in results if r.outcome in ("error", "gone"))
    raise typer.Exit(1 if failed and failed == len(results) else 0)


async def _fetch_all(
    config: Config, store: PostStore, sources: Sequence[object], *, force: bool
) -> list[UpdateResult]:
    updater = Updater(config, store)
    try:
        return await updater.update_many(sources, force=force)  # type: ignore[arg-type]
    finally:
        await updater.aclose()


def _print_fetch_report(results: list[UpdateResult], feeds_built: int, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "sources": [
                        {
                            "name": r.source,
                            "outcome": r.outcome,
                            "new": r.new,
                            "updated": r.updated,
                            "error": str(r.error) if r.error else None,
                            "duration": round(r.duration, 3),
                        }
                        for r in results
                    ],
                    "feeds_built": feeds_built,
                },
                ensure_ascii=False,
                indent=1,
            )
        )
        return
    out = Console()
    table = Table(title="fetch")
    for column in ("source", "outcome", "new", "updated", "detail"):
        table.add_column(column)
    for r in sorted(results, key=lambda r: (r.outcome == "ok", r.source)):
        table.add_row(r.source, r.outcome, str(r.new), str(r.updated), str(r.error or r.skipped or ""))
    out.print(table)
    ok = sum(1 for r in results if r.outcome in ("ok", "not-modified"))
    out.print(
        f"{ok} ok ({sum(r.not_modified for r in results)} not modified), "
        f"{len(results) - ok} not ok; {sum(r.new for r in results)} new and "
        f"{sum(r.updated for r in results)} updated posts; {feeds_built} feeds rebuilt"
    )


@app.command()
def build() -> None:
    """Rebuild every feed from the posts (picks up posts edited or deleted by hand)."""
    config = _load()
    try:
        with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
            store.sync_with_files()
            store.prune(retention_policy(config), utcnow())
            report = FeedBuilder(config, store).build(None)
            store.clear_pending_feed_keys()
    except AggregatorError as error:
        raise _fail(str(error)) from None
    typer.echo(
        f"{len(report.rendered)} feeds written, {report.skipped} unchanged, {len(report.removed)} removed"
    )


@app.command()
def prune() -> None:
    """Apply the retention limits now (posts and their files), then rebuild the feeds."""
    config = _load()
    try:
        with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
            result = store.prune(retention_policy(config), utcnow())
            keys = set(result.touched_keys) | store.pending_feed_keys()
            FeedBuilder(config, store).build(keys)
            store.clear_pending_feed_keys(keys)
    except AggregatorError as error:
        raise _fail(str(error)) from None
    typer.echo(f"pruned {result.removed} posts")


@app.command()
def reindex() -> None:
    """Rebuild the index from the post files."""
    config = _load()
    try:
        with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
            count = store.reindex()
    except AggregatorError as error:
        raise _fail(str(error)) from None
    typer.echo(f"indexed {count} posts")


@app.command()
def verify() -> None:
    """Compare post files, index and published feeds; exit 1 and list each difference."""
    from aggregator.verify import verify as verify_all

    config = _load()
    try:
        with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
            report = verify_all(config, store)
    except AggregatorError as error:
        raise _fail(str(error)) from None
    for problem in report.problems:
        typer.echo(problem)
    if report.problems:
        err.print(
            f"aggregator: inconsistent: {len(report.problems)} problems "
            "(`aggregator build` or the next run repairs the feeds; `aggregator reindex` the index)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"consistent: {report.posts_indexed} posts, {report.feeds_checked} feeds")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fail_on_error: Annotated[
        bool, typer.Option("--fail-on-error", help="Exit 1 if any source is failing.")
    ] = False,
) -> None:
    """Each source's health, failing sources first."""
    config = _load()
    try:
        with PostStore(config.posts_dir, config.index_path, fsync=config.defaults.fsync) as store:
            states = [store.source_state(s.name) for s in config.sources]
    except AggregatorError as error:
        raise _fail(str(error)) from None
    # Failing first (gone, then the longest streaks), then the rate-limited, then the healthy.
    states.sort(key=lambda s: (not s.failing, not s.gone, -s.error_streak, s.health == "ok", s.name))
    if as_json:
        typer.echo(json.dumps([s.public_json() for s in states], ensure_ascii=False, indent=1))
    else:
        table = Table(title="sources")
        for column in (
            "source",
            "status",
            "last success",
            "streak",
            "next due",
            "why / last error",
        ):
            table.add_column(column)
        for s in states:
            detail = s.last_error or s.due_reason
            if s.permanent_url:
                detail += f"; moved permanently to {redact_url(s.permanent_url)}: update the config"
            table.add_row(
                s.name,
                f"{s.health} {s.http_status or ''}".strip(),
                s.last_success.strftime("%Y-%m-%d %H:%M") if s.last_success else "never",
                str(s.error_streak),
                s.next_due.strftime("%Y-%m-%d %H:%M:%S") if s.next_due else "-",
                detail,
            )
        Console(width=max(Console().width, 160)).print(table)
        failing = sum(s.failing for s in states)
        typer.echo(f"{len(states)} sources, {failing} failing")
    if fail_on_error and any(s.failing for s in states):
        raise typer.Exit(1)


def main() -> None:
    app(prog_name="aggregator")
