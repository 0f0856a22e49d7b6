"""The media archive's bench step: the corpus with its images on the loopback corpus server.

The corpus's image URLs name hosts of their own (``img.siteNNNN.example.com``, and paths
relative to each site); for this step every feed is rewritten, into the server's override
folder, so that each image URL points at ``/img/...`` on the corpus server, which answers with
a small image made from the path (``bench.server``) and counts each path's requests.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.corpus import Corpus, render_feed


def image_bytes(path: str) -> tuple[bytes, str]:
    """A small image for ``path``, distinct per path, with magic bytes its type agrees with."""
    import hashlib

    filler = hashlib.sha256(path.encode()).digest() * 64  # 2 KB
    if path.endswith(".png"):
        return b"\x89PNG\r\n\x1a\n" + filler, "image/png"
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + filler + b"\xff\xd9", "image/jpeg"


def point_images_at(corpus: Corpus, override: Path, base: str) -> None:
    """Write every feed into ``override`` with its image URLs on ``base`` (the corpus server)."""
    override.mkdir(parents=True, exist_ok=True)
    for info in corpus.feeds():
        data = render_feed(corpus.spec, info)
        data = data.replace(b"https://img.", f"{base}/img/".encode())
        relative = f"{base}/img/site{info.index:04d}/images/".encode()
        data = data.replace(b'src="/images/', b'src="' + relative).replace(
            b"src=&quot;/images/", b"src=&quot;" + relative
        )
        target = override / info.filename
        temp = target.with_suffix(".tmp")
        temp.write_bytes(data)
        os.replace(temp, target)
