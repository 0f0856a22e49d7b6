"""A real PostgreSQL server for the tests, started from the machine's server binaries.

Each pytest process (each xdist worker) starts its own server once per session: initdb
and pg_ctl take about a second together, and a server per worker needs no lock file and
leaves nothing shared behind when a worker dies. The server refuses to run as root, so
as root it runs as the ``postgres`` user, in a temporary folder that user owns, on
127.0.0.1 and a free port, with its unix socket in that folder. Durability is off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): a test database is thrown away.

A watchdog process stops the server and removes its folder once the process that started
it is gone, however it went: a SIGKILLed pytest runs neither its teardown nor ``atexit``. It
holds the read end of a pipe whose only write end the owner keeps; the owner's death closes
it, and the watchdog's read returns.

``postgres_url`` gives each test a fresh empty database (CREATE DATABASE from template0)
and its ``postgresql://`` URL. Without the binaries (``make test`` installs Debian's
``postgresql`` package when it can, see scripts/ensure-postgres.sh), tests that use these
fixtures are skipped and say why.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

DEBIAN_BINDIR = Path("/usr/lib/postgresql/15/bin")
SERVER_USER = "postgres"
START_SECONDS = 30
# A port chosen free can be taken by another process before the server binds it.
START_ATTEMPTS = 3
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


class PostgresUnavailable(Exception):
    """No server can be started here; the message says why (it becomes the skip reason)."""


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are: Debian's PostgreSQL 15, else ``pg_config --bindir``."""
    candidates = [DEBIAN_BINDIR]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            candidates.append(Path(found))
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresUnavailable(
        f"PostgreSQL server binaries not found in {DEBIAN_BINDIR} nor by pg_config "
        "(install Debian's postgresql package; `make test` does when it runs as root)"
    )


def _as_server_user(argv: Sequence[str]) -> list[str]:
    """``argv`` run as the postgres user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return list(argv)
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError as error:
        raise PostgresUnavailable(f"running as root and there is no {SERVER_USER!r} user") from error
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", SERVER_USER, "--", *argv]
    su = shutil.which("su")
    if su:
        return [su, SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]
    raise PostgresUnavailable("running as root and neither runuser nor su is there")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Run by the watchdog: wait for the owner's end of the pipe to close, then stop the server.
WATCHDOG = """
import os, shutil, subprocess, sys
fd, folder, data, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
while os.read(fd, 64):
    pass
if os.path.exists(os.path.join(data, "postmaster.pid")):
    subprocess.run(stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
shutil.rmtree(folder, ignore_errors=True)
"""


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder; ``url(db)`` connects to it as a superuser."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # As root the server runs as another user, who must reach the folder: a TMPDIR under
        # /root would not do, /tmp does (and keeps the socket's path short).
        parent = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        self.folder = Path(tempfile.mkdtemp(prefix="aggregator-pg-", dir=parent))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = 0
        self.started = False
        self._names = itertools.count(1)
        self.watchdog: subprocess.Popen[bytes] | None = None
        self._owner_end: int | None = None  # the pipe's write end: closed when this process ends
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o700)

    def _run(self, *argv: str, timeout: float = START_SECONDS + 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_server_user(argv), capture_output=True, text=True, timeout=timeout, cwd=self.folder
        )

    def start(self) -> PostgresServer:
        initdb = self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--no-sync",
        )
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.strip() or initdb.stdout.strip()}")
        for _attempt in range(START_ATTEMPTS):
            self.port = free_port()
            options = [f"-c {key}={value}" for key, value in SETTINGS.items()]
            options += [f"-p {self.port}", f"-k {self.folder}"]
            started = self._run(
                str(self.bindir / "pg_ctl"),
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--wait",
                "--timeout",
                str(START_SECONDS),
                "--options",
                " ".join(options),
                "start",
            )
            if started.returncode == 0:
                self.started = True
                self._watch()
                return self
        raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()}\n{self._log_tail()}")

    def _watch(self) -> None:
        """Start the watchdog that stops the server once this process is gone (see the module's doc)."""
        watched, self._owner_end = os.pipe()  # neither end is inherited by other children
        stop = _as_server_user(
            [str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "--mode", "immediate", "stop"]
        )
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG, str(watched), str(self.folder), str(self.data), *stop],
                pass_fds=(watched,),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a signal to our process group leaves it to do its work
            )
        finally:
            os.close(watched)

    def _unwatch(self) -> None:
        if self._owner_end is not None:
            os.close(self._owner_end)  # the watchdog wakes, finds the server stopped, and ends
            self._owner_end = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(30)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()
            self.watchdog = None

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server this object started (``-m fast``) and remove its folder."""
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "--mode", "fast", "stop")
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)
        self._unwatch()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str = "template0") -> str:
        """A new empty database; its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> PostgresServer:
    """Find the binaries and start a server, or raise :class:`PostgresUnavailable`."""
    server = PostgresServer(find_bindir())
    # Should the session's teardown never run (an interpreter exiting on an error), the
    # server still stops with the process that started it.
    atexit.register(server.stop)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This test process's PostgreSQL server (skips the test when none can be started)."""
    try:
        server = start_server()
    except PostgresUnavailable as error:
        pytest.skip(f"no PostgreSQL server: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for this test; dropped after it."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
