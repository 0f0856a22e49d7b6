"""The daemon's write-behind buffer of source states, over a real SQLite index.

A saved state is held and read back from the buffer; the held states reach the
index in one transaction once the time or count bound is reached, or on a flush.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.index.sqlite import SqliteIndex
from aggregator.state import SourceState
from aggregator.writebehind import FlushBound, StateWriteBehind, flush_due

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqliteIndex]:
    (tmp_path / "data").mkdir()
    opened = SqliteIndex(tmp_path / "data" / "index.sqlite3", tmp_path / "data" / "state.sqlite3")
    try:
        yield opened
    finally:
        opened.close()


def commits(index: SqliteIndex) -> list[str]:
    statements: list[str] = []
    index.db.set_trace_callback(statements.append)
    return statements


def test_states_are_due_by_count_or_by_the_oldest_ones_age() -> None:
    bound = FlushBound(seconds=1.0, states=3)
    assert not flush_due(0, 5.0, bound)  # nothing held: nothing to write, however long ago
    assert not flush_due(2, 0.5, bound)
    assert flush_due(3, 0.0, bound)
    assert flush_due(1, 1.0, bound)


def test_a_held_state_is_read_back_and_the_group_is_written_in_one_transaction(index: SqliteIndex) -> None:
    async def scenario() -> None:
        buffer = StateWriteBehind(index, FlushBound(seconds=60, states=100))
        index.save_source_state(SourceState(name="a", etag='"stored"'))
        statements = commits(index)
        for n in range(5):
            buffer.save_source_state(SourceState(name=f"s{n}", etag=f'"{n}"', last_success=NOW))
        buffer.save_source_state(SourceState(name="a", etag='"held"'))
        assert statements.count("COMMIT") == 0 and buffer.held == 6
        # The buffer answers with what it holds; the index has not seen it yet.
        assert buffer.source_state("a").etag == '"held"' and index.source_state("a").etag == '"stored"'
        assert buffer.source_state("s3").last_success == NOW
        assert buffer.source_state("never").etag is None  # neither held nor stored: a blank state
        buffer.flush()
        assert statements.count("COMMIT") == 1 and buffer.held == 0
        assert index.source_state("a").etag == '"held"' and index.source_state("s4").etag == '"4"'
        buffer.flush()  # nothing held: no transaction
        assert statements.count("COMMIT") == 1

    asyncio.run(scenario())


def test_held_states_are_written_within_the_time_bound_and_at_the_count_bound(index: SqliteIndex) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        buffer = StateWriteBehind(index, FlushBound(seconds=0.2, states=3))
        statements = commits(index)
        buffer.save_source_state(SourceState(name="t", etag='"1"'))
        saved = loop.time()
        deadline = saved + 10
        while index.source_state("t").etag != '"1"':  # the timer's write, nothing else saves
            assert loop.time() < deadline, "the held state was never written"
            await asyncio.sleep(0.02)
        assert loop.time() - saved >= 0.2 - 0.01  # not before its bound, either
        assert buffer.held == 0 and statements.count("COMMIT") == 1
        for n in range(3):  # the third reaches the count bound: written at once, in one commit
            buffer.save_source_state(SourceState(name=f"c{n}", etag=f'"{n}"'))
        assert buffer.held == 0 and statements.count("COMMIT") == 2
        assert index.source_state("c2").etag == '"2"'

    asyncio.run(scenario())


def test_outside_an_event_loop_a_save_is_written_at_once(index: SqliteIndex) -> None:
    buffer = StateWriteBehind(index)
    buffer.save_source_state(SourceState(name="cli", etag='"x"'))
    assert buffer.held == 0 and index.source_state("cli").etag == '"x"'


def test_states_are_read_once_until_another_process_writes_one(index: SqliteIndex) -> None:
    async def scenario() -> None:
        buffer = StateWriteBehind(index, FlushBound(seconds=60, states=100))
        index.save_source_state(SourceState(name="a", etag='"1"'))
        statements = commits(index)

        def reads() -> int:
            return sum("FROM state.sources WHERE name" in q for q in statements)

        assert buffer.source_state("a").etag == '"1"' and reads() == 1
        assert buffer.source_state("a").etag == '"1"' and reads() == 1  # kept
        buffer.save_source_state(SourceState(name="a", etag='"2"'))
        buffer.flush()
        assert buffer.source_state("a").etag == '"2"' and reads() == 1  # what it wrote itself
        # A one-shot fetch (another connection) writes a state: the buffer reads again.
        other = sqlite3.connect(index.state_path)
        try:
            with other:
                other.execute(
                    """UPDATE sources SET state='{"name": "a", "etag": "\\"3\\""}' WHERE name='a'"""
                )
        finally:
            other.close()
        assert buffer.source_state("a").etag == '"3"' and reads() == 2

    asyncio.run(scenario())
