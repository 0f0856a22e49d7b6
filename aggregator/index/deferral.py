"""Source states held and written a group at a time while a batch of polls runs: either backend.

A not-modified poll changes nothing but its source's state, and a thousand polls were a
thousand commits (a sixth of such a cycle). Within ``deferred_states`` states are kept
here and written ``STATE_BATCH`` at a time; every state is read once as the batch begins.
Should the process die first, the states not written are those of polls that simply run
again. A backend supplies the three reads and writes at the end of the class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from aggregator.state import SourceState

# Source states written together while a batch of polls runs (see ``deferred_states``).
STATE_BATCH = 200


class DeferredStates:
    """``source_state``, ``save_source_state`` and ``deferred_states`` over a backend's storage."""

    _deferred: dict[str, SourceState] | None  # saved, not yet written (None: not deferring)
    _read_ahead: dict[str, SourceState]  # every state as the batch began

    def source_state(self, name: str) -> SourceState:
        if self._deferred is not None and name in self._deferred:
            return self._deferred[name]
        if name in self._read_ahead:
            return self._read_ahead[name]
        stored = self._stored_state(name)
        return stored if stored is not None else SourceState(name=name)

    def all_source_states(self) -> list[SourceState]:
        states = {state.name: state for state in self._stored_states()}
        return list({**states, **(self._deferred or {})}.values())

    def save_source_state(self, state: SourceState) -> None:
        if self._deferred is None:
            self._write_states([state])
            return
        self._deferred[state.name] = state
        if len(self._deferred) >= STATE_BATCH:
            self._flush_deferred()

    def save_source_states(self, states: Sequence[SourceState]) -> None:
        """Write ``states`` now, all in one transaction (the daemon's write-behind group).

        A state of the same source still deferred is older: it is dropped, not written after.
        """
        if not states:
            return
        if self._deferred:
            for state in states:
                self._deferred.pop(state.name, None)
        self._write_states(states)

    @contextlib.contextmanager
    def deferred_states(self) -> Iterator[None]:
        """Within it, source states are written a group at a time rather than one commit each."""
        self._deferred = {}
        # The batch reads every source's state: one query, not one per source.
        self._read_ahead = {state.name: state for state in self.all_source_states()}
        try:
            yield
        finally:
            self._read_ahead = {}
            try:
                self._flush_deferred()
            finally:
                self._deferred = None

    def _flush_deferred(self) -> None:
        if self._deferred:
            states, self._deferred = list(self._deferred.values()), {}
            self._write_states(states)

    def _write_states(self, states: Sequence[SourceState]) -> None:
        for state in states:
            self._read_ahead.pop(state.name, None)  # the database has the newer one now
        self._store_states(states)

    # The backend's part ------------------------------------------------------

    def _stored_state(self, name: str) -> SourceState | None:
        raise NotImplementedError

    def _stored_states(self) -> list[SourceState]:
        raise NotImplementedError

    def _store_states(self, states: Sequence[SourceState]) -> None:
        """Write ``states`` in one transaction."""
        raise NotImplementedError
