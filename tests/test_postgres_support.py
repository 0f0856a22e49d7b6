"""The test PostgreSQL server: it runs, each test gets its own empty database, and it skips cleanly."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from support import postgres
from support.postgres import PostgresServer, PostgresUnavailable

pytestmark = pytest.mark.postgres


def test_each_test_gets_an_empty_database_of_its_own(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE mine (id int)")
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert conn.execute("SHOW full_page_writes").fetchone() == ("off",)
    other = postgres_server.create_database()
    try:
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT to_regclass('mine')").fetchone() == (None,)
    finally:
        postgres_server.drop_database(other)


def test_the_server_listens_on_loopback_with_its_socket_in_its_own_folder(
    postgres_server: PostgresServer,
) -> None:
    assert postgres_server.url().startswith("postgresql://postgres@127.0.0.1:")
    assert (postgres_server.folder / f".s.PGSQL.{postgres_server.port}").exists()
    with psycopg.connect(
        host=str(postgres_server.folder), port=postgres_server.port, user="postgres"
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_binaries_give_a_reason_to_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(postgres, "DEBIAN_BINDIR", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match="server binaries not found"):
        postgres.find_bindir()


OWNER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from support.postgres import start_server
server = start_server()
print(server.port, server.folder, flush=True)
time.sleep(600)  # killed by the test long before
"""


def _accepts(port: int) -> bool:
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def test_the_server_stops_when_the_process_that_started_it_is_killed() -> None:
    """A SIGKILLed pytest runs no teardown and no atexit: its server must not outlive it."""
    import signal
    import subprocess
    import sys

    from support.helpers import wait_for

    tests = str(Path(__file__).resolve().parent)
    owner = subprocess.Popen([sys.executable, "-c", OWNER, tests], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        if not line:
            pytest.skip("no PostgreSQL server could be started")
        port, folder = int(line[0]), Path(line[1])
        assert _accepts(port)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        wait_for(lambda: not _accepts(port), 20, what="the orphaned server stopped")
        wait_for(lambda: not folder.exists(), 10, what="its folder removed")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
