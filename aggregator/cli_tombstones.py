"""``aggregator tombstones``: list the entries kept from being published again, and lift them.

A tombstone is left by a post file deleted by hand or a post retention pruned; ``restore`` lets
the next fetch write the entry again.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aggregator.cli_context import fail, read_config
from aggregator.errors import AggregatorError
from aggregator.store import open_store

tombstones_app = typer.Typer(
    help="Entries kept from being published again: post files deleted by hand, posts retention pruned."
)


@tombstones_app.callback(invoke_without_command=True)
def tombstones(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option("--source", help="Only this source's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tombstones, newest first (`tombstones restore SOURCE ID...` lifts them)."""
    if ctx.invoked_subcommand is not None:
        return
    config = read_config()
    try:
        with open_store(config) as store:
            found = store.index.tombstones(source)
    except AggregatorError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps([t.to_json() for t in found], ensure_ascii=False, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="tombstones")
    for column in ("source", "id", "title", "removed", "reason"):
        table.add_column(column)
    for t in found:
        table.add_row(t.source, Text(t.entry_id), Text(t.title), f"{t.removed:%Y-%m-%d %H:%M:%S}", t.reason)
    Console(width=max(Console().width, 160)).print(table)
    typer.echo(f"{len(found)} tombstones")


@tombstones_app.command("restore")
def restore_tombstones(
    source: Annotated[str, typer.Argument(help="The source's name.")],
    ids: Annotated[list[str], typer.Argument(help="Entry ids, as `aggregator tombstones` lists them.")],
) -> None:
    """Lift tombstones: the next fetch of the source writes those entries again if upstream has them."""
    config = read_config()
    try:
        with open_store(config) as store:
            known = {t.entry_id for t in store.index.tombstones(source)}
            unknown = [entry_id for entry_id in ids if entry_id not in known]
            if unknown:
                raise fail(", ".join(f"no tombstone for {source}/{entry_id}" for entry_id in unknown))
            lifted = store.index.restore_tombstones(source, ids)
    except AggregatorError as error:
        raise fail(str(error)) from None
    one = len(lifted) == 1
    typer.echo(
        f"restored {len(lifted)} {'entry' if one else 'entries'} of {source}: the next fetch of {source} "
        f"reads its whole feed and writes {'it' if one else 'them'} again if upstream still has "
        f"{'it' if one else 'them'}"
    )
    if any(t.reason == "retention" for t in lifted):
        typer.echo("note: retention prunes them again while they are beyond its limits")
