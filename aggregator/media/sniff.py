"""Is a response an image we keep: its Content-Type and its first bytes must name the same format.

A server that labels an HTML error page ``image/jpeg`` (or a JPEG ``text/html``) is refused, and
so is SVG: it is a document that can carry scripts, and we do not sanitize it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Content types accepted for each format; the first spelling is the canonical one.
FORMATS: dict[str, tuple[str, ...]] = {
    "jpg": ("image/jpeg", "image/jpg", "image/pjpeg"),
    "png": ("image/png", "image/x-png", "image/apng"),
    "gif": ("image/gif",),
    "webp": ("image/webp",),
    "avif": ("image/avif",),
}


@dataclass(frozen=True)
class Sniffed:
    """What the bytes are (``ext``, None when not an image we keep) and why not, if not."""

    ext: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.ext is not None


def magic_format(data: bytes) -> str | None:
    """The image format the first bytes announce, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "avif"
    return None


def declared_format(content_type: str) -> str | None:
    """The image format a Content-Type names (parameters ignored), or None."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    for ext, names in FORMATS.items():
        if media_type in names:
            return ext
    return None


def sniff(content_type: str, data: bytes) -> Sniffed:
    """The format when the declared type and the magic bytes agree; else the reason they do not."""
    media_type = content_type.split(";", 1)[0].strip().lower() or "no Content-Type"
    if "svg" in media_type or data.lstrip()[:5].lower() in (b"<svg ", b"<svg>", b"<?xml"):
        return Sniffed(None, f"SVG is not archived ({media_type})")
    declared = declared_format(content_type)
    if declared is None:
        return Sniffed(None, f"not an image: {media_type}")
    found = magic_format(data)
    if found is None:
        return Sniffed(None, f"served as {media_type}, but the bytes are not an image")
    if found != declared:
        return Sniffed(None, f"served as {media_type}, but the bytes are {FORMATS[found][0]}")
    return Sniffed(found)


def media_type_of(ext: str) -> str:
    """The canonical content type of an archived file's extension."""
    return FORMATS.get(ext, ("application/octet-stream",))[0]
