"""TLS for our HTTP client: the system's CA bundle loaded once, and only when https is used.

aiohttp builds two TLS contexts when it is imported and loads the system's CA
bundle into each. Here that was 70 ms, a tenth of a poll in which every source
answered "not modified", and several MB of memory, spent even when no source
is https. So aiohttp is imported with that loading skipped
(``ca_bundle_deferred``), and every https request carries a context of ours
instead (``ClientTLS``), made the first time one is needed.

Skipping the load cannot weaken verification: the contexts aiohttp made at
import keep ``CERT_REQUIRED``, and with no CA loaded they trust nothing, so
had one ever been used, every certificate would be refused.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def ca_bundle_deferred() -> Iterator[None]:
    """Import aiohttp inside this block: its import-time contexts skip loading the CA bundle."""
    if "aiohttp" in sys.modules:  # already imported; nothing to save
        yield
        return
    ssl.SSLContext.set_default_verify_paths = _skip_default_verify_paths  # type: ignore[method-assign]
    try:
        yield
    finally:
        # The method lives on the C base class; removing ours brings it back.
        del ssl.SSLContext.set_default_verify_paths


def _skip_default_verify_paths(self: ssl.SSLContext) -> None:
    return None


class ClientTLS:
    """The context for our https requests: the platform's defaults, made on first use."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self._context = context
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        """Blocks while the CA bundle loads the first time (tens of ms): call it from a thread."""
        with self._lock:
            if self._context is None:
                context = ssl.create_default_context()
                context.set_alpn_protocols(["http/1.1"])  # as aiohttp's own contexts do
                self._context = context
            return self._context

    @property
    def ready(self) -> ssl.SSLContext | None:
        return self._context
