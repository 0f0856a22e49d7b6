"""https sources: verified against the system's CAs, loaded at the first https request.

A real TLS server on 127.0.0.1 (pytest-httpserver) with a certificate from a
throwaway CA (trustme). OpenSSL reads ``SSL_CERT_FILE`` when a context loads
the default CA locations, so pointing it at the throwaway CA stands in for a
system that trusts it.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from pytest_httpserver import HTTPServer

from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, FetchRequest
from aggregator.tls import ClientTLS
from aggregator.transport import TRANSPORTS, TransportKind
from aggregator.websub import publish

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def https_server(ca: trustme.CA) -> Iterator[HTTPServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server
    server.clear()
    server.stop()


def _fetch(fetcher: Fetcher, url: str) -> bytes | None:
    async def go() -> bytes | None:
        try:
            return (await fetcher.fetch(FetchRequest(url=url))).body
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def test_https_source_is_fetched_when_the_system_trusts_its_certificate(
    https_server: HTTPServer, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    https_server.expect_request("/feed.xml").respond_with_data(FEED, content_type="application/rss+xml")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    fetcher = Fetcher("test-agent")
    assert fetcher.tls.ready is None  # nothing loaded before the first https request
    assert _fetch(fetcher, https_server.url_for("/feed.xml")) == FEED
    assert fetcher.tls.ready is not None


def test_a_certificate_the_system_does_not_trust_is_refused(https_server: HTTPServer) -> None:
    https_server.expect_request("/feed.xml").respond_with_data(FEED)
    with pytest.raises(
        FetchError,
        match=r"^TLS certificate not trusted: unable to get local issuer certificate \(127\.0\.0\.1:\d+\)",
    ):
        _fetch(Fetcher("test-agent"), https_server.url_for("/feed.xml"))
    assert https_server.log == []  # refused during the handshake: no request was ever sent


def test_a_given_context_is_used_instead_of_the_system_one(https_server: HTTPServer, ca: trustme.CA) -> None:
    https_server.expect_request("/feed.xml").respond_with_data(FEED)
    context = ssl.create_default_context(cafile=None)
    ca.configure_trust(context)
    assert _fetch(Fetcher("test-agent", tls_context=context), https_server.url_for("/feed.xml")) == FEED


def test_plain_http_never_loads_the_ca_bundle(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(FEED)
    fetcher = Fetcher("test-agent")
    assert _fetch(fetcher, httpserver.url_for("/feed.xml")) == FEED
    assert fetcher.tls.ready is None


def test_the_context_is_the_platform_default_one_with_its_cas_loaded_late(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every httpx client holds it from the start; it trusts nothing until the first https request."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    reference = ssl.create_default_context()
    tls = ClientTLS()
    settings = (
        "options",
        "verify_flags",
        "verify_mode",
        "check_hostname",
        "minimum_version",
        "maximum_version",
    )
    assert {name: getattr(tls.handle, name) for name in settings} == {
        name: getattr(reference, name) for name in settings
    }
    assert tls.handle.get_ciphers() == reference.get_ciphers()
    assert tls.ready is None and tls.handle.cert_store_stats()["x509_ca"] == 0
    assert tls.context() is tls.handle and tls.ready is tls.handle
    assert tls.handle.cert_store_stats()["x509_ca"] == 1  # the system's CAs (here, the one in SSL_CERT_FILE)


def test_importing_the_fetcher_leaves_the_ssl_module_as_it_was(ca_file: Path) -> None:
    # In a fresh interpreter, so that aiohttp is imported here for the first time.
    probe = (
        "import ssl, aggregator.fetch, aiohttp.connector as c\n"
        "print(ssl.create_default_context().cert_store_stats()['x509_ca'],\n"
        "      'set_default_verify_paths' in ssl.SSLContext.__dict__,\n"
        "      c._SSL_CONTEXT_VERIFIED.verify_mode == ssl.CERT_REQUIRED)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe],
        env={"SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(ca_file.parent), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    # Contexts made after the import load the CAs again; aiohttp's own still verify.
    assert output == ["1", "False", "True"]


def test_websub_pings_an_https_hub_the_system_trusts(
    https_server: HTTPServer, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    https_server.expect_request("/hub", method="POST").respond_with_data("", status=204)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    results = asyncio.run(publish(https_server.url_for("/hub"), ["http://example.test/all/rss.xml"]))
    assert [(r.ok, r.detail) for r in results] == [(True, "204")]
    assert len(https_server.log) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_both_transports_verify_with_the_same_context(
    https_server: HTTPServer, ca_file: Path, monkeypatch: pytest.MonkeyPatch, transport: TransportKind
) -> None:
    https_server.expect_request("/feed.xml").respond_with_data(FEED)
    url = https_server.url_for("/feed.xml")
    with pytest.raises(FetchError, match=r"^TLS certificate not trusted: unable to get local issuer"):
        _fetch(Fetcher("test-agent", transport=transport), url)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    assert _fetch(Fetcher("test-agent", transport=transport), url) == FEED
