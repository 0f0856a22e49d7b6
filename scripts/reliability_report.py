"""Run the reliability suite and print its counts: inputs tried, faults survived, items lost.

    .venv/bin/python scripts/reliability_report.py            # the whole suite, 2 workers
    .venv/bin/python scripts/reliability_report.py -k crash    # extra arguments go to pytest

Each test of ``tests/reliability/`` records what it tried in a ledger (see
``tests/reliability/relsupport.py``); this command gives pytest a fresh ledger,
runs the suite, and sums it up per area. It exits non-zero when a test failed
or an item was lost, so it can gate a release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "tests" / "reliability"
AREAS = {
    "test_hostile_xml.py": "hostile XML (entities, DTDs, 20,000 items, nesting, truncation, encodings)",
    "test_hostile_content.py": "hostile content (scripts, URL schemes, YAML, paths, sizes, characters)",
    "test_network_load.py": "network faults under load (500 sources at once)",
    "test_crash_recovery.py": "crashes (SIGKILL in fetch, post writes, index updates, builds)",
    "test_disk_faults.py": "disk faults (full disk, read-only folder)",
    "test_config_faults.py": "config faults (invalid configs, YAML 1.1 traps, credentials)",
    "test_server_load.py": "HTTP server under load (50 clients during rebuilds)",
}


def _area(test: str) -> str:
    return AREAS.get(test.split("::")[0].rsplit("/", 1)[-1], "other")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        ledger = Path(scratch) / "ledger.jsonl"
        ledger.touch()
        command = [sys.executable, "-m", "pytest", str(SUITE), "-n", "2", "-q", "-p", "no:warnings", *argv]
        started = time.monotonic()
        completed = subprocess.run(command, cwd=REPO, env={**os.environ, "RELIABILITY_LEDGER": str(ledger)})
        elapsed = time.monotonic() - started
        records = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    outcomes = {r["test"]: r["outcome"] for r in records if "outcome" in r}
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"tests": 0, "inputs": 0, "faults": 0, "lost": 0})
    for test, outcome in outcomes.items():
        totals[_area(test)]["tests"] += outcome == "passed"
    for record in records:
        if "outcome" in record:
            continue
        row = totals[_area(record["test"])]
        row["inputs"] += int(record["inputs"])
        row["lost"] += int(record["lost"])
        # A fault is survived only when its test passed.
        row["faults"] += int(record["faults"]) if outcomes.get(record["test"]) == "passed" else 0
    failed = sorted(test for test, outcome in outcomes.items() if outcome == "failed")
    print()
    print(f"{'area':<76} {'passed':>6} {'inputs':>8} {'faults':>7} {'lost':>5}")
    for area in [*AREAS.values(), "other"]:
        if area in totals:
            row = totals[area]
            print(f"{area:<76} {row['tests']:>6} {row['inputs']:>8} {row['faults']:>7} {row['lost']:>5}")
    total = {key: sum(row[key] for row in totals.values()) for key in ("tests", "inputs", "faults", "lost")}
    print(f"{'total':<76} {total['tests']:>6} {total['inputs']:>8} {total['faults']:>7} {total['lost']:>5}")
    for test in failed:
        print(f"failed: {test}")
    print()
    print(
        f"inputs tried: {total['inputs']}, faults survived: {total['faults']}, items lost: {total['lost']} "
        f"(pytest exit {completed.returncode}, {elapsed:.0f} s)"
    )
    return 1 if completed.returncode != 0 or failed or total["lost"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
