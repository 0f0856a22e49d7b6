"""Fixtures of the reliability suite; the helpers live in ``relsupport``."""

from __future__ import annotations

import pytest
from relsupport import Ledger


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """Where a test records inputs tried, faults survived and items lost (see relsupport.Ledger)."""
    return Ledger(request.node.nodeid)
