"""One image through the polite fetcher: its per-host limits, deadline and redirect guard.

Different from a feed fetch in three ways: the size cap is ``max_media``; no Referer is
sent unless the source sets ``media_referer`` (image hosts refuse another site's, which
is why the reference feed marks its images ``referrerpolicy="no-referrer"``); and the
answer must be an image whose Content-Type and magic bytes agree (``sniff``). An archived
URL is never fetched again (its copy is content-addressed), so no conditional GET applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from aggregator.errors import NotAnImage, RedirectError
from aggregator.fetch import Fetcher, FetchRequest, host_addresses, refuse_redirect
from aggregator.media.sniff import sniff

ACCEPT_IMAGES = "image/avif,image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1"


@dataclass(frozen=True)
class Downloaded:
    url: str
    data: bytes
    ext: str


async def download(
    fetcher: Fetcher,
    url: str,
    *,
    max_media: int,
    referer: str | None = None,
    allow_private_redirects: bool = False,
    origin: str | None = None,
) -> Downloaded:
    """The image at ``url``; raises a ``FetchError`` (``NotAnImage`` for what is not one).

    ``origin`` is the feed's URL: an image URL comes from the feed's content, so a feed on a
    public address may not make us fetch from a private one (loopback, the LAN), as the
    redirect guard refuses for feeds. A local or private feed (None, or private) may.
    """
    if origin is not None and not allow_private_redirects:
        await _refuse_private(fetcher, origin, url)
    headers = {"Accept": ACCEPT_IMAGES}
    if referer:
        headers["Referer"] = referer
    result = await fetcher.fetch(
        FetchRequest(
            url=url, headers=headers, max_body=max_media, allow_private_redirects=allow_private_redirects
        )
    )
    data = result.body or b""
    verdict = sniff(result.headers.get("content-type", ""), data)
    if verdict.ext is None:
        raise NotAnImage(verdict.reason, url=url)
    return Downloaded(url, data, verdict.ext)


async def _refuse_private(fetcher: Fetcher, origin: str, url: str) -> None:
    origin_addresses = await host_addresses(urlsplit(origin).hostname or "", fetcher.resolver)
    if not origin_addresses:
        return
    target = await host_addresses(urlsplit(url).hostname or "", fetcher.resolver)
    if refuse_redirect(origin_addresses, target):
        raise RedirectError(
            "refused: an image on a private address in a feed on a public one "
            "(set allow_private_redirects on the source to permit it)",
            url=url,
        )
