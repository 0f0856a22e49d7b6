"""``aggregator migrate-index URL``: move a data folder's SQLite index into PostgreSQL.

For a fleet (several daemons sharing one database): the SQLite index and state database under
``paths.data`` are copied, in one transaction, into an empty PostgreSQL database; then
``index: URL`` in the config makes every command use it. The post files stay where they are.
"""

from __future__ import annotations

from typing import Annotated

import typer

from aggregator.cli_context import fail, read_config, state
from aggregator.dburl import check_postgres_url
from aggregator.errors import AggregatorError


def migrate_index(
    url: Annotated[str, typer.Argument(help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, empty.")],
) -> None:
    """Copy the SQLite index and source states into an empty PostgreSQL database (for `index:`)."""
    config = read_config()
    try:
        url = check_postgres_url(url)
    except ValueError as error:
        raise fail(str(error)) from None
    from aggregator.index.postgres.copy import copy_sqlite_index  # psycopg only for this command

    try:
        report = copy_sqlite_index(config.index_path, config.state_path, url)
    except AggregatorError as error:
        raise fail(str(error)) from None
    typer.echo(report.line())
    typer.echo(f"to use it, set `index: {report.target}` (with its password) in {state.config_path}")
