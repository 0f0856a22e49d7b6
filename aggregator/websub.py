"""Tell a WebSub hub which feeds changed, so subscribers get them without polling.

Every feed advertises the hub (``<atom:link rel="hub">`` in RSS and Atom,
``hubs`` in JSON Feed); after each build the hub gets one publish ping per
feed file that was rewritten, in the form hubs accept
(``hub.mode=publish&hub.url=<feed URL>``, form-encoded POST; W3C WebSub
leaves the publisher-to-hub step to the hub, and this is the common one).
Feeds that did not change are never announced, and a hub that is down costs
one log line per build, never the build itself: failures are returned as
values.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aggregator.config import Config
from aggregator.tls import ClientTLS
from aggregator.transport import httpx

log = logging.getLogger("aggregator.websub")

PING_TIMEOUT_SECONDS = 10.0
PING_CONCURRENCY = 4


@dataclass(frozen=True)
class PingResult:
    """One publish ping: which feed, and whether the hub accepted it (any 2xx)."""

    feed_url: str
    ok: bool
    detail: str  # the HTTP status, or the error


async def publish(
    hub: str,
    feed_urls: Sequence[str],
    *,
    user_agent: str = "aggregator",
    timeout: float = PING_TIMEOUT_SECONDS,
    concurrency: int = PING_CONCURRENCY,
) -> list[PingResult]:
    """Ping ``hub`` once for each of ``feed_urls``; results in the same order."""
    if not feed_urls:
        return []
    limit = asyncio.Semaphore(concurrency)
    tls = await asyncio.to_thread(ClientTLS().context) if hub.startswith("https:") else True
    # A few pings a build: httpx's own transport (the fetcher's aiohttp one pays off per poll, not here).
    async with httpx.AsyncClient(
        timeout=timeout, headers={"User-Agent": user_agent}, trust_env=False, verify=tls
    ) as client:

        async def ping(url: str) -> PingResult:
            async with limit:
                try:
                    form = {"hub.mode": "publish", "hub.url": url}
                    status = (await client.post(hub, data=form)).status_code
                except (httpx.HTTPError, TimeoutError, ValueError) as error:
                    return PingResult(url, False, f"{type(error).__name__}: {error}")
            return PingResult(url, 200 <= status < 300, str(status))

        results = await asyncio.gather(*(ping(url) for url in feed_urls))
    failed = [r for r in results if not r.ok]
    if failed:
        log.warning(
            "WebSub hub %s refused %d of %d pings (first: %s: %s)",
            hub, len(failed), len(results), failed[0].feed_url, failed[0].detail,
        )  # fmt: skip
    return list(results)


async def announce(config: Config, changed_urls: Sequence[str]) -> list[PingResult]:
    """After a build: ping the configured hub (if any) with the feeds that changed."""
    hub = config.build.websub_hub
    if hub is None or not changed_urls:
        return []
    return await publish(hub, changed_urls, user_agent=config.defaults.user_agent)
