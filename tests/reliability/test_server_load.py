"""The daemon's HTTP server under load while its feeds are rebuilt.

50 concurrent clients fetch every feed of a running daemon while this process
rebuilds them again and again (new and changed entries through the real
pipeline, then a build). Every response must be a whole document (it parses)
and one ETag must always mean the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from lxml import etree
from relsupport import REPO, Ledger, healthy_feed
from support.helpers import free_port, wait_for, write_config

from aggregator.config import load_config
from aggregator.pipeline import Updater
from aggregator.publish.builder import FeedBuilder
from aggregator.store import PostStore
from aggregator.workers import ParserPool

CLIENTS = 50
REBUILDS = 12
FEEDS = ["all", "source/alpha", "source/beta", "category/news", "category/news/world"]
FILES = ["rss.xml", "atom.xml", "feed.json"]


def _whole(name: str, body: bytes) -> None:
    """Raise unless ``body`` is a complete document of its kind."""
    if name.endswith(".json"):
        json.loads(body)
    else:
        etree.fromstring(body)


@pytest.mark.slow
def test_fifty_clients_get_whole_feeds_and_consistent_etags_during_rebuilds(
    tmp_path: Path, ledger: Ledger
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "alpha.xml").write_bytes(healthy_feed(40, prefix="alpha"))
    (upstream / "beta.xml").write_bytes(healthy_feed(40, prefix="beta"))
    port = free_port()
    config_path = write_config(
        tmp_path / "site",
        [
            {"name": "alpha", "url": str(upstream / "alpha.xml"), "categories": ["News", "World"]},
            {"name": "beta", "url": str(upstream / "beta.xml"), "categories": ["News"]},
        ],
        server={"host": "127.0.0.1", "port": port},
        defaults={"interval": "1d", "fsync": "off"},
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config_path), "run"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    base = f"http://127.0.0.1:{port}/"
    urls = [f"{base}{feed}/{name}" for feed in FEEDS for name in FILES]
    try:
        wait_for(
            lambda: all(httpx.get(url, timeout=2).status_code == 200 for url in urls),
            timeout=60,
            what="every feed published by the daemon",
        )
        config = load_config(config_path)
        stop = threading.Event()
        lock = threading.Lock()
        seen: dict[str, str] = {}  # ETag -> sha256 of the bytes
        failures: list[str] = []
        counts = {"responses": 0, "versions": 0}

        def client(offset: int) -> None:
            with httpx.Client(timeout=20) as http:
                index = offset
                while not stop.is_set():
                    url = urls[index % len(urls)]
                    index += 1
                    try:
                        response = http.get(url)
                        body = response.content
                        assert response.status_code == 200, f"HTTP {response.status_code} {body[:60]!r}"
                        _whole(url, body)
                    except (httpx.HTTPError, ValueError, AssertionError, etree.XMLSyntaxError) as error:
                        with lock:
                            failures.append(f"{url}: {type(error).__name__}: {error}")
                        continue
                    digest = hashlib.sha256(body).hexdigest()
                    etag = response.headers.get("etag", "")
                    with lock:
                        counts["responses"] += 1
                        if response.status_code != 200:
                            failures.append(f"{url}: HTTP {response.status_code}")
                        elif seen.setdefault(f"{url} {etag}", digest) != digest:
                            failures.append(f"{url}: ETag {etag} served two different bodies")

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        rebuilt = 0
        with PostStore(config.posts_dir, config.index_path, fsync="off") as store:
            builder = FeedBuilder(config, store)
            for round_ in range(REBUILDS):
                for name in ("alpha", "beta"):
                    body = healthy_feed(40 + round_, prefix=name).replace(
                        b"Body of", f"Round {round_} of".encode()
                    )
                    (upstream / f"{name}.xml").write_bytes(body)
                results = asyncio.run(_update(config, store))
                report = builder.build({key for r in results for key in r.touched_keys})
                rebuilt += len(report.rendered)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        versions = len(set(seen.values()))
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            _out, err = daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _out, err = daemon.communicate()
    ledger.record(inputs=counts["responses"], faults=rebuilt, lost=len(failures))
    assert not failures, failures[:10]
    assert rebuilt >= REBUILDS, "every round rebuilt feeds"
    assert counts["responses"] >= 500 and versions >= REBUILDS, (counts, versions)
    assert daemon.returncode == 0, err.decode()[-2000:]


async def _update(config, store):  # type: ignore[no-untyped-def]
    updater = Updater(config, store, parser=ParserPool(processes=0))
    try:
        return await updater.update_many(list(config.sources))
    finally:
        await updater.aclose()
