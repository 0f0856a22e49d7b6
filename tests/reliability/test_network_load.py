"""Network faults under load: 500 sources of mixed faults at once against the fault server.

Half the sources are healthy, the other half hang, drip, reset, bomb, lie
about their length, never end, fail, redirect in circles or are refused.
``aggregator fetch`` must finish within its deadlines, with bounded memory,
every healthy source getting all its posts and every faulty one a reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from relsupport import Ledger, healthy_feed, problems_text, run_measured, scan_feeds
from support.faultserver import FaultServer
from support.helpers import run_cli, write_config

SOURCES = 500
HEALTHY_ITEMS = 5
FAULTS = [
    "/slow-headers?delay=30",
    "/slow-drip?interval=0.5",
    "/reset",
    "/truncated-gzip",
    "/bomb?mib=64",
    "/huge-length",
    "/endless",
    "/status/404",
    "/status/410",
    "/status/500",
    "/status/503",
    "/429-seconds?value=soon",
    "/429-date",
    "/html-with-links",
    "/challenge",
    "/empty",
    "/loop-a",
    "unreachable",
]
# Faults that still carry a readable feed: a wrong content type, a declared charset.
READABLE = ["/wrong-type", "/charset/conflicting"]


@pytest.mark.slow
def test_five_hundred_sources_of_mixed_faults_at_once(tmp_path: Path, ledger: Ledger) -> None:
    with FaultServer() as server:
        server.redirect("/loop-a", "/loop-b", status=302)
        server.redirect("/loop-b", "/loop-a", status=302)
        sources = []
        healthy = []
        kinds = FAULTS + READABLE
        for index in range(SOURCES):
            if index % 2 == 0:
                server.feed(
                    f"/ok/{index}.xml", healthy_feed(HEALTHY_ITEMS, prefix=f"ok{index}"), etag=f'"{index}"'
                )
                url = server.url(f"/ok/{index}.xml")
                healthy.append(f"s{index}")
            else:
                kind = kinds[(index // 2) % len(kinds)]
                separator = "&" if "?" in kind else "?"
                url = (
                    f"http://127.0.0.1:9/feed{index}.xml"
                    if kind == "unreachable"
                    else server.url(f"{kind}{separator}n={index}")
                )
            sources.append({"name": f"s{index}", "url": url, "categories": ["Load", f"G{index % 7}"]})
        config = write_config(
            tmp_path / "site",
            sources,
            defaults={
                "interval": "30m",
                "fsync": "off",
                "timeout": "5s",  # roomy: healthy sources share two busy cores with 250 faulty ones
                "deadline": "6s",
                "max_body": "1MiB",
                "concurrency": 64,
                "per_host": 64,
            },
        )
        started = time.monotonic()
        result = run_measured("fetch", "--json", config=config, timeout=170)
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    report = {s["name"]: s for s in json.loads(result.stdout)["sources"]}
    site = tmp_path / "site"
    found = sum(1 for _ in (site / "posts").glob("*/*/*/*.md"))
    expected = len(healthy) * HEALTHY_ITEMS
    healthy_posts = sum(1 for name in healthy for _ in (site / "posts").glob(f"{name}/*/*/*.md"))
    ledger.record(inputs=SOURCES, faults=SOURCES - len(healthy), lost=expected - healthy_posts)
    sick = {name: report[name]["error"] for name in healthy if report[name]["outcome"] != "ok"}
    assert healthy_posts == expected, f"healthy sources failed: {sick}"
    assert all(report[name]["outcome"] == "ok" for name in healthy)
    unexplained = [
        name
        for name, outcome in report.items()
        if outcome["outcome"] in ("error", "rate-limited", "gone") and not outcome["error"]
    ]
    assert not unexplained, unexplained
    assert len(report) == SOURCES
    assert found >= expected
    assert elapsed < 150, f"took {elapsed:.0f}s"
    assert result.peak_mib < 800, f"peak memory {result.peak_mib:.0f} MiB"
    _feeds, problems = scan_feeds(site / "feeds")
    assert not problems, problems_text(problems)
    status = run_cli("status", "--json", config=config)
    states = {s["name"]: s for s in json.loads(status.stdout)}
    assert len(states) == SOURCES
