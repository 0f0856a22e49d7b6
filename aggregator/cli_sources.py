"""The commands that edit the configured sources: ``add``, ``remove``, ``import-opml``, ``export-opml``.

They write the config (or a ``sources.d`` file) through ``aggregator.sources``; ``add`` first
discovers the feed at a URL and checks it parses.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from aggregator.cli_context import fail, read_config, state
from aggregator.config import Config, parse_duration
from aggregator.config_merge import SOURCES_DIR
from aggregator.errors import AggregatorError, StoreError
from aggregator.fetch import redact_url
from aggregator.store import open_store


def _sources_file(to: Path | None) -> Path | None:
    """``--to``: a path as given, or a bare file name inside ``sources.d`` beside the config."""
    if to is None or to.parent != Path("."):
        return to
    return state.config_path.parent / SOURCES_DIR / to


def add(
    url: Annotated[str, typer.Argument(help="A feed, or a web page whose feeds are discovered.")],
    name: Annotated[str | None, typer.Option(help="The source's name (default: the feed's title).")] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(help="A category, outermost first; repeat it for each level (or write a/b)."),
    ] = None,
    interval: Annotated[str | None, typer.Option(help="How often to poll it, e.g. 30m.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Take the first feed found, ask nothing.")] = False,
    to: Annotated[
        Path | None, typer.Option(help="Write into this file (a bare name: config/sources.d/NAME).")
    ] = None,
) -> None:
    """Find the feed at URL (or the feeds a page advertises), check it parses, append it to the config."""
    from aggregator.fetch import Fetcher, FetchLimits
    from aggregator.keys import source_folder
    from aggregator.sources import FeedCandidate, add_sources, configured_as, discover

    config = read_config()
    if urlsplit(url).scheme not in ("http", "https"):
        # A local file: stored absolute, since the config resolves paths against its own folder.
        url = str(Path(url.removeprefix("file://")).expanduser().resolve())
    if interval is not None:
        try:
            parse_duration(interval)
        except ValueError as error:
            raise fail(f"--interval: {error}") from None
    categories = [part.strip() for value in category or () for part in value.split("/") if part.strip()]
    known = _configured_urls(config)
    if (existing := configured_as(url, known)) is not None:
        raise fail(f"{redact_url(url)} is already configured as {existing!r}")
    defaults = config.defaults
    limits = FetchLimits(
        read_timeout=defaults.timeout, deadline=defaults.deadline, max_body=defaults.max_body
    )

    async def find() -> list[FeedCandidate]:
        fetcher = Fetcher(defaults.user_agent, limits)
        try:
            return await discover(url, fetcher, max_body=defaults.max_body)
        finally:
            await fetcher.aclose()

    try:
        candidates = asyncio.run(find())
    except AggregatorError as error:
        raise fail(str(error)) from None
    for number, candidate in enumerate(candidates, 1):
        taken = configured_as(candidate.url, known)
        note = f"  (already configured as {taken!r})" if taken is not None else ""
        typer.echo(f"{number}. {candidate.url}  {candidate.title!r} ({candidate.entries} entries){note}")
    chosen = candidates[0]
    if len(candidates) > 1 and not yes:
        if not sys.stdin.isatty():
            raise fail(
                f"{len(candidates)} feeds found; pass --yes to take the first, or add one of their URLs"
            )
        number = 0
        while not 1 <= number <= len(candidates):
            number = typer.prompt(f"Which one (1-{len(candidates)})", type=int, default=1)
        chosen = candidates[number - 1]
    if (existing := configured_as(chosen.url, known)) is not None:
        raise fail(f"{redact_url(chosen.url)} is already configured as {existing!r}")
    source_name = (name or chosen.title or urlsplit(chosen.url).netloc or chosen.url).strip()
    for source in config.sources:
        if source_folder(source.name) == source_folder(source_name):
            raise fail(f"a source named {source.name!r} exists already (choose another with --name)")
    entry: dict[str, object] = {"name": source_name, "url": chosen.url}
    if categories:
        entry["categories"] = categories
    if interval:
        entry["interval"] = interval
    try:
        written = add_sources(state.config_path, [entry], _sources_file(to))
    except AggregatorError as error:
        raise fail(str(error)) from None
    placed = f"in {' / '.join(categories)}" if categories else "in no category (--category sets one)"
    typer.echo(
        f"added {source_name!r} {placed}: {redact_url(chosen.url)} ({chosen.title!r}, "
        f"{chosen.entries} entries) -> {written}"
    )


def _configured_urls(config: Config) -> dict[str, list[str]]:
    """Each source's URLs: the configured one, and the one it moved to when the index knows it."""
    known = {source.name: [config.source_location(source)] for source in config.sources}
    if config.index is not None or config.index_path.exists():  # never create an index just to look
        try:
            with open_store(config) as store:
                for learned in store.index.all_source_states():
                    if learned.permanent_url and learned.name in known:
                        known[learned.name].append(learned.permanent_url)
        except StoreError as error:
            logging.getLogger("aggregator.cli").warning("not checking the URLs sources moved to: %s", error)
    return known


def remove(name: Annotated[str, typer.Argument(help="The source's name.")]) -> None:
    """Remove a source from the config (its posts stay until pruned)."""
    from aggregator.sources import remove_source

    read_config()
    try:
        written = remove_source(state.config_path, name)
    except AggregatorError as error:
        raise fail(str(error)) from None
    typer.echo(f"removed {name!r} from {written}")


def import_opml(
    file: Annotated[Path, typer.Argument(help="An OPML file exported from a feed reader.")],
    category: Annotated[
        str | None, typer.Option(help="Put everything under this category path: a/b.")
    ] = None,
    to: Annotated[
        Path | None, typer.Option(help="Write into this file (a bare name: config/sources.d/NAME).")
    ] = None,
) -> None:
    """Add the OPML file's feeds as sources; its folders become categories."""
    from aggregator.publish.opml import import_entries, read_opml
    from aggregator.sources import add_sources

    config = read_config()
    prefix = [part.strip() for part in (category or "").split("/") if part.strip()]
    try:
        feeds = read_opml(file.read_bytes())
        entries, skipped = import_entries(
            feeds, [s.name for s in config.sources], [s.url for s in config.sources], prefix
        )
        written = add_sources(state.config_path, entries, _sources_file(to)) if entries else None
    except OSError as error:
        raise fail(f"{file}: cannot read: {error.strerror}") from None
    except AggregatorError as error:
        raise fail(f"{file}: {error}") from None
    for feed in skipped:
        typer.echo(f"skipped {feed.title!r}: {feed.url} is configured already")
    typer.echo(f"imported {len(entries)} sources" + (f" into {written}" if written else ""))


def export_opml(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print the configured sources as OPML, nested by category, for any feed reader."""
    from aggregator.publish.opml import write_opml

    config = read_config()
    data = write_opml(config.sources, config.site.title)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as error:
        raise fail(f"{output}: cannot write: {error.strerror}") from None
    typer.echo(f"wrote {len(config.sources)} sources to {output}")
