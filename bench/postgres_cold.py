"""The cold cycle with the index in PostgreSQL: ``aggregator fetch`` into an empty store and database.

``python -m bench`` runs it right after the SQLite cold fetch, on the same corpus and server
(every feed answers 200 again: the server counts, it keeps no state per client). A throw-away
PostgreSQL server is started the way the tests start theirs (tests/support/postgres.py: fsync
off, which a real node would not have, so the row is the program's cost, not the disk's). The
server's CPU is not in the step's (it is no child of the step): it is read from the postmaster,
whose child times include every backend it reaped, and shown in the note.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.postgres import PostgresServer, start_server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PostgresCold:
    m: measure.Measurement
    server_cpu: float  # seconds of the PostgreSQL server's CPU during the step


@contextmanager
def postgres_database(keep: list[int]) -> Iterator[tuple[PostgresServer, str]]:
    """A server and an empty database on it.

    The driver is a child subreaper, so the daemonized postmaster becomes its child: it and
    the server's watchdog are added to ``keep`` (else the steps' orphan reaping kills them)
    and reaped here once stopped (else a later step would reap them, and count their CPU).
    """
    server = start_server()
    pid = postmaster_pid(server)
    # The server's watchdog (tests/support/postgres.py) is a child too, waited for by server.stop().
    ours = [pid] + ([server.watchdog.pid] if server.watchdog is not None else [])
    keep.extend(ours)
    try:
        yield server, server.create_database()
    finally:
        server.stop()
        for kept in ours:
            keep.remove(kept)
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)


def postmaster_pid(server: PostgresServer) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


def server_cpu(server: PostgresServer) -> float:
    """The postmaster's CPU and its reaped children's (every backend that ended), in seconds."""
    fields = Path(f"/proc/{postmaster_pid(server)}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def config_with_index(config: Path, run_dir: Path, url: str) -> Path:
    """The SQLite run's config with ``index: url``, its folders under ``run_dir`` (the same names)."""
    data = yaml.safe_load(config.read_text())
    data["index"] = url
    path = run_dir / "aggregator.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def cold_fetch(
    config: Path, run_dir: Path, fetch: Callable[[Path], measure.Measurement], keep: list[int]
) -> PostgresCold:
    """``fetch(config)`` (the driver's measured ``aggregator fetch --json``) on a PostgreSQL index."""
    with postgres_database(keep) as (server, url):
        pg_config = config_with_index(config, run_dir, url)
        before = server_cpu(server)
        m = fetch(pg_config)
        return PostgresCold(m, server_cpu(server) - before)
