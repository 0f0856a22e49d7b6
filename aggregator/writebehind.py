"""The daemon's source states, held and written to the index a group at a time.

A not-modified poll changes nothing but its source's state, and one commit per
poll was a twelfth of the daemon's CPU per poll (issue 17). Here a saved state is
held, and the held states go to the index in one transaction
(``Index.save_source_states``) once the oldest has waited ``FLUSH_SECONDS`` or
``FLUSH_STATES`` are held, when the daemon stops, and before a fleet node hands a
source back. Reads through :class:`StateWriteBehind` see the held states, and the
states it read or wrote are kept while no other process writes states
(``Index.states_version``; a fleet's index has none and is read each time).

A SIGKILL loses at most the states of the last bound: those sources are polled
next with the validators they had before, which may cost a full response, never
a post (posts and their index rows are written at once, as before). Other
processes (``aggregator status``) see a state up to that bound late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aggregator.errors import AggregatorError
from aggregator.state import SourceState

log = logging.getLogger("aggregator.daemon")

# A state waits at most this long before it is written (the timer's bound) ...
FLUSH_SECONDS = 1.0
# ... or until this many are held.
FLUSH_STATES = 500


class StateKeeper(Protocol):
    """Where the update flow reads and saves source states: an index, or a :class:`StateWriteBehind`."""

    def source_state(self, name: str) -> SourceState: ...
    def save_source_state(self, state: SourceState) -> None: ...


class StateStorage(Protocol):
    """What the buffer needs of an index (``aggregator.index.interface.Index`` is one)."""

    def source_state(self, name: str) -> SourceState: ...
    def save_source_states(self, states: Sequence[SourceState]) -> None: ...
    def states_version(self) -> int | None: ...


@dataclass(frozen=True)
class FlushBound:
    """How long, and how many, states are held before they are written."""

    seconds: float = FLUSH_SECONDS
    states: int = FLUSH_STATES


def flush_due(held: int, oldest_age: float, bound: FlushBound) -> bool:
    """Are the held states due to be written: enough of them, or the oldest waited long enough."""
    return held > 0 and (held >= bound.states or oldest_age >= bound.seconds)


class StateWriteBehind:
    """``source_state`` and ``save_source_state`` over an index, the saves written in groups.

    Outside a running event loop there is no timer to bound the wait: a save is written at once.
    """

    def __init__(
        self,
        index: StateStorage,
        bound: FlushBound = FlushBound(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self.bound = bound
        self.clock = clock
        self._held: dict[str, SourceState] = {}
        # States as the index has them, while its version says no one else wrote any since.
        self._known: dict[str, SourceState] = {}
        self._known_version: int | None = None
        self._oldest: float | None = None  # clock() when the oldest held state was saved
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        return len(self._held)

    def source_state(self, name: str) -> SourceState:
        held = self._held.get(name)
        if held is not None:
            return held
        version = self.index.states_version()
        if version is None:
            return self.index.source_state(name)
        if version != self._known_version:
            # Another process wrote states (a one-shot fetch, a restored tombstone): read afresh.
            self._known, self._known_version = {}, version
        known = self._known.get(name)
        if known is None:
            known = self._known[name] = self.index.source_state(name)
        return known

    def save_source_state(self, state: SourceState) -> None:
        now = self.clock()
        self._held[state.name] = state
        if self._oldest is None:
            self._oldest = now
        if flush_due(len(self._held), now - self._oldest, self.bound) or not self._arm_timer():
            self.flush()

    def flush(self) -> None:
        """Write every held state in one transaction; on a store error they stay held (and it raises)."""
        self._disarm_timer()
        if not self._held:
            return
        states, oldest = self._held, self._oldest
        self._held, self._oldest = {}, None
        try:
            self.index.save_source_states(list(states.values()))
            self._known.update(states)  # kept only while states_version stays as it was
        except AggregatorError:
            # Kept for the next flush; a state saved meanwhile is newer and wins.
            self._held = states | self._held
            self._oldest = oldest
            raise

    def _arm_timer(self, wait: float | None = None) -> bool:
        """Make sure a timer writes the held states (by default within the bound); False without a loop."""
        if self._timer is not None:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if wait is None:
            age = self.clock() - self._oldest if self._oldest is not None else 0.0
            wait = max(self.bound.seconds - age, 0.0)
        self._timer = loop.call_later(wait, self._flush_on_timer)
        return True

    def _disarm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush_on_timer(self) -> None:
        self._timer = None
        try:
            self.flush()
        except AggregatorError as error:
            log.error(
                "%d source states not written, tried again in %gs: %s", self.held, self.bound.seconds, error
            )
            self._arm_timer(self.bound.seconds)
