"""Fixtures of the reliability suite; the helpers live in ``relsupport``."""

from __future__ import annotations

from typing import Any

import pytest
from relsupport import Ledger


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """Where a test records inputs tried, faults survived and items lost (see relsupport.Ledger)."""
    return Ledger(request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Record each test's outcome too: a fault counts as survived only if its test passed."""
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        Ledger(item.nodeid).record_outcome(report.outcome)
    return report
