"""The archive folder: one file a distinct image, named by the SHA-256 of its bytes.

    <paths.media>/<hash[:2]>/<hash>.<ext>

The same image under two URLs, or in two sources, is one file. Files are written
atomically (``aggregator.files``) and never rewritten: a name says its content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aggregator.files import TEMP_SUFFIX, write_atomic
from aggregator.media.html import local_path, parse_local

log = logging.getLogger("aggregator.media")

# A file younger than this is never collected: a save may have stored it and not yet
# recorded the post that uses it.
COLLECT_GRACE = 3600.0


@dataclass(frozen=True)
class ArchivedFile:
    digest: str
    ext: str
    size: int

    @property
    def local(self) -> str:
        return local_path(self.digest, self.ext)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MediaArchive:
    """The folder under ``paths.media``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, digest: str, ext: str) -> Path:
        return self.root / digest[:2] / f"{digest}.{ext}"

    def path_for_local(self, local: str) -> Path | None:
        """The file behind a local address (``/media/ab/ab...jpg``), or None for another address."""
        parsed = parse_local(local)
        return self.path_of(*parsed) if parsed else None

    def has(self, digest: str, ext: str) -> bool:
        return os.path.exists(self.path_of(digest, ext))

    def put(self, data: bytes, ext: str) -> ArchivedFile:
        """Store ``data`` (once: an image already there is not written again)."""
        digest = digest_of(data)
        path = self.path_of(digest, ext)
        if not path.exists():
            write_atomic(path, data)
        return ArchivedFile(digest, ext, len(data))

    def files(self) -> Iterator[tuple[str, Path]]:
        """(local address, path) of every archived file."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or len(folder.name) != 2:
                continue
            for path in sorted(folder.iterdir()):
                local = f"/media/{folder.name}/{path.name}"
                if parse_local(local) is not None:
                    yield local, path

    def collect(self, referenced: set[str], *, now: float | None = None) -> list[str]:
        """Remove the files no post references (and temporary files a killed writer left).

        Returns the local addresses removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        for local, path in list(self.files()):
            if local in referenced:
                continue
            try:
                if now - path.stat().st_mtime < COLLECT_GRACE:
                    continue
                path.unlink()
                removed.append(local)
            except OSError as error:
                log.warning("cannot remove unreferenced media %s: %s", path, error)
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            for leftover in folder.glob(f"*{TEMP_SUFFIX}") if folder.is_dir() else ():
                try:
                    if now - leftover.stat().st_mtime >= COLLECT_GRACE:
                        leftover.unlink()
                except OSError:
                    continue
        if removed:
            log.info("media archive: removed %d files no post references", len(removed))
        return removed

    def check(self, local: str) -> str | None:
        """A problem with one referenced copy (missing, or its bytes not matching its name), or None."""
        parsed = parse_local(local)
        if parsed is None:
            return f"{local} is not an archived copy's address"
        path = self.path_of(*parsed)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return f"media {local} is referenced, but {path} is missing"
        except OSError as error:
            return f"media {local}: cannot read {path}: {error}"
        if digest_of(data) != parsed[0]:
            return f"media {local}: the file's SHA-256 does not match its name"
        return None
