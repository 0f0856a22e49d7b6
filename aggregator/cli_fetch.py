"""``aggregator fetch``: poll sources once now and publish, or with ``--dry-run`` show what the filters keep.

The command and its printing: the progress bar on a terminal, the report table or its JSON, the
dry run's kept/dropped table. The flow itself is ``jobs.poll_and_publish``, the daemon's too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Annotated

import typer

from aggregator import jobs
from aggregator.cli_context import fail, read_config, stderr_console
from aggregator.config import Config, SourceConfig
from aggregator.errors import AggregatorError, StoreError
from aggregator.filters import Selection
from aggregator.pipeline import Updater, UpdateResult
from aggregator.store import PostStore, open_store

if TYPE_CHECKING:
    from aggregator.jobs import BatchReport


def fetch(
    sources: Annotated[list[str] | None, typer.Argument(help="Source names; all when none.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show which entries the filters keep or drop, and why; save nothing."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Also poll sources waiting out a backoff or a Retry-After, and gone ones."
        ),
    ] = False,
) -> None:
    """Poll sources once now, then rebuild the affected feeds.

    The interval is ignored, but a source waiting out a backoff or a server's
    Retry-After is skipped (and listed) unless --force is given or it is named.
    """
    config = read_config()
    try:
        selected = [config.source_named(name) for name in sources] if sources else list(config.sources)
        if dry_run:
            with open_store(config) as store:
                previews = asyncio.run(_preview_all(config, store, selected))
            _print_dry_run(previews, as_json)
            return
        with open_store(config) as store:
            # A gone source (HTTP 410), or one waiting out a backoff or a Retry-After, is polled
            # only when forced; naming a source forces it.
            # The progress bar only on a terminal: a pipe or a log file gets the summary alone.
            show_progress = not as_json and sys.stderr.isatty()
            forced = force or bool(sources)
            batch = asyncio.run(
                _poll_and_publish(config, store, selected, force=forced, progress=show_progress)
            )
    except AggregatorError as error:
        raise fail(str(error)) from None
    _print_fetch_report(list(batch.results), batch.feeds_written, as_json)
    raise typer.Exit(1 if batch.all_failed else 0)


async def _poll_and_publish(
    config: Config, store: PostStore, sources: Sequence[SourceConfig], *, force: bool, progress: bool = False
) -> BatchReport:
    """``jobs.poll_and_publish``, with the progress bar (when drawn) as its per-source callback."""
    if not progress:
        return await jobs.poll_and_publish(config, store, sources, force=force)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("fetching"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
    ) as bar:
        task = bar.add_task("fetch", total=len(sources))

        def advance(_: UpdateResult) -> None:
            bar.advance(task)
            if bar.finished:
                bar.stop()  # the bar is about fetching: it stops with the last source, not the build

        return await jobs.poll_and_publish(config, store, sources, force=force, on_result=advance)


async def _preview_all(
    config: Config, store: PostStore, sources: Sequence[SourceConfig]
) -> list[tuple[SourceConfig, Selection | AggregatorError]]:
    updater = Updater(config, store)
    previews: list[tuple[SourceConfig, Selection | AggregatorError]] = []
    try:
        for source in sources:
            try:
                previews.append((source, await updater.preview(source)))
            except StoreError:
                raise
            except AggregatorError as error:
                previews.append((source, error))
    finally:
        await updater.aclose()
    return previews


def _print_dry_run(previews: list[tuple[SourceConfig, Selection | AggregatorError]], as_json: bool) -> None:
    if as_json:
        report = [
            {"source": source.name, "error": str(outcome)}
            if isinstance(outcome, AggregatorError)
            else {
                "source": source.name,
                "error": None,
                "entries": [
                    {
                        "title": d.post.title,
                        "link": d.post.link,
                        "date": d.post.date.isoformat(),
                        "kept": d.kept,
                        "categories": list(d.post.categories),
                        "reasons": list(d.reasons),
                    }
                    for d in outcome.decisions
                ],
            }
            for source, outcome in previews
        ]
        typer.echo(json.dumps({"dry_run": True, "sources": report}, ensure_ascii=False, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = Console(width=max(Console().width, 160))
    for source, outcome in previews:
        if isinstance(outcome, AggregatorError):
            out.print(f"{source.name}: error: {outcome}", markup=False, highlight=False)
            continue
        table = Table(title=f"{source.name} (dry run: nothing saved)")
        for column in ("", "date", "title", "why"):
            table.add_column(column)
        for d in outcome.decisions:
            why = "; ".join(d.reasons) or "kept: no filter applies"
            table.add_row(
                "kept" if d.kept else "dropped",
                f"{d.post.date:%Y-%m-%d %H:%M}",
                Text(d.post.title),
                Text(why),
            )
        out.print(table)
        kept = len(outcome.kept)
        out.print(f"{source.name}: {kept} kept, {len(outcome.decisions) - kept} dropped", highlight=False)


def _print_fetch_report(results: list[UpdateResult], feeds_built: int, as_json: bool) -> None:
    if as_json:
        # One source a line, each dumped by json's C encoder (indent= runs the pure-Python one,
        # 15 ms for 1,000 sources).
        sources = ",\n".join(
            " "
            + json.dumps(
                {
                    "name": r.source,
                    "outcome": r.outcome,
                    "new": r.new,
                    "updated": r.updated,
                    "error": str(r.error) if r.error else None,
                    "skipped": r.skipped,
                    "until": r.held_until.astimezone(UTC).isoformat() if r.held_until else None,
                    "duration": round(r.duration, 3),
                },
                ensure_ascii=False,
            )
            for r in results
        )
        listed = f"[\n{sources}\n]" if sources else "[]"
        typer.echo(f'{{"sources": {listed}, "feeds_built": {feeds_built}}}')
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title="fetch")
    for column in ("source", "outcome", "new", "updated", "detail"):
        table.add_column(column)
    for r in sorted(results, key=lambda r: (r.outcome == "ok", r.source)):
        table.add_row(r.source, r.outcome, str(r.new), str(r.updated), _fetch_detail(r))
    out.print(table)
    ok = sum(1 for r in results if r.outcome in ("ok", "not-modified"))
    skipped = sum(1 for r in results if r.skipped)
    out.print(
        f"{ok} ok ({sum(r.not_modified for r in results)} not modified), "
        f"{len(results) - ok - skipped} not ok"
        + (f", {skipped} skipped" if skipped else "")
        + f"; {sum(r.new for r in results)} new and "
        f"{sum(r.updated for r in results)} updated posts; {feeds_built} feeds rebuilt"
    )
    if any(r.held_until for r in results):
        out.print("skipped sources wait out a backoff or a Retry-After; --force (or naming them) polls them")


def _fetch_detail(result: UpdateResult) -> str:
    """The report's detail column: the error, or why and until when the source was skipped."""
    if result.held_until is not None:
        return f"until {result.held_until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({result.skipped})"
    return str(result.error or result.skipped or "")
