"""The ``aggregator`` command line: the Typer app, its global options and the small commands.

The larger commands live in modules named for them (``cli_fetch``, ``cli_status``,
``cli_sources``, ``cli_tombstones``, ``cli_migrate``) and are registered on ``app`` at the end of
this file, in the order ``--help`` lists them. User errors (a bad config, a store that cannot be
opened, a second daemon) end with a one-line reason on stderr and a non-zero exit code, never a
traceback (``cli_context.fail``).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.machinery
import sys
from pathlib import Path
from typing import Annotated

import typer

from aggregator import jobs
from aggregator.cli_context import fail, read_config, setup_logging, state, stderr_console
from aggregator.cli_fetch import fetch
from aggregator.cli_migrate import migrate_index
from aggregator.cli_sources import add, export_opml, import_opml, remove
from aggregator.cli_status import status
from aggregator.cli_tombstones import tombstones_app
from aggregator.config import DEFAULT_CONFIG
from aggregator.errors import AggregatorError
from aggregator.store import open_store

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Poll RSS/Atom/JSON feeds, keep every entry as a Markdown post, republish per-category feeds.",
)


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
        raise fail(f"--log-level: {log_level!r} is not one of debug, info, warning, error")
    setup_logging()


def check() -> None:
    """Validate the config and print what it configures."""
    from aggregator.config_categories import config_warnings
    from aggregator.transforms import check_dependencies

    config = read_config()
    try:
        check_dependencies(config)
        warnings = config_warnings(state.config_path)
    except AggregatorError as error:
        raise fail(str(error)) from None
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{state.config_path}: ok, {len(config.sources)} sources")


def run(
    port: Annotated[int | None, typer.Option(help="Serve on this port instead of server.port.")] = None,
    host: Annotated[str | None, typer.Option(help="Serve on this address instead of server.host.")] = None,
) -> None:
    """Run the daemon: poll every source on its schedule, rebuild and serve the feeds."""
    from aggregator.daemon import Daemon

    config = read_config()
    if port is not None or host is not None:
        # Several nodes of a fleet can share one config on one machine, each on its own port.
        server = config.server.model_copy(
            update={"port": config.server.port if port is None else port, "host": host or config.server.host}
        )
        config = config.model_copy(update={"server": server})
    try:
        code = asyncio.run(Daemon(state.config_path, config).run())
    except AggregatorError as error:
        raise fail(str(error)) from None
    raise typer.Exit(code)


def build() -> None:
    """Rebuild every feed from the posts (picks up posts edited or deleted by hand)."""
    config = read_config()
    try:
        with open_store(config) as store:
            published = asyncio.run(jobs.rebuild_everything(config, store))
    except AggregatorError as error:
        raise fail(str(error)) from None
    report = published.build
    typer.echo(
        f"{len(report.rendered)} feeds written, {report.skipped} unchanged, {len(report.removed)} removed"
    )


def prune() -> None:
    """Apply the retention limits now (posts and their files), then rebuild the feeds."""
    config = read_config()
    try:
        with open_store(config) as store:
            pruned = asyncio.run(jobs.prune_and_publish(config, store))
    except AggregatorError as error:
        raise fail(str(error)) from None
    typer.echo(f"pruned {pruned.removed} posts, {pruned.media_removed} unreferenced media files")


def reindex() -> None:
    """Rebuild the index from the post files."""
    config = read_config()
    try:
        with open_store(config) as store:
            count = store.reindex()
    except AggregatorError as error:
        raise fail(str(error)) from None
    typer.echo(f"indexed {count} posts")


def verify() -> None:
    """Compare post files, index and published feeds; exit 1 and list each difference."""
    from aggregator.verify import verify as verify_all

    config = read_config()
    try:
        with open_store(config) as store:
            report = verify_all(config, store)
    except AggregatorError as error:
        raise fail(str(error)) from None
    for problem in report.problems:
        typer.echo(problem)
    if report.problems:
        stderr_console().print(
            f"aggregator: inconsistent: {len(report.problems)} problems "
            "(`aggregator build` or the next run repairs the feeds; `aggregator reindex` the index)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"consistent: {report.posts_indexed} posts, {report.feeds_checked} feeds")


# The commands, in the order ``aggregator --help`` lists them (groups, such as tombstones, after).
app.command()(check)
app.command()(run)
app.command()(fetch)
app.command()(build)
app.command()(prune)
app.command()(reindex)
app.command()(verify)
app.command("migrate-index")(migrate_index)
app.command()(status)
app.command()(add)
app.command()(remove)
app.command("import-opml")(import_opml)
app.command("export-opml")(export_opml)
app.add_typer(tombstones_app, name="tombstones")


def main() -> None:
    _run_as_package_main()
    try:
        app(prog_name="aggregator")
    finally:
        # The command is done (files written, the store closed): let the interpreter's exit skip
        # a last garbage collection over every object left, 80-100 ms of a one-second poll in
        # which nothing changed. Reference counting still frees what it can.
        gc.freeze()


def _run_as_package_main() -> None:
    """Name the main module as ``python -m aggregator`` would, so worker processes skip it.

    multiprocessing starts each parser or build process by running the parent's
    main script again when it knows it only by path (the ``aggregator`` console
    script: the whole command line imported anew, a third of a second per
    process); a main module named ``aggregator.__main__`` it leaves alone.
    """
    main_module = sys.modules.get("__main__")
    if main_module is not None and getattr(main_module, "__spec__", None) is None:
        main_module.__spec__ = importlib.machinery.ModuleSpec("aggregator.__main__", None)
