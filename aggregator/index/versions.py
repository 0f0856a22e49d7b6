"""Schema versions of the two SQLite files (index and state database): one check, one upgrade step.

Each file records its version in a ``meta`` table; a program refuses a file newer than
it knows and upgrades an older one in a single transaction, so a crash leaves it old or new.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aggregator.errors import StoreError


def refuse_newer(version: int, known: int, path: Path, what: str, advice: str) -> None:
    """StoreError when ``path`` was written by a newer program than this one."""
    if version > known:
        raise StoreError(
            f"{path}: {what} schema version {version} is newer than this program understands "
            f"({known}); {advice}"
        )


def upgrade(db: sqlite3.Connection, steps: str, *, meta: str, version: int, failure: str) -> None:
    """Run ``steps`` and record ``version`` in the ``meta`` table, in one transaction."""
    try:
        db.executescript(
            f"BEGIN IMMEDIATE; {steps}; INSERT OR REPLACE INTO {meta} "
            f"VALUES ('schema_version', '{version}'); COMMIT;"
        )
    except sqlite3.Error as error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StoreError(f"{failure}: {error}") from error
