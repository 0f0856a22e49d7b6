"""One image through the polite fetcher: its per-host limits, deadline and redirect guard.

Different from a feed fetch in three ways: the size cap is ``max_media``; no Referer is
sent unless the source sets ``media_referer`` (image hosts refuse another site's, which
is why the reference feed marks its images ``referrerpolicy="no-referrer"``); and the
answer must be an image whose Content-Type and magic bytes agree (``sniff``). An archived
URL is never fetched again (its copy is content-addressed), so no conditional GET applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.errors import NotAnImage
from aggregator.fetch import Fetcher, FetchRequest
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
) -> Downloaded:
    """The image at ``url``; raises a ``FetchError`` (``NotAnImage`` for what is not one)."""
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
