"""The pure state transitions: backoff, Retry-After, gone, freshness hints, persistence."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.errors import FetchTimeout, HTTPStatusError, NotAFeed, RateLimited, SourceGone
from aggregator.state import (
    MAX_FRESHNESS_SECONDS,
    Hold,
    SourceState,
    after_failure,
    after_success,
    backoff_delay,
    next_interval,
    poll_hold,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = 3600.0
DAY = 86400.0


def succeed(state: SourceState, **changes: object) -> SourceState:
    values: dict[str, object] = {
        "now": NOW,
        "interval": HOUR,
        "http_status": 200,
        "new": 2,
        "updated": 1,
        "etag": '"e"',
        "last_modified": None,
        "permanent_url": None,
    }
    values.update(changes)
    return after_success(state, **values)  # type: ignore[arg-type]


def fail(state: SourceState, error: Exception, seed: int = 1, cap: float = DAY) -> SourceState:
    return after_failure(state, error, now=NOW, interval=HOUR, backoff_cap=cap, rng=random.Random(seed))  # type: ignore[arg-type]


def delay(state: SourceState) -> float:
    assert state.next_due is not None
    return (state.next_due - NOW).total_seconds()


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    state = SourceState(name="s")
    for streak in range(1, 12):
        state = fail(state, HTTPStatusError("HTTP 500", status=500), seed=streak)
        ceiling = min(DAY, HOUR * 2 ** (streak - 1))
        assert state.error_streak == streak
        assert ceiling / 2 <= delay(state) <= ceiling
        assert state.due_reason.startswith(f"backoff after {streak} failure")
        assert not state.gone, "errors never stop a source for good"
    assert delay(state) <= DAY


def test_jitter_spreads_sources_that_fail_together() -> None:
    delays = {backoff_delay(3, HOUR, DAY, random.Random(seed)) for seed in range(20)}
    assert len(delays) == 20 and min(delays) >= 2 * HOUR and max(delays) <= 4 * HOUR


def test_backoff_respects_a_small_cap_and_short_intervals() -> None:
    assert backoff_delay(30, HOUR, 600.0, random.Random(0)) <= 600.0
    assert backoff_delay(1, 5.0, DAY, random.Random(0)) >= 30.0, "a base of at least a minute"


def test_first_success_resets_the_streak() -> None:
    state = fail(fail(SourceState(name="s"), FetchTimeout("slow")), NotAFeed("html"))
    assert state.error_streak == 2 and state.last_error == "html"
    state = succeed(state)
    assert state.error_streak == 0 and state.last_error is None
    assert state.last_success == NOW and state.new_count == 2 and state.updated_count == 1
    assert delay(state) == HOUR and state.due_reason == "interval"


def test_rate_limited_is_not_a_failure() -> None:
    state = fail(SourceState(name="s", error_streak=2), RateLimited("429", status=429, retry_after=2 * HOUR))
    assert state.error_streak == 2, "the streak is neither grown nor reset"
    assert delay(state) == 2 * HOUR and state.http_status == 429
    assert "Retry-After" in state.due_reason
    short = fail(SourceState(name="s"), RateLimited("503", status=503, retry_after=60))
    assert delay(short) == HOUR, "never sooner than the configured interval"
    assert short.health == "waiting" and not short.failing


def test_gone_stops_polling_and_keeps_the_rest() -> None:
    state = succeed(SourceState(name="s", url="http://127.0.0.1/f"))
    gone = fail(state, SourceGone("HTTP 410 Gone", status=410))
    assert gone.gone and gone.next_due is None and gone.failing and gone.health == "gone"
    assert gone.etag == state.etag and gone.last_success == state.last_success
    assert succeed(gone).gone is False


@pytest.mark.parametrize(
    ("fresh_for", "ttl", "respect", "expected"),
    [
        (None, None, True, HOUR),
        (2 * HOUR, None, True, 2 * HOUR),
        (60.0, None, True, HOUR),
        (None, 3 * HOUR, True, 3 * HOUR),
        (2 * HOUR, 3 * HOUR, True, 3 * HOUR),
        (2 * HOUR, 3 * HOUR, False, HOUR),
        (1e9, None, True, MAX_FRESHNESS_SECONDS),
    ],
)
def test_freshness_hints_only_lengthen(
    fresh_for: float | None, ttl: float | None, respect: bool, expected: float
) -> None:
    seconds, reason = next_interval(HOUR, fresh_for=fresh_for, ttl=ttl, respect_cache=respect)
    assert seconds == expected
    assert (reason == "interval") == (expected == HOUR)


def test_permanent_url_is_kept_until_replaced() -> None:
    state = succeed(SourceState(name="s"), permanent_url="http://127.0.0.1/new")
    assert succeed(state).permanent_url == "http://127.0.0.1/new"
    assert fail(state, FetchTimeout("t")).permanent_url == "http://127.0.0.1/new"


def test_json_round_trip_and_public_view() -> None:
    state = fail(
        succeed(
            SourceState(name="s", url="http://bob:pw@127.0.0.1/f"),
            permanent_url="http://bob:pw@127.0.0.1/g",
            ttl=600.0,
        ),
        HTTPStatusError("HTTP 404 Not Found", status=404),
    )
    assert SourceState.from_json(state.to_json()) == state
    public = state.public_json()
    assert public["url"] == "http://127.0.0.1/f" and public["permanent_url"] == "http://127.0.0.1/g"
    assert public["failing"] is True and public["health"] == "failing"
    assert public["next_due"] == (NOW + timedelta(seconds=delay(state))).isoformat()
    assert SourceState.from_json({"name": "old", "unknown_field": 1}) == SourceState(name="old")


def test_a_poll_now_is_held_back_only_by_a_backoff_or_a_retry_after() -> None:
    limited = fail(SourceState(name="s"), RateLimited("HTTP 429", status=429, retry_after=DAY))
    hold = poll_hold(limited, force=False, now=NOW + timedelta(hours=1))
    assert hold == Hold(until=NOW + timedelta(days=1), reason="HTTP 429 Retry-After 86400s")
    assert poll_hold(limited, force=True, now=NOW) is None
    assert poll_hold(limited, force=False, now=NOW + timedelta(days=1)) is None  # the wait is over

    broken = fail(SourceState(name="s"), HTTPStatusError("HTTP 500", status=500))
    held = poll_hold(broken, force=False, now=NOW)
    assert held is not None and held.reason == "backoff after 1 failure" and held.until == broken.next_due

    # A success schedules the plain interval (or a longer one a server hinted at): a manual
    # fetch is for polling now, so neither holds it back; nor does a source never polled.
    assert poll_hold(succeed(SourceState(name="s")), force=False, now=NOW) is None
    lengthened = succeed(SourceState(name="s"), fresh_for=DAY, respect_cache=True)
    assert lengthened.due_reason.startswith("interval lengthened")
    assert poll_hold(lengthened, force=False, now=NOW) is None
    assert poll_hold(SourceState(name="s"), force=False, now=NOW) is None
    # A gone source waits for its config to change, not for a time: decided elsewhere.
    assert poll_hold(fail(SourceState(name="s"), SourceGone("410", status=410)), force=False, now=NOW) is None
