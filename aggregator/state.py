"""A source's polling state, and the pure decisions that move it on.

``SourceState`` is persisted in the index after every attempt. The functions
here take the old state, what happened and ``now``, and return the new state;
they do no I/O, so the whole backoff policy is tested without a network.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator.errors import AggregatorError, RateLimited, SourceGone

BACKOFF_BASE_SECONDS = 60.0
# A server's freshness hint lengthens the interval at most to this.
MAX_FRESHNESS_SECONDS = 7 * 86400.0


@dataclass(frozen=True)
class SourceState:
    name: str
    url: str = ""
    config_hash: str = ""  # a gone source is polled again once its config changes
    etag: str | None = None
    last_modified: str | None = None
    permanent_url: str | None = None  # learned from 301/308; used instead of url
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    http_status: int | None = None
    new_count: int = 0
    updated_count: int = 0
    error_streak: int = 0
    last_error: str | None = None
    next_due: datetime | None = None
    due_reason: str = "first run"
    gone: bool = False
    ttl: float | None = None  # the feed's own <ttl>, in seconds, kept for 304 responses

    def to_json(self) -> dict[str, Any]:
        # asdict deep-copies, and fields() is rebuilt at every call: both slow at a save per poll.
        data = {name: getattr(self, name) for name in _STATE_FIELDS}
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceState:
        known = _STATE_FIELDS
        values = {k: v for k, v in data.items() if k in known}
        for key in ("last_attempt", "last_success", "next_due"):
            if isinstance(values.get(key), str):
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)

    def public_json(self) -> dict[str, Any]:
        """For status output: credentials stripped from URLs."""
        # Imported here: the parser processes load this module and need no HTTP client.
        from aggregator.fetch import redact_url

        data = self.to_json()
        for key in ("url", "permanent_url"):
            if data[key]:
                data[key] = redact_url(data[key])
        data["failing"] = self.failing
        data["health"] = self.health
        return data

    @property
    def failing(self) -> bool:
        return self.error_streak > 0 or self.gone

    @property
    def health(self) -> str:
        if self.gone:
            return "gone"
        if self.error_streak:
            return "failing"
        if self.last_error:
            return "waiting"  # rate limited: asked to come back later, not a failure
        return "ok" if self.last_success else "new"


# SourceState's field names, in order (its JSON's keys).
_STATE_FIELDS: dict[str, None] = dict.fromkeys(f.name for f in fields(SourceState))


def config_fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def backoff_delay(streak: int, interval: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter on the upper half, never past ``cap``."""
    ceiling = min(cap, max(interval, BACKOFF_BASE_SECONDS) * (2 ** min(streak - 1, 20)))
    return float(min(cap, ceiling / 2 + rng.random() * ceiling / 2))


def after_success(
    state: SourceState,
    *,
    now: datetime,
    interval: float,
    http_status: int,
    new: int,
    updated: int,
    etag: str | None,
    last_modified: str | None,
    permanent_url: str | None,
    fresh_for: float | None = None,
    ttl: float | None = None,
    respect_cache: bool = False,
) -> SourceState:
    delay, reason = next_interval(interval, fresh_for=fresh_for, ttl=ttl, respect_cache=respect_cache)
    return replace(
        state,
        etag=etag,
        last_modified=last_modified,
        permanent_url=permanent_url or state.permanent_url,
        last_attempt=now,
        last_success=now,
        http_status=http_status,
        new_count=new,
        updated_count=updated,
        error_streak=0,
        last_error=None,
        next_due=now + timedelta(seconds=delay),
        due_reason=reason,
        gone=False,
        ttl=ttl,
    )


def next_interval(
    interval: float, *, fresh_for: float | None, ttl: float | None, respect_cache: bool
) -> tuple[float, str]:
    """Seconds until the next poll and why: server hints only ever lengthen the interval."""
    if not respect_cache:
        return interval, "interval"
    hints = [
        (seconds, why)
        for seconds, why in ((fresh_for, "Cache-Control/Expires"), (ttl, "feed <ttl>"))
        if seconds is not None and seconds > interval
    ]
    if not hints:
        return interval, "interval"
    seconds, why = max(hints)
    return min(seconds, max(MAX_FRESHNESS_SECONDS, interval)), f"interval lengthened by {why}"


def after_failure(
    state: SourceState,
    error: AggregatorError,
    *,
    now: datetime,
    interval: float,
    backoff_cap: float,
    rng: random.Random | None = None,
) -> SourceState:
    status = getattr(error, "status", None)
    base = replace(state, last_attempt=now, http_status=status, last_error=str(error),
                   new_count=0, updated_count=0)  # fmt: skip
    if isinstance(error, RateLimited):
        # Being asked to wait is not a failure of the source (no streak, no backoff); we
        # come back when the server asks, but never sooner than the configured interval.
        wait = max(error.retry_after, interval)
        return replace(
            base,
            next_due=now + timedelta(seconds=wait),
            # status 0: not the source's answer but its host's wait, shared by a fleet's nodes.
            due_reason=f"HTTP {error.status} Retry-After {error.retry_after:g}s"
            if error.status
            else f"host asked to wait: Retry-After {error.retry_after:.0f}s",
        )
    if isinstance(error, SourceGone):
        return replace(base, gone=True, next_due=None, due_reason="gone (HTTP 410); edit its config to retry")
    streak = state.error_streak + 1
    delay = backoff_delay(streak, interval, backoff_cap, rng or random.Random())
    return replace(
        base,
        error_streak=streak,
        next_due=now + timedelta(seconds=delay),
        due_reason=f"backoff after {streak} failure{'s' if streak > 1 else ''}",
    )


@dataclass(frozen=True)
class Hold:
    """Why a source is left alone by a poll now, and until when."""

    until: datetime
    reason: str  # the state's due reason: "backoff after 2 failures", "HTTP 429 Retry-After 86400s"


def poll_hold(state: SourceState, *, force: bool, now: datetime) -> Hold | None:
    """Whether a poll now would go against a backoff or a server's ``Retry-After``.

    Only a wait that follows a failed attempt (a backoff, or a 429/503 that asked
    for time) holds a poll back; a plain interval or a freshness hint does not, since
    a manual fetch exists to poll now. ``force`` overrides it. A gone source is
    decided elsewhere (it waits for a config change, not for a time).
    """
    if force or state.gone or state.next_due is None or state.next_due <= now:
        return None
    if state.last_attempt is None or state.last_success == state.last_attempt:
        return None  # the last attempt succeeded: next_due is the interval, maybe lengthened
    return Hold(until=state.next_due, reason=state.due_reason)


def utcnow() -> datetime:
    return datetime.now(UTC)
