"""The parser pool: real worker processes, real time and memory limits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faultserver import HTML_WITH_FEED_LINKS, SAMPLE_RSS

from aggregator.errors import NotAFeed, ParseError
from aggregator.model import FeedData
from aggregator.workers import ParserPool


def slow_feed(items: int = 20000) -> bytes:
    """Huge and not well-formed (``&nbsp;`` is no XML entity): the lenient parser needs seconds."""
    body = "".join(
        f"<item><title>t{i}&nbsp;</title><guid>g{i}</guid><description>{'x' * 50}</description></item>"
        for i in range(items)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{body}</channel></rss>'.encode()


def memory_hog() -> bytes:
    text = "y" * (60 * 1024 * 1024)
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        f"<item><title>big</title><guid>b</guid><description>{text}</description></item>"
        "</channel></rss>"
    ).encode()


@pytest.fixture
def pool() -> Iterator[ParserPool]:
    parser_pool = ParserPool(2, seconds=1.0, memory=768 * 1024**2)
    yield parser_pool
    parser_pool.close()


def test_parses_in_worker_processes(pool: ParserPool) -> None:
    async def go() -> list[FeedData]:
        return list(
            await asyncio.gather(*(pool.parse(SAMPLE_RSS, {}, "http://127.0.0.1/") for _ in range(6)))
        )

    feeds = asyncio.run(go())
    assert all(f.entries[0].title == "Only post" for f in feeds)
    assert len({w.process.pid for w in pool._live}) == 2, "six parses shared two workers"


def test_not_a_feed_crosses_the_process_boundary_with_its_links(pool: ParserPool) -> None:
    with pytest.raises(NotAFeed) as caught:
        asyncio.run(pool.parse(HTML_WITH_FEED_LINKS, {"content-type": "text/html"}, "http://127.0.0.1/blog/"))
    assert caught.value.feed_links == ("http://127.0.0.1/feed.xml", "https://blog.example.org/atom.xml")


@pytest.mark.slow
def test_a_hostile_parse_times_out_alone_and_the_pool_recovers(pool: ParserPool) -> None:
    async def go() -> tuple[BaseException | FeedData, ...]:
        hostile = asyncio.create_task(pool.parse(slow_feed(), {}, "http://127.0.0.1/slow"))
        await asyncio.sleep(0.1)  # the hostile parse is running in one worker
        normal = [pool.parse(SAMPLE_RSS, {}, "http://127.0.0.1/ok") for _ in range(3)]
        return tuple(await asyncio.gather(hostile, *normal, return_exceptions=True))

    started = time.monotonic()
    hostile, *normal = asyncio.run(go())
    assert isinstance(hostile, ParseError) and "longer than 1s" in str(hostile)
    assert time.monotonic() - started < 6, "cut off after 1 s, not when the parse (seconds long) ends"
    assert all(isinstance(r, FeedData) for r in normal), "other parses were not taken down"
    assert pool.replaced == 1
    # The pool goes on with a fresh worker.
    assert asyncio.run(pool.parse(SAMPLE_RSS, {}, "http://127.0.0.1/")).entries


@pytest.mark.slow
def test_a_parse_over_the_memory_limit_fails_cleanly() -> None:
    pool = ParserPool(1, seconds=20, memory=250 * 1024**2)  # a worker starts at about 45 MB
    try:
        with pytest.raises(ParseError, match="memory"):
            asyncio.run(pool.parse(memory_hog(), {}, "http://127.0.0.1/big"))
        assert asyncio.run(pool.parse(SAMPLE_RSS, {}, "http://127.0.0.1/")).entries
    finally:
        pool.close()


def test_in_thread_mode_gives_the_same_answers() -> None:
    pool = ParserPool(0)
    assert asyncio.run(pool.parse(SAMPLE_RSS, {}, "http://127.0.0.1/")).entries[0].id == "fault-1"
    with pytest.raises(NotAFeed):
        asyncio.run(pool.parse(b"", {}, "http://127.0.0.1/"))


def test_close_ends_every_worker(pool: ParserPool) -> None:
    asyncio.run(pool.parse(SAMPLE_RSS, {}, "http://127.0.0.1/"))
    processes = [w.process for w in pool._live]
    assert processes and all(p.is_alive() for p in processes)
    pool.close()
    assert not any(p.is_alive() for p in processes)


def test_worker_processes_do_not_rerun_the_console_script(tmp_path: Path) -> None:
    """multiprocessing re-runs a main script known by path in each child; named, it is left alone."""
    script = tmp_path / "launcher.py"
    script.write_text(
        "import json, multiprocessing.spawn as spawn\n"
        "from aggregator import cli\n"
        "before = spawn.get_preparation_data('x')\n"
        "cli._run_as_package_main()\n"
        "after = spawn.get_preparation_data('x')\n"
        "keys = ('init_main_from_path', 'init_main_from_name')\n"
        "print(json.dumps([{k: d.get(k) for k in keys} for d in (before, after)]))\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    before, after = json.loads(result.stdout)
    assert before["init_main_from_path"] == str(script), "as the console script would be"
    assert after == {"init_main_from_path": None, "init_main_from_name": "aggregator.__main__"}
