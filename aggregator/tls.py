"""TLS for our HTTP clients: the system's CA bundle loaded once, and only when https is used.

Loading the system's CA bundle costs tens of ms and several MB of memory
(here 70 ms, a tenth of a poll in which every source answered "not
modified"); it is not worth paying when no source is https. Two places would
pay it unasked:

- aiohttp builds two TLS contexts when it is imported and loads the bundle
  into each: it is imported with that loading skipped (``ca_bundle_deferred``).
  Skipping it cannot weaken verification: those contexts keep
  ``CERT_REQUIRED``, and with no CA loaded they trust nothing, so had one ever
  been used, every certificate would be refused. (Neither the fetcher nor
  websub uses them: each request carries a context of ours.)
- httpx loads certifi's bundle into a new context for every client made with
  ``verify=True``: ours are made with ``verify=`` our context instead.

``ClientTLS`` is that context: made at once with the platform's defaults but
trusting nothing yet, handed to every client, and given the system's CAs the
first time an https request needs them (``context()``, in a thread).
"""

from __future__ import annotations

import contextlib
import os
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
    """The context for our https requests: the platform's defaults, its CAs loaded on first use."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        # A context given is used as it is. Ours starts as ssl.create_default_context() would
        # make it, less the CA bundle: verification required, and nothing trusted until loaded.
        self._ready = context
        self.handle = context if context is not None else _default_context_without_cas()
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        """Blocks while the CA bundle loads the first time (tens of ms): call it from a thread."""
        with self._lock:
            if self._ready is None:
                self.handle.load_default_certs(ssl.Purpose.SERVER_AUTH)
                self._ready = self.handle
            return self._ready

    @property
    def ready(self) -> ssl.SSLContext | None:
        """The context once it trusts something (given, or its CAs loaded); None before."""
        return self._ready


def _default_context_without_cas() -> ssl.SSLContext:
    """``ssl.create_default_context()`` for a client, before it loads the default CAs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if sys.version_info >= (3, 13):  # what create_default_context adds since 3.13
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    keylog = os.environ.get("SSLKEYLOGFILE")  # as create_default_context honours it
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    context.set_alpn_protocols(["http/1.1"])  # both transports speak HTTP/1.1 only
    return context
