"""What the daemon counts: its Prometheus metrics, and the tally behind its periodic summary line."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aggregator.fleet.mode import NodeRegistry
from aggregator.pipeline import UpdateResult
from aggregator.schedule import format_seconds
from aggregator.state import SourceState


@dataclass(frozen=True)
class PollTally:
    """The polls since the last summary line, by outcome: one INFO line stands for all of them."""

    polls: int = 0
    ok: int = 0
    not_modified: int = 0
    failed: int = 0
    rate_limited: int = 0
    gone: int = 0
    new: int = 0
    updated: int = 0

    def add(self, result: UpdateResult) -> PollTally:
        if result.skipped:
            return self  # not polled
        counter = {
            "ok": "ok",
            "not-modified": "not_modified",
            "error": "failed",
            "rate-limited": "rate_limited",
            "gone": "gone",
        }[result.outcome]
        return replace(
            self,
            polls=self.polls + 1,
            new=self.new + result.new,
            updated=self.updated + result.updated,
            **{counter: getattr(self, counter) + 1},
        )

    def line(self, seconds: float) -> str:
        return (
            f"polls in the last {format_seconds(seconds)}: polls={self.polls} ok={self.ok} "
            f"not_modified={self.not_modified} failed={self.failed} rate_limited={self.rate_limited} "
            f"gone={self.gone} new={self.new} updated={self.updated}"
        )


class Metrics:
    """The counters, histograms and gauges ``/metrics`` serves, updated once a poll."""

    def __init__(self, node: str | None = None) -> None:
        # In a fleet every metric carries this node's id, so one Prometheus can tell the nodes apart.
        self.registry = NodeRegistry(node) if node else CollectorRegistry()
        self.fetches = Counter(
            "aggregator_fetches", "Source updates by outcome", ["outcome"], registry=self.registry
        )
        self.fetch_seconds = Histogram(
            "aggregator_fetch_seconds", "Durations of source updates", registry=self.registry
        )
        self.entries = Counter("aggregator_entries", "Posts written", ["kind"], registry=self.registry)
        self.build_seconds = Histogram(
            "aggregator_build_seconds", "Feed build durations", registry=self.registry
        )
        self.last_success = Gauge(
            "aggregator_source_last_success_timestamp_seconds",
            "Unix time of each source's last successful update",
            ["source"],
            registry=self.registry,
        )
        self.sources = Gauge("aggregator_sources", "Configured sources", registry=self.registry)
        # The labelled children, looked up once rather than by ``labels()`` at every poll.
        self._outcomes: dict[str, Any] = {}
        self._new = self.entries.labels("new")
        self._updated = self.entries.labels("updated")
        self._last_success_of: dict[str, Any] = {}

    def polled(self, result: UpdateResult) -> None:
        """Count one poll: its outcome, duration, posts written and the source's last success."""
        outcome = self._outcomes.get(result.outcome)
        if outcome is None:
            outcome = self._outcomes[result.outcome] = self.fetches.labels(result.outcome)
        outcome.inc()
        self.fetch_seconds.observe(result.duration)
        if result.new:
            self._new.inc(result.new)
        if result.updated:
            self._updated.inc(result.updated)
        self.source_state(result.state)

    def source_state(self, state: SourceState) -> None:
        if state.last_success is not None:
            gauge = self._last_success_of.get(state.name)
            if gauge is None:
                gauge = self._last_success_of[state.name] = self.last_success.labels(state.name)
            gauge.set(state.last_success.timestamp())

    def forget_source(self, name: str) -> None:
        self._last_success_of.pop(name, None)
        with contextlib.suppress(KeyError):
            self.last_success.remove(name)
