"""The dashboard of a fleet: two real ``aggregator run`` nodes on one PostgreSQL index.

Both nodes read the shared database, so each one's pages list every source and every post,
whichever node polled it; a source being polled says on which node. One loopback corpus
serves the feeds, and holds one source's answer until the test lets it go, so its lease is
seen while it runs. The browser test drives headless Chromium (skipped, with the reason,
where it is missing), on the browser tests' worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import chromium, missing_reason, visit
from support.corpus import CorpusServer
from support.helpers import REPO, free_port, wait_for, write_config
from support.postgres import PostgresServer
from support.servers import AppServer

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("browser")]

NAMES = ["news", "blog", "slow"]
SLOW = "/feeds/slow.xml"
_TIMES = re.compile(r"<time [^>]*>[^<]*</time>")


class Node:
    """``python -m aggregator -c CONFIG run --port PORT`` (one config for every node)."""

    def __init__(self, config: Path) -> None:
        self.port = free_port()
        self.log_path = config.parent / f"node-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "-c", str(config), "run", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def get(self, path: str) -> httpx.Response:
        assert self.process.poll() is None, f"node exited {self.process.returncode}:\n{self.log()}"
        return httpx.get(self.url(path), timeout=10)

    def sources(self) -> dict[str, dict[str, Any]]:
        """This node's /status.json rows by source name."""
        return {row["name"]: row for row in self.get("status.json").json()["sources"]}

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 25) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


@dataclass
class Fleet:
    corpus: CorpusServer
    nodes: list[Node]
    ids: list[str]  # each node's id, as its /healthz says


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Fleet]:
    url = postgres_server.create_database()
    app = CorpusServer(NAMES, entries=3)
    app.slow[SLOW] = 120  # held until the test lets it go (``halt``)
    nodes: list[Node] = []
    try:
        with AppServer(app) as corpus:
            config = write_config(
                tmp_path_factory.mktemp("fleet"),
                [
                    {"name": name, "url": corpus.url(f"feeds/{name}.xml"), "categories": ["Fleet", name]}
                    for name in NAMES
                ],
                index=url,
                fleet={"lease": "40s"},
                defaults={"interval": "30m", "deadline": "30s", "timeout": "30s", "fsync": "off"},
            )
            nodes.extend(Node(config) for _ in range(2))
            ids = [
                wait_for(lambda n=n: n.get("healthz").json().get("node"), 30, what="healthz") for n in nodes
            ]
            yield Fleet(app, nodes, ids)
            app.halt.set()
            for node in nodes:
                assert node.stop() == 0, node.log()
    finally:
        app.halt.set()
        for node in nodes:
            node.stop(signal.SIGKILL, timeout=10)
        postgres_server.drop_database(url)


def test_every_node_shows_every_source_and_post_and_who_polls_a_source(fleet: Fleet) -> None:
    first, second = fleet.nodes

    def polled_and_held() -> bool:
        rows = first.sources()
        return (
            rows["news"]["health"] == rows["blog"]["health"] == "ok" and rows["slow"]["polled_by"] is not None
        )

    wait_for(polled_and_held, 40, what="news and blog polled, slow's lease held")
    shown = [node.sources() for node in (first, second)]
    for rows in shown:
        assert sorted(rows) == sorted(NAMES)
        assert [rows[name]["health"] for name in NAMES] == ["ok", "ok", "new"]
        assert rows["slow"]["polled_by"] in fleet.ids and rows["news"]["polled_by"] is None
    assert shown[0]["slow"]["polled_by"] == shown[1]["slow"]["polled_by"]
    for name in ("news", "blog"):  # the same state, read from the one database
        assert shown[0][name] == shown[1][name]
        assert shown[0][name]["last_success"] is not None and shown[0][name]["http_status"] == 200
    status = second.get("status").text
    assert status.count("polling now on") == 1 and f"<code>{shown[1]['slow']['polled_by']}</code>" in status

    # Every post on either node's home page, whichever node polled its source.
    wait_for(lambda: "news entry 0" in first.get("").text and "blog entry 2" in first.get("").text, 20)
    homes = [_TIMES.sub("<time>", node.get("").text) for node in (first, second)]
    assert homes[0] == homes[1] and homes[0].count('class="post"') >= 6

    fleet.corpus.halt.set()  # the slow source answers: its lease is handed back
    wait_for(lambda: second.sources()["slow"]["health"] == "ok", 40, what="slow polled")
    assert second.sources()["slow"]["polled_by"] is None and first.sources()["slow"]["health"] == "ok"


def test_a_fleet_nodes_status_page_in_a_browser(fleet: Fleet) -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    node = fleet.nodes[1]
    wait_for(lambda: node.sources()["news"]["health"] == "ok", 40, what="news polled")
    with chromium() as browser, visit(browser, node.url("status")) as seen:
        assert seen.response.status == 200 and seen.errors == [] and seen.failed == []
        assert all(url.startswith(node.url()) for _kind, url in seen.network_requests())
        names = seen.page.eval_on_selector_all(
            "#sources tr .source-name", "cells => cells.map(c => c.innerText.trim())"
        )
        assert sorted(names) == sorted(NAMES)
        summary = seen.page.inner_text("#summary")
        assert summary.startswith("3 sources:") and "ok" in summary
