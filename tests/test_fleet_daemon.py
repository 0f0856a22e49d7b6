"""Several real ``aggregator run`` processes as one fleet: one PostgreSQL database, one config,
shared posts and feeds folders, one loopback corpus server that records every request.

The nodes run on one machine, each on its own port (``run --port``). Intervals and leases are
short (2 s polls; a lease of ``defaults.deadline`` + 10 s, the shortest the fleet allows), so
the whole file runs in well under a minute.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from support.corpus import CorpusServer, Visit, corpus_feed
from support.helpers import REPO, free_port, run_cli, wait_for, write_config
from support.servers import AppServer

from aggregator.fleet.plan import fleet_timing
from aggregator.index.fleet.buildlock import BUILD_LOCK_KEY
from aggregator.index.fleet.startlock import STARTUP_LOCK_KEY

INTERVAL = 2.0
DEADLINE = 2.0
PER_HOST = 2
# The lease the nodes use (fleet_timing stretches the configured 3 s past the deadline).
LEASE = fleet_timing(3.0, 1.0, DEADLINE).lease


class Node:
    """``python -m aggregator -c CONFIG run --port PORT``, its output in a log file."""

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

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def health(self) -> dict[str, Any]:
        assert self.process.poll() is None, f"node exited {self.process.returncode}:\n{self.log()}"
        data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).json()
        return data

    def healthy(self) -> bool:
        return bool(self.health()["ok"])

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


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop(signal.SIGKILL, timeout=10)


def fleet_config(directory: Path, url: str, corpus: AppServer, names: list[str], **defaults: Any) -> Path:
    return write_config(
        directory,
        [{"name": name, "url": corpus.url(f"feeds/{name}.xml")} for name in names],
        index=url,
        fleet={"lease": "3s", "heartbeat": "1s"},
        defaults={
            "interval": f"{INTERVAL:g}s",
            "deadline": f"{DEADLINE:g}s",
            "timeout": "2s",
            "per_host": PER_HOST,
            "concurrency": 4,
            "fsync": "off",
        }
        | defaults,
        logging={"level": "debug"},
    )


def post_files(config: Path) -> list[Path]:
    return [p for p in (config.parent / "posts").rglob("*") if p.is_file() and not p.name.endswith(".aggtmp")]


def gaps(visits: list[Visit]) -> list[float]:
    """Seconds between the starts of consecutive polls of one source."""
    return [later.start - earlier.start for earlier, later in itertools.pairwise(visits)]


def lease_holder(url: str, source: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT lease_node FROM fleet_sources WHERE source = %s", (source,)).fetchone()
    return None if row is None else row[0]


def leases_of(url: str, node_id: str) -> int:
    """The leases ``node_id`` holds once any change of them under way has committed (FOR UPDATE waits)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM fleet_sources WHERE lease_node = %s FOR UPDATE) AS held",
            (node_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def frozen_with_a_lease(nodes: list[Node], url: str) -> Node | None:
    """A node stopped (SIGSTOP) while it holds a source lease; the others are left running.

    Frozen, it neither completes its polls nor beats its heart: from that moment it is a dead
    node to the fleet, and the lease it holds can only come back when it runs out.
    """
    for node in nodes:
        node_id = node.health()["node"]
        if node.health()["leases_in_flight"] == 0:
            continue
        node.process.send_signal(signal.SIGSTOP)
        if leases_of(url, node_id) > 0:
            return node
        node.process.send_signal(signal.SIGCONT)  # its poll ended before the stop: try again
    return None


def node_of(nodes: list[Node], node_id: str) -> Node:
    return next(node for node in nodes if node.health()["node"] == node_id)


def test_a_fleet_polls_each_source_once_per_interval_within_the_host_limit_and_outlives_a_killed_node(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    names = [f"s{i}" for i in range(8)]
    app = CorpusServer(names, entries=3, delay=0.2)
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, names)
        nodes.extend(Node(config) for _ in range(3))
        for node in nodes:
            wait_for(node.healthy, 30, what="node healthy")
        # Every source polled at least four times: three intervals of steady polling.
        wait_for(lambda: all(len(app.visits_of(f"/feeds/{n}.xml")) >= 4 for n in names), 30, what="polls")
        steady = {n: app.visits_of(f"/feeds/{n}.xml") for n in names}

        # Kill a node while it holds a lease: frozen first, so that the lease seen in the database
        # is still held when the kill lands (a poll seen in flight on /healthz may have ended by then).
        victim = wait_for(lambda: frozen_with_a_lease(nodes, postgres_url), 10, what="a node with a lease")
        killed_at = time.monotonic()
        victim.stop(signal.SIGKILL)
        survivors = [n for n in nodes if n is not victim]
        # Every source is polled again after the kill, within a lease and an interval of it.
        wait_for(
            lambda: all(
                any(v.start > killed_at + 0.5 for v in app.visits_of(f"/feeds/{n}.xml")) for n in names
            ),
            LEASE + INTERVAL + 5,
            what="every source polled after the kill",
        )
        after = {n: [v for v in app.visits_of(f"/feeds/{n}.xml") if v.start > killed_at] for n in names}
        taken_over = max(vs[0].start - killed_at for vs in after.values() if vs)
        # status --fleet: the survivors alive (on their own ports), the killed node gone.
        shown = run_cli("status", "--fleet", "--json", config=config)
        assert shown.returncode == 0, shown.stderr
        fleet = {entry["port"]: entry["alive"] for entry in json.loads(shown.stdout)}
        for node in survivors:
            assert node.stop() == 0, node.log()

    # Never two polls of one source at once, across the fleet.
    assert app.overlaps() == {}
    # Each source once per interval: no two polls closer than most of an interval (the first
    # poll after the start may be moved to spread the sources), none later than a tick or two.
    for name, visits in steady.items():
        later = gaps(visits)[1:]
        assert later, name
        assert min(later) >= INTERVAL * 0.75, (name, later)
        assert max(later) <= INTERVAL + 2.5, (name, later)  # a claim tick, and a loaded machine
    # The killed node's sources came back within a lease and an interval, not at once.
    assert INTERVAL + 2.5 < taken_over <= LEASE + INTERVAL + 4, taken_over
    assert fleet == {victim.port: False} | {node.port: True for node in survivors}, fleet
    # The per-host limit held across all three nodes (each alone may have PER_HOST in flight).
    assert app.peak["127.0.0.1"] <= PER_HOST, app.peak
    # One post file per entry: none lost, none written twice; the index agrees with the files.
    assert len(post_files(config)) == len(names) * 3
    verified = run_cli("verify", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_sigterm_hands_the_nodes_leases_back_at_once(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    names = ["slow", "a", "b"]
    app = CorpusServer(names, entries=2)
    # The slow source's answer outlasts the stop deadline (10 s): its run is cancelled, and
    # its lease would last another DEADLINE + 10 s unless the node hands it back.
    deadline = 30.0
    app.slow["/feeds/slow.xml"] = deadline
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, names, deadline=f"{deadline:g}s", timeout="30s")
        lease = fleet_timing(3.0, 1.0, deadline).lease
        nodes.extend(Node(config) for _ in range(2))
        for node in nodes:
            wait_for(node.healthy, 30, what="node healthy")
        wait_for(lambda: app.arrivals("/feeds/slow.xml") == 1, 20, what="the slow poll under way")
        holder = wait_for(lambda: lease_holder(postgres_url, "slow"), 5, what="the slow source's lease")
        assert holder is not None
        stopping = node_of(nodes, holder)
        other_id = next(n.health()["node"] for n in nodes if n is not stopping)
        stopped_at = time.monotonic()
        assert stopping.stop(signal.SIGTERM) == 0, stopping.log()
        # The other node polls the slow source right after the stop, long before the lease runs out.
        wait_for(lambda: app.arrivals("/feeds/slow.xml") == 2, 20, what="the slow source polled again")
        again = time.monotonic() - stopped_at
        other = next(n for n in nodes if n is not stopping)
        assert other.health()["ok"]
        metrics = httpx.get(f"http://127.0.0.1:{other.port}/metrics", timeout=5).text
        app.halt.set()
    assert again < lease - 5, (again, lease)
    assert "leases handed back" in stopping.log()
    # The other node's metrics carry its id, as every node's do.
    node_label = f'node="{other_id}"'
    assert f"aggregator_sources{{{node_label}}} 3.0" in metrics, metrics


def test_a_retry_after_given_to_one_node_holds_for_the_whole_fleet(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    names = ["a", "b", "c", "d"]
    app = CorpusServer(names, entries=1)
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, names)
        nodes.extend(Node(config) for _ in range(2))
        for node in nodes:
            wait_for(node.healthy, 30, what="node healthy")
        wait_for(lambda: all(app.arrivals(f"/feeds/{n}.xml") >= 2 for n in names), 20, what="steady polls")
        app.refuse["/feeds/a.xml"] = 4  # honoured as a minute (the least Retry-After taken)
        wait_for(lambda: "/feeds/a.xml" not in app.refuse, 10, what="the 429 sent")
        refused_at = time.monotonic()
        # Every other source comes due and is held back by the host's wait, whichever node has it.
        wait_for(
            lambda: all(
                any(f"source={name} outcome=rate-limited" in n.log() for n in nodes) for name in "bcd"
            ),
            2 * INTERVAL + 5,
            what="the other sources held back",
        )
        held = sum(n.log().count("asked the fleet to wait") for n in nodes)
    # No node asked the host for anything while it had asked to be left alone (a request
    # already under way when the 429 came may end: a margin of half a second).
    asked = [v for v in app.all_visits() if refused_at + 0.5 < v.start]
    assert asked == [], asked
    assert held >= 3


def test_a_source_added_to_the_shared_config_is_polled_by_one_node(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    names = ["a", "b", "new"]
    app = CorpusServer(names, entries=2)
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, names[:2])
        nodes.extend(Node(config) for _ in range(2))
        for node in nodes:
            wait_for(node.healthy, 30, what="node healthy")
        wait_for(lambda: app.arrivals("/feeds/a.xml") >= 1, 20, what="the first polls")
        assert app.arrivals("/feeds/new.xml") == 0
        # Both nodes read the same file: each reloads it and registers the new source.
        fleet_config(tmp_path, postgres_url, corpus, names)
        wait_for(lambda: app.arrivals("/feeds/new.xml") >= 3, 20, what="the new source polled")
        for node in nodes:
            assert node.stop() == 0, node.log()
    assert app.overlaps() == {}
    assert len([p for p in post_files(config) if "new" in str(p)]) == 2


def test_a_node_joining_a_running_fleet_leaves_other_writers_temporary_files_alone(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    app = CorpusServer(["a"], entries=1)
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, ["a"])
        first = Node(config)
        nodes.append(first)
        wait_for(first.healthy, 30, what="first node healthy")
        # A write under way on another machine: its pid means nothing here (no such process).
        in_flight = tmp_path / "posts" / "a" / ".entry.md.4194303.0badcafe.aggtmp"
        in_flight.parent.mkdir(parents=True, exist_ok=True)
        in_flight.write_bytes(b"half a post")
        second = Node(config)
        nodes.append(second)
        wait_for(second.healthy, 30, what="second node healthy")
        assert "start-up sync with the post files is skipped" in second.log()
        assert in_flight.exists()
        assert "start-up sync" not in first.log()


def pending_keys(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM pending_feeds")}


def test_keys_left_pending_by_a_node_that_stopped_while_another_held_the_build_lock_are_built(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    names = ["a", "b"]
    app = CorpusServer(names, entries=2)
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, names)
        nodes.extend(Node(config) for _ in range(2))
        for node in nodes:
            wait_for(node.healthy, 30, what="node healthy")
        wait_for(lambda: all(app.arrivals(f"/feeds/{n}.xml") >= 2 for n in names), 20, what="steady polls")
        wait_for(lambda: not pending_keys(postgres_url), 10, what="the first feeds built")
        # A build under way elsewhere: the lock is held (this connection stands for its node).
        with psycopg.connect(postgres_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (BUILD_LOCK_KEY,))
            app.bodies["/feeds/a.xml"] = corpus_feed("a", 3)  # a new entry: a's feeds become pending
            wait_for(lambda: pending_keys(postgres_url), 10, what="a's new post saved, its feeds pending")
            poller = wait_for(
                lambda: next(
                    (n for n in nodes if "source=a outcome=ok" in n.log() and "new=1" in n.log()), None
                ),
                10,
                what="the node that saved a's new post",
            )
            assert poller is not None
            # It stops while the lock is held: its last build cannot run, its keys stay in the index.
            assert poller.stop() == 0, poller.log()
            left = pending_keys(postgres_url)
            assert left, "the stopping node built its keys although the lock was held"
            holder.execute("SELECT pg_advisory_unlock(%s)", (BUILD_LOCK_KEY,))
        # The other node has nothing of its own to build (its polls are 304s), yet builds them.
        survivor = next(n for n in nodes if n is not poller)
        wait_for(lambda: not pending_keys(postgres_url), 15, what=f"the keys {left} built by the survivor")
        assert survivor.healthy()
    built = (tmp_path / "feeds" / "source" / "a" / "rss.xml").read_text(encoding="utf-8")
    assert "a entry 2" in built


def waiting_for_lock(url: str, key: int) -> bool:
    """Whether some session waits for the session advisory lock ``key`` (pg_locks splits it in two)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (key,),
        ).fetchone()
    return bool(row and row[0])


def test_a_node_starting_while_another_syncs_joins_and_polls_only_after_that_sync(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    """Two nodes starting at once: the first through the start-up lock may find itself alone and
    sync with the post files; the second must not join (and count it as not alone) or write
    posts meanwhile, or the sync takes its new posts for posts deleted by hand."""
    app = CorpusServer(["a", "b"], entries=1)
    with AppServer(app) as corpus:
        config = fleet_config(tmp_path, postgres_url, corpus, ["a", "b"])
        with psycopg.connect(postgres_url, autocommit=True) as syncing:  # stands for a node in its sync
            syncing.execute("SELECT pg_advisory_lock(%s)", (STARTUP_LOCK_KEY,))
            node = Node(config)
            nodes.append(node)
            wait_for(lambda: waiting_for_lock(postgres_url, STARTUP_LOCK_KEY), 30, what="the node waiting")
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                joined = conn.execute("SELECT count(*) FROM fleet_nodes").fetchone()
            assert joined == (0,)
            assert app.all_visits() == []
            syncing.execute("SELECT pg_advisory_unlock(%s)", (STARTUP_LOCK_KEY,))
        wait_for(node.healthy, 30, what="node healthy")
        wait_for(lambda: app.arrivals("/feeds/a.xml") >= 1, 20, what="the first poll")
        # Alone once through the lock: it syncs.
        assert "start-up sync with the post files is skipped" not in node.log()


def stored_attempt(url: str, source: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state::jsonb->>'last_attempt' FROM source_states WHERE name = %s", (source,)
        ).fetchone()
    return None if row is None else row[0]


def test_a_node_that_lost_its_lease_mid_poll_leaves_the_new_holders_state_alone(
    tmp_path: Path, postgres_url: str, nodes: list[Node]
) -> None:
    """A node frozen mid-poll past its lease: another node takes the source, polls it and saves
    its state; the first one, thawed, ends its poll later with an older state, which must not
    overwrite the newer one (the source would show the first node's stale result, or its timeout)."""
    app = CorpusServer(["a"], entries=1)
    app.slow["/feeds/a.xml"] = 1.0  # each poll in flight for a second: time to freeze its node
    with AppServer(app) as corpus:
        # A long interval: after the takeover nobody polls the source again during the test.
        config = fleet_config(tmp_path, postgres_url, corpus, ["a"], interval="60s")
        nodes.extend(Node(config) for _ in range(2))
        for node in nodes:
            wait_for(node.healthy, 30, what="node healthy")
        wait_for(lambda: app.arrivals("/feeds/a.xml") >= 1, 20, what="the first poll under way")
        frozen = wait_for(lambda: frozen_with_a_lease(nodes, postgres_url), 10, what="its node frozen")
        taker = next(node for node in nodes if node is not frozen)
        try:
            # The lease runs out; the other node polls the source and saves its (newer) state.
            wait_for(lambda: app.arrivals("/feeds/a.xml") == 2, LEASE + 10, what="the source taken over")
            wait_for(lambda: len(app.visits_of("/feeds/a.xml")) == 2, 10, what="the second poll answered")
            wait_for(lambda: lease_holder(postgres_url, "a") is None, 10, what="the second poll completed")
            newer = stored_attempt(postgres_url, "a")
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        wait_for(
            lambda: "the lease was lost before the poll ended" in frozen.log(),
            20,
            what="the thawed poll's end",
        )
        assert taker.healthy()
        assert app.arrivals("/feeds/a.xml") == 2
        assert newer is not None and stored_attempt(postgres_url, "a") == newer
